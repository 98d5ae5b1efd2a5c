"""From the run table to shape buckets: which runs share one compiled program and which data.

Runs are split into *buckets* by their static parameters and, for padded parameters, into
ranges whose largest cost (:meth:`Task.padding_cost`, by default the value itself) is at most
the task's ``max_padding`` times their smallest. A bucket is one compiled program. Inside it,
runs are nested in three levels:

- **groups** share a seed, hence one set of random draws;
- **families** inside a group share the values of the task's ``shared_by`` parameters, hence
  data derived from the draws (for the linear task, the train Gram matrix of one N_tr);
- **slots** inside a family are single runs. They read the family's data unbatched, so one
  gradient step of a family is a matrix-matrix product rather than one matrix-vector product
  per run.

Every level is padded to equal size by repeating an existing member; padding is marked
invalid and dropped from the results.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from groksweep.spec import declared_params
from groksweep.tasks import Task


@dataclass(frozen=True)
class Bucket:
    """Runs that share one compiled program, as (groups, families, slots) arrays."""

    shape: tuple[tuple[str, Any], ...]
    """Static parameter values and padded maxima: the compile-time shape of the program."""
    seeds: np.ndarray
    """(groups,) the seed of each group."""
    run_index: np.ndarray
    """(groups, families, slots) flat grid index of the run in each slot."""
    valid: np.ndarray
    """(groups, families, slots) False for padding."""
    hparams: dict[str, np.ndarray]
    """Traced and padded parameter values, each (groups, families, slots)."""

    @property
    def n_runs(self) -> int:
        return int(self.valid.sum())

    @property
    def n_groups(self) -> int:
        return len(self.seeds)

    def take_groups(self, index: np.ndarray, valid: np.ndarray) -> Bucket:
        """The bucket restricted to groups ``index``; groups with ``valid`` False are padding."""
        return replace(
            self,
            seeds=self.seeds[index],
            run_index=self.run_index[index],
            valid=self.valid[index] & valid[:, None, None],
            hparams={name: values[index] for name, values in self.hparams.items()},
        )

    def split(self, families: int, slots: int) -> Bucket:
        """Regroup into groups of at most ``families`` x ``slots`` runs (same seeds repeated),
        so that a group fits in memory. Results agree with the unsplit bucket to float rounding."""
        g, f, s = self.run_index.shape
        n_f, n_s = -(-f // families), -(-s // slots)

        def regroup(a: np.ndarray, pad_valid: bool = False) -> np.ndarray:
            padding = ((0, 0), (0, n_f * families - f), (0, n_s * slots - s))
            a = (
                np.pad(a, padding, constant_values=False)
                if pad_valid
                else np.pad(a, padding, mode="edge")
            )
            a = a.reshape(g, n_f, families, n_s, slots).transpose(0, 1, 3, 2, 4)
            return a.reshape(g * n_f * n_s, families, slots)

        return replace(
            self,
            seeds=np.repeat(self.seeds, n_f * n_s),
            run_index=regroup(self.run_index),
            valid=regroup(self.valid, pad_valid=True),
            hparams={name: regroup(values) for name, values in self.hparams.items()},
        )


def plan(
    task: Task, runs: Sequence[dict[str, Any]], share_data: bool = True, exact: bool = False
) -> list[Bucket]:
    """Split ``runs`` (canonical values, grid order) into buckets, in order of first run.

    ``share_data=False`` gives every run a family of its own: the per-run path, kept as the
    reference the shared path is measured and tested against. ``exact=True`` pads nothing:
    every value of a padded parameter gets a bucket of its own.
    """
    declared = declared_params(task)
    static = [n for n, p in declared.items() if p.role == "static"]
    padded = [n for n, p in declared.items() if p.role == "padded"]
    traced = [n for n, p in declared.items() if p.role == "traced"]

    by_static: dict[tuple, list[int]] = defaultdict(list)
    for i, run in enumerate(runs):
        by_static[tuple(run[n] for n in static)].append(i)
    ranges = {}  # (static key, padded name) -> value -> range id
    for key, indices in by_static.items():
        static_values = dict(zip(static, key))
        for n in padded:
            cost = {runs[i][n]: task.padding_cost(n, runs[i][n], static_values) for i in indices}
            ids = _padding_ranges(set(cost.values()), 1.0 if exact else task.max_padding.get(n))
            ranges[key, n] = {value: ids[c] for value, c in cost.items()}
    members: dict[tuple, list[int]] = defaultdict(list)
    for i, run in enumerate(runs):
        key = tuple(run[n] for n in static)
        members[key + tuple(ranges[key, n][run[n]] for n in padded)].append(i)

    buckets = []
    for key, indices in members.items():
        shape = dict(zip(static, key[: len(static)]))
        shape |= {n: max(runs[i][n] for i in indices) for n in padded}
        if share_data:
            family_of = lambda r: tuple(r[n] for n in task.shared_by)  # noqa: E731
        else:
            family_of = id  # every run dict is its own family
        nested = _nest(indices, runs, family_of)
        buckets.append(_bucket(tuple(shape.items()), nested, runs, padded + traced))
    return buckets


def _padding_ranges(values: set[float], max_padding: float | None) -> dict[float, int]:
    """Map each cost to the id of its range; a range spans at most a factor ``max_padding``."""
    ids, start, current = {}, None, -1
    for v in sorted(values):
        if start is None or (max_padding is not None and v > max_padding * start):
            start, current = v, current + 1
        ids[v] = current
    return ids


def _nest(indices, runs, family_of) -> dict[int, dict[Any, list[int]]]:
    """seed -> family key -> run indices, in order of first appearance."""
    nested: dict[int, dict[Any, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i in indices:
        nested[runs[i]["seed"]][family_of(runs[i])].append(i)
    return nested


def _bucket(shape, nested, runs, names) -> Bucket:
    families = max(len(fams) for fams in nested.values())
    slots = max(len(members) for fams in nested.values() for members in fams.values())
    run_index = np.empty((len(nested), families, slots), dtype=np.int64)
    valid = np.zeros(run_index.shape, dtype=bool)
    for g, fams in enumerate(nested.values()):
        rows = list(fams.values())
        for f in range(families):
            members = rows[f] if f < len(rows) else rows[0]
            run_index[g, f] = members + [members[0]] * (slots - len(members))
            valid[g, f, : len(members)] = f < len(rows)
    hparams = {n: np.vectorize(lambda i, n=n: runs[i][n])(run_index) for n in names}
    return Bucket(shape, np.array(list(nested), dtype=np.uint32), run_index, valid, hparams)
