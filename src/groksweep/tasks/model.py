"""Sweep your own model: a task from an equinox model, a data function and a loss.

A :class:`ModelTask` subclass gives

- ``params``: its parameters (:class:`~groksweep.params.Param`, with the roles of
  :mod:`groksweep.params`); a ``padded`` parameter ``n_train`` is the training-set size, whose
  rows the engine masks, so runs with different sizes share one compiled program;
- ``init(key, shape)``: the initial model, an ``equinox.Module`` acting on *one* example. Its
  floating-point arrays are trained; every other field (sizes, activation functions) is static;
- ``data(key, shape, dtype)``: a dict of ``x_train``, ``y_train`` (``shape["n_train"]`` rows),
  ``x_test`` and ``y_test``, drawn from ``key`` with the prefix-stable helpers of
  :mod:`groksweep.tasks.draws` (or loaded) so that a run with fewer training samples sees a
  prefix of a larger one's;
- ``loss``: ``"mse"`` (mean over outputs of the squared error), ``"cross_entropy"`` (integer
  labels, or probabilities), or a function ``(prediction, target) -> loss`` of one example;
- ``accuracy``: ``"argmax"`` (the largest output is the label), ``"sign"`` (the output's sign is
  the target's) or ``"threshold"`` (squared error below each ``eps``);

and the engine gives the rest: batching over the grid, padding and masks, optax optimizers with
traced hyperparameters (weight decay ``gamma`` included), the recorded metrics ``train_loss``,
``test_loss``, ``train_acc``, ``test_acc`` and ``weight_norm`` (accuracies exact in float32),
grokking times, resumable sweeps, figures and the command line. Optional: ``extra_metrics``
for metrics of your own (declare them in ``metrics``).

Keys: the model is drawn from the seed's stream :attr:`~groksweep.tasks.base.Stream.MODEL` and
the data from :attr:`~groksweep.tasks.base.Stream.DATA`, so every run of a seed starts from the
same model and sees the same data whatever its hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from groksweep.errors import SpecError
from groksweep.tasks.base import PyTree, Shape, Stream, Task, masked_mean, row_mask, stream

LOSSES = ("mse", "cross_entropy")
ACCURACIES = ("argmax", "sign", "threshold")


class ModelTask(Task):
    """Base class of high-level tasks (see the module docstring)."""

    loss: ClassVar[str | Callable[[Array, Array], Array]] = "mse"
    accuracy: ClassVar[str] = "argmax"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "metrics" not in cls.__dict__:
            acc = ("eps",) if cls.accuracy == "threshold" else ()
            cls.metrics = {
                "train_loss": (),
                "test_loss": (),
                "train_acc": acc,
                "test_acc": acc,
                "weight_norm": (),
            }
        padded = "n_train" in getattr(cls, "params", {})
        if "shared_by" not in cls.__dict__ and padded:
            cls.shared_by = ("n_train",)  # one row mask per training-set size

    # --- what a subclass gives -------------------------------------------------------------
    def init(self, key: Array, shape: Shape) -> eqx.Module:
        """The initial model, acting on one example."""
        raise NotImplementedError

    def data(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        """``x_train``, ``y_train`` (``shape["n_train"]`` rows), ``x_test``, ``y_test``."""
        raise NotImplementedError

    def extra_metrics(self, model: eqx.Module, data: Mapping[str, Array], hp) -> dict[str, Array]:
        """Metrics beyond the standard ones, keyed as declared in ``metrics``."""
        return {}

    # --- the low-level task, written once -----------------------------------------------------
    def sample(self, key, shape, dtype):
        model = self.init(stream(key, Stream.MODEL), shape)
        arrays = jax.tree.leaves(eqx.filter(model, eqx.is_array))
        if any(not jnp.issubdtype(a.dtype, jnp.inexact) for a in arrays):
            raise SpecError(
                f"task {self.name!r}: the model holds integer arrays; every array of a "
                "ModelTask's model is trained, so keep integers as static fields"
            )
        trained = eqx.filter(model, eqx.is_inexact_array)
        trained = jax.tree.map(lambda w: w.astype(dtype), trained)
        return dict(self.data(stream(key, Stream.DATA), shape, dtype)) | {"model": trained}

    def share(self, draws, hp, shape):
        rows = draws["x_train"].shape[0]
        n = hp["n_train"] if "n_train" in hp else rows
        return {"rows": row_mask(rows, n, _float_of(draws))}

    def setup(self, data, hp, shape):
        return data["model"], {}

    def objective(self, model, data, hp):
        loss = self._per_example_loss(self.predict(model, data["x_train"]), data["y_train"])
        return masked_mean(loss, data["rows"])

    def evaluate(self, model, data, hp, eps):
        metrics = {}
        for role, rows in (("train", data["rows"]), ("test", None)):
            prediction, target = self.predict(model, data[f"x_{role}"]), data[f"y_{role}"]
            mask = jnp.ones(target.shape[0]) if rows is None else rows
            metrics[f"{role}_loss"] = masked_mean(self._per_example_loss(prediction, target), mask)
            metrics[f"{role}_acc"] = masked_mean(self._correct(prediction, target, eps), mask)
        leaves = jax.tree.leaves(model)
        norm = jnp.sqrt(sum(jnp.sum(w**2) for w in leaves))
        full = eqx.combine(model, self._static())
        return metrics | {"weight_norm": norm} | self.extra_metrics(full, data, hp)

    def probe(self, model, data, hp, n):
        prediction = self.predict(model, data["x_test"][:n])
        return prediction.reshape(n, -1), _as_outputs(data["y_test"][:n], prediction)

    def predict(self, model: PyTree, x: Array) -> Array:
        """The model's outputs on a batch ``x`` (the model acts on one example)."""
        return jax.vmap(eqx.combine(model, self._static()))(x)

    def _static(self) -> PyTree:
        """The model's untrained fields, from the shape of an initial model (nothing drawn)."""
        skeleton = eqx.filter_eval_shape(self.init, jax.random.key(0), self.shape)
        is_array = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
        return eqx.filter(skeleton, is_array, inverse=True)

    def _per_example_loss(self, prediction: Array, target: Array) -> Array:
        if callable(self.loss):
            return jax.vmap(self.loss)(prediction, target)
        if self.loss == "cross_entropy":
            if jnp.issubdtype(target.dtype, jnp.integer):
                return optax.softmax_cross_entropy_with_integer_labels(prediction, target)
            return optax.softmax_cross_entropy(prediction, target)
        error = (prediction - _as_outputs(target, prediction)) ** 2
        return error.reshape(error.shape[0], -1).mean(axis=1)

    def _correct(self, prediction: Array, target: Array, eps: Array) -> Array:
        dtype = prediction.dtype
        if self.accuracy == "argmax":
            label = target if jnp.issubdtype(target.dtype, jnp.integer) else target.argmax(-1)
            return (prediction.argmax(-1) == label).astype(dtype)
        if self.accuracy == "sign":
            flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
            return jnp.all(jnp.sign(flat(prediction)) == jnp.sign(flat(target)), 1).astype(dtype)
        error = (prediction - _as_outputs(target, prediction)) ** 2
        return (error.reshape(error.shape[0], -1).mean(axis=1)[:, None] < eps).astype(dtype)


def _as_outputs(target: Array, prediction: Array) -> Array:
    """Integer labels as one-hot rows of the prediction's width; other targets shaped like it."""
    if jnp.issubdtype(target.dtype, jnp.integer) and target.ndim == 1 and prediction.ndim == 2:
        return jax.nn.one_hot(target, prediction.shape[-1], dtype=prediction.dtype)
    return target.reshape(prediction.shape).astype(prediction.dtype)


def _float_of(draws: Mapping[str, Array]) -> Any:
    floats = [a.dtype for a in jax.tree.leaves(draws) if jnp.issubdtype(a.dtype, jnp.floating)]
    return floats[0] if floats else jnp.float32
