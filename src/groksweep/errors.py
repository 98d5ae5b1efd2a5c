"""The error a user's input raises. It lives alone, without dependencies, so that the command
line can catch it from its first line, before numpy or JAX are imported."""


class SpecError(ValueError):
    """A sweep specification is invalid. The message is one line, fit for a terminal."""


class SpecWarning(UserWarning):
    """A sweep specification is valid but holds something groksweep ignores."""
