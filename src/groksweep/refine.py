"""Adaptive grids for two-axis phase maps: compute a coarse grid, then refine where it changes.

A sweep with ``refine = {rounds = k, on = "boundary" | "delta_t", factor = 2.0, level = 0.95}``
and exactly two axes besides seed is run in rounds. Round 0 computes the coarse grid (the
spec's axis values). After round r, a *cell* of the round-r grid (four neighbouring points)
is flagged when its corners disagree:

- ``on = "boundary"``: some corners grok and some do not. A point groks when its grokking time
  :func:`groksweep.grokking_time` at accuracy ``level`` gives a finite seed-median Δt
  (:func:`groksweep.reduce_seeds`: fewer than half its seeds censored), at any ``eps``;
- ``on = "delta_t"``: that, or all four grok and their largest Δt is more than ``factor`` times
  their smallest.

Round r + 1 computes the midpoints of the flagged cells (edge midpoints and centre, every seed),
which splits each into four cells of the next round; up to k rounds, or until none is flagged.
Only cells whose four corners are computed can be flagged, so refinement stays inside the
cells flagged before.

Every round is a run of one sweep, the *fine* sweep (:func:`fine_sweep`): the coarse axis values
with midpoints inserted k times, restricted to the round's points (``engine.prepare(select=)``).
Its run indices, hence the chunks' store keys, are the same in every round and every rerun, so
an interrupted refinement resumes from its saved chunks round by round.

An axis gets geometric midpoints (``sqrt(a b)``) when its values are positive and more evenly
spaced in log than linearly (two values: when they span a factor 10 or more), and arithmetic
midpoints otherwise (:func:`midpoint_rule`).

The result is a Dataset on the finest grid: NaN at the points not computed, with ``computed``
(bool over the two axes) and ``refine_round`` (the round that computed each point; -1: none).
:func:`groksweep.grokking_time` and :func:`groksweep.reduce_seeds` keep both;
:func:`groksweep.plot.phase_diagram` draws each point over the cells nearest it
(:func:`fill_from_computed`), so each region shows at the resolution it was computed.
:func:`theory_map` refines a map of the linear task's exact theory by the same rule, at the
cost of theory evaluations only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jax
import numpy as np
import xarray as xr

from groksweep import engine
from groksweep.errors import SpecError
from groksweep.phase import grokking_time, reduce_seeds
from groksweep.spec import Sweep
from groksweep.store import ChunkStore

SIGNIFICANT_DIGITS = 12
"""Midpoints are rounded to this many digits, so that 0.4 between 0.3 and 0.5 reads as 0.4."""


@dataclass(frozen=True)
class Round:
    """What one round did: the grid points (and runs) it computed, and the cells it flagged
    for the next round (0 after the last round)."""

    index: int
    points: int
    runs: int
    flagged: int


# --- the grid ----------------------------------------------------------------------------------
def midpoint_rule(values: Sequence[float]) -> str:
    """``"log"`` for positive values more evenly spaced in log than linearly (two values: a span
    of a factor 10 or more), ``"linear"`` otherwise."""
    values = np.asarray(values, dtype=float)
    if not (values > 0).all():
        return "linear"
    if len(values) == 2:
        return "log" if values[1] >= 10 * values[0] else "linear"
    return "log" if _unevenness(np.log(values)) < _unevenness(values) else "linear"


def _unevenness(values: np.ndarray) -> float:
    steps = np.diff(values)
    return float(np.ptp(steps) / np.mean(steps))


def refined_axis(values: Sequence[float], rounds: int) -> list[float]:
    """``values`` (increasing) with midpoints inserted ``rounds`` times, by
    :func:`midpoint_rule`; the given values are kept exactly, at every ``2**rounds``-th place."""
    given = np.asarray(values, dtype=float)
    log = midpoint_rule(given) == "log"
    points = np.log(given) if log else given
    for _ in range(rounds):
        finer = np.empty(2 * len(points) - 1)
        finer[::2], finer[1::2] = points, (points[:-1] + points[1:]) / 2
        points = finer
    out = [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in (np.exp(points) if log else points)]
    out[:: 2**rounds] = list(values)
    return out


def fine_sweep(sweep: Sweep) -> Sweep:
    """The plain sweep of ``sweep``'s finest grid: its two map axes refined ``rounds`` times."""
    if not sweep.refine:
        raise SpecError("the sweep has no refine table")
    rounds = sweep.refine["rounds"]
    axes = {
        name: values if name == "seed" else refined_axis(values, rounds)
        for name, values in sweep.axes.items()
    }
    return replace(sweep, axes=axes, refine=None)


def map_axes(sweep: Sweep) -> list[str]:
    """The two axes a refinement refines: every axis but seed, in the sweep's order."""
    return [name for name in sweep.axes if name != "seed"]


def describe(sweep: Sweep) -> str:
    """What a refined sweep will train, for its plan: round 0's runs, and at most the fine
    grid's, which a refinement flagging every cell in every round would train."""
    refine, fine = sweep.refine, fine_sweep(sweep)
    grid = " x ".join(str(len(fine.axes[name])) for name in map_axes(fine))
    seeds = len(fine.axes.get("seed", [0]))
    return (
        f"refined in up to {refine['rounds']} rounds on {refine['on']}: these are round 0's "
        f"{sweep.n_runs:,} runs of the coarse grid; how many more depends on the results, at "
        f"most {fine.n_runs - sweep.n_runs:,} (the fine grid is {grid} points x {seeds} "
        f"seed{'s' if seeds > 1 else ''})"
    )


def round_line(done: Round) -> str:
    """One line for a finished round, as the command line prints it."""
    return (
        f"refinement round {done.index}: {done.points:,} points ({done.runs:,} runs) computed; "
        f"{done.flagged:,} cells flagged for refinement"
    )


# --- the rule ----------------------------------------------------------------------------------
def flag_cells(
    groks: np.ndarray,
    delta_t: np.ndarray,
    computed: np.ndarray,
    stride: int,
    on: str,
    factor: float,
) -> np.ndarray:
    """The cells of the grid of every ``stride``-th fine point whose corners disagree, as a
    boolean array over their lower corners (one less than the points along each axis).

    ``groks`` and ``delta_t`` have the fine grid as their last two dims (any dims before, e.g.
    eps: a cell disagreeing at any of them is flagged); ``computed`` is the fine grid's mask.
    Only cells with four computed corners are flagged."""

    def corners(a: np.ndarray) -> np.ndarray:
        a = a[..., ::stride, ::stride]
        return np.stack([a[..., :-1, :-1], a[..., 1:, :-1], a[..., :-1, 1:], a[..., 1:, 1:]])

    grok = corners(np.asarray(groks, bool))
    differ = grok.any(0) & ~grok.all(0)
    if on == "delta_t":
        times = corners(np.where(groks, delta_t, np.nan))  # NaN only where a corner never groks
        # A Δt <= 0 beside a positive one counts as differing by more than any factor.
        differ |= grok.all(0) & (times.max(0) > factor * times.min(0))
    elif on != "boundary":
        raise ValueError(f"on must be 'boundary' or 'delta_t', got {on!r}")
    differ = differ.reshape(-1, *differ.shape[-2:]).any(0)
    return differ & corners(computed).all(0)


def children(cells: np.ndarray, stride: int, fine_shape: tuple[int, int]) -> np.ndarray:
    """The fine points of the cells of ``cells`` (flagged, on the grid of every ``stride``-th
    point) at half that stride: corners, edge midpoints and centre of each."""
    half = stride // 2
    points = np.zeros(fine_shape, bool)
    n0, n1 = cells.shape
    for d0 in (0, half, stride):
        for d1 in (0, half, stride):
            points[d0 : d0 + n0 * stride : stride, d1 : d1 + n1 * stride : stride] |= cells
    return points


ComputePoints = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``compute(round, points)`` of :func:`refine_loop`: computes the fine points of the mask
``points``, returns ``(groks, delta_t)`` of every point computed so far."""


def refine_loop(
    compute: ComputePoints,
    coarse_shape: tuple[int, int],
    rounds: int,
    on: str,
    factor: float,
    report: Callable[[Round], None] | None = None,
    runs_per_point: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The refinement, whatever computes the points. ``compute(round, points)`` computes the
    fine points of the boolean mask ``points`` and returns ``(groks, delta_t)`` over the fine
    grid (last two dims) for every point computed so far. Returns ``computed`` and the round
    of each fine point (-1: none). ``report`` hears each round."""
    report = report or (lambda done: None)
    top = 2**rounds
    fine_shape = tuple((n - 1) * top + 1 for n in coarse_shape)
    computed = np.zeros(fine_shape, bool)
    round_of = np.full(fine_shape, -1)
    todo = np.zeros(fine_shape, bool)
    todo[::top, ::top] = True
    for index in range(rounds + 1):
        groks, delta_t = compute(index, todo)
        computed |= todo
        round_of[todo] = index
        points = int(todo.sum())
        if index == rounds:
            report(Round(index, points, points * runs_per_point, 0))
            break
        stride = top >> index
        cells = flag_cells(groks, delta_t, computed, stride, on, factor)
        todo = children(cells, stride, fine_shape) & ~computed
        report(Round(index, points, points * runs_per_point, int(cells.sum())))
        if not todo.any():
            break
    return computed, round_of


def verdict(phase: xr.Dataset, dims: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(groks, delta_t)`` of a phase map (seed medians where it has seeds), with ``dims`` last."""
    if "seed" in phase.dims:
        delta_t = reduce_seeds(phase)["delta_t_median"]
    else:
        delta_t = phase["delta_t"]
    delta_t = delta_t.transpose(..., *dims).values
    return np.isfinite(delta_t), delta_t


# --- trained maps ------------------------------------------------------------------------------
def run(
    sweep: Sweep,
    progress: bool = True,
    *,
    store: ChunkStore | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
    report: Callable[[Round], None] | None = None,
    **options: Any,
) -> xr.Dataset:
    """Train the refined map of ``sweep`` (which has a ``refine`` table) round by round and
    return its trajectories on the finest grid (see the module's docstring).

    ``progress``, ``store``, ``should_stop``, ``log`` and ``options`` (the planning and
    segment arguments of :func:`groksweep.engine.run`) serve every round; ``should_stop`` is
    also asked between rounds. ``report`` hears each :class:`Round` (the log gets a line too).
    With a ``store``, every round's chunks are saved and kept, so a rerun reads finished rounds
    back; the store's other chunk files are removed at the end."""
    fine = fine_sweep(sweep)
    refine = sweep.refine
    grid = map_axes(fine)
    log = log or (lambda line: None)
    planning = {k: options.pop(k) for k in list(options) if k in PLANNING}
    done = xr.DataArray(np.zeros([len(fine.axes[name]) for name in grid], bool), dims=grid)
    merged: xr.Dataset | None = None
    keys: set[str] = set()

    def compute(round_index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal merged
        if should_stop and should_stop():
            raise engine.SweepInterrupted(
                f"stopped before refinement round {round_index}; earlier rounds are saved"
            )
        select = np.flatnonzero(_spread(points, fine, grid).ravel())
        prepared = engine.prepare(fine, select=select, **planning)
        if store:
            keys.update(engine.chunk_keys(prepared, store))
        ds = engine.run(
            prepared,
            progress,
            store=store,
            should_stop=should_stop,
            log=log,
            prune=False,
            **options,
        )
        done.values |= points
        merged = ds if merged is None else ds.where(done.copy(data=points), merged)
        return verdict(grokking_time(merged.assign(computed=done), refine["level"]), grid)

    def tell(done: Round) -> None:
        log(round_line(done))
        if report:
            report(done)

    computed, round_of = refine_loop(
        compute,
        tuple(len(sweep.axes[name]) for name in grid),
        refine["rounds"],
        refine["on"],
        refine["factor"],
        tell,
        fine.n_runs // math.prod(len(fine.axes[name]) for name in grid),
    )
    if store and jax.process_index() == 0:
        removed = store.prune(keys)
        if removed:
            log(f"removed {removed} chunk files of other code that no rerun would read")
    assert merged is not None
    merged.attrs |= {"refined_from": sweep.to_toml()}
    return with_mask(merged, grid, computed, round_of)


PLANNING = ("memory_budget", "chunk_size", "share_data", "reproducible")
"""The arguments of :func:`groksweep.engine.prepare` that :func:`run` passes to every round."""


def _spread(points: np.ndarray, fine: Sweep, grid: list[str]) -> np.ndarray:
    """The map mask ``points`` broadcast over the fine sweep's whole grid (every seed)."""
    shape = [len(fine.axes[name]) if name in grid else 1 for name in fine.axes]
    return np.broadcast_to(points.reshape(shape), fine.shape)


def with_mask(
    ds: xr.Dataset, grid: Sequence[str], computed: np.ndarray, round_of: np.ndarray
) -> xr.Dataset:
    """``ds`` with the ``computed`` and ``refine_round`` variables over ``grid``."""
    return ds.assign(
        computed=(tuple(grid), computed, {"description": "point computed by the refinement"}),
        refine_round=(
            tuple(grid),
            round_of,
            {"description": "refinement round that computed the point; -1: not computed"},
        ),
    )


# --- theory maps -------------------------------------------------------------------------------
def theory_map(
    axes: Mapping[str, Sequence[float]],
    *,
    rounds: int,
    on: str = "boundary",
    factor: float = 2.0,
    level: float = 0.95,
    report: Callable[[Round], None] | None = None,
    **fixed: Any,
) -> xr.Dataset:
    """The exact theory's grokking times (:func:`groksweep.theory_grid.theory_times`) on the
    two coarse ``axes`` (name -> increasing values; theory parameters, e.g. gamma and lam),
    refined ``rounds`` times by the rule of a refined sweep; ``fixed`` are the other theory
    parameters (a scalar ``eps``). Returns ``t_train``, ``t_test``, ``delta_t``, ``computed``
    and ``refine_round`` on the finest grid, NaN where not computed."""
    from groksweep import theory_grid

    if len(axes) != 2:
        raise ValueError(f"a theory map refines two axes, got {len(axes)}")
    grid = list(axes)
    fine = {name: np.array(refined_axis(values, rounds)) for name, values in axes.items()}
    shape = tuple(len(values) for values in fine.values())
    times = {name: np.full(shape, np.nan) for name in ("t_train", "t_test")}

    def compute(round_index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        where = np.nonzero(points)
        at = {name: xr.DataArray(fine[name][i], dims="point") for name, i in zip(grid, where)}
        exact = theory_grid.theory_times(level=level, **at, **fixed)
        for name, values in times.items():
            values[where] = exact[name].values
        delta_t = times["t_test"] - times["t_train"]
        return np.isfinite(delta_t), delta_t

    computed, round_of = refine_loop(
        compute, tuple(len(v) for v in axes.values()), rounds, on, factor, report
    )
    out = xr.Dataset(
        {name: (grid, values) for name, values in times.items()},
        coords={name: values for name, values in fine.items()},
        attrs={"refine": f"rounds = {rounds}, on = {on}, factor = {factor:g}, level = {level:g}"},
    )
    out["delta_t"] = out["t_test"] - out["t_train"]
    return with_mask(out, grid, computed, round_of)


# --- drawing -----------------------------------------------------------------------------------
def fill_from_computed(values: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """``values`` (last two dims the fine grid) with every point not computed taking the value
    of the computed point nearest it in grid steps: each point then covers the cells around it
    up to halfway to its computed neighbours, the resolution at which it was computed."""
    from scipy import ndimage

    if computed.all() or not computed.any():
        return values
    _, (i, j) = ndimage.distance_transform_edt(~computed, return_indices=True)
    return values[..., i, j]
