"""From the run table to shape buckets: which runs share one compiled program and which data.

Runs are split into *buckets* by their static parameters and, for padded parameters, into
ranges whose largest value is at most the task's ``max_padding`` times their smallest. Inside a
bucket, runs are grouped by seed: a group shares one set of random draws, so its runs are
batched against the same data (matrix-matrix products rather than one matrix-vector product
per run). Groups are padded to equal size by repeating one of their runs; padding slots are
marked invalid and dropped from the results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from groksweep.tasks import Task
from groksweep.spec import declared_params


@dataclass(frozen=True)
class Bucket:
    """Runs that share one compiled program."""

    shape: tuple[tuple[str, Any], ...]
    """Static parameter values and padded maxima: the compile-time shape of the program."""
    seeds: np.ndarray
    """(groups,) the seed of each group."""
    run_index: np.ndarray
    """(groups, slots) flat grid index of the run in each slot."""
    valid: np.ndarray
    """(groups, slots) False for padding slots."""
    hparams: dict[str, np.ndarray]
    """Traced and padded parameter values, each (groups, slots)."""

    @property
    def n_runs(self) -> int:
        return int(self.valid.sum())


def plan(task: Task, runs: Sequence[dict[str, Any]]) -> list[Bucket]:
    """Split ``runs`` (canonical values, grid order) into buckets, in order of first run."""
    declared = declared_params(task)
    static = [n for n, p in declared.items() if p.role == "static"]
    padded = [n for n, p in declared.items() if p.role == "padded"]
    traced = [n for n, p in declared.items() if p.role == "traced"]

    ranges = {name: _padding_ranges({r[name] for r in runs}, task.max_padding.get(name)) for name in padded}
    members: dict[tuple, list[int]] = defaultdict(list)
    for i, run in enumerate(runs):
        key = tuple(run[n] for n in static) + tuple(ranges[n][run[n]] for n in padded)
        members[key].append(i)

    buckets = []
    for key, indices in members.items():
        shape = dict(zip(static, key[: len(static)]))
        shape |= {n: max(runs[i][n] for i in indices) for n in padded}
        buckets.append(_group_by_seed(tuple(shape.items()), indices, runs, padded + traced))
    return buckets


def _padding_ranges(values: set[int], max_padding: float | None) -> dict[int, int]:
    """Map each value to the id of its range; a range spans at most a factor ``max_padding``."""
    ids, start, current = {}, None, -1
    for v in sorted(values):
        if start is None or (max_padding is not None and v > max_padding * start):
            start, current = v, current + 1
        ids[v] = current
    return ids


def _group_by_seed(shape, indices, runs, names) -> Bucket:
    groups: dict[int, list[int]] = defaultdict(list)
    for i in indices:
        groups[runs[i]["seed"]].append(i)
    slots = max(len(g) for g in groups.values())
    run_index = np.array([g + [g[0]] * (slots - len(g)) for g in groups.values()], dtype=np.int64)
    valid = np.array([[True] * len(g) + [False] * (slots - len(g)) for g in groups.values()])
    hparams = {n: np.array([[runs[i][n] for i in row] for row in run_index]) for n in names}
    return Bucket(shape, np.array(list(groups), dtype=np.uint32), run_index, valid, hparams)
