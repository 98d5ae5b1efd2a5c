"""``run(sweep)``: spec -> run table -> shape buckets -> memory-sized chunks -> compiled trainer,
driven in timed segments -> labelled results."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import xarray as xr
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from groksweep import crossings, trainer
from groksweep.params import SpecError, human_bytes
from groksweep.plan import Bucket, plan
from groksweep.results import to_dataset
from groksweep.saved_models import ModelStore
from groksweep.spec import Sweep
from groksweep.store import ChunkStore
from groksweep.tasks import Task
from groksweep.tasks.base import task_identity


class SweepInterrupted(Exception):
    """Raised between chunks or segments when ``should_stop`` asks for it; finished chunks,
    and with a store the chunk in progress, are saved."""


CHECKPOINT_EVERY = 180.0
"""Seconds a segment of a chunk lasts by default (``--checkpoint-every``): the most work a
kill loses, against the cost of a call and a save per segment, negligible at minutes."""


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep, cut into chunks under a memory budget: everything :func:`run` needs
    to know before it trains, computed without compiling (:func:`prepare`)."""

    sweep: Sweep
    buckets: list[Chunking]
    budget: float

    @property
    def n_runs(self) -> int:
        """The runs the plan trains: the sweep's, or the ``select``-ed of them."""
        return sum(chunking.bucket.n_runs for chunking in self.buckets)


def prepare(
    sweep: Sweep,
    *,
    memory_budget: float | None = None,
    chunk_size: int | None = None,
    share_data: bool = True,
    reproducible: bool = False,
    select: Sequence[int] | None = None,
) -> SweepPlan:
    """Plan ``sweep`` into shape buckets and memory-sized chunks (see :func:`run` for the
    arguments), and check that it can run: that one run fits ``memory_budget`` and that its
    results fit in host memory. Raises :class:`SpecError` otherwise; nothing is compiled.
    ``select`` (flat grid indices) plans only those runs: :func:`run` leaves the others NaN
    (a refinement round, :mod:`groksweep.refine`)."""
    if not isinstance(sweep, Sweep):
        raise SpecError(f"run needs a groksweep.Sweep, got {type(sweep).__name__}")
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise SpecError(f"memory_budget must be a positive number of bytes, got {budget!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1
    ):
        raise SpecError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    check_results_fit(sweep)
    task, n_times, n_eps = sweep.task_def, len(sweep.times()), len(sweep.eps)
    n_kept = len(sweep.saved_points())
    runs = sweep.runs()
    chosen = np.arange(len(runs)) if select is None else np.unique(np.asarray(select, np.int64))
    if chosen.size and not 0 <= chosen[0] <= chosen[-1] < len(runs):
        raise SpecError(f"select holds run indices outside the sweep's {len(runs)} runs")
    planned = plan(
        task, [runs[i] for i in chosen], share_data and not reproducible, exact=reproducible
    )
    buckets = [
        chunked(
            task, b, n_times, n_eps, budget, chunk_size, sweep.measures, reproducible, n_kept
        )
        for b in (replace(b, run_index=chosen[b.run_index]) for b in planned)
    ]
    return SweepPlan(sweep, buckets, budget)


def check_results_fit(sweep: Sweep) -> None:
    """Refuse a sweep whose results (runs x log points x metrics, float64, held about three
    times while they are labelled and written) would not fit in the free host memory."""
    per_run = sum(math.prod(shape) for shape in _run_shapes(sweep, len(sweep.times())).values())
    need = 3 * 8 * sweep.n_runs * per_run
    free = host_free_bytes()
    if need > free:
        raise SpecError(
            f"the results of {sweep.n_runs:,} runs x {len(sweep.times()):,} log points need "
            f"{human_bytes(need)}, over the {human_bytes(free)} of free host memory; record "
            "fewer log points or split the sweep"
        )


def run(
    sweep: Sweep | SweepPlan,
    progress: bool = True,
    *,
    memory_budget: float | None = None,
    chunk_size: int | None = None,
    share_data: bool = True,
    reproducible: bool = False,
    store: ChunkStore | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    checkpoint_every: float | None = CHECKPOINT_EVERY,
    prune: bool = True,
    models_dir: str | Path | None = None,
) -> xr.Dataset:
    """Train every run of ``sweep`` and return its trajectories (see :mod:`groksweep.results`).

    Runs are planned into shape buckets (one compiled program each) and every bucket is cut
    into chunks of equal shape that fit ``memory_budget`` bytes (default:
    :func:`default_memory_budget`) and hold at most ``chunk_size`` runs; on a CPU, without
    ``chunk_size``, a chunk's working set is also kept within the L2 cache, which is several
    times faster than streaming it from memory. Results do not depend on the chunking beyond
    float rounding.
    ``share_data=False`` steps every run alone instead of batching runs that share training
    data into matrix-matrix products (slower; kept as a reference). ``progress`` shows a bar
    counting run-steps. A :class:`SweepPlan` from :func:`prepare` may stand for the sweep and
    these planning arguments.

    ``reproducible=True`` trains every run alone, at its own unpadded shape, one run per device
    at a time: each run's result is then bitwise the same whatever else the sweep holds, in
    whatever order, on however many devices or processes, and for any ``chunk_size`` (a chunk
    then holds one run per device, the fewest any chunk holds). It gives up batching, so it is
    slower, and it compiles once per distinct shape.

    A chunk trains in segments of about ``checkpoint_every`` seconds (None: one segment per
    chunk), each one call of the bucket's program (see :class:`groksweep.trainer.ChunkTraining`);
    the first segment of a bucket is one unit long, to time it, and later ones are sized from
    the bucket's segments so far (:class:`_Pace`). Between segments the progress bar moves and,
    with a ``store``, the chunk's state is saved (when half a segment's time has passed since
    its last save), so that a rerun continues from there; results do not depend on where
    segments end. Every finished chunk is saved, and chunks already in the store are read back
    instead of trained. ``should_stop()`` is asked before each chunk and after each segment; if
    it returns True the sweep saves the chunk in progress and stops with
    :class:`SweepInterrupted`. ``log`` receives one line per planning decision, per compiled
    program and per chunk. At the end the store's files of other chunks are removed, unless
    ``prune=False`` (a refinement keeps its earlier rounds' chunks, :func:`chunk_keys`). A
    sweep with a ``refine`` table is trained round by round by :func:`groksweep.refine.run`
    (a :class:`SweepPlan` of it plans its coarse grid alone).

    A sweep with ``save_models`` needs ``models_dir``: each finished chunk's kept models are
    written there, one file per chunk (:mod:`groksweep.saved_models`; the command line's is
    ``DIR/models``), and read back with :func:`groksweep.load_models`. A chunk read back from
    the ``store`` is trained again if its models file is not whole.
    """
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, (int, float))
        or not checkpoint_every > 0
    ):
        raise SpecError(
            f"checkpoint_every must be a positive number of seconds, got {checkpoint_every!r}"
        )
    if checkpoint_every == math.inf:
        checkpoint_every = None
    if isinstance(sweep, Sweep) and sweep.refine:
        from groksweep import refine  # which runs each of its rounds through this function

        return refine.run(
            sweep,
            progress,
            memory_budget=memory_budget,
            chunk_size=chunk_size,
            share_data=share_data,
            reproducible=reproducible,
            store=store,
            should_stop=should_stop,
            log=log,
            checkpoint_every=checkpoint_every,
            models_dir=models_dir,
        )
    if not isinstance(sweep, SweepPlan):
        sweep = prepare(
            sweep,
            memory_budget=memory_budget,
            chunk_size=chunk_size,
            share_data=share_data,
            reproducible=reproducible,
        )
    prepared, sweep = sweep, sweep.sweep
    log = log or (lambda line: None)
    enable_compilation_cache()
    task = sweep.task_def
    times = sweep.times()
    eps = np.asarray(sweep.eps)
    models = _model_store(sweep, models_dir)
    model_keys = set()
    outputs = {
        name: np.full((sweep.n_runs, *extra), np.nan)
        for name, extra in _run_shapes(sweep, len(times)).items()
    }
    diverged_at = np.full(sweep.n_runs, -1, dtype=np.int64)
    buckets = prepared.buckets
    for i, (bucket, groups_per_chunk, block) in enumerate(buckets):
        log(
            f"bucket {i}: {dict(bucket.shape)}; {bucket.n_runs} runs as "
            f"(groups, families, slots) = {bucket.run_index.shape}; {groups_per_chunk} groups "
            f"per chunk; {block} log points evaluated at once; memory budget "
            f"{human_bytes(prepared.budget)}"
        )
    processes, me = jax.process_count(), jax.process_index()
    if processes > 1 and store is None:
        raise SpecError("a sweep over several processes needs a chunk store (the CLI's --out)")
    elsewhere = []  # chunks other processes train, read back from the store at the end
    keys = set()  # every chunk's key: other files in the store are stale
    chunk_numbers = itertools.count()
    with _Progress(sweep, _chunks_here(buckets, sweep.steps), progress, prepared.n_runs) as bar:
        for i, (bucket, groups_per_chunk, block) in enumerate(buckets):
            pace = _Pace(checkpoint_every, by_steps=dict(bucket.shape)["method"] == "step")
            bar.begin_bucket()
            for chunk in _chunks(bucket, groups_per_chunk):
                key = store.key(bucket.shape, chunk.run_index, chunk.valid) if store else None
                keys.add(key)
                model_keys.add(models.key(chunk) if models else None)
                expect = _expected_shapes(sweep, chunk, len(times)) if store else None
                if next(chunk_numbers) % processes != me:
                    elsewhere.append((chunk, key, expect))
                    continue
                metrics = store.load(key, expect, log) if store else None
                problem = models and metrics is not None and models.check(chunk)
                if problem:
                    log(f"bucket {i} chunk {key}: models file not used ({problem}): recomputed")
                    metrics = None
                wall = None  # read back
                if metrics is not None:
                    bar.read_back(sweep.steps * chunk.n_runs)
                    log(f"bucket {i} chunk {key}: {chunk.n_runs} runs read back")
                else:
                    if should_stop and should_stop():
                        raise SweepInterrupted(
                            "stopped before a new chunk; finished chunks are saved"
                        )
                    began = time.perf_counter()
                    training = trainer.ChunkTraining(
                        task, chunk, times, eps, sweep.measures, block, sweep.saved_points()
                    )
                    if training.compile_seconds:
                        log(f"bucket {i}: program compiled in {training.compile_seconds:.2f} s")
                    start = time.perf_counter()
                    segments = _train(training, i, key, chunk, pace, bar, store, should_stop, log)
                    metrics = training.result()
                    if sweep.crossings != "interpolate":
                        solved = training.solve_crossings(
                            metrics, sweep.crossings["level"], sweep.crossings["rtol"]
                        )
                        log(
                            f"bucket {i} chunk {key}: crossings solved in "
                            f"{solved.pop('solve_iterations')} bisection iterations over "
                            f"{chunk.run_index.size} runs (padding included)"
                        )
                        metrics |= solved
                    if models:  # before the chunk: a chunk read back has its models
                        models.save(chunk, training.kept_models())
                    if store:
                        store.save(key, metrics)
                    log(
                        f"bucket {i} chunk {key}: {chunk.n_runs} runs trained in "
                        f"{time.perf_counter() - start:.2f} s, {segments} segments"
                    )
                    wall = time.perf_counter() - began - training.compile_seconds
                _scatter(chunk, metrics, outputs, diverged_at)
                bar.chunk_done(chunk.n_runs, sweep.steps * chunk.n_runs, wall)
    if processes > 1:
        multihost_utils.sync_global_devices("groksweep: every process saved its chunks")
        for chunk, key, expect in elsewhere:
            metrics = store.load(key, expect, log)
            if metrics is None:
                raise SpecError(f"chunk {key} of another process is missing from {store.directory}")
            _scatter(chunk, metrics, outputs, diverged_at)
    if store and me == 0 and prune:
        removed = store.prune(keys)
        if removed:
            log(f"removed {removed} chunk files of other code that no rerun would read")
    if models and me == 0 and prune:
        models.prune(model_keys)
    return to_dataset(sweep, outputs, times, diverged_at)


def _model_store(sweep: Sweep, models_dir: str | Path | None) -> ModelStore | None:
    """Where the sweep's kept models go; a SpecError where they would be lost, or where a
    directory is given for a sweep that keeps none."""
    if not sweep.save_models and models_dir is None:
        return None
    if models_dir is None:
        raise SpecError("the sweep saves models (save_models): give run a models_dir to save them")
    if not sweep.save_models:
        raise SpecError("models_dir is given but the sweep keeps no models: set save_models")
    return ModelStore(models_dir, sweep, task_identity(sweep.task_def))


def chunk_keys(prepared: SweepPlan, store: ChunkStore) -> set[str]:
    """The store keys of every chunk of ``prepared``, as :func:`run` saves them."""
    return {
        store.key(chunking.bucket.shape, chunk.run_index, chunk.valid)
        for chunking in prepared.buckets
        for chunk in _chunks(chunking.bucket, chunking.groups)
    }


def _train(
    training: trainer.ChunkTraining,
    bucket_index: int,
    key: str | None,
    chunk: Bucket,
    pace: _Pace,
    bar: _Progress,
    store: ChunkStore | None,
    should_stop: Callable[[], bool] | None,
    log: Callable[[str], None],
) -> int:
    """Train a chunk to its end in segments, from its saved state if the store holds one;
    between segments, move the bar, save the state when due and stop when asked. Returns how
    many segments it ran."""
    if store:
        saved = store.load_partial(key, training.block, training.state_shapes(), log)
        if saved is not None and training.restore(*saved):
            bar.read_back(training.steps_done() * chunk.n_runs)
            log(
                f"bucket {bucket_index} chunk {key}: resumed after {training.done} of "
                f"{training.units} units"
            )
        elif saved is not None:
            log(f"bucket {bucket_index} chunk {key}: saved state not this chunk's: recomputed")
    last_save = time.perf_counter()
    for segments in itertools.count(1):
        first, units = training.done, pace.units(training)
        began = time.perf_counter()
        steps = training.advance(units)
        seconds = time.perf_counter() - began
        pace.record(training, first, seconds)
        bar.trained(steps * chunk.n_runs, seconds, pace.seconds_left(training))
        if training.finished:
            return segments
        stop = should_stop is not None and should_stop()
        if store and (stop or time.perf_counter() - last_save >= pace.save_after):
            store.save_partial(key, training.block, training.done, training.state())
            last_save = time.perf_counter()
        if stop:
            saved = "saved" if store else "not saved"
            raise SweepInterrupted(
                f"stopped after {training.done} of {training.units} units of a chunk, "
                f"which is {saved}; finished chunks are saved"
            )


class _Pace:
    """How many units (:class:`groksweep.trainer.ChunkTraining`) the next segment of a
    bucket's chunk runs, to last about ``target`` seconds: one unit while the bucket is untimed,
    then as many as its segments so far say fit.

    A segment costs about a * units + b * steps + c * evaluations, and which term dominates
    changes along a log-spaced schedule. Scaling the time of all the bucket's segments so far by
    the largest of the three ratios (next segment's over theirs) bounds every term, hence the
    whole, so a segment does not overrun by much. The spectral method jumps, so its units cost
    the same whatever their steps (``by_steps=False``)."""

    def __init__(self, target: float | None, by_steps: bool):
        self.target = target
        self.by_steps = by_steps
        self.totals = np.zeros(3)  # units, evaluations, steps of the timed segments
        self.seconds = 0.0

    @property
    def save_after(self) -> float:
        """Seconds after which a chunk's state is saved again: a short first segment is not."""
        return 0.5 * self.target if self.target is not None else math.inf

    def _features(self, training: trainer.ChunkTraining, first: int, stop: int) -> np.ndarray:
        """Cumulative units, evaluations and steps of units ``first`` to each of ``stop``."""
        units = np.arange(1, stop - first + 1)
        evaluations = np.cumsum(training.unit_evaluations[first:stop])
        steps = np.cumsum(training.unit_steps[first:stop]) if self.by_steps else 0 * units
        return np.stack([units, evaluations, steps])

    def record(self, training: trainer.ChunkTraining, first: int, seconds: float) -> None:
        self.totals += self._features(training, first, training.done)[:, -1]
        self.seconds += seconds

    def seconds_left(self, training: trainer.ChunkTraining) -> float | None:
        """What the chunk's remaining units should take, by the bound :meth:`units` sizes
        segments with; None until the bucket has timed more than one unit."""
        if training.done >= training.units:
            return 0.0
        if self.totals[0] <= 1:
            return None
        ahead = self._features(training, training.done, training.units)[:, -1]
        known = self.totals > 0
        return self.seconds * float((ahead[known] / self.totals[known]).max(initial=0.0))

    def units(self, training: trainer.ChunkTraining) -> int:
        left = training.units - training.done
        if self.target is None:
            return left
        if not self.seconds:
            return 1
        ahead = self._features(training, training.done, training.units)
        known = self.totals > 0
        ratio = (ahead[known] / self.totals[known, None]).max(axis=0)
        return max(1, int(np.count_nonzero(ratio * self.seconds <= self.target)))


class _Progress:
    """The progress bar, in run-steps, and an estimate of the time left.

    The estimate counts chunks, the unit whose cost repeats: a bucket's chunks run one program
    on one schedule, so each costs about the wall time of the bucket's chunks finished so far
    (data set-up, segments, solved crossings, saving; not compilation). Before one has
    finished, a chunk is costed by its segments: those timed so far and what the bucket's cost
    model (:meth:`_Pace.seconds_left`) says the rest take. Buckets not begun are costed at the
    seconds per run-step of the chunks finished so far. No estimate is shown while a bucket has
    timed only its first unit (one log point says nothing of how steps cost). Run-steps per
    second count trained segments only; read-back chunks cost nothing."""

    def __init__(self, sweep: Sweep, chunks: Sequence[tuple[int, int]], show: bool, n_runs: int):
        """``chunks``: for each bucket, the chunks this process trains and their run-steps."""
        self.total = n_runs * sweep.steps
        self.n_runs = n_runs
        self.done_runs = self.done_steps = 0
        self.trained_steps, self.seconds = 0, 0.0
        self.chunks = list(chunks)
        self.bucket = -1
        self.chunks_left = 0  # in the current bucket, the chunk in progress included
        self.bucket_chunk_seconds: list[float] = []  # wall seconds of its finished chunks
        self.finished_seconds = self.finished_run_steps = 0.0  # every bucket's
        self.chunk_segments = 0.0  # seconds of the chunk in progress' segments
        self.chunk_left: float | None = None  # what its remaining segments should take
        self.bar = tqdm(
            total=self.total,
            unit=" run-steps",
            unit_scale=True,
            disable=not show,
            desc=f"{sweep.task}: {n_runs} runs, {len(self.chunks)} buckets",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def begin_bucket(self) -> None:
        self.bucket += 1
        self.chunks_left = self.chunks[self.bucket][0]
        self.bucket_chunk_seconds = []

    def read_back(self, run_steps: int) -> None:
        self.done_steps += run_steps
        self.bar.update(run_steps)

    def trained(self, run_steps: int, seconds: float, chunk_left: float | None) -> None:
        """A segment of ``run_steps`` trained in ``seconds``; the chunk's remaining segments
        should take ``chunk_left`` seconds (None: not yet known)."""
        self.trained_steps += run_steps
        self.seconds += seconds
        self.chunk_segments += seconds
        self.chunk_left = chunk_left
        self.read_back(run_steps)
        self.bar.set_postfix_str(self.status())

    def chunk_done(self, runs: int, run_steps: int, seconds: float | None) -> None:
        """A chunk finished: trained in ``seconds`` of wall time, or read back (None)."""
        self.chunks_left -= 1
        if seconds is not None:
            self.bucket_chunk_seconds.append(seconds)
            self.finished_seconds += seconds
            self.finished_run_steps += run_steps
        self.chunk_segments, self.chunk_left = 0.0, None
        self.done_runs += runs
        self.bar.set_postfix_str(self.status())

    def seconds_left(self) -> float | None:
        """The estimate of the class docstring; None while there is none."""
        chunks, run_steps = self.chunks[self.bucket]
        finished_rate = self.finished_seconds / max(self.finished_run_steps, 1)
        if self.bucket_chunk_seconds:
            per_chunk = float(np.mean(self.bucket_chunk_seconds))
        elif self.chunk_left is not None:
            per_chunk = self.chunk_segments + self.chunk_left
        elif self.finished_run_steps:
            per_chunk = run_steps / max(chunks, 1) * finished_rate
        else:
            return None
        in_progress = self.chunk_left is not None
        now = (self.chunks_left - in_progress) * per_chunk
        if in_progress:
            now += self.chunk_left
        rate = finished_rate if self.finished_run_steps else per_chunk * chunks / max(run_steps, 1)
        return now + rate * sum(steps for _, steps in self.chunks[self.bucket + 1 :])

    def status(self) -> str:
        """Speed, time left and runs done, as the bar shows them."""
        runs = f"{self.done_runs}/{self.n_runs} runs done"
        if not self.seconds:
            return runs
        rate = f"{tqdm.format_sizeof(self.trained_steps / self.seconds)} run-steps/s"
        left = self.seconds_left()
        if left is None:
            return f"{rate}, estimating the time left, {runs}"
        return f"{rate}, about {tqdm.format_interval(left)} left, {runs}"


def _run_shapes(sweep: Sweep, n_times: int) -> dict[str, tuple[int, ...]]:
    """The shape of each recorded array of one run: a metric's (time,) or (time, eps), and
    with solved crossings, ``t_train_solved`` and ``t_test_solved`` as their accuracy's
    thresholds, () or (eps,)."""
    sizes = {"eps": len(sweep.eps)}
    extra = {name: tuple(sizes[d] for d in dims) for name, dims in sweep.metrics.items()}
    shapes = {name: (n_times, *dims) for name, dims in extra.items()}
    if sweep.crossings != "interpolate":
        shapes |= {f"t_{role}_solved": extra[f"{role}_acc"] for role in crossings.ROLES}
    return shapes


def _expected_shapes(sweep: Sweep, chunk: Bucket, n_times: int) -> dict[str, tuple[int, ...]]:
    """The arrays a trained chunk holds (:func:`trainer.train`, and solved crossings), by name
    and shape: a saved file with other arrays is not this chunk's."""
    runs = chunk.run_index.shape
    shapes = {name: (*runs, *shape) for name, shape in _run_shapes(sweep, n_times).items()}
    return shapes | {"diverged_at": runs}


def enable_compilation_cache() -> None:
    """Turn on JAX's persistent compilation cache, unless the user configured one or set
    ``GROKSWEEP_COMPILATION_CACHE=0``. The directory is ``$GROKSWEEP_COMPILATION_CACHE`` or
    ``~/.cache/groksweep/xla``. The progress bar is fed between segments, from the host, so
    no program has a host callback (which JAX would not persist): every run reuses compiled
    programs across processes."""
    setting = os.environ.get("GROKSWEEP_COMPILATION_CACHE", "")
    if setting == "0" or jax.config.jax_compilation_cache_dir:
        return
    default = os.path.join(os.path.expanduser("~"), ".cache", "groksweep", "xla")
    jax.config.update("jax_compilation_cache_dir", setting or default)


def _scatter(chunk: Bucket, metrics: dict, outputs: dict, diverged_at: np.ndarray) -> None:
    """Copy a chunk's valid runs into the sweep-wide arrays."""
    where = chunk.run_index[chunk.valid]
    diverged_at[where] = metrics["diverged_at"][chunk.valid]
    for name in outputs:
        outputs[name][where] = metrics[name][chunk.valid]


def default_memory_budget() -> float:
    """Bytes a chunk may use: 80% of an accelerator's memory, or half the free host memory."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return 0.8 * stats["bytes_limit"]
    return 0.5 * host_free_bytes()


def host_free_bytes() -> float:
    """The host memory not in use, from the operating system."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


class Chunking(NamedTuple):
    """How a bucket is cut into chunks, each one call of its compiled program."""

    bucket: Bucket
    """the bucket, its groups split until one fits the budget"""
    groups: int
    """groups per chunk, a multiple of the device count"""
    block: int
    """log points after time 0 evaluated at once"""


EVALUATION_BLOCK_BYTES = 64 * 2**20
"""Working memory per device that a block of evaluations may fill. Evaluating several log points
at once turns a thin model's matrix-vector evaluations into matrix-matrix products (1.5x faster
for the spectral linear task on a CPU); a model whose evaluation is already a matrix product of
some size gains nothing, and its large intermediates keep its block short."""
MAX_BLOCK = 32


def chunked(
    task: Task,
    bucket: Bucket,
    n_times: int,
    n_eps: int,
    budget: float,
    max_runs: int | None,
    measures: tuple[str, ...] = (),
    alone: bool = False,
    n_kept: int = 0,
) -> Chunking:
    """Split ``bucket``'s groups until one fits ``budget`` and ``max_runs``, and choose how many
    groups a chunk holds and how many log points it evaluates at once. ``alone`` puts every run
    in a group of its own and one group on each device, with a block that depends on the run
    alone: the program a device runs is then the same wherever the run stands in the sweep.
    Every run keeps the models of ``n_kept`` log points."""
    sizes = trainer.state_bytes(task, bucket, n_times, n_eps, measures, n_kept)
    devices = trainer.device_count()

    def group_bytes(f: int, s: int, block: int = 1) -> float:
        return memory_of_group(sizes, f, s, block)

    def check_fits(block: int = 1) -> None:
        if group_bytes(1, 1, block) > budget:
            raise SpecError(
                f"one run needs {human_bytes(group_bytes(1, 1, block))}, over the memory "
                f"budget of {human_bytes(budget)}"
            )

    if alone:
        most = EVALUATION_BLOCK_BYTES // sizes.per_evaluation
        block = _even(n_times - 1, max(1, min(MAX_BLOCK, n_times - 1, most)))
        check_fits(block)
        return Chunking(_regroup(bucket, 1, 1), devices, block)

    _, families, slots = bucket.run_index.shape
    chunk_size_given = max_runs is not None
    max_runs = max_runs or bucket.n_runs
    while families > 1 and (group_bytes(families, slots) > budget or families * slots > max_runs):
        families = (families + 1) // 2
    while slots > 1 and (group_bytes(families, slots) > budget or families * slots > max_runs):
        slots = (slots + 1) // 2
    check_fits()
    bucket = _regroup(bucket, families, slots)
    fit = min(budget // group_bytes(families, slots), max_runs // (families * slots))
    if not chunk_size_given and jax.default_backend() == "cpu":
        # A CPU step streams every run's state and its family's data: a chunk whose working set
        # stays in cache runs several times faster than one that spills to memory.
        step_bytes = families * sizes.per_family + families * slots * sizes.per_run
        fit = min(fit, cache_bytes() // step_bytes)
    groups = min(max(int(fit), 1), bucket.n_groups)
    groups = _even(bucket.n_groups, max(devices, groups - groups % devices), devices)
    runs = groups * families * slots
    block = min(
        MAX_BLOCK,
        n_times - 1,
        EVALUATION_BLOCK_BYTES * devices // (runs * sizes.per_evaluation),
        1 + (budget - groups * group_bytes(families, slots)) // (runs * sizes.per_evaluation),
    )
    return Chunking(bucket, groups, _even(n_times - 1, max(int(block), 1)))


def memory_of_group(
    sizes: trainer.StateBytes, families: int, slots: int, block: int = 1
) -> float:
    """Bytes one group of ``families`` x ``slots`` runs holds while it evaluates ``block`` log
    points at once; a chunk holds its groups' sum, within the budget."""
    per_run = sizes.per_run + block * sizes.per_evaluation
    return sizes.per_group + families * sizes.per_family + families * slots * per_run


def _regroup(bucket: Bucket, families: int, slots: int) -> Bucket:
    """``bucket`` in groups of at most ``families`` x ``slots`` runs, without groups that hold
    only padding."""
    if (families, slots) == bucket.run_index.shape[1:]:
        return bucket
    bucket = bucket.split(families, slots)
    real = np.flatnonzero(bucket.valid.any(axis=(1, 2)))
    return bucket.take_groups(real, np.ones(len(real), bool))


def _even(total: int, most: int, multiple: int = 1) -> int:
    """The smallest multiple of ``multiple`` that cuts ``total`` into as few parts as parts of
    ``most`` would: the last part is then padded as little as it can be."""
    parts = -(-total // most)
    size = -(-total // parts)
    return min(most, -(-size // multiple) * multiple)


def cache_bytes() -> int:
    """The host's level-2 cache over all cores, from Linux's sysfs (1 MiB per core if unknown)."""
    per_core = 2**20
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                per_core = int(size.rstrip("KMB")) * {"K": 2**10, "M": 2**20}.get(size[-1], 1)
        except (OSError, ValueError):
            continue
    return per_core * (os.cpu_count() or 1)


def _chunks_here(buckets, steps: int) -> list[tuple[int, int]]:
    """For each bucket, how many of its chunks this process trains (the engine deals chunk n
    to process n mod processes) and about how many run-steps they hold."""
    processes, me, number = jax.process_count(), jax.process_index(), 0
    here = []
    for bucket, groups_per_chunk, _ in buckets:
        count = -(-bucket.n_groups // groups_per_chunk)
        mine = len(range((me - number) % processes, count, processes))
        here.append((mine, bucket.n_runs * steps * mine // count))
        number += count
    return here


def _chunks(bucket: Bucket, groups_per_chunk: int):
    """Chunks of exactly ``groups_per_chunk`` groups (the last padded with invalid copies of the
    first group), so every chunk reuses one compiled program."""
    for start in range(0, bucket.n_groups, groups_per_chunk):
        index = np.arange(start, start + groups_per_chunk)
        real = index < bucket.n_groups
        yield bucket.take_groups(np.where(real, index, 0), real)
