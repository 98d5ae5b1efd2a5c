"""The task interface that every model implements, and the random draws tasks share.

A task describes one run: its declared parameters, the random draws of one seed, the data
runs derive from them, the objective that gradient steps follow, and the metrics recorded at
each log point. All functions act on a *single* run, family or seed; the trainer batches them
with ``vmap`` in one place (:mod:`groksweep.trainer`).

Shapes come in a ``shape`` mapping holding every static parameter and, for padded parameters,
the bucket's largest value; the run's own padded values arrive in ``hp`` as traced integers, so
tasks build masks from them.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import linecache
import marshal
import sys
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import Array

from groksweep.params import Param, SpecError

Shape = Mapping[str, Any]
PyTree = Any


class Task:
    """Base class of tasks. Subclasses set the class variables and implement the methods.

    A run's data is a dict merged from three levels, each computed once where it is shared:
    the seed's ``draws`` (:meth:`sample`), the family's ``shared`` data (:meth:`share`) and
    the run's own constants (second output of :meth:`setup`). A later level replaces a name of
    an earlier one only where :attr:`overrides` says so (:func:`merge_data`).
    """

    name: ClassVar[str]
    params: ClassVar[dict[str, Param]]
    """Task parameters. Engine parameters (seed, dtype, method) and optimizer ones are added by
    the spec."""
    metrics: ClassVar[dict[str, tuple[str, ...]]]
    """Recorded metrics: data variable name -> its dims besides the grid axes and time."""
    measures: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Optional task-specific progress measures (name -> dims besides the grid axes and time),
    recorded only when a sweep names them in ``measures``; computed by :meth:`measure`. The
    generic measures of :mod:`groksweep.measures` are available to every task."""
    max_padding: ClassVar[dict[str, float]] = {}
    """For padded parameters: the largest ratio of a bucket's largest to its smallest
    :meth:`padding_cost` before the planner opens a new shape bucket. Missing means
    unlimited."""
    shared_by: ClassVar[tuple[str, ...]] = ()
    """Parameters whose values (with the seed) fix the data :meth:`share` derives; runs that
    agree on them form a family and step together as one matrix-matrix product."""
    optimizer_defaults: ClassVar[dict[str, Any]] = {}
    """The task's own defaults for the optimizer parameters (optimizer, lr, gamma, betas), where
    its classic setting differs from the engine's full-batch gd at lr 0.01."""
    methods: ClassVar[tuple[str, ...]] = ("step",)
    """Ways to advance a run: ``step`` (gradient steps) and, where implemented, ``spectral``
    (:meth:`jump`, exact closed-form advance for gradient descent)."""

    overrides: ClassVar[tuple[str, ...]] = ()
    """Data names a later level may replace (:func:`merge_data`): e.g. correlated inputs that
    :meth:`share` derives from the draws' ``x_train``. Any other name given by two levels is an
    error, so no level shadows another by accident."""

    shape: Shape = {}
    """The bucket's static shape, set by :meth:`bind`, for methods that take no ``shape``."""

    def bind(self, shape: Shape) -> Task:
        """A copy of the task that knows the bucket's static shape as ``self.shape``; the trainer
        calls the methods of the bound copy."""
        bound = copy.copy(self)
        bound.shape = dict(shape)
        return bound

    def padding_cost(self, name: str, value: int, static: Mapping[str, Any]) -> float:
        """The work of a run whose padded parameter ``name`` is ``value``, up to a factor, given
        the run's ``static`` parameters; :attr:`max_padding` bounds its ratios within a bucket.
        By default the value itself."""
        return value

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        """Turn aliases into canonical parameters and check cross-parameter constraints.

        ``values`` holds every declared parameter (defaults filled in); ``given`` names those the
        sweep set explicitly. Returns the run's canonical values, without aliases.
        """
        return values

    def sample(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        """All random draws of one seed at the bucket's padded shape.

        Draws must depend only on the key and on the shapes that define them, never on padding:
        use :func:`indexed_normal` so that a row or column is the same in every bucket.
        """
        raise NotImplementedError

    def share(
        self, draws: dict[str, Array], hp: Mapping[str, Array], shape: Shape
    ) -> dict[str, Array]:
        """Data derived from the draws and the ``shared_by`` values in ``hp``, once per family."""
        return {}

    def setup(
        self, data: dict[str, Array], hp: Mapping[str, Array], shape: Shape
    ) -> tuple[PyTree, dict]:
        """Return ``(model, run)``: the initial trainable pytree and the run's own constants."""
        raise NotImplementedError

    def objective(self, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array]) -> Array:
        """Scalar whose gradient is the training-loss gradient (may differ by a constant)."""
        raise NotImplementedError

    def gradient(self, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array]) -> PyTree:
        """Gradient of :meth:`objective`; autodiff unless a task knows a cheaper closed form."""
        return jax.grad(self.objective)(model, data, hp)

    def evaluate(
        self, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array], eps: Array
    ) -> dict[str, Array]:
        """Metrics at one log point, keyed as in :attr:`metrics`."""
        raise NotImplementedError

    def measure(
        self, name: str, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array]
    ) -> Array:
        """The task-specific measure ``name`` (a key of :attr:`measures`) at one log point."""
        raise NotImplementedError

    def probe(
        self, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array], n: int
    ) -> tuple[Array, Array]:
        """``(outputs, targets)``, each (n, outputs): the predictor and its targets on the first
        ``n`` test inputs. Generic measures (NTK alignment) differentiate ``outputs`` with
        respect to ``model``."""
        raise NotImplementedError

    def jump(
        self, model: PyTree, data: dict[str, Array], hp: Mapping[str, Array], n_steps: Array
    ) -> PyTree:
        """The model after ``n_steps`` steps of gradient descent, in closed form (``spectral``)."""
        raise NotImplementedError


def indexed_normal(
    key: Array, counts: tuple[int, ...], shape: tuple[int, ...], dtype: Any
) -> Array:
    """Standard normals of shape ``counts + shape`` whose leading entries do not depend on the
    ``counts``: entry ``[i, j, ...]`` is the same for every ``counts`` that contain it. So padded
    and unpadded runs, and runs with N_tr = 200 and 400, share draws. Drawn in float32 whatever
    the dtype, so float32 and float64 runs share their draws (:mod:`groksweep.tasks.draws` has
    the other distributions)."""
    normal = lambda k, s: jax.random.normal(k, s, jnp.float32)  # noqa: E731
    return indexed(key, counts, shape, normal).astype(dtype)


def indexed(key: Array, counts: tuple[int, ...], shape: tuple[int, ...], draw: Callable) -> Array:
    """``draw(key, counts + shape)`` made prefix-stable in every count: partitionable threefry
    derives each entry from its flat index alone, which makes the first count prefix-stable;
    every further count is a ``fold_in`` of its index."""
    with jax.threefry_partitionable(True):
        if len(counts) <= 1:
            return draw(key, (*counts, *shape))
        last = lambda j: indexed(jax.random.fold_in(key, j), counts[:-1], shape, draw)  # noqa: E731
        return jax.vmap(last, out_axes=len(counts) - 1)(jnp.arange(counts[-1]))


class Stream(IntEnum):
    """The streams of a seed's key (``fold_in`` numbers), one per kind of draw. Tasks with the
    same inputs use the same streams, so they see the same inputs for a seed: the linear and MLP
    teacher-student tasks share ``X_TRAIN``, ``LABEL_NOISE`` and ``X_TEST``."""

    WEIGHTS = 0
    """the linear task's teacher and student"""
    X_TRAIN = 1
    LABEL_NOISE = 2
    X_TEST = 3
    OUTPUT_LAYER = 4
    """an MLP's output layer"""
    HIDDEN_LAYERS = 5
    """an MLP's hidden layer l is stream HIDDEN_LAYERS + l"""
    MODEL = 100
    """a high-level task's initial model (:class:`~groksweep.tasks.model.ModelTask`)"""
    DATA = 101
    """a high-level task's data"""
    SPLIT = 102
    """a high-level task's random train/test split of a table of examples"""
    INPUT_ROTATION = 1000
    """the eigenbasis of power-law inputs"""


def stream(key: Array, which: Stream, offset: int = 0) -> Array:
    """The key of stream ``which`` (plus ``offset``, for numbered members such as layers)."""
    return jax.random.fold_in(key, int(which) + offset)


def merge_data(task: Task, *levels: Mapping[str, Array]) -> dict[str, Array]:
    """One run's data from its levels (the seed's draws, the family's shared data, the run's
    constants), later levels replacing earlier ones only for the names the task declares in
    :attr:`Task.overrides`; any other name given twice is a one-line SpecError (at trace time)."""
    merged: dict[str, Array] = {}
    for level in levels:
        clash = merged.keys() & level.keys()
        if clash - set(task.overrides):
            raise SpecError(
                f"task {task.name!r}: data {sorted(clash - set(task.overrides))} given by two "
                "levels (draws, shared, run); rename it, or list it in the task's overrides"
            )
        merged |= level
    return merged


def row_mask(size: int, n: Array, dtype: Any) -> Array:
    """1 for the first ``n`` (a traced count) of ``size`` padded rows or columns, 0 after: the
    mask of every padded parameter."""
    return (jnp.arange(size) < n).astype(dtype)


def masked_mean(values: Array, mask: Array) -> Array:
    """The mean of ``values`` over the entries where ``mask`` is 1 (along the first axis): a
    sum divided by a count, and exactly 1 where they are equal, so an accuracy of all-correct
    rows is 1 in float32 (a product with weights mask/n can round to 1.00001 or 0.99999)."""
    mask = mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim)).astype(values.dtype)
    total, count = jnp.sum(values * mask, axis=0), jnp.maximum(jnp.sum(mask), 1)
    # XLA may divide as a product with 1/count, which rounds n (1/n) below 1 for some n.
    return jnp.where(total == count, 1, total / count).astype(values.dtype)


def check_alias(given: set[str], alias: str, canonical: str) -> None:
    """Refuse a sweep that sets both a parameter and its alias."""
    if alias in given and canonical in given:
        raise SpecError(f"give either {alias} or {canonical}, not both")


DEFAULT_LAM = 0.5

REGRESSION_METRICS: dict[str, tuple[str, ...]] = {
    "train_loss": (),
    "test_loss": (),
    "train_acc": ("eps",),
    "test_acc": ("eps",),
    "weight_norm": (),
}
"""Metrics of the teacher-student regression tasks: losses, accuracies per threshold eps, and
the student's weight norm."""


def sample_metrics(train_err: Array, test_err: Array, rows: Array, eps: Array) -> dict:
    """Losses (mean per-sample error) and accuracies (fraction of samples with error below each
    threshold in ``eps``) on the train and test sets, from per-sample errors; ``rows`` masks the
    training samples beyond the run's own N_tr.

    Means are products with the samples' weights: on a CPU, XLA reduces a compare several times
    more slowly than it multiplies a matrix by a vector."""
    train_w = rows / jnp.sum(rows)
    test_w = jnp.full(test_err.shape, 1.0 / test_err.shape[0], test_err.dtype)
    below = lambda err: (err[:, None] < eps).astype(err.dtype)  # noqa: E731
    return {
        "train_loss": train_w @ train_err,
        "test_loss": test_w @ test_err,
        "train_acc": train_w @ below(train_err),
        "test_acc": test_w @ below(test_err),
    }


def resolve_n_train(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """Replace the alias ``lam`` by ``n_train = round(d_in / lam)`` (lam defaults to
    ``DEFAULT_LAM`` unless n_train is given); refuse both, and an n_train rounding to 0."""
    check_alias(given, "lam", "n_train")
    values = dict(values)
    lam = values.pop("lam")
    if "n_train" not in given:
        lam = DEFAULT_LAM if lam is None else lam
        values["n_train"] = round(values["d_in"] / lam)
        if values["n_train"] < 1:
            raise SpecError(
                f"lam={lam:g} gives n_train = round(d_in/lam) = 0 at d_in={values['d_in']}"
            )
    return values


OUTPUT_SCALE_PARAMS: dict[str, Param] = {
    "predictor": Param(
        str, "centred", "static",
        "centred: alpha (f(x) - f(x; theta_0)); plain: alpha f(x)",
        choices=("centred", "plain"),
    ),
    "alpha": Param(float, 1.0, "traced", "output scale of the predictor (lazy: large)", gt=0),
    "init_scale": Param(float, 1.0, "traced", "multiplier of the initial (student) weights", gt=0),
}
"""Kumar et al.'s output scale (App. 8.1) of the network tasks: the centred or plain predictor,
its scale alpha and the initial-weight multiplier."""


INPUT_PARAMS: dict[str, Param] = {
    "input_spectrum": Param(
        str, "identity", "static",
        "input covariance: identity, or power_law eigenvalues k^-decay in a random basis",
        choices=("identity", "power_law"),
    ),
    "decay": Param(float, 1.0, "traced", "exponent of the power_law input spectrum", ge=0),
}
"""Input covariance of the teacher-student tasks (train and test inputs alike)."""


def input_draws(key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
    """The seed's input eigenbasis ``input_rotation``, a Haar-random d_in x d_in orthogonal
    matrix, drawn only for power-law inputs."""
    if shape.get("input_spectrum", "identity") == "identity":  # shapes may predate the param
        return {}
    d_in = shape["d_in"]
    rotation = indexed_normal(stream(key, Stream.INPUT_ROTATION), (d_in,), (d_in,), dtype)
    q, r = jnp.linalg.qr(rotation)
    return {"input_rotation": q * jnp.sign(jnp.diagonal(r))}  # the sign fix makes it Haar


def power_law_spectrum(decay: Array, d_in: int, dtype: Any) -> Array:
    """Eigenvalues k^-decay, k = 1 .. d_in, scaled to mean 1 so that E|x|^2 = d_in as for
    identity inputs."""
    k = jnp.arange(1, d_in + 1, dtype=dtype)
    eigvals = k ** (-decay)
    return eigvals / jnp.mean(eigvals)


def correlated_inputs(draws: dict[str, Array], hp: Mapping[str, Array], shape: Shape) -> dict:
    """Train and test inputs with covariance R diag(k^-decay) R^T, from the standard normal
    ``x_train``, ``x_test`` and the rotation ``input_rotation`` of the seed's draws:
    x = z diag(sqrt(eigvals)) R^T. Empty for identity inputs, which need no change."""
    if shape.get("input_spectrum", "identity") == "identity":  # shapes may predate the param
        return {}
    dtype = draws["x_train"].dtype
    scale = jnp.sqrt(power_law_spectrum(hp["decay"], shape["d_in"], dtype))
    mix = scale[:, None] * draws["input_rotation"].T
    return {"x_train": draws["x_train"] @ mix, "x_test": draws["x_test"] @ mix}


def task_identity(task: Task) -> str:
    """What makes a task's results what they are: its qualified name, and either its declared
    ``version`` or a hash of the code of every class it inherits from (the source of their
    modules, so that module-level helpers count too; the compiled code where no source exists).

    Saved chunks and compiled programs are keyed by it, so that editing a task's code never
    reuses results or programs of the old code."""
    cls = type(task)
    name = f"{cls.__module__}.{cls.__qualname__}"
    declared = getattr(task, "version", None)
    if declared is not None:
        return f"{name}@{declared}"
    digest = hashlib.sha256()
    for klass in cls.__mro__[:-1]:  # every class but object
        digest.update(_code_of(klass))
    return f"{name}@{digest.hexdigest()[:16]}"


def _code_of(klass: type) -> bytes:
    module = sys.modules.get(klass.__module__)
    try:
        # A module edited on disk since it was read: drop linecache's stale copy.
        linecache.checkcache(getattr(module, "__file__", None))
        return inspect.getsource(module).encode() if module else b""
    except (OSError, TypeError):
        # Defined where no source is kept (python -c, exec): the bytecode of its methods.
        codes = [
            marshal.dumps(value.__code__)
            for _, value in sorted(vars(klass).items())
            if hasattr(value, "__code__")
        ]
        return klass.__qualname__.encode() + b"".join(codes)
