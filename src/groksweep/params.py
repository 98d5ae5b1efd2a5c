"""Declared parameters: what a sweep may set, its type, its range, and how the engine treats it.

Every parameter has a *role* that tells the engine how it enters the compiled program:

- ``static``: part of the compiled program's structure (an input dimension, the optimizer's
  name, the dtype). Runs with different values go to different shape buckets.
- ``padded``: an integer size that varies between runs of one bucket (the number of training
  samples, the output dimension). Arrays are padded to the bucket's largest value and masked.
- ``traced``: a float hyperparameter passed to the program as an array (lr, gamma, alpha, ...);
  changing its value never recompiles. A traced string parameter (the arithmetic ``op``) is
  passed as the index of its value in ``choices``.
- ``seed``: selects the random draws; runs sharing a seed (and shapes) share data.
- ``alias``: an alternative way of giving another parameter (``lam`` for ``n_train``); the task
  turns it into the canonical parameter before planning.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from groksweep.errors import SpecError

__all__ = ["MAX_STEPS", "Param", "SpecError", "human_bytes", "unknown_name_error"]

Role = Literal["static", "padded", "traced", "seed", "alias"]


@dataclass(frozen=True)
class Param:
    """A parameter a sweep may set, as a fixed value or as an axis."""

    type: type
    default: Any
    role: Role
    doc: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None

    def validate(self, name: str, value: Any) -> Any:
        """Return ``value`` converted to the declared type, or raise a one-line SpecError.
        numpy scalars count as the Python numbers and strings they hold."""
        value = value.item() if isinstance(value, np.generic) else value
        if self.type is str:
            if not isinstance(value, str):
                raise SpecError(f"{name} must be a string, got {_short(value)}")
            if self.choices and value not in self.choices:
                raise SpecError(
                    f"{name} must be one of {', '.join(self.choices)}; got {_short(value)}"
                )
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{name} must be a number, got {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{name} must be finite, got {value!r}")
        if self.type is int:
            if value != int(value):
                raise SpecError(f"{name} must be an integer, got {value!r}")
            value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:
                raise SpecError(f"{name} is too large, got {_short(value)}") from None
        if self.gt is not None and not value > self.gt:
            raise SpecError(f"{name} must be > {_bound(self.gt)}, got {_short(value)}")
        if self.ge is not None and not value >= self.ge:
            raise SpecError(f"{name} must be >= {_bound(self.ge)}, got {_short(value)}")
        if self.lt is not None and not value < self.lt:
            raise SpecError(f"{name} must be < {_bound(self.lt)}, got {_short(value)}")
        if self.le is not None and not value <= self.le:
            raise SpecError(f"{name} must be <= {_bound(self.le)}, got {_short(value)}")
        return value


def _bound(x: float) -> str:
    """A range bound as written: integers exactly (2**32 as 4,294,967,296), floats with %g."""
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to fit a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def human_bytes(n: float) -> str:
    """A byte count for a message: 512 B, 3.0 KiB, 1.25 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def unknown_name_error(kind: str, name: str, known: list[str]) -> SpecError:
    """A SpecError naming an unknown ``name`` and suggesting the closest valid one."""
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid names: {', '.join(known)}"
    return SpecError(f"unknown {kind} {name!r}{hint}")


SEED = Param(
    int, 0, "seed", "random seed: selects data, teacher and initial student", ge=0, lt=2**32
)
DTYPE = Param(str, "float32", "static", "floating-point precision", choices=("float32", "float64"))
METHOD = Param(
    str,
    "auto",
    "static",
    "how runs advance: step (gradient steps), spectral (exact closed form, linear task with gd), "
    "or auto (spectral where it applies)",
    choices=("auto", "step", "spectral"),
)
MAX_STEPS = {"step": 2**31 - 1, "spectral": 2**53}
"""The largest step count of each method: gradient steps loop in an int32 counter (and 2^31
steps of even the smallest model take hours); the spectral method's closed form takes the count
as a float, exact up to 2^53 in float64."""
PRECISION = Param(
    str,
    "float32",
    "static",
    "arithmetic of float32 matrix products on accelerators: float32 (exact), tensorfloat32 or "
    "bfloat16 (faster, 10 and 7 mantissa bits); CPUs always compute in float32",
    choices=("float32", "tensorfloat32", "bfloat16"),
)
