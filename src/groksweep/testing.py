"""The contract suite of a task: what a plugin author runs on their own task in their tests.

``check_task(task, params)`` trains a few tiny runs of ``task`` through the engine and checks
the promises every task makes to it. A broken promise raises :class:`ContractError`, an
``AssertionError`` whose message names the contract, what differed and the usual cause::

    from groksweep.testing import check_task
    from my_tasks import Parity

    def test_parity_keeps_the_task_contract():
        check_task(Parity(), {"n_bits": 6, "n_train": 20, "width": 8})

The contracts (the keys of :data:`CHECKS`), in the order they are checked:

``declaration``
    :func:`groksweep.tasks.registry.check_declaration` passes.
``metrics``
    One run records ``train_loss``, ``train_acc``, ``test_acc`` and every declared metric and
    task measure, each with its declared dims, finite at t = 0; ``evaluate`` returns nothing
    undeclared (the engine would drop it).
``time0``
    Time 0 is deterministic: the run executed twice gives bitwise equal metrics at t = 0, and
    the run's functions traced twice are the same program (same operations and constants), so
    that every compilation of the run computes the same numbers (no host randomness).
``traced``
    New values of every traced parameter, and a new step count, reuse the compiled programs
    (:func:`groksweep.trainer.trace_count` does not grow), of the run alone and of the vmapped
    grid below; and the run's functions traced for the new values are the program traced for
    the old ones, so that the reused program runs the new values (no traced value read as a
    Python number, e.g. one kept from ``resolve``).
``draws``
    ``task.sample`` at the run's padded sizes and at larger ones (every padded parameter
    raised) agrees bitwise on the common prefix of every axis of every draw.
``padding``
    A run padded inside a bucket (a larger value of every padded parameter in the same grid)
    equals the run alone (``gs.run(..., reproducible=True)``: an exact, unpadded bucket).
``vmap``
    A run inside a vmapped grid (two learning rates, two values of a traced ``shared_by``
    parameter where the task has one, two seeds) equals the same run alone; and the runs moved,
    so that the comparison is not one of frozen models.

``padding`` and ``vmap`` share one grid (the padded values are axes of it beside lr and the
seeds) and compare its runs at the base run's padded values with the runs alone: those are
padded and vmapped at once. Where one differs, the same run at the bucket's largest sizes
(vmapped, not padded) is compared with its own run alone as well, to tell the two apart.

Runs use ``dtype = "float64"`` unless ``params`` sets ``dtype``. Padding and batching change
only the order of floating-point sums (padded rows and columns add exact zeros; a batch turns
matrix-vector products into matrix-matrix ones with another blocking), so the two sides of a
comparison differ by a few units of rounding per operation, grown over a few steps by at most
the Lipschitz constant of the step map: below 1e-14 relative in float64 at these sizes (the
built-in tasks show at most 1.1e-15). ``rtol = 1e-10`` (with ``atol = 1e-13`` for values near
0) leaves four orders of magnitude to that, and still fails every bug of masking or padding,
whose errors are 1e-3 and more. In float32 a rounding is 6e-8 (the built-in tasks differ by at
most 5e-7): ``rtol = 1e-4``, ``atol = 1e-6``; an accuracy there may also flip by one sample
whose error lies within rounding of a threshold, so float32 is for tasks that cannot run in
float64.

Cost: two training programs are compiled, the run alone's and the grid's (plus the draws at two
shapes, and a third program only to tell padding from batching once a run differs); every other
run reuses them, and the traces the ``time0`` and ``traced`` checks compare are not compiled.
On a 2-core CPU the built-in tasks take 7-15 s each. Pick ``params`` that make a run small and
that train (a learning rate at which ``steps`` steps change the training loss).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from groksweep import engine, trainer
from groksweep.errors import SpecError
from groksweep.measures import available
from groksweep.params import Param
from groksweep.plan import plan
from groksweep.spec import Sweep, declared_params
from groksweep.tasks import TASKS, Task, get_task
from groksweep.tasks.base import merge_data
from groksweep.tasks.registry import REQUIRED_METRICS, check_declaration

__all__ = ["CHECKS", "TOLERANCE", "ContractError", "ContractReport", "check_task"]

CHECKS: dict[str, str] = {
    "declaration": "the declaration keeps the Task contract",
    "metrics": "every required and declared metric is recorded with its dims, finite at t = 0",
    "time0": "independent runs give bitwise equal metrics at t = 0",
    "traced": "new traced values reuse the compiled program and take effect in it",
    "draws": "random draws are prefix-stable in every padded parameter",
    "padding": "a run padded inside a bucket equals the run alone",
    "vmap": "a run inside a vmapped grid equals the run alone",
}
"""The contracts :func:`check_task` checks, by name, in the order it checks them."""

TOLERANCE: dict[str, tuple[float, float]] = {"float64": (1e-10, 1e-13), "float32": (1e-4, 1e-6)}
"""(rtol, atol) of the comparisons of padded and vmapped runs with runs alone, by dtype (see
the module docstring)."""


class ContractError(AssertionError):
    """``task`` broke the contract ``check`` (a key of :data:`CHECKS`)."""

    def __init__(self, task: str, check: str, detail: str):
        self.task, self.check, self.detail = task, check, detail
        super().__init__(f"task {task!r} breaks the {check!r} contract ({CHECKS[check]}): {detail}")


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_task` checked; every check in ``ran`` held."""

    task: str
    params: dict[str, Any]
    """the base run's parameters, canonical (aliases resolved, dtype included)"""
    ran: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    """check -> why it did not run (no padded parameter, ``skip``)"""
    notes: dict[str, str] = field(default_factory=dict)
    """check -> what it compared, with the largest difference seen"""
    seconds: float = 0.0


def check_task(
    task: Task | str,
    params: Mapping[str, Any] | None = None,
    *,
    steps: int = 4,
    seeds: Sequence[int] = (0, 1),
    eps: Sequence[float] = (1e-3, 1e-1),
    skip: Sequence[str] = (),
) -> ContractReport:
    """Check that ``task`` keeps the contracts of :data:`CHECKS`; raise :class:`ContractError`
    (an AssertionError naming the contract) at the first one it breaks.

    ``params``: fixed parameter values that make a run small (default: the task's
    ``example_params`` attribute if it has one, else its defaults); ``dtype`` defaults to
    ``"float64"``. ``steps``: gradient steps per run, every one evaluated. ``seeds``: at least
    two, the seeds of the vmapped grid (the first is the base run's). ``eps``: accuracy
    thresholds. ``skip``: names of checks not to run. Returns a :class:`ContractReport`.

    A SpecError means that ``params`` do not make a valid sweep. Sweeps register their task
    under its name; the registry is restored afterwards.
    """
    start = time.perf_counter()
    task = get_task(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise TypeError(f"check_task needs a groksweep Task, got {type(task).__name__}")
    if params is None:
        params = getattr(task, "example_params", None) or {}
    for name in skip:
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r} in skip; checks are {', '.join(CHECKS)}")
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be two or more distinct seeds, got {seeds}")
    if int(steps) < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if "seed" in params:
        raise ValueError("params must not set seed; check_task runs the seeds given by seeds=")

    outcome: dict[str, str | None] = {}
    if "declaration" not in skip:
        try:
            check_declaration(task)
        except SpecError as err:
            raise ContractError(
                str(getattr(task, "name", type(task).__name__)), "declaration", str(err)
            ) from None
        outcome["declaration"] = None
    with _registry_restored():
        ctx = _Context(task, dict(params), int(steps), seeds, tuple(eps), set(skip))
        for checks, run in _STEPS:
            if all(c in skip for c in checks):
                continue
            outcome |= run(ctx)
    skipped = {c: "skipped by the caller" for c in skip}
    skipped |= {
        c: n.removeprefix("skipped: ")
        for c, n in outcome.items()
        if n and n.startswith("skipped: ")
    }
    return ContractReport(
        task=task.name,
        params=ctx.base,
        ran=tuple(c for c in CHECKS if c in outcome and c not in skipped),
        skipped=skipped,
        notes={c: n for c, n in outcome.items() if n and c not in skipped},
        seconds=time.perf_counter() - start,
    )


@contextlib.contextmanager
def _registry_restored() -> Iterator[None]:
    """Sweeps register their task object by name: put the registry back as it was."""
    before = dict(TASKS)
    try:
        yield
    finally:
        TASKS.clear()
        TASKS.update(before)


# --- the runs the checks share ------------------------------------------------------------------
class _Context:
    """The task, its base run, and the runs and traces the checks share."""

    def __init__(
        self, task: Task, params: dict, steps: int, seeds: list[int], eps: tuple, skip: set[str]
    ):
        self.task, self.steps, self.seeds, self.eps, self.skip = task, steps, seeds, eps, skip
        self.measures = tuple(task.measures)
        params.setdefault("dtype", "float64")
        if params["dtype"] not in TOLERANCE:
            raise ValueError(f"dtype must be float32 or float64, got {params['dtype']!r}")
        self.dtype = params["dtype"]
        self.rtol, self.atol = TOLERANCE[self.dtype]
        self.declared = declared_params(task)
        given = self.sweep(params, {"seed": [seeds[0]]})
        self.recorded = given.metrics
        """the data variables a run records: metrics, then the task's measures"""
        run = given.runs()[0]
        # The base run in canonical values (aliases resolved), so that any canonical
        # parameter can become an axis.
        self.base = {
            n: v
            for n, v in run.items()
            if n in self.declared
            and n != "seed"
            and self.declared[n].role != "alias"
            and v is not None
        }
        self.padded = [n for n, p in self.declared.items() if p.role == "padded"]
        self._alone: dict[tuple, xr.Dataset] = {}
        self.first_start: dict[str, np.ndarray] | None = None
        self.base_trace: tuple[str, list] | None = None
        self.larger: dict[str, int] | None = None
        self.traced_note: str | None = None

    def fail(self, check: str, detail: str) -> ContractError:
        return ContractError(self.task.name, check, detail)

    def sweep(
        self,
        params: Mapping,
        axes: Mapping,
        steps: int | None = None,
        log_points: int | None = None,
    ) -> Sweep:
        steps = steps or self.steps
        return Sweep(
            self.task,
            params={n: v for n, v in params.items() if n not in axes},
            axes=axes,
            steps=steps,
            log_points=log_points or steps,
            # Thresholds only for a task that records per-eps metrics (others warn of them).
            eps=self.eps if any("eps" in d for d in self.task.metrics.values()) else None,
            measures=self.measures,
        )

    def run(self, check: str, sweep: Sweep, reproducible: bool) -> xr.Dataset:
        try:
            return engine.run(sweep, progress=False, reproducible=reproducible)
        except SpecError:
            raise  # the checks' own sweep is invalid: a matter of params, not of the contract
        except Exception as err:
            raise self.fail(check, f"training raised {type(err).__name__}: {err}") from err

    def alone(
        self,
        check: str,
        seed: int,
        values: Mapping[str, Any] | None = None,
        steps: int | None = None,
        log_points: int | None = None,
        again: bool = False,
    ) -> xr.Dataset:
        """The run of ``seed`` with the base values and ``values``, trained alone at its own
        unpadded shape; kept for later calls, unless ``again`` (train it again)."""
        values = dict(values or {})
        key = (seed, steps, log_points, tuple(sorted(values.items())))
        if key not in self._alone or again:
            sweep = self.sweep(self.base | values, {"seed": [seed]}, steps, log_points)
            self._alone[key] = self.run(check, sweep, True).sel(seed=seed)
        return self._alone[key]

    def compare(self, check: str, got: xr.Dataset, want: xr.Dataset, what: str) -> float:
        """Assert that ``got`` equals ``want`` (the run alone) within the tolerance, in every
        recorded metric and in ``diverged_at``; return the largest difference relative to
        ``want``."""
        if int(got.diverged_at) != int(want.diverged_at):
            raise self.fail(
                check,
                f"{what}: diverged_at is {int(got.diverged_at)}, "
                f"{int(want.diverged_at)} for the run alone",
            )
        worst = 0.0
        for name in self.recorded:
            a = np.asarray(got[name].transpose(..., "time").values, float)
            b = np.asarray(want[name].transpose(..., "time").values, float)
            nan = np.isnan(a) & np.isnan(b)
            excess = np.abs(a - b) / (self.atol + self.rtol * np.abs(b))
            excess = np.where(nan, 0.0, np.where(np.isnan(excess), np.inf, excess))
            if excess.max(initial=0.0) > 1.0:
                i = np.unravel_index(np.argmax(excess), excess.shape)
                raise self.fail(
                    check,
                    f"{what}: {name} at step {int(got.time.values[i[-1]])} is {_fmt(a[i])}, "
                    f"{_fmt(b[i])} for the run alone (difference {abs(a[i] - b[i]):.3g}; tolerance "
                    f"rtol {self.rtol:g}, atol {self.atol:g} in {self.dtype})",
                )
            rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
            worst = max(worst, float(np.where(nan | (a == b), 0.0, rel).max(initial=0.0)))
        return worst


# --- 2. metrics --------------------------------------------------------------------------------
def _check_metrics(ctx: _Context) -> dict[str, str | None]:
    """One run through the trainer itself: its raw arrays show what evaluate returned, which
    the engine would drop, or fail on without naming the task."""
    check = "metrics"
    sweep = ctx.sweep(ctx.base, {"seed": [ctx.seeds[0]]})
    bucket, groups, block = engine.prepare(sweep, reproducible=True).buckets[0]
    index = np.arange(groups)
    chunk = bucket.take_groups(index % bucket.n_groups, index < bucket.n_groups)
    times = sweep.times()
    try:
        raw = trainer.train(
            ctx.task, chunk, times, np.asarray(sweep.eps), None, sweep.measures, block
        )
    except Exception as err:
        raise ctx.fail(check, f"training one run raised {type(err).__name__}: {err}") from err
    sizes = {"eps": len(sweep.eps)}
    for name in REQUIRED_METRICS:
        if name not in raw:
            raise ctx.fail(check, f"evaluate does not return the required metric {name!r}")
    for name, dims in sweep.metrics.items():
        if name not in raw:
            source = "measure" if name in ctx.measures else "evaluate"
            raise ctx.fail(check, f"{name!r} is declared, but {source} does not return it")
        want = tuple(sizes[d] for d in dims)
        got = raw[name].shape[4:]
        if got != want:
            raise ctx.fail(
                check,
                f"{name!r} has shape {got} at a log point, but its declared dims {dims} give "
                f"{want} (with {len(sweep.eps)} thresholds)",
            )
        start = raw[name][chunk.valid][:, 0]
        if not np.all(np.isfinite(start)):
            raise ctx.fail(check, f"{name!r} is not finite at t = 0: {_fmt(start.ravel()[:4])}")
    extra = sorted(set(raw) - set(sweep.metrics) - set(available(ctx.task)) - {"diverged_at"})
    if extra:
        raise ctx.fail(
            check,
            f"evaluate returns {', '.join(map(repr, extra))}, which the task "
            "does not declare in metrics (the engine drops it)",
        )
    ctx.first_start = {n: raw[n][chunk.valid][0, 0] for n in sweep.metrics}
    return {check: f"{len(sweep.metrics)} metrics: {', '.join(sweep.metrics)}"}


# --- 3. time 0 ---------------------------------------------------------------------------------
def _check_time0(ctx: _Context) -> dict[str, str | None]:
    check = "time0"
    if ctx.first_start is None:  # "metrics" skipped: a first execution here
        first = ctx.alone(check, ctx.seeds[0], again=True)
        ctx.first_start = {n: first[n].sel(time=0).values for n in ctx.recorded}
    again = ctx.alone(check, ctx.seeds[0], again=True)  # the same program, executed again
    for name, first in ctx.first_start.items():
        value = again[name].sel(time=0).values
        if not np.array_equal(np.asarray(first), value, equal_nan=True):
            raise ctx.fail(
                check,
                f"the run executed twice: {name} at t = 0 is {_fmt(first)}, "
                f"then {_fmt(value)} (host randomness at run time, a callback?)",
            )
    ctx.base_trace = _trace_run(ctx, check, {})
    difference = _trace_difference(ctx.base_trace, _trace_run(ctx, check, {}))
    if difference:
        raise ctx.fail(
            check,
            f"the run's functions (sample, share, setup, gradient, evaluate) traced twice for "
            f"the same run are two programs: {difference}; every compilation would compute "
            "other numbers (host randomness at trace time: numpy or random in sample or setup, "
            "instead of the key)",
        )
    return {check: "executed twice: bitwise equal at t = 0; traced twice: the same program"}


# --- 7. traced values ----------------------------------------------------------------------------
def _check_traced(ctx: _Context) -> dict[str, str | None]:
    check = "traced"
    new = {}
    for name, param in ctx.declared.items():
        if param.role == "traced" and name in ctx.base:
            other = _other_value(name, param, ctx.base[name])
            if other is not None:
                new[name] = other
    changed = ", ".join(
        f"{n}={v:.6g}" if isinstance(v, float) else f"{n}={v!r}" for n, v in new.items()
    )
    ctx.alone(check, ctx.seeds[0])  # the base run's program, compiled
    before = trainer.trace_count()
    # Twice the steps at as many log points: the same program shape.
    ctx.alone(check, ctx.seeds[0], new, 2 * ctx.steps, ctx.steps)
    traces = trainer.trace_count() - before
    if traces:
        raise ctx.fail(
            check,
            f"a run with new traced values ({changed}) and {2 * ctx.steps} steps compiled "
            f"{traces} program(s) anew; traced parameters must enter the program as arrays, "
            "never its shape (does resolve turn a traced value into a static one?)",
        )
    base = ctx.base_trace or _trace_run(ctx, check, {})
    difference = _trace_difference(base, _trace_run(ctx, check, new))
    if difference:
        raise ctx.fail(
            check,
            f"the run's functions traced for new traced values ({changed}) are another program "
            f"than for the first values: {difference}; the task reads a traced value as a "
            "Python number when traced (kept from resolve or hp on the task object), so the "
            "program the engine compiles once would run every run with the first one's value",
        )
    ctx.traced_note = (
        f"{len(new)} traced parameters changed ({changed}): no new compilation, the same program"
    )
    return {check: ctx.traced_note}


def _trace_run(ctx: _Context, check: str, values: dict[str, Any]) -> tuple[str, list]:
    """The jaxpr (text, constants) of one run's task functions, traced as the engine traces
    them: after the run's sweep is resolved, with the hyperparameters as arrays."""
    sweep = ctx.sweep(ctx.base | values, {"seed": [ctx.seeds[0]]})
    bucket = plan(ctx.task, sweep.runs(), exact=True)[0]
    shape = dict(bucket.shape)
    task = ctx.task.bind(shape)
    x64 = ctx.dtype == "float64"
    dtype = jnp.float64 if x64 else jnp.float32

    def one_run(key, hp, eps):
        draws = task.sample(key, shape, dtype)
        data = merge_data(task, draws, task.share(draws, hp, shape))
        model, run = task.setup(data, hp, shape)
        data = merge_data(task, data, run)
        out = {
            "model": model,
            "run": run,
            "gradient": task.gradient(model, data, hp),
            "metrics": task.evaluate(model, data, hp, eps),
            "measures": [task.measure(m, model, data, hp) for m in ctx.measures],
        }
        if shape.get("method") == "spectral":
            out["jump"] = task.jump(model, data, hp, jnp.asarray(3, dtype))
        return out

    with jax.enable_x64(x64):
        hp = {
            n: _hparam(ctx.declared.get(n), v.reshape(-1)[0], dtype)
            for n, v in bucket.hparams.items()
        }
        try:
            closed = jax.make_jaxpr(one_run)(
                jax.random.key(ctx.seeds[0]), hp, jnp.asarray(ctx.eps, dtype)
            )
        except Exception as err:
            raise ctx.fail(check, f"tracing one run raised {type(err).__name__}: {err}") from err
    return str(closed.jaxpr), [np.asarray(c) for c in closed.consts]


def _trace_difference(first: tuple[str, list], second: tuple[str, list]) -> str:
    """Where two traces differ, in words; empty if they are the same program."""
    (text_a, consts_a), (text_b, consts_b) = first, second
    for a, b in itertools.zip_longest(text_a.splitlines(), text_b.splitlines(), fillvalue=""):
        if a != b:
            return f"'{a.strip()[:120]}' became '{b.strip()[:120]}'"
    for i, (a, b) in enumerate(itertools.zip_longest(consts_a, consts_b)):
        if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b, True):
            shape = (a if a is not None else b).shape
            return f"their constant #{i} (shape {shape}) differs"
    return ""


def _hparam(param: Param | None, value: Any, dtype: Any) -> Any:
    """A hyperparameter as the trainer passes it: a traced choice as its index, integers (the
    padded sizes) as int32, numbers in the run's float dtype."""
    if param is not None and param.type is str:
        return jnp.asarray(param.choices.index(value), jnp.int32)
    if param is not None and param.type is int:
        return jnp.asarray(value, jnp.int32)
    return jnp.asarray(value, dtype)


def _other_value(name: str, param: Param, value: Any) -> Any:
    """Another valid value of a parameter: another choice, or a nearby number (smaller first,
    so that a learning rate stays stable); None if there is none."""
    if param.type is str:
        return next((c for c in param.choices or () if c != value), None)
    if param.type is int:
        candidates = [value + 1, value - 1]
    else:
        candidates = [0.75 * value, 1.25 * value, value + 0.1, value - 0.1, 0.5 * value]
    for candidate in candidates:
        try:
            checked = param.validate(name, candidate)
        except SpecError:
            continue
        if checked != value:
            return checked
    return None


# --- 4. draws ------------------------------------------------------------------------------------
def _larger(ctx: _Context) -> dict[str, int]:
    """A larger value of each padded parameter that the planner pads into one bucket with the
    base run (within the task's max_padding); a parameter that cannot grow so is left out."""
    if ctx.larger is None:
        larger: dict[str, int] = {}
        for name in ctx.padded:
            value, param = ctx.base[name], ctx.declared[name]
            for candidate in dict.fromkeys((max(value + 1, round(1.5 * value)), value + 1)):
                try:
                    param.validate(name, candidate)
                except SpecError:
                    continue
                axes = {n: [ctx.base[n], v] for n, v in (larger | {name: candidate}).items()}
                if len(plan(ctx.task, ctx.sweep(ctx.base, axes).runs())) == 1:
                    larger[name] = candidate
                    break
        ctx.larger = larger
    return ctx.larger


def _check_draws(ctx: _Context) -> dict[str, str | None]:
    """The draws at the base run's shape and at the padded grid's bucket shape, from the
    program the trainer compiles for each (which the runs then reuse)."""
    check = "draws"
    if not ctx.padded:
        return {check: "skipped: the task has no padded parameters"}
    small = plan(ctx.task, ctx.sweep(ctx.base, {"seed": [0]}).runs(), exact=True)[0].shape
    larger = _larger(ctx)
    big = tuple((n, larger.get(n, v + 1) if n in ctx.padded else v) for n, v in small)
    grown = ", ".join(f"{n} {dict(small)[n]} -> {dict(big)[n]}" for n in ctx.padded)
    base, other = _sample(ctx, small), _sample(ctx, big)
    if set(base) != set(other):
        raise ctx.fail(
            check, f"the draws at {grown} have other names: {sorted(base)} and {sorted(other)}"
        )
    for key in base:
        a, b = base[key], other[key]
        if a.ndim != b.ndim:
            raise ctx.fail(check, f"draw {key!r} has shapes {a.shape} and {b.shape} ({grown})")
        common = tuple(slice(0, min(m, n)) for m, n in zip(a.shape, b.shape))
        if not np.array_equal(a[common], b[common], equal_nan=True):
            i = tuple(int(j) for j in np.argwhere(a[common] != b[common])[0])
            raise ctx.fail(
                check,
                f"draw {key!r} of shapes {a.shape} and {b.shape} ({grown}) differs on their "
                f"common prefix, first at index {i}: {_fmt(a[i])} and {_fmt(b[i])}; draw it with "
                "groksweep.tasks.base.indexed_normal or groksweep.tasks.draws, the padded sizes "
                "as its counts",
            )
    return {check: f"{len(base)} draws at {grown}: equal on their common prefix"}


def _sample(ctx: _Context, shape_items: tuple) -> dict[str, np.ndarray]:
    """One seed's draws at a bucket shape, from the trainer's compiled draws (called as the
    trainer calls them, so that the runs reuse the compilation)."""
    x64 = ctx.dtype == "float64"
    with jax.enable_x64(x64):
        devices = jax.local_devices()
        sharding = NamedSharding(Mesh(np.array(devices), ("groups",)), PartitionSpec("groups"))
        seeds = jax.device_put(np.full(len(devices), ctx.seeds[0], np.uint32), sharding)
        draws = trainer.draws_program(ctx.task, shape_items)(seeds)
        out = {}
        for path, value in jax.tree_util.tree_flatten_with_path(draws)[0]:
            if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                value = jax.random.key_data(value)
            name = jax.tree_util.keystr(path, simple=True, separator=".")
            out[name] = np.asarray(jax.device_get(value))[0]
    return out


# --- 5, 6. padding and vmap --------------------------------------------------------------------
def _check_batched(ctx: _Context) -> dict[str, str | None]:
    """One batched grid: the padded parameters at the base value and a larger one, lr and a
    traced shared_by parameter at two values each, and the seeds. The runs at the base padded
    values are padded and vmapped at once; each is compared with the run alone."""
    padding = "padding" not in ctx.skip and bool(ctx.padded) and bool(_larger(ctx))
    vmap = "vmap" not in ctx.skip
    out: dict[str, str | None] = {}
    if "padding" not in ctx.skip and not padding:
        out["padding"] = "skipped: " + (
            "the task has no padded parameters"
            if not ctx.padded
            else "the task's max_padding lets no padded parameter grow within one bucket"
        )
    if not (padding or vmap):
        return out
    larger = _larger(ctx) if padding else {}
    axes: dict[str, list] = {n: [ctx.base[n], v] for n, v in larger.items()}
    if vmap:
        shared = [n for n in ctx.task.shared_by if ctx.declared[n].role == "traced"]
        for name in ["lr", *shared[:1]]:
            other = _other_value(name, ctx.declared[name], ctx.base[name])
            if other is not None:
                axes[name] = [ctx.base[name], other]
    varied = [n for n in axes if n not in larger]
    axes["seed"] = list(ctx.seeds) if vmap else [ctx.seeds[0]]
    sweep = ctx.sweep(ctx.base, axes)
    check = "vmap" if vmap else "padding"
    grid = ctx.run(check, sweep, False)
    worst, compared = 0.0, 0
    for values in itertools.product(*(axes[n] for n in varied), axes["seed"]):
        point = dict(zip([*varied, "seed"], values))
        run = grid.sel({n: ctx.base[n] for n in larger} | point)
        others = {n: point[n] for n in varied}
        what = _describe(ctx, larger, point)
        if vmap:
            loss = run["train_loss"].values
            if np.array_equal(loss[0], loss[-1]):
                raise ctx.fail(
                    "vmap",
                    f"{what} did not move (train_loss {_fmt(loss[0])} at t = 0 "
                    f"and at step {ctx.steps}), so comparing it proves "
                    "nothing: give check_task params (lr, steps) that "
                    "train",
                )
        try:
            worst = max(
                worst, ctx.compare(check, run, ctx.alone(check, point["seed"], others), what)
            )
        except ContractError as err:
            if not (padding and vmap):
                raise
            raise _which_broke(ctx, grid, larger, point, err) from None
        compared += 1
    note = f"{compared} runs of the grid {_grid_text(axes)}: largest difference " + (
        f"{worst:.1e} relative to the run alone (rtol {ctx.rtol:g})"
    )
    if padding:
        out["padding"] = note
    if vmap:
        out["vmap"] = note
    if "traced" not in ctx.skip and ctx.traced_note is not None:
        # The batched program too: the grid again with every traced value moved, twice the
        # steps at as many log points.
        moved = {
            n: _other_value(n, ctx.declared[n], v)
            for n, v in ctx.base.items()
            if ctx.declared[n].role == "traced"
        }
        new_axes = {
            n: [_other_value(n, ctx.declared[n], v) if n in moved else v for v in vs]
            for n, vs in axes.items()
        }
        params = ctx.base | {n: v for n, v in moved.items() if v is not None}
        if all(None not in vs and len(set(vs)) == len(vs) for vs in new_axes.values()):
            before = trainer.trace_count()
            ctx.run("traced", ctx.sweep(params, new_axes, 2 * ctx.steps, ctx.steps), False)
            traces = trainer.trace_count() - before
            if traces:
                raise ctx.fail(
                    "traced",
                    f"the vmapped grid run again with new traced values "
                    f"({_grid_text(new_axes)}) compiled {traces} "
                    "program(s) anew",
                )
            out["traced"] = ctx.traced_note + "; the vmapped grid: no new compilation either"
    return out


def _which_broke(
    ctx: _Context, grid: xr.Dataset, larger: dict, point: dict, err: ContractError
) -> ContractError:
    """A run both padded and vmapped differed from the run alone: compare the same run at the
    bucket's largest sizes (vmapped, not padded) with its own run alone. If it agrees, padding
    broke the run; otherwise batching did."""
    varied = {n: v for n, v in point.items() if n != "seed"}
    unpadded = grid.sel(larger | point)
    alone = ctx.alone("vmap", point["seed"], larger | varied)
    try:
        ctx.compare("vmap", unpadded, alone, _describe(ctx, {}, point | larger))
    except ContractError as vmapped:
        return vmapped
    return ctx.fail(
        "padding",
        err.detail + " (the same run at the bucket's largest sizes, "
        "vmapped but not padded, equals its run alone)",
    )


def _fmt(value: Any) -> str:
    """A number or array for a message: numbers with all their digits, without numpy's
    ``np.float64(...)`` wrapping."""
    array = np.asarray(value)
    if array.ndim == 0:
        return f"{array.item():.17g}" if array.dtype.kind == "f" else str(array.item())
    return np.array2string(array, precision=17, threshold=8)


def _describe(ctx: _Context, larger: dict, point: dict) -> str:
    parts = [f"{n} {ctx.base[n]} padded to {v}" for n, v in larger.items()]
    parts += [f"{n}={v:.6g}" if isinstance(v, float) else f"{n}={v!r}" for n, v in point.items()]
    return "the run of the grid at " + ", ".join(parts)


def _grid_text(axes: dict[str, list]) -> str:
    return " x ".join(
        f"{n} [{', '.join(f'{v:.6g}' if isinstance(v, float) else repr(v) for v in vs)}]"
        for n, vs in axes.items()
    )


_STEPS: list[tuple[tuple[str, ...], Callable[[_Context], dict[str, str | None]]]] = [
    (("metrics",), _check_metrics),
    (("time0",), _check_time0),
    (("traced",), _check_traced),
    (("draws",), _check_draws),
    (("padding", "vmap"), _check_batched),
]
