"""The compiled trainer: every run of a chunk, every step and every evaluation, in a pair of
programs the host calls segment by segment.

A bucket's random draws are one small program, ``jit(vmap(task.sample))`` of the groups' seeds
(once per group); training is two programs, ``start`` and ``segment``, ``jit`` of::

    start:
        shared = vmap(vmap(task.share))(draws, ...)   # once per family (e.g. one N_tr), kept
        state  = per_run(setup)                       # model, optimizer state, run constants
        metrics at time 0 = per_run(task.evaluate)
    segment, units first..stop (traced):              # called again and again by the host
        fori_loop over the units:
            method "spectral", a unit is a block of log points:
                models = vmap over the block(per_run(task.jump)(initial model, log point))
                metrics = vmap over the block(per_run(task.evaluate))
            method "step", a unit is a piece of at most `piece` gradient steps:
                state = per_run(advance towards the next log point)  # fori_loop of steps
                on reaching a block's last log point: metrics of the block, as above

The carried state between calls holds the metrics and finiteness of every log point, and the
models of the log points a sweep keeps (``save_models``, written as each is reached); on the
host, the first non-finite log point of a run becomes its ``diverged_at``. See
:class:`ChunkTraining` for why a segment's length never recompiles nor changes a bit.

Evaluation steps are int64 on the host, where they label the results and where the index of the
first non-finite log point becomes ``diverged_at``. The program receives them as int32 for the
method "step" (a loop of gradient steps; the spec refuses more than 2**31 - 1 steps), and in the
run's float dtype for "spectral", whose jumps take any count: float64 holds every integer up to
2**53 exactly, and float32 rounds a count past 2**24 by at most 6e-8 relative, as its arithmetic
rounds n log(1 - q) anyway.

``per_run`` is the one place where single-run functions are batched: ``vmap`` over groups, over
the families of a group, then over the runs of a family. A family's data enters the innermost
map unbatched, which turns its runs' steps into one matrix-matrix product; evaluating a block of
log points at once does the same for the evaluations of thin models.

Hyperparameters and log points are traced arrays, so new values of lr, gamma, alpha, noise,
steps, ... reuse the compiled program; only a new shape (bucket, chunk size, block, number of
log points or thresholds) compiles again. The group axis is sharded over all local devices.
Compiled programs are cached by the task's :func:`~groksweep.tasks.base.task_identity` and the
shape, so a task whose code changed (or was registered anew) compiles its own program.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from groksweep import crossings
from groksweep.measures import compute, needs_initial_model
from groksweep.optim import make_optimizer
from groksweep.params import MAX_STEPS
from groksweep.plan import Bucket
from groksweep.tasks import Task
from groksweep.tasks.base import merge_data, task_identity


def trace_count() -> int:
    """How many bucket programs have been compiled in this process: one per bucket shape and
    chunk shape (each is a pair, the start and the segment, see :class:`ChunkTraining`)."""
    return sum(len(program.compiled) for program in _program.cache.values())


def train(
    task: Task,
    bucket: Bucket,
    times: np.ndarray,
    eps: np.ndarray,
    on_segment: Callable[[int], None] | None = None,
    measures: tuple[str, ...] = (),
    block: int = 1,
) -> dict[str, np.ndarray]:
    """Train every run of ``bucket`` in one segment; each metric comes back as
    (groups, families, slots, time, ...), and ``diverged_at`` as (groups, families, slots), int64:
    the first evaluation step at which one of the run's losses (every recorded metric named
    ``*_loss``) or its weights were not finite, -1 for runs that did not diverge.

    ``times`` are the evaluation steps (integers from 0, at most the bucket's method's
    :data:`groksweep.params.MAX_STEPS`; a ValueError otherwise); ``block`` of them are evaluated
    at once (see :func:`groksweep.engine.chunked`). ``on_segment(steps)`` hears the steps the
    segment took. The number of groups must be a multiple of the number of local devices (see
    :func:`device_count`). ``measures`` names the progress measures (:mod:`groksweep.measures`)
    recorded beside the task's metrics. :class:`ChunkTraining` trains in several segments.
    """
    training = ChunkTraining(task, bucket, times, eps, measures, block)
    steps = training.advance(training.units)
    if on_segment is not None:
        on_segment(steps)
    return training.result()


class ChunkTraining:
    """One chunk's training, advanced by the host a segment at a time.

    The chunk's carried state (each run's model, optimizer state and constants, its metrics and
    finiteness at every log point so far, where it stands) lives on the devices between
    segments. A segment is one call of the bucket's compiled segment program, which runs a
    ``fori_loop`` over *units* of work whose first and last index are traced: one program
    serves every segment length, so no segment recompiles. A unit is a block of log points
    for the spectral method (jumps, then the block's evaluations); for gradient steps it is a
    piece of at most ``piece`` steps towards the next log point, and a block's evaluations
    follow the piece that reaches its last log point. Pieces keep a segment short however far
    apart log-spaced points are (the last block of a schedule can hold most of its steps); the
    piece size depends only on ``steps`` (:func:`piece_size`), so the units, and every bit the
    program computes, are the same however a chunk is cut into segments.

    :meth:`state` copies the carried state to the host (to save it), :meth:`restore` puts a
    saved one back. Constructing it compiles the bucket's pair of programs for this chunk
    shape, once per process (``compile_seconds``: 0 when already compiled), and starts the
    chunk: time 0 is evaluated beside setup, where XLA computes both alike (a centred predictor
    is then exactly 0, not rounding noise, which would break its argmax ties).
    """

    def __init__(
        self,
        task: Task,
        bucket: Bucket,
        times: np.ndarray,
        eps: np.ndarray,
        measures: tuple[str, ...] = (),
        block: int = 1,
        keep: np.ndarray | None = None,
    ):
        shape = dict(bucket.shape)
        self._task, self._shape_items = task, bucket.shape
        self._dtype = _float_dtype(shape)
        self._times = np.asarray(times, np.int64)
        self.kept_points = np.zeros(0, np.int64) if keep is None else np.asarray(keep, np.int64)
        """indices into ``times`` of the log points whose models are kept (:meth:`kept_models`)"""
        _check_steps(self._times, shape["method"])
        # After time 0, blocks of log points; the last is filled up by repeating the final
        # step, evaluated and dropped.
        later = self._times[1:]
        blocks = -(-len(later) // block)
        targets = np.concatenate([later, np.full(blocks * block - len(later), later[-1])])
        self.block = block
        # Each unit's steps and evaluations, from the host's int64 times: exact for every method.
        gaps = np.diff(targets, prepend=0)
        if shape["method"] == "spectral":
            self.piece = 0
            self.unit_steps = gaps.reshape(blocks, block).sum(axis=1)
            self.unit_evaluations = np.full(blocks, block)
        else:
            self.piece = piece_size(int(later[-1]))
            pieces = np.maximum(1, -(-gaps // self.piece))
            ends = [np.minimum(np.arange(n + 1) * self.piece, g) for n, g in zip(pieces, gaps)]
            self.unit_steps = np.concatenate([np.diff(e) for e in ends])
            ends_block = (np.arange(len(targets)) % block == block - 1) * block
            self.unit_evaluations = np.zeros(len(self.unit_steps), np.int64)
            self.unit_evaluations[np.cumsum(pieces) - 1] = ends_block
        self.units = len(self.unit_steps)
        self.done = 0
        """units done"""
        self._contexts = (
            functools.partial(jax.enable_x64, self._dtype == jnp.float64),
            # JAX computes float32 products in TF32 on recent GPUs unless told otherwise.
            functools.partial(jax.default_matmul_precision, shape["precision"]),
        )
        with self._context():
            by_group = NamedSharding(_mesh(), PartitionSpec("groups"))
            # The draws come from a program of their own: inside the training program XLA
            # would fuse their generation into each of their uses, drawing a family's data once
            # per family.
            self._draws = draws_program(task, bucket.shape)(jax.device_put(bucket.seeds, by_group))
            self._hparams = {
                name: jax.device_put(_hparam_array(task, name, values, self._dtype), by_group)
                for name, values in bucket.hparams.items()
            }
            step_type = jnp.int32 if shape["method"] == "step" else self._dtype
            self._targets = jnp.asarray(targets.reshape(blocks, block), step_type)
            self._eps = jnp.asarray(eps, self._dtype)
            self._kept = jnp.asarray(self.kept_points, jnp.int32)
        program = _program(task, bucket.shape, tuple(measures))
        args = (self._draws, self._hparams, self._targets, self._eps, self._kept)
        (self._start, self._segment), self.compile_seconds = self._wait(program.compile, *args)
        # The family's shared data stays on the devices for the chunk's segments.
        self._carry, self._shared = self._wait(self._start, *args)

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for context in self._contexts:
            stack.enter_context(context())
        return stack

    @property
    def finished(self) -> bool:
        return self.done == self.units

    def steps_done(self) -> int:
        """The steps of the units done (a spectral jump's count as its steps)."""
        return int(self.unit_steps[: self.done].sum())

    def advance(self, n_units: int) -> int:
        """Run the next ``n_units`` units (at most those left) in one call; return the steps
        they took."""
        stop = min(self.done + n_units, self.units)
        first, last, piece = np.int32(self.done), np.int32(stop), np.int32(self.piece)
        args = (self._draws, self._shared, self._carry, self._targets, self._eps, self._kept)
        self._carry = self._wait(self._segment, *args, first, last, piece)
        steps = int(self.unit_steps[self.done : stop].sum())
        self.done = stop
        return steps

    def _wait(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, computed to the end, in a thread of its own: the main thread only
        waits, so that its signal handlers run at once (a second Ctrl-C aborts the wait) while
        XLA compiles or computes."""
        outcome: dict[str, Any] = {}
        finished = threading.Event()

        def call() -> None:
            try:
                with self._context():
                    outcome["value"] = jax.block_until_ready(fn(*args))
            except BaseException as err:  # noqa: BLE001 - re-raised in the waiting thread
                outcome["error"] = err
            finally:
                finished.set()

        threading.Thread(target=call, name=_COMPUTING, daemon=True).start()
        finished.wait()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def state(self) -> dict[str, np.ndarray]:
        """The carried state on the host, as named arrays (see :meth:`restore`)."""
        leaves = jax.device_get(jax.tree.leaves(self._carry))
        return {f"state_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"state_{i:04d}": leaf.shape for i, leaf in enumerate(jax.tree.leaves(self._carry))}

    def restore(self, done: int, state: dict[str, np.ndarray]) -> bool:
        """Continue from a saved :meth:`state` after ``done`` units; False (and nothing
        changed) when the arrays are not this chunk's state."""
        like = jax.tree.leaves(self._carry)
        names = [f"state_{i:04d}" for i in range(len(like))]
        if not 0 < done < self.units or sorted(state) != names:
            return False
        if any(
            state[n].shape != leaf.shape or state[n].dtype != leaf.dtype
            for n, leaf in zip(names, like)
        ):
            return False
        with self._context():
            leaves = [jax.device_put(state[n], leaf.sharding) for n, leaf in zip(names, like)]
        self._carry = jax.tree.unflatten(jax.tree.structure(self._carry), leaves)
        self.done = done
        return True

    def result(self) -> dict[str, np.ndarray]:
        """The metrics of every log point (see :func:`train`); the chunk must be finished."""
        carry = jax.device_get(self._carry)
        n_times = len(self._times)
        history = carry["history"]
        metrics = {name: value[:, :, :, :n_times] for name, value in history["metrics"].items()}
        # A run is diverged from its first evaluation with non-finite loss or weights on.
        finite = history["finite"][..., :n_times]
        first = np.where(finite.all(axis=-1), n_times, np.argmin(finite, axis=-1))
        gone = np.arange(n_times) >= first[..., None]
        for name, value in metrics.items():
            extra = (1,) * (value.ndim - gone.ndim)
            metrics[name] = np.where(gone.reshape(gone.shape + extra), np.nan, value)
        # The exact step, from the host's int64 times: the program's own copy may be rounded.
        diverged_at = np.where(first < n_times, self._times[np.minimum(first, n_times - 1)], -1)
        return metrics | {"diverged_at": diverged_at.astype(np.int64)}

    def solve_crossings(
        self, metrics: dict[str, np.ndarray], level: float, rtol: float
    ) -> dict[str, np.ndarray]:
        """The exact first crossings of ``level`` by each run's train and test accuracies
        (:mod:`groksweep.crossings`), bracketed by the finished chunk's log points, whose
        ``metrics`` (:meth:`result`) the caller already holds:
        ``t_train_solved`` and ``t_test_solved`` as (groups, families, slots, thresholds...)
        steps, NaN where never reached, and ``solve_iterations``, the bisection iterations the
        chunk took. The method must be ``spectral``: its state keeps the initial model."""
        found = {}
        for role in crossings.ROLES:
            accuracy = metrics[f"{role}_acc"]
            if accuracy.ndim == 4:  # no thresholds: one
                accuracy = accuracy[..., None]
            found[role] = crossings.brackets(accuracy, self._times, level)
        lo, hi, start = (np.stack([found[r][i] for r in crossings.ROLES], 3) for i in range(3))
        # (groups, families, slots, lo/hi, roles, thresholds): a run's state holds its brackets.
        bracket = np.stack([lo, hi], 3).astype(self._dtype)
        with self._context():
            bracket = jax.device_put(bracket, NamedSharding(_mesh(), PartitionSpec("groups")))
        state = self._carry["state"] | {"bracket": bracket}
        solver = _solver(self._task, self._shape_items)
        level, rtol = np.asarray(level, self._dtype), np.asarray(rtol, self._dtype)
        solved, iterations = self._wait(
            solver, self._draws, self._shared, state, self._eps, level, rtol
        )
        times = np.where(lo < hi, np.asarray(solved, np.float64), start)
        shape = metrics["train_acc"].shape[:3] + metrics["train_acc"].shape[4:]
        return {
            f"t_{role}_solved": times[:, :, :, r].reshape(shape)
            for r, role in enumerate(crossings.ROLES)
        } | {"solve_iterations": int(np.max(iterations))}

    def kept_models(self) -> Any:
        """The models of the kept log points (``keep``), on the host: the pytree of a run's
        model whose leaves are (groups, families, slots, kept points, ...); the chunk must be
        finished."""
        return jax.device_get(self._carry["kept"])


def _check_steps(times: np.ndarray, method: str) -> None:
    """Refuse evaluation steps the method's program cannot receive exactly; the spec refuses
    them first, this guard keeps a bypass from wrapping or rounding them silently."""
    if times.min() < 0 or times.max() > MAX_STEPS[method]:
        raise ValueError(
            f"evaluation steps must lie in [0, {MAX_STEPS[method]}] for method {method!r}, "
            f"got up to {times.max()}"
        )


_COMPUTING = "groksweep computation"


def computing() -> bool:
    """Whether a compilation or segment is still running: one whose wait a second Ctrl-C
    abandoned (see :meth:`ChunkTraining._wait`)."""
    return any(t.name == _COMPUTING and t.is_alive() for t in threading.enumerate())


PIECES = 1024
"""Pieces a chunk's gradient steps are cut into, at most (one more per log point)."""


def piece_size(steps: int) -> int:
    """The most gradient steps a unit of :class:`ChunkTraining` takes: a multiple of the
    unrolled loop (:data:`UNROLL`), at least 64 (a unit has a cost of its own), and a
    :data:`PIECES`-th of ``steps``."""
    return UNROLL * max(64 // UNROLL, -(-steps // (PIECES * UNROLL)))


def device_count() -> int:
    """Local devices the group axis is sharded over."""
    return jax.local_device_count()


class StateBytes(NamedTuple):
    """Memory a bucket's program holds, from the shapes it would produce."""

    per_group: int
    """the seed's draws"""
    per_family: int
    """the family's shared data"""
    per_run: int
    """model, optimizer state, run constants and the recorded metrics of every log point"""
    per_evaluation: int
    """the intermediate values of one run's evaluation at one log point (an upper bound: the
    sum over the unfused program), held once per log point of an evaluation block"""


def state_bytes(
    task: Task,
    bucket: Bucket,
    n_times: int,
    n_eps: int,
    measures: tuple[str, ...] = (),
    n_kept: int = 0,
) -> StateBytes:
    """The bytes of :class:`StateBytes` for ``bucket``, whose runs keep the models of ``n_kept``
    log points; nothing is compiled."""
    hparam_names = tuple(bucket.hparams)
    return _state_bytes(task, bucket.shape, hparam_names, n_times, n_eps, tuple(measures), n_kept)


def _cached_by_identity(build: Callable) -> Callable:
    """Cache ``build(task, *key)`` on ``(task_identity(task), *key)``: not on the task's name,
    whose class may be registered anew (fixed) in the same process, and without the registry.
    The first task of an identity is the one the cached value uses."""
    cache: dict[tuple, Any] = {}

    @functools.wraps(build)
    def cached(task: Task, *key: Any) -> Any:
        full_key = (task_identity(task), *key)
        if full_key not in cache:
            cache[full_key] = build(task, *key)
        return cache[full_key]

    cached.cache = cache
    return cached


@_cached_by_identity
def _state_bytes(
    task: Task,
    shape_items: tuple[tuple[str, Any], ...],
    hparam_names: tuple[str, ...],
    n_times: int,
    n_eps: int,
    measures: tuple[str, ...],
    n_kept: int,
) -> StateBytes:
    """:func:`state_bytes`, cached by shape: tracing the shapes costs tens of milliseconds, as
    much as a whole short spectral sweep."""
    shape = dict(shape_items)
    task = task.bind(shape)
    dtype = _float_dtype(shape)
    with jax.enable_x64(dtype == jnp.float64):
        draws, shared, state = _run_shapes(task, shape, hparam_names, measures)
        eps = jax.ShapeDtypeStruct((n_eps,), dtype)
        evaluation, metrics = jax.make_jaxpr(
            functools.partial(_evaluate, task, measures), return_shape=True
        )(merge_data(task, draws, shared), state, eps)
    # Two copies of the state live across a step (old and new); metrics stack over time, and
    # so do the kept models.
    per_run = 2 * _bytes(state) + n_times * _bytes(metrics) + n_kept * _bytes(state["model"])
    return StateBytes(_bytes(draws), _bytes(shared), per_run, _jaxpr_bytes(evaluation.jaxpr))


@_cached_by_identity
def model_shapes(
    task: Task, shape_items: tuple[tuple[str, Any], ...], hparam_names: tuple[str, ...]
) -> Any:
    """The shapes and dtypes of one run's model (``jax.ShapeDtypeStruct`` leaves) in a bucket
    of this shape and these hyperparameters: the pytree the carry holds and saved models
    rebuild (:mod:`groksweep.saved_models`); nothing is computed."""
    shape = dict(shape_items)
    with jax.enable_x64(_float_dtype(shape) == jnp.float64):
        return _run_shapes(task.bind(shape), shape, hparam_names, ())[2]["model"]


def _run_shapes(task: Task, shape: dict, hparam_names: tuple[str, ...], measures) -> tuple:
    """The shapes of a run's draws, family data and state, for ``task`` bound to ``shape``."""
    dtype = _float_dtype(shape)
    hp = {
        n: jax.ShapeDtypeStruct((), jnp.int32 if _is_int(task, n) else dtype)
        for n in hparam_names
    }
    draws = jax.eval_shape(lambda: task.sample(jax.random.key(0), shape, dtype))
    shared = jax.eval_shape(lambda d, h: task.share(d, h, shape), draws, hp)
    setup = functools.partial(_setup, task, shape, measures)
    return draws, shared, jax.eval_shape(setup, merge_data(task, draws, shared), hp)


def _bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _jaxpr_bytes(jaxpr: jax.extend.core.Jaxpr) -> int:
    """Bytes of every value a jaxpr computes, inner jaxprs (jit, custom derivatives) included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += _bytes([v.aval for v in eqn.outvars if hasattr(v.aval, "dtype")])
        for param in eqn.params.values():
            if isinstance(param, jax.extend.core.ClosedJaxpr):
                total += _jaxpr_bytes(param.jaxpr)
            elif isinstance(param, jax.extend.core.Jaxpr):
                total += _jaxpr_bytes(param)
    return total


def _float_dtype(shape: dict) -> Any:
    """The bucket's float dtype (its ``dtype`` parameter)."""
    return jnp.float64 if shape["dtype"] == "float64" else jnp.float32


def _is_int(task: Task, name: str) -> bool:
    """Integer hyperparameters: padded sizes, and traced choices (passed as their index)."""
    param = task.params.get(name)
    return param is not None and param.type in (int, str)


def _hparam_array(task: Task, name: str, values: np.ndarray, dtype) -> np.ndarray:
    param = task.params.get(name)
    if param is not None and param.type is str:
        return np.vectorize(param.choices.index, otypes=[np.int32])(values)
    return np.asarray(values, np.int32 if _is_int(task, name) else dtype)


def _mesh() -> Mesh:
    return Mesh(np.array(jax.local_devices()), ("groups",))


def _per_run(task: Task, fn: Callable) -> Callable:
    """Batch ``fn(data, run_state, *shared_args)`` over groups, families and runs.

    ``data`` is the group's draws merged with the family's shared data (:func:`merge_data`); it
    enters the map over a family's runs unbatched. ``shared_args`` are the same for every run."""

    def batched(draws, shared, state, *args):
        def per_family(d, sh, st):
            return jax.vmap(lambda one: fn(merge_data(task, d, sh), one, *args))(st)

        def per_group(d, sh, st):
            return jax.vmap(lambda sh1, st1: per_family(d, sh1, st1))(sh, st)

        return jax.vmap(per_group)(draws, shared, state)

    return batched


def _setup(task: Task, shape: dict, measures: tuple[str, ...], data: dict, hp: dict) -> dict:
    model, run = task.setup(data, hp, shape)
    opt_state = make_optimizer(shape["optimizer"], hp, shape).init(model)
    state = {"model": model, "opt": opt_state, "run": run, "hp": hp}
    return state | ({"initial": model} if needs_initial_model(measures) else {})


def _evaluate(task: Task, measures: tuple[str, ...], data: dict, state: dict, eps) -> dict:
    """The task's metrics and the named measures of one run at one log point."""
    model, data = state["model"], merge_data(task, data, state["run"])
    metrics = task.evaluate(model, data, state["hp"], eps)
    for name in measures:
        if name not in metrics:
            metrics[name] = compute(name, task, model, state.get("initial"), data, state["hp"])
    return metrics


@_cached_by_identity
def draws_program(task: Task, shape_items: tuple[tuple[str, Any], ...]) -> Callable:
    """The compiled draws of a bucket's groups, from their seeds (cached per task and shape:
    :func:`groksweep.testing.check_task` reuses the compilation the runs make)."""
    shape = dict(shape_items)
    task = task.bind(shape)
    dtype = _float_dtype(shape)
    return jax.jit(jax.vmap(lambda seed: task.sample(jax.random.key(seed), shape, dtype)))


@_cached_by_identity
def _solver(task: Task, shape_items: tuple[tuple[str, Any], ...]) -> Callable:
    """The compiled crossing solver of a bucket (:meth:`ChunkTraining.solve_crossings`)."""
    task = task.bind(dict(shape_items))

    def solve(data, state, eps, level, rtol):
        data = merge_data(task, data, state["run"])
        return crossings.solve_run(task, data, state, eps, level, rtol)

    return jax.jit(_per_run(task, solve))


@_cached_by_identity
def _program(
    task: Task, shape_items: tuple[tuple[str, Any], ...], measures: tuple[str, ...]
) -> _BucketProgram:
    return _BucketProgram(task, shape_items, measures)


class _BucketProgram:
    """The compiled programs of a bucket, by chunk shape: ``start(draws, hparams, targets,
    eps, kept)`` computes the families' shared data, sets every run up and evaluates time 0;
    ``segment(draws, shared, carry, targets, eps, kept, first, stop, piece)`` advances the
    carried state over units ``first`` to ``stop`` (traced; see :class:`ChunkTraining`).

    The carry holds the runs' state and, group first like every array of the chunk, the metrics
    and finiteness of every log point: (groups, families, slots, time, ...), written block by
    block; when stepping, also the next log point, the step reached and the models of the
    block's log points reached so far. ``targets`` are the log points after time 0 as (blocks,
    block): int32 steps for the method "step", counts in the float dtype for "spectral" (see
    the module docstring). ``kept`` (int32) are the indices of the log points whose models the
    carry keeps, as (groups, families, slots, kept, ...) under ``"kept"``, each written when
    its log point is reached; without any, the carry has no ``"kept"``."""

    def __init__(
        self, task: Task, shape_items: tuple[tuple[str, Any], ...], measures: tuple[str, ...]
    ):
        self.compiled: dict[Any, tuple[Any, Any]] = {}
        shape = dict(shape_items)
        task = task.bind(shape)
        spectral = shape["method"] == "spectral"

        def jump(data, state, n_steps):
            # n_steps: an integer count in the run's float dtype.
            data = merge_data(task, data, state["run"])
            return task.jump(state["model"], data, state["hp"], n_steps)

        def advance(data, state, n_steps):
            data = merge_data(task, data, state["run"])
            optimizer = make_optimizer(shape["optimizer"], state["hp"], shape)

            def step(carry):
                model, opt_state = carry
                updates, opt_state = optimizer.update(
                    task.gradient(model, data, state["hp"]), opt_state, model
                )
                return optax.apply_updates(model, updates), opt_state

            model, opt_state = _repeat(step, n_steps, (state["model"], state["opt"]))
            return state | {"model": model, "opt": opt_state}

        evaluate = functools.partial(_evaluate, task, measures)

        def share(draws, hparams):
            family_hp = {name: hparams[name][:, :, 0] for name in task.shared_by}
            one = lambda d, h: task.share(d, h, shape)  # noqa: E731
            families = hparams["lr"].shape[1]  # explicit: a task may share by no parameter
            return jax.vmap(jax.vmap(one, in_axes=(None, 0), axis_size=families))(draws, family_hp)

        def observe(draws, shared, state, model, eps):
            """Metrics of one log point, and whether the run's losses and weights are finite."""
            state = state | {"model": model}
            metrics = _per_run(task, evaluate)(draws, shared, state, eps)
            finite = _per_run(task, _finite)(draws, shared, state) & _losses_finite(metrics)
            return metrics, finite

        def record(draws, shared, state, models, eps, history, first_point):
            """Evaluate a block's models at once and write them at ``first_point`` on: the
            evaluations of a block batch into matrix products ``block`` times wider."""
            metrics, finite = jax.vmap(lambda m: observe(draws, shared, state, m, eps))(models)
            write = lambda old, a: lax.dynamic_update_slice_in_dim(  # noqa: E731
                old, jnp.moveaxis(a, 0, 3), first_point, 3
            )
            return jax.tree.map(write, history, {"metrics": metrics, "finite": finite})

        def keep_models(carry, models, kept, first_point):
            """Write the models of log points ``first_point`` on (a leading axis) into their
            kept slots; the others, and every point before 0, go nowhere (a scatter that drops
            out-of-range slots)."""
            if "kept" not in carry:
                return carry
            points = first_point + jnp.arange(jax.tree.leaves(models)[0].shape[0])
            match = points[:, None] == kept[None, :]
            slots = jnp.where(match.any(axis=1), match.argmax(axis=1), kept.size)
            write = lambda old, new: old.at[:, :, :, slots].set(  # noqa: E731
                jnp.moveaxis(new, 0, 3), mode="drop"
            )
            return carry | {"kept": jax.tree.map(write, carry["kept"], models)}

        def start(draws, hparams, targets, eps, kept):
            shared = share(draws, hparams)
            state = _per_run(task, functools.partial(_setup, task, shape, measures))(
                draws, shared, hparams
            )
            metrics, finite = observe(draws, shared, state, state["model"], eps)
            # Every log point's slot, time 0 filled in.
            n_times = 1 + targets.size
            history = jax.tree.map(
                lambda a: jnp.zeros((*a.shape[:3], n_times, *a.shape[3:]), a.dtype)
                .at[:, :, :, 0]
                .set(a),
                {"metrics": metrics, "finite": finite},
            )
            carry = {"state": state, "history": history}
            if kept.size:
                carry["kept"] = jax.tree.map(
                    lambda a: jnp.zeros((*a.shape[:3], kept.size, *a.shape[3:]), a.dtype),
                    state["model"],
                )
                initial = jax.tree.map(lambda a: a[None], state["model"])
                carry = keep_models(carry, initial, kept, 0)
            if spectral:
                return carry, shared
            block = targets.shape[1]
            pending = jax.tree.map(lambda a: jnp.zeros((block, *a.shape), a.dtype), state["model"])
            position = {"point": jnp.int32(0), "step": jnp.zeros((), targets.dtype)}
            return carry | {"pending": pending} | position, shared

        def segment(draws, shared, carry, targets, eps, kept, first, stop, piece):
            block = targets.shape[1]

            def jump_block(index, carry):
                """A spectral jump goes to every log point of the block straight from the
                initial model, so the block's jumps are one matrix product too."""
                state = carry["state"]
                models = jax.vmap(lambda n: _per_run(task, jump)(draws, shared, state, n))(
                    targets[index]
                )
                at = 1 + index * block
                history = record(draws, shared, state, models, eps, carry["history"], at)
                return keep_models(carry, models, kept, at) | {"history": history}

            def step_piece(_, carry):
                """At most ``piece`` steps towards the next log point; on reaching it, keep its
                model, and on reaching a block's last, evaluate the block."""
                point, step = carry["point"], carry["step"]
                target = targets.reshape(-1)[point]
                n_steps = jnp.minimum(target - step, piece)
                state = _per_run(task, advance)(draws, shared, carry["state"], n_steps)
                reached = step + n_steps == target
                slot = point % block
                keep = lambda pending: jax.tree.map(  # noqa: E731
                    lambda p, m: lax.dynamic_update_index_in_dim(p, m, slot, 0),
                    pending,
                    state["model"],
                )
                pending = lax.cond(reached, keep, lambda pending: pending, carry["pending"])
                history = lax.cond(
                    reached & (slot == block - 1),
                    lambda h: record(draws, shared, state, pending, eps, h, point + 2 - block),
                    lambda h: h,
                    carry["history"],
                )
                # Log point point + 1 (0 is the start) is kept on reaching it, no point otherwise.
                reached_point = jnp.where(reached, point + 1, -1)
                model = jax.tree.map(lambda a: a[None], state["model"])
                return keep_models(carry, model, kept, reached_point) | {
                    "state": state,
                    "history": history,
                    "pending": pending,
                    "point": point + reached,
                    "step": step + n_steps,
                }

            return lax.fori_loop(first, stop, jump_block if spectral else step_piece, carry)

        self._start = jax.jit(start)
        self._segment = jax.jit(segment, donate_argnames="carry")

    def compile(self, draws, hparams, targets, eps, kept) -> tuple[tuple[Any, Any], float]:
        """The pair of compiled programs for these arguments' shapes, and the seconds spent
        compiling them now (0 when compiled before in this process; loading them from JAX's
        persistent compilation cache counts, and takes less)."""
        args = (draws, hparams, targets, eps, kept)
        signature = (
            jax.tree.structure(args),
            tuple((a.shape, a.dtype, a.sharding) for a in jax.tree.leaves(args)),
        )
        if signature in self.compiled:
            return self.compiled[signature], 0.0
        began = time.perf_counter()
        start = self._start.lower(*args).compile()
        index = jax.ShapeDtypeStruct((), jnp.int32)
        carry, shared = start.out_info
        segment = self._segment.lower(
            draws, shared, carry, targets, eps, kept, index, index, index
        ).compile()
        self.compiled[signature] = (start, segment)
        return (start, segment), time.perf_counter() - began


UNROLL = 8


def _repeat(fn: Callable, n: jax.Array, carry: Any) -> Any:
    """``fn`` applied ``n`` (traced) times. The loop body holds ``UNROLL`` applications, which
    amortises the per-iteration cost of a while loop over small steps."""
    unrolled = lambda _, c: functools.reduce(lambda acc, _: fn(acc), range(UNROLL), c)  # noqa: E731
    carry = lax.fori_loop(0, n // UNROLL, unrolled, carry)
    return lax.fori_loop(0, n % UNROLL, lambda _, c: fn(c), carry)


def _finite(data: dict, state: dict) -> jax.Array:
    leaves = jax.tree.leaves(state["model"])
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _losses_finite(metrics: dict) -> jax.Array:
    """Whether each run's recorded losses (metrics named ``*_loss``, all their entries) are
    finite: a test loss can overflow while the train loss does not. (groups, families, slots)"""
    finite = [
        jnp.all(jnp.isfinite(m).reshape(*m.shape[:3], -1), axis=-1)
        for name, m in metrics.items()
        if name.endswith("_loss")
    ]
    return functools.reduce(jnp.logical_and, finite, jnp.bool_(True))
