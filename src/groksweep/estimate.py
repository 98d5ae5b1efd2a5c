"""How a sweep will run here, before it runs: its runs, shape buckets, compiles, chunks, the
memory of a chunk against the budget, and a time measured on a short calibration.

The calibration goes through :func:`groksweep.engine.run`, on each bucket's first chunk of a
copy of the sweep cut short, at one step per log point: with one block of log points, and with
enough blocks that their evaluations take a measurable time (each compiled once, then timed
twice: the least time counts, since the machine's other work only ever adds some); then, for
gradient steps, with more steps on the one-block program until they take a measurable time. A
chunk's time is then

    seconds per chunk + steps x seconds per step + log points x seconds per log point

(a spectral jump costs the same for any step count, so there are no steps), and the sweep's
time is the sum over buckets of a compile and of their chunks' times.

``groksweep plan SPEC`` and ``groksweep run SPEC --dry-run`` print :meth:`Estimate.report`;
``groksweep run`` prints :meth:`Estimate.summary` of an uncalibrated estimate, since calibrating
compiles every bucket twice more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np

from groksweep import engine, trainer
from groksweep.params import human_bytes
from groksweep.spec import Sweep, declared_params

CALIBRATION_BLOCKS = 2
"""The fewest blocks of log points a calibration times, against one."""
MEASURABLE_SECONDS = 0.5
"""Log points and steps are added to a calibration until they take about this long (or the
sweep's own are reached): shorter times are mostly the noise of the machine."""
SLOW_SECONDS = 3600.0
"""A sweep estimated to take longer is warned about, with what would make it faster."""


@dataclass(frozen=True)
class Calibration:
    """What a bucket's first chunk took on a short copy of the sweep."""

    compile_seconds: float
    """compiling the chunk's program (or loading it from the compilation cache)"""
    points: tuple[int, int]
    """the two numbers of log points timed (each a whole number of blocks)"""
    seconds_per_chunk: float
    """what a chunk costs whatever its steps and log points: draws, shared data, set-up"""
    seconds_per_point: float
    """evaluating the chunk at one log point"""
    seconds_per_step: float
    """one gradient step of the chunk; 0 for the spectral method"""
    steps_timed: int
    """gradient steps timed to measure ``seconds_per_step`` (0 for the spectral method)"""
    seconds_timed: float
    """how long those steps took"""


@dataclass(frozen=True)
class BucketEstimate:
    """One shape bucket: one compiled program, run once per chunk."""

    chunking: engine.Chunking
    shape: dict
    """static values and padded sizes: the compile-time shape"""
    chunks: int
    runs_per_chunk: int
    """runs a chunk computes, padding included"""
    chunk_bytes: float
    """memory a chunk holds (:func:`groksweep.engine.memory_of_group`)"""
    log_points: int
    """log points a chunk evaluates after step 0, the last block filled up"""
    steps: int
    calibration: Calibration | None

    @property
    def chunk_seconds(self) -> float | None:
        c = self.calibration
        if c is None:
            return None
        return (
            c.seconds_per_chunk
            + self.steps * c.seconds_per_step
            + self.log_points * c.seconds_per_point
        )

    @property
    def seconds(self) -> float | None:
        if self.calibration is None:
            return None
        return self.calibration.compile_seconds + self.chunks * self.chunk_seconds


@dataclass(frozen=True)
class Estimate:
    """A sweep's plan, and its time where calibrated (:func:`estimate`)."""

    plan: engine.SweepPlan
    buckets: tuple[BucketEstimate, ...]
    checkpoint_every: float | None = engine.CHECKPOINT_EVERY
    """seconds a segment of a chunk lasts, as :func:`groksweep.engine.run` takes it"""

    @property
    def seconds(self) -> float | None:
        """The estimated time of the whole sweep on this machine; None if not calibrated."""
        times = [b.seconds for b in self.buckets]
        return None if None in times else sum(times)

    @property
    def chunks(self) -> int:
        return sum(b.chunks for b in self.buckets)

    def summary(self) -> str:
        """One line: runs, buckets, compiles, chunks, memory and, where calibrated, time."""
        sweep = self.plan.sweep
        most = max(b.chunk_bytes for b in self.buckets)
        line = (
            f"{sweep.n_runs:,} runs, {_count(len(self.buckets), 'bucket')} "
            f"({_count(len(self.buckets), 'compile')}), {_count(self.chunks, 'chunk')}, "
            f"up to {human_bytes(most)} per chunk of a {human_bytes(self.plan.budget)} budget"
        )
        if sweep.refine:  # the plan is the coarse grid's, round 0 of the refinement
            from groksweep.refine import describe

            line += f"; {describe(sweep)}"
        if self.seconds is None:
            return line + "; time not calibrated (`groksweep plan SPEC` measures it)"
        return line + f"; estimated {duration(self.seconds)} on this machine" + (
            " for round 0" if sweep.refine else ""
        )

    def report(self) -> str:
        """The plan bucket by bucket, how its time was estimated, and advice if it is slow."""
        sweep, task = self.plan.sweep, self.plan.sweep.task_def
        roles = {name: param.role for name, param in declared_params(task).items()}
        grid = " x ".join(f"{name} {len(values)}" for name, values in sweep.axes.items())
        lines = [
            f"sweep: {sweep.task}, {sweep.n_runs:,} runs ({grid}), {sweep.steps:,} steps, "
            f"{len(sweep.times()) - 1:,} log points after step 0",
            f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; memory budget "
            f"{human_bytes(self.plan.budget)}",
        ]
        for i, b in enumerate(self.buckets):
            static = " ".join(f"{k}={v}" for k, v in b.shape.items() if roles[k] != "padded")
            padded = " ".join(f"{k}={v}" for k, v in b.shape.items() if roles[k] == "padded")
            groups, families, slots = b.chunking.bucket.run_index.shape
            lines += [
                f"bucket {i}: {b.chunking.bucket.n_runs:,} runs; static {static}"
                + (f"; padded to {padded}" if padded else ""),
                f"  (groups, families, slots) = ({groups}, {families}, {slots}); "
                f"{_count(b.chunks, 'chunk')} of {_count(b.chunking.groups, 'group')} "
                f"({b.runs_per_chunk:,} runs each, padding included); "
                f"{_count(b.chunking.block, 'log point')} per block",
                f"  memory per chunk: {human_bytes(b.chunk_bytes)} of the "
                f"{human_bytes(self.plan.budget)} budget",
            ]
            c = b.calibration
            if c is None:
                continue
            few, many = c.points
            points = f"{few} and {many}" if few < many else f"{many}"
            timed = (
                f"  calibration: compiled in {c.compile_seconds:.1f} s; timed {points} log "
                f"points at one step each: {_seconds(c.seconds_per_chunk)} per chunk + "
                f"{_seconds(c.seconds_per_point)} per log point"
            )
            steps = ""
            if c.steps_timed:
                timed += (
                    f"; {c.steps_timed:,} more steps in {c.seconds_timed:.2f} s: "
                    f"{_seconds(c.seconds_per_step)} per step"
                )
                steps = f" + {b.steps:,} steps x {_seconds(c.seconds_per_step)}"
            lines += [
                timed,
                f"  scaled to the sweep: {c.compile_seconds:.1f} s compile + "
                f"{_count(b.chunks, 'chunk')} x ({_seconds(c.seconds_per_chunk)}{steps} + "
                f"{b.log_points:,} log points x {_seconds(c.seconds_per_point)}) "
                f"= {duration(b.seconds)}",
            ]
            if self.checkpoint_every is not None:
                # A segment holds whole blocks, so a chunk has at most one per block.
                segments = min(
                    b.log_points // b.chunking.block,
                    max(1, math.ceil(b.chunk_seconds / self.checkpoint_every)),
                )
                lines.append(
                    f"  segments: about {segments:,} per chunk (--checkpoint-every "
                    f"{self.checkpoint_every:g} s)"
                )
        lines.append(f"total: {self.summary()}")
        lines += self.advice()
        return "\n".join(lines)

    def advice(self) -> list[str]:
        """A warning, with what would help, when the sweep would take over an hour here."""
        seconds = self.seconds
        if seconds is None or seconds <= SLOW_SECONDS:
            return []
        sweep = self.plan.sweep
        stepping = sum(
            b.chunks * b.steps * b.calibration.seconds_per_step for b in self.buckets
        )
        evaluating = sum(
            b.chunks * b.log_points * b.calibration.seconds_per_point for b in self.buckets
        )
        lines = [f"warning: this sweep would take about {duration(seconds)} here. What helps:"]
        if jax.default_backend() == "cpu":
            lines.append("  - an accelerator: a GPU trains a chunk's runs in parallel")
        if evaluating > 0.2 * seconds:
            lines.append(
                f"  - fewer log points: evaluations take {evaluating / seconds:.0%} of the time "
                f"(log_points = {sweep.log_points:,})"
            )
        if stepping > 0.2 * seconds:
            lines.append(
                f"  - fewer steps: gradient steps take {stepping / seconds:.0%} of the time "
                f"(steps = {sweep.steps:,})"
            )
        could_jump = any(
            b.shape["method"] == "step" and b.shape["optimizer"] == "gd" for b in self.buckets
        )
        if could_jump and "spectral" in sweep.task_def.methods:
            lines.append(
                '  - method = "spectral": the exact closed form, whose cost does not grow with '
                "the steps"
            )
        longest = max(b.chunk_seconds for b in self.buckets)
        if longest > SLOW_SECONDS and max(b.runs_per_chunk for b in self.buckets) > 1:
            lines.append(
                f"  - a smaller --chunk-size: a chunk takes {duration(longest)}; smaller ones "
                "finish, and are saved whole, sooner"
            )
        return lines


def estimate(
    sweep: Sweep | engine.SweepPlan,
    *,
    memory_budget: float | None = None,
    chunk_size: int | None = None,
    reproducible: bool = False,
    calibrate: bool = True,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_every: float | None = engine.CHECKPOINT_EVERY,
) -> Estimate:
    """The plan of ``sweep`` (:func:`groksweep.engine.prepare`, with the same arguments; a
    :class:`~groksweep.engine.SweepPlan` may stand for them) and, with ``calibrate``, its time
    on this machine, measured by running a few blocks of each bucket's first chunk (see the
    module docstring; the compile is part of it), and the segments a chunk then trains in, of
    ``checkpoint_every`` seconds. Nothing is written. ``should_stop`` is asked as in
    :func:`groksweep.engine.run`, which raises :class:`~groksweep.engine.SweepInterrupted` when
    it answers True."""
    plan = (
        sweep
        if isinstance(sweep, engine.SweepPlan)
        else engine.prepare(
            sweep, memory_budget=memory_budget, chunk_size=chunk_size, reproducible=reproducible
        )
    )
    sweep = plan.sweep
    n_times = len(sweep.times())
    buckets = []
    for chunking in plan.buckets:
        bucket, groups, block = chunking
        n_kept = len(sweep.saved_points())
        sizes = trainer.state_bytes(
            sweep.task_def, bucket, n_times, len(sweep.eps), sweep.measures, n_kept
        )
        _, families, slots = bucket.run_index.shape
        buckets.append(
            BucketEstimate(
                chunking=chunking,
                shape=dict(bucket.shape),
                chunks=-(-bucket.n_groups // groups),
                runs_per_chunk=groups * families * slots,
                chunk_bytes=groups * engine.memory_of_group(sizes, families, slots, block),
                log_points=-(-(n_times - 1) // block) * block,
                steps=sweep.steps,
                calibration=_calibrate(plan, chunking, should_stop) if calibrate else None,
            )
        )
    return Estimate(plan, tuple(buckets), checkpoint_every)


def _calibrate(
    plan: engine.SweepPlan, chunking: engine.Chunking, should_stop: Callable[[], bool] | None
) -> Calibration:
    """Time the bucket's first chunk on copies of the sweep cut short (module docstring)."""
    sweep = plan.sweep
    bucket, groups, block = chunking
    index = np.arange(groups)
    first = bucket.take_groups(np.where(index < bucket.n_groups, index, 0), index < bucket.n_groups)
    available = len(sweep.times()) - 1

    def run(points: int, steps: int) -> float:
        # Kept models would need a directory; keeping them costs a copy per log point.
        short = dataclasses.replace(sweep, steps=steps, log_points=points, save_models=())
        cut = dataclasses.replace(
            plan, sweep=short, buckets=[engine.Chunking(first, groups, block)]
        )
        start = time.perf_counter()
        engine.run(cut, progress=False, should_stop=should_stop)
        return time.perf_counter() - start

    def timed(points: int) -> tuple[float, float]:
        """The first call's time (it compiles) and the least of two more: the machine's other
        work only ever adds time."""
        return run(points, points), min(run(points, points), run(points, points))

    # One step per log point: one block, then enough blocks that the evaluations they add take
    # a measurable time (one block's time bounds its evaluations'); the difference is the
    # evaluations, the rest what a chunk costs whatever its length.
    few = min(block, available)
    with_compile, base = timed(few)
    blocks = max(CALIBRATION_BLOCKS, math.ceil(MEASURABLE_SECONDS / max(base, 1e-3)))
    many = min(blocks * block, available)
    fixed, per_point = base, 0.0
    if many > few:
        per_point = max(timed(many)[1] - base, 0.0) / (many - few)
        fixed = max(base - few * per_point, 0.0)
    steps, extra, per_step = few, 0.0, 0.0
    if dict(bucket.shape)["method"] == "step":
        while extra < MEASURABLE_SECONDS and steps < sweep.steps:
            steps = min(4 * steps, sweep.steps)
            extra = max(run(few, steps) - base, 0.0)
        per_step = extra / max(steps - few, 1)
    return Calibration(
        compile_seconds=max(with_compile - base, 0.0),
        points=(few, many),
        seconds_per_chunk=fixed,
        seconds_per_point=max(per_point - per_step, 0.0),
        seconds_per_step=per_step,
        steps_timed=steps - few,
        seconds_timed=extra,
    )


def duration(seconds: float) -> str:
    """A time for a person: 42 s, 3.5 min, 2.1 h, 4.0 days."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    for unit, size in (("min", 60), ("h", 3600), ("days", 86400)):
        if seconds < 90 * size or unit == "days":
            return f"{seconds / size:.1f} {unit}"
    raise AssertionError("unreachable")


def _seconds(seconds: float) -> str:
    """A short time, in the unit that shows it best: 1.2 s, 35 ms, 80 us."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
