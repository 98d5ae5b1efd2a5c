"""Sweep your own model: a task from an equinox model, a data function and a loss.

A :class:`ModelTask` subclass gives

- ``params``: its parameters (:class:`~groksweep.params.Param`, with the roles of
  :mod:`groksweep.params`);
- ``init(key, shape)``: the initial model, an ``equinox.Module`` acting on *one* example. Its
  floating-point arrays are trained; every other field (sizes, activation functions) is static;
- ``data(key, shape, dtype)``: the seed's data, drawn from ``key`` with the prefix-stable helpers
  of :mod:`groksweep.tasks.draws` (or loaded), in one of two forms:

  - *split*: ``x_train``, ``y_train`` (``shape["n_train"]`` rows), ``x_test`` and ``y_test``. A
    ``padded`` parameter ``n_train`` is the training-set size, whose rows the engine masks, so
    runs with different sizes share one compiled program and a run with fewer training samples
    sees a prefix of a larger one's;
  - *table*: ``x`` and ``y``, every example of a finite dataset, and a 0/1 mask ``train`` of the
    examples trained on (the others are the test set). Without a ``train`` of its own the data
    gets ``split_key``, the raw key data of the seed's split stream, for a split in
    ``family_data``; with neither, a ``traced`` parameter ``frac`` makes the engine train on a
    random fraction ``frac`` of the examples, nested (a larger frac adds examples) and the
    same for every run of the seed;
- ``loss``: ``"mse"`` (mean over outputs of the squared error), ``"cross_entropy"`` (integer
  labels, or probabilities), or a function ``(prediction, target) -> loss`` of one example;
- ``accuracy``: ``"argmax"`` (the largest output is the label), ``"sign"`` (the output's sign is
  the target's) or ``"threshold"`` (squared error below each ``eps``);

and the engine gives the rest: batching over the grid, padding and masks, optax optimizers with
traced hyperparameters (weight decay ``gamma`` included), the recorded metrics ``train_loss``,
``test_loss``, ``train_acc``, ``test_acc`` and ``weight_norm`` (accuracies exact in float32),
grokking times, resumable sweeps, figures and the command line.

Optional hooks: ``apply(model, x, hp)`` where the forward pass reads traced hyperparameters
(default ``model(x)``); ``apply_batch(model, x, hp)`` where a batch has a faster form than
``apply`` on each example (default: ``vmap`` of ``apply``); ``family_data(data, hp, shape)`` for
data that depends on traced hyperparameters (labels of a traced operation, a train mask of a
traced fraction; ``hp`` holds the task's ``shared_by`` parameters); ``extra_metrics`` for
metrics of your own (declare them in ``metrics``); ``measures`` with ``measure``, as for any
task.

Lazy and rich training for any model: a task that declares the parameters of
:data:`~groksweep.tasks.base.OUTPUT_SCALE_PARAMS` (``predictor``, ``alpha``, ``init_scale``)
gets Kumar et al.'s output scale (App. 8.1): the initial model's arrays are multiplied by
``init_scale`` and the prediction is alpha (f(x) - f(x; theta_0)) (``predictor = "centred"``,
zero at t = 0) or alpha f(x) (``"plain"``), f(x; theta_0) computed once per run.

Keys: the model is drawn from the seed's stream :attr:`~groksweep.tasks.base.Stream.MODEL`, the
data from :attr:`~groksweep.tasks.base.Stream.DATA` and the engine's random split from
:attr:`~groksweep.tasks.base.Stream.SPLIT`, so every run of a seed starts from the same model
and sees the same data whatever its hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array, random

from groksweep.errors import SpecError
from groksweep.tasks.base import PyTree, Shape, Stream, Task, masked_mean, row_mask, stream
from groksweep.tasks.draws import subset

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
        if "shared_by" not in cls.__dict__:
            # One row mask per training-set size, one split per fraction.
            cls.shared_by = tuple(n for n in ("n_train", "frac") if n in getattr(cls, "params", {}))

    # --- what a subclass gives -------------------------------------------------------------
    def init(self, key: Array, shape: Shape) -> eqx.Module:
        """The initial model, acting on one example."""
        raise NotImplementedError

    def data(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        """The seed's data: ``x_train``, ``y_train`` (``shape["n_train"]`` rows), ``x_test``,
        ``y_test``; or ``x``, ``y`` and optionally ``train`` (a table of examples)."""
        raise NotImplementedError

    def family_data(
        self, data: Mapping[str, Array], hp: Mapping[str, Array], shape: Shape
    ) -> dict[str, Array]:
        """Data that depends on the traced ``shared_by`` hyperparameters in ``hp``."""
        return {}

    def apply(self, model: eqx.Module, x: Array, hp: Mapping[str, Array]) -> Array:
        """The model's outputs on one example ``x``."""
        return model(x)

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
        data = dict(self.data(stream(key, Stream.DATA), shape, dtype))
        if _is_table(data) and "train" not in data:
            # The split is cut in share, where the traced frac is known.
            data["split_key"] = random.key_data(stream(key, Stream.SPLIT))
        return data | {"model": trained}

    def share(self, draws, hp, shape):
        family = self.family_data(draws, hp, shape)
        if not _is_table(draws):
            rows = draws["x_train"].shape[0]
            n = hp.get("n_train", rows)
            return family | {"rows": row_mask(rows, n, _float_of(draws))}
        if "train" not in draws and "train" not in family:
            if "frac" not in hp:
                raise SpecError(
                    f"task {self.name!r}: a table of examples (x, y) needs a train mask from "
                    "data or family_data, or a traced parameter frac"
                )
            n = draws["y"].shape[0]
            key = random.wrap_key_data(draws["split_key"])
            family["train"] = subset(key, n, jnp.round(hp["frac"] * n)).astype(hp["frac"].dtype)
        return family

    def setup(self, data, hp, shape):
        model = data["model"]
        if "init_scale" in hp:
            model = jax.tree.map(lambda w: hp["init_scale"] * w, model)
        run = {}
        if shape.get("predictor") == "centred":
            for x in _inputs(data):
                run[f"f0_{x}"] = self._forward(model, data[x], hp)
        return model, run

    def objective(self, model, data, hp):
        (prediction, target, ((_, rows), *_)), *_ = self._examples(model, data, hp, train_only=True)
        loss = self._per_example_loss(prediction, target)
        return jnp.sum(loss * rows) / jnp.maximum(jnp.sum(rows), 1)

    def evaluate(self, model, data, hp, eps):
        metrics = {}
        for prediction, target, roles in self._examples(model, data, hp):
            loss = self._per_example_loss(prediction, target)
            correct = self._correct(prediction, target, eps)
            for role, rows in roles:
                metrics[f"{role}_loss"] = masked_mean(loss, rows)
                metrics[f"{role}_acc"] = masked_mean(correct, rows)
        leaves = jax.tree.leaves(model)
        norm = jnp.sqrt(sum(jnp.sum(w**2) for w in leaves))
        full = self.as_module(model)
        return metrics | {"weight_norm": norm} | self.extra_metrics(full, data, hp)

    def probe(self, model, data, hp, n):
        if _is_table(data):
            # The held-out examples first (a stable sort on the mask), then training ones.
            pick = jnp.argsort(data["train"], stable=True)[:n]
            x, target, f0 = data["x"][pick], data["y"][pick], data.get("f0_x")
            f0 = None if f0 is None else f0[pick]
        else:
            x, target, f0 = data["x_test"][:n], data["y_test"][:n], data.get("f0_x_test")
            f0 = None if f0 is None else f0[:n]
        prediction = self._predict(model, x, f0, hp)
        return prediction.reshape(n, -1), _as_outputs(target, prediction).reshape(n, -1)

    def apply_batch(self, model: eqx.Module, x: Array, hp: Mapping[str, Array]) -> Array:
        """The model's outputs on a batch ``x``: :meth:`apply` on each example, unless a task
        knows a faster batched form."""
        return jax.vmap(lambda one: self.apply(model, one, hp))(x)

    def _forward(self, model: PyTree, x: Array, hp: Mapping[str, Array]) -> Array:
        return self.apply_batch(self.as_module(model), x, hp)

    def _predict(self, model, x, f0, hp) -> Array:
        """The predictor: alpha (f(x) - f0) or alpha f(x), where the task declares them."""
        f = self._forward(model, x, hp)
        if f0 is not None:
            f = f - f0
        return hp["alpha"] * f if "alpha" in hp else f

    def _examples(self, model, data, hp, train_only: bool = False):
        """``(prediction, target, ((role, mask), ...))``: each set of examples the model is
        evaluated on once, with the masks of the roles (train, test) its examples play."""
        if _is_table(data):
            prediction = self._predict(model, data["x"], data.get("f0_x"), hp)
            train = data["train"]
            return [(prediction, data["y"], (("train", train), ("test", 1 - train)))]
        examples = []
        for role in ("train",) if train_only else ("train", "test"):
            x = f"x_{role}"
            prediction = self._predict(model, data[x], data.get(f"f0_{x}"), hp)
            target = data[f"y_{role}"]
            rows = data["rows"] if role == "train" else jnp.ones(target.shape[0], prediction.dtype)
            examples.append((prediction, target, ((role, rows),)))
        return examples

    def as_module(self, model: PyTree) -> eqx.Module:
        """The equinox module of the engine's ``model``: the engine carries and trains the
        module's arrays only; its other fields (sizes, activations) come back from the
        skeleton of an initial model of the bound shape (nothing drawn)."""
        skeleton = eqx.filter_eval_shape(self.init, jax.random.key(0), self.shape)
        is_array = lambda x: isinstance(x, jax.ShapeDtypeStruct)  # noqa: E731
        return eqx.combine(model, eqx.filter(skeleton, is_array, inverse=True))

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


def _is_table(data: Mapping[str, Array]) -> bool:
    return "x" in data


def _inputs(data: Mapping[str, Array]) -> tuple[str, ...]:
    return ("x",) if _is_table(data) else ("x_train", "x_test")


def _as_outputs(target: Array, prediction: Array) -> Array:
    """Integer labels as one-hot rows of the prediction's width; other targets shaped like it."""
    if jnp.issubdtype(target.dtype, jnp.integer) and target.ndim == 1 and prediction.ndim == 2:
        return jax.nn.one_hot(target, prediction.shape[-1], dtype=prediction.dtype)
    return target.reshape(prediction.shape).astype(prediction.dtype)


def _float_of(draws: Mapping[str, Array]) -> Any:
    floats = [a.dtype for a in jax.tree.leaves(draws) if jnp.issubdtype(a.dtype, jnp.floating)]
    return floats[0] if floats else jnp.float32
