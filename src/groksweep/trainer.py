"""The compiled trainer: every run of a chunk, every step and every evaluation, in one program.

A bucket's random draws are one small program, ``jit(vmap(task.sample))`` of the groups' seeds
(once per group); the training program is ``jit`` of::

    shared = vmap(vmap(task.share))(draws, ...)       # once per family (e.g. one N_tr)
    state  = per_run(setup)                           # model, optimizer state, run constants
    metrics at time 0 = per_run(task.evaluate)
    scan over blocks of log points:
        scan over the block's log points:             # method "step"
            state = per_run(advance to the log point) # fori_loop of gradient steps
        or vmap over the block's log points:          # method "spectral"
            model = per_run(task.jump)(initial model, log point)
        metrics = vmap over the block(per_run(task.evaluate))
    first non-finite = index of the first log point with a non-finite loss or weights

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

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from groksweep.measures import compute, needs_initial_model
from groksweep.optim import make_optimizer
from groksweep.params import MAX_STEPS
from groksweep.plan import Bucket
from groksweep.tasks import Task
from groksweep.tasks.base import merge_data, task_identity

_traces = 0
_block_hook: list[Callable[[int], None]] = []


def trace_count() -> int:
    """How many times a bucket program has been traced (compiled) in this process."""
    return _traces


def train(
    task: Task,
    bucket: Bucket,
    times: np.ndarray,
    eps: np.ndarray,
    on_block: Callable[[int], None] | None = None,
    measures: tuple[str, ...] = (),
    block: int = 1,
) -> dict[str, np.ndarray]:
    """Train every run of ``bucket``; each metric comes back as
    (groups, families, slots, time, ...), and ``diverged_at`` as (groups, families, slots), int64:
    the first evaluation step at which one of the run's losses (every recorded metric named
    ``*_loss``) or its weights were not finite, -1 for runs that did not diverge.

    ``times`` are the evaluation steps (integers from 0, at most the bucket's method's
    :data:`groksweep.params.MAX_STEPS`; a ValueError otherwise); ``block`` of them are evaluated
    at once (see :func:`groksweep.engine.chunked`). ``on_block(steps)`` is called from the
    running program after each block with the number of steps it took. The number of groups
    must be a multiple of the number of local devices (see :func:`device_count`). ``measures`` names the
    progress measures (:mod:`groksweep.measures`) recorded beside the task's metrics.
    """
    shape = dict(bucket.shape)
    dtype = _float_dtype(shape)
    times = np.asarray(times, np.int64)
    _check_steps(times, shape["method"])
    with jax.enable_x64(dtype == jnp.float64):
        by_group = NamedSharding(_mesh(), PartitionSpec("groups"))
        # The draws come from a program of their own: inside the training program XLA would
        # fuse their generation into each of their uses, drawing a family's data once per family.
        draws = _sampler(task, bucket.shape)(jax.device_put(bucket.seeds, by_group))
        hparams = {
            name: jax.device_put(_hparam_array(task, name, values, dtype), by_group)
            for name, values in bucket.hparams.items()
        }
        # After time 0, blocks of log points; the last is filled up by repeating the final
        # step, evaluated and dropped.
        later = times[1:]
        blocks = -(-len(later) // block)
        targets = np.concatenate([later, np.full(blocks * block - len(later), later[-1])])
        targets = targets.reshape(blocks, block)
        step_type = jnp.int32 if shape["method"] == "step" else dtype
        program = _program(task, bucket.shape, on_block is not None, tuple(measures))
        _block_hook.append(_block_reporter(on_block, targets[:, -1]))
        try:
            # JAX computes float32 products in TF32 on recent GPUs unless told otherwise.
            with jax.default_matmul_precision(shape["precision"]):
                metrics, first = jax.device_get(
                    program(
                        draws, hparams, jnp.asarray(targets, step_type), jnp.asarray(eps, dtype)
                    )
                )
        finally:
            _block_hook.pop()
    out = {name: np.moveaxis(value[: len(times)], 0, 3) for name, value in metrics.items()}
    # The exact step, from the host's int64 times: the program's own copy may be rounded.
    diverged_at = np.where(first < len(times), times[np.minimum(first, len(times) - 1)], -1)
    return out | {"diverged_at": diverged_at.astype(np.int64)}


def _check_steps(times: np.ndarray, method: str) -> None:
    """Refuse evaluation steps the method's program cannot receive exactly; the spec refuses
    them first, this guard keeps a bypass from wrapping or rounding them silently."""
    if times.min() < 0 or times.max() > MAX_STEPS[method]:
        raise ValueError(
            f"evaluation steps must lie in [0, {MAX_STEPS[method]}] for method {method!r}, "
            f"got up to {times.max()}"
        )


def _block_reporter(on_block: Callable[[int], None] | None, ends: np.ndarray) -> Callable:
    """The host's side of the progress callback: the program reports a block's index, and the
    steps it took come from the host's int64 ``ends`` of the blocks, exact for every method."""
    if on_block is None:
        return lambda index: None
    steps = np.diff(ends, prepend=0)
    return lambda index: on_block(int(steps[index]))


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
    task: Task, bucket: Bucket, n_times: int, n_eps: int, measures: tuple[str, ...] = ()
) -> StateBytes:
    """The bytes of :class:`StateBytes` for ``bucket``; nothing is compiled."""
    hparam_names = tuple(bucket.hparams)
    return _state_bytes(task, bucket.shape, hparam_names, n_times, n_eps, tuple(measures))


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

    return cached


@_cached_by_identity
def _state_bytes(
    task: Task,
    shape_items: tuple[tuple[str, Any], ...],
    hparam_names: tuple[str, ...],
    n_times: int,
    n_eps: int,
    measures: tuple[str, ...],
) -> StateBytes:
    """:func:`state_bytes`, cached by shape: tracing the shapes costs tens of milliseconds, as
    much as a whole short spectral sweep."""
    shape = dict(shape_items)
    task = task.bind(shape)
    dtype = _float_dtype(shape)
    with jax.enable_x64(dtype == jnp.float64):
        hp = {
            n: jax.ShapeDtypeStruct((), jnp.int32 if _is_int(task, n) else dtype)
            for n in hparam_names
        }
        draws = jax.eval_shape(lambda: task.sample(jax.random.key(0), shape, dtype))
        shared = jax.eval_shape(lambda d, h: task.share(d, h, shape), draws, hp)
        setup = functools.partial(_setup, task, shape, measures)
        state = jax.eval_shape(setup, merge_data(task, draws, shared), hp)
        eps = jax.ShapeDtypeStruct((n_eps,), dtype)
        evaluation, metrics = jax.make_jaxpr(
            functools.partial(_evaluate, task, measures), return_shape=True
        )(merge_data(task, draws, shared), state, eps)
    # Two copies of the state live across a step (old and new); metrics stack over time.
    per_run = 2 * _bytes(state) + n_times * _bytes(metrics)
    return StateBytes(_bytes(draws), _bytes(shared), per_run, _jaxpr_bytes(evaluation.jaxpr))


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
    opt_state = make_optimizer(shape["optimizer"], hp).init(model)
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
def _sampler(task: Task, shape_items: tuple[tuple[str, Any], ...]) -> Callable:
    """The compiled draws of a bucket's groups, from their seeds."""
    shape = dict(shape_items)
    task = task.bind(shape)
    dtype = _float_dtype(shape)
    return jax.jit(jax.vmap(lambda seed: task.sample(jax.random.key(seed), shape, dtype)))


@_cached_by_identity
def _program(
    task: Task,
    shape_items: tuple[tuple[str, Any], ...],
    report: bool,
    measures: tuple[str, ...],
) -> Callable:
    """The compiled program of a bucket; ``report`` adds the host callback that feeds the
    progress bar (JAX's persistent cache skips programs with callbacks).

    It returns the metrics (time first) and, per run, the index of the first log point with a
    non-finite loss or weights (one past the last log point if none), from which metrics are NaN.
    ``targets`` are the log points after time 0 as (blocks, block): int32 steps for the method
    "step", counts in the float dtype for "spectral" (see the module docstring)."""
    shape = dict(shape_items)
    task = task.bind(shape)

    spectral = shape["method"] == "spectral"

    def jump(data, state, n_steps):
        # n_steps: an integer count in the run's float dtype.
        return task.jump(state["model"], merge_data(task, data, state["run"]), state["hp"], n_steps)

    def advance(data, state, n_steps):
        data = merge_data(task, data, state["run"])
        optimizer = make_optimizer(shape["optimizer"], state["hp"])

        def step(carry):
            model, opt_state = carry
            updates, opt_state = optimizer.update(
                task.gradient(model, data, state["hp"]), opt_state, model
            )
            return optax.apply_updates(model, updates), opt_state

        model, opt_state = _repeat(step, n_steps, (state["model"], state["opt"]))
        return state | {"model": model, "opt": opt_state}

    evaluate = functools.partial(_evaluate, task, measures)

    def program(draws, hparams, targets, eps):
        global _traces
        _traces += 1
        family_hp = {name: hparams[name][:, :, 0] for name in task.shared_by}
        share = lambda d, h: task.share(d, h, shape)  # noqa: E731
        families = hparams["lr"].shape[1]  # explicit: a task may share by no parameter
        shared = jax.vmap(jax.vmap(share, in_axes=(None, 0), axis_size=families))(draws, family_hp)
        state = _per_run(task, functools.partial(_setup, task, shape, measures))(
            draws, shared, hparams
        )

        def advance_to(carry, target):
            state, step = carry
            state = _per_run(task, advance)(draws, shared, state, target - step)
            return (state, target), state["model"]

        def observe(state, model):
            """Metrics of one log point, and whether the run's losses and weights are finite."""
            state = state | {"model": model}
            metrics = _per_run(task, evaluate)(draws, shared, state, eps)
            finite = _per_run(task, _finite)(draws, shared, state) & _losses_finite(metrics)
            return metrics, finite

        def block(carry, xs):
            """Advance through a block of log points, then evaluate them all at once: the
            evaluations of a block batch into matrix products ``block`` times wider. A spectral
            jump goes to every log point of the block straight from the initial model, so the
            block's jumps are one matrix product too."""
            targets, index = xs
            if spectral:
                models = jax.vmap(lambda n: _per_run(task, jump)(draws, shared, state, n))(targets)
                carry = (state, targets[-1])
            else:
                carry, models = lax.scan(advance_to, carry, targets)
            if report:
                # The block's index: the host knows its steps exactly (see _block_reporter).
                jax.debug.callback(_report_block, index)
            return carry, jax.vmap(functools.partial(observe, carry[0]))(models)

        # Time 0 beside setup, where XLA computes both alike: a centred predictor is then
        # exactly 0, not rounding noise (which would break its argmax ties).
        initial = observe(state, state["model"])
        start = (state, jnp.zeros((), targets.dtype))
        _, later = lax.scan(block, start, (targets, jnp.arange(len(targets))))
        flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
        metrics, finite = jax.tree.map(
            lambda a, b: jnp.concatenate([a[None], flat(b)]), initial, later
        )
        # A run is diverged from its first evaluation with non-finite loss or weights on.
        n_times = 1 + targets.size
        index = jnp.arange(n_times).reshape(-1, 1, 1, 1)
        first = jnp.min(jnp.where(finite, n_times, index), axis=0)
        gone = index >= first
        metrics = jax.tree.map(lambda m: jnp.where(_expand(gone, m), jnp.nan, m), metrics)
        return metrics, first

    return jax.jit(program)


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


def _expand(mask: jax.Array, like: jax.Array) -> jax.Array:
    """``mask`` (groups, families, slots) broadcast against a (..., time?, extra) metric."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def _report_block(index: Any) -> None:
    _block_hook[-1](int(index))
