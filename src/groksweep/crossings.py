"""Exact first-crossing times on the spectral path (a sweep's ``crossings = "solve"``).

A grokking time is the first step at which an accuracy reaches a level
(:func:`groksweep.grokking_time`). Between log points it is otherwise interpolated; a task with
an exact ``jump`` reaches any step in closed form, so the crossing can be solved for instead,
at a cost that does not depend on ``steps``:

1. **Bracket.** The recorded trajectory (the sweep's log points, kept for learning curves)
   gives, for each run, role (train, test) and threshold, the first log point at or above the
   level, ``hi``, and the one before it, ``lo``, below it (:func:`brackets`). A crossing at
   step 0 is 0; one never reached is NaN (censored), as with interpolation.
2. **Refine.** Bisection in log-time over integer steps (:func:`refine`): the candidate is the
   rounded geometric mean of ``max(lo, 1)`` and ``hi``, kept strictly inside the bracket; the
   accuracy there moves ``hi`` down (at or above the level) or ``lo`` up (below), until
   ``hi - lo <= max(1, rtol * hi)``. The solved time is ``hi``: a step at which the accuracy
   is at or above the level, within the tolerance of the first such step of the bracket; with
   a tolerance of one step it is that step exactly. Each iteration evaluates only the role it
   refines (the other set's per-sample errors are dead code, which XLA removes), so a train
   crossing costs N_tr rows and a test crossing n_test rows per iteration.

**What cannot be missed.** The bracket is the first log point at the level, so the crossing
found is the first one unless the accuracy rose to the level and fell back below it between two
consecutive log points (an excursion shorter than one log-point interval, a factor
``steps ** (1 / (log_points - 1))`` in time), before the bracket or inside it before the point
found. Denser log points shrink what could be missed; ``tests/test_crossings.py`` compares the
solved times with the first crossings of dense trajectories where the accuracy is not monotone.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

ROLES = ("train", "test")
DEFAULT_RTOL = 1e-3
"""The relative tolerance of a solved time when the spec gives none (one step below 1000)."""
MAX_ITERATIONS = 64
"""Bisection iterations at most: from any bracket of counts below 2**53, a log-time bisection
to a relative width of 1e-6, then to one step, takes fewer than 40."""


def brackets(accuracy: np.ndarray, times: np.ndarray, level: float) -> tuple[np.ndarray, ...]:
    """The bracket of each first crossing of ``level`` in ``accuracy`` (..., time, thresholds),
    recorded at the steps ``times``: ``(lo, hi, start)``, each (..., thresholds). ``lo < hi``
    where there is a crossing to refine; ``lo = hi`` (nothing to refine) elsewhere. ``start``
    is the time known without refining: 0 where the level is reached at step 0, NaN where it
    is never reached (or ``hi`` where there is a bracket)."""
    accuracy = np.moveaxis(np.asarray(accuracy, np.float64), -2, -1)  # time last
    times = np.asarray(times, np.int64)
    reached = accuracy >= level  # NaN (after divergence) never reaches it
    first = np.argmax(reached, axis=-1)
    hit = np.take_along_axis(reached, first[..., None], -1)[..., 0]
    refine = hit & (first > 0)
    hi = times[first]
    lo = np.where(refine, times[np.maximum(first - 1, 0)], hi)
    start = np.where(hit, hi, np.nan)
    return lo, hi, start


def refine(
    accuracy: Callable[[Array], Array], lo: Array, hi: Array, level: Array, rtol: Array
) -> tuple[Array, Array]:
    """Bisect each bracket ``(lo, hi]`` (float arrays of integer steps, any shape) of
    ``accuracy(steps) -> accuracies`` (same shape: each bracket's accuracy at its own step)
    until it is at most ``max(1, rtol * hi)`` wide (see the module docstring). Returns the
    refined ``hi`` and the iterations taken (traceable: one run's brackets, ``vmap``-able)."""

    def unfinished(lo: Array, hi: Array) -> Array:
        return hi - lo > jnp.maximum(1.0, rtol * hi)

    def bisect(carry):
        lo, hi, iterations = carry
        active = unfinished(lo, hi)
        # Square roots first: the product of two large counts overflows float32's exact range.
        middle = jnp.round(jnp.sqrt(jnp.maximum(lo, 1.0)) * jnp.sqrt(hi))
        candidate = jnp.where(active, jnp.clip(middle, lo + 1.0, hi - 1.0), hi)
        reached = accuracy(candidate) >= level
        return (
            jnp.where(active & ~reached, candidate, lo),
            jnp.where(active & reached, candidate, hi),
            iterations + 1,
        )

    def going(carry):
        lo, hi, iterations = carry
        return jnp.any(unfinished(lo, hi)) & (iterations < MAX_ITERATIONS)

    _, hi, iterations = lax.while_loop(going, bisect, (lo, hi, jnp.int32(0)))
    return hi, iterations


def solve_run(task, data: dict, state: dict, eps: Array, level: Array, rtol: Array):
    """One run's solved crossing times: ``state["bracket"]`` holds its ``(lo, hi)`` as
    (roles, thresholds) counts in the model's float dtype; returns the refined ``hi`` in the
    same shape and the iterations taken. Uses the task's ``jump`` from the run's initial model
    (the spectral method's ``state["model"]``) and its ``evaluate``."""
    lo, hi = state["bracket"]
    thresholds = jnp.arange(lo.shape[1])

    def accuracy(steps: Array) -> Array:
        rows = []
        for r, role in enumerate(ROLES):

            def at(n, k, role=role):
                model = task.jump(state["model"], data, state["hp"], n)
                value = task.evaluate(model, data, state["hp"], eps)[f"{role}_acc"]
                return value[k] if value.ndim else value

            rows.append(jax.vmap(at)(steps[r], thresholds))
        return jnp.stack(rows)

    return refine(accuracy, lo, hi, level, rtol)
