"""groksweep inside your own code: a search loop of your own around the trainer and the theory.

At which sample ratio λ = d_in/N_tr does grokking take ``--target`` steps? The delay
Δt = t_test - t_train grows with λ towards the interpolation threshold λ = 1, so the loop
brackets the answer: it trains a few λ with ``groksweep.run`` (one compiled, batched sweep per
round), reduces them with ``groksweep.phase`` (grokking times, then seed medians), and trains a
finer grid inside the bracket. Each trained Δt is set beside the exact prediction of
``groksweep.theory`` at the λ = d_in / round(d_in/λ) the run really trained, and the answer
beside the theory's.

    python examples/own_loop.py            # d_in = 200, 4 seeds, 3 rounds of 5 points: ~30 s
    python examples/own_loop.py --tiny     # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import groksweep as gs
from groksweep import phase, theory

LR, EPS, LEVEL = 0.01, 1e-3, 0.95


def train(lams: list[float], d_in: int, seeds: list[int], steps: int) -> dict[float, float]:
    """Seed-median Δt of every λ (NaN: no grokking in half the seeds or more)."""
    sweep = gs.Sweep(
        "linear",
        params={"d_in": d_in, "n_test": 5 * d_in, "lr": LR},
        axes={"lam": lams, "seed": seeds},
        steps=steps,
        log_points=60,
        eps=[EPS],
    )
    ds = gs.run(sweep, progress=False)
    times = phase.grokking_time(ds, level=LEVEL).sel(eps=EPS)
    medians = phase.reduce_seeds(times)["delta_t_median"]
    return {float(lam): float(medians.sel(lam=lam)) for lam in lams}


def predicted(lam: float, d_in: int) -> float:
    """The theory's Δt at the λ a run of this d_in trains (N_tr is rounded to an integer)."""
    effective = d_in / round(d_in / lam)
    t_train, t_test = theory.grokking_time(effective, lr=LR, eps=EPS, level=LEVEL)
    return float(t_test - t_train)


def crossing(lams: np.ndarray, delta_t: np.ndarray, target: float) -> float:
    """The λ at which Δt first reaches ``target``, interpolated in log Δt (NaN: not bracketed).
    A NaN Δt (no grokking) counts as above any target."""
    above = ~(delta_t < target)
    k = int(np.argmax(above))
    if not above[k] or k == 0 or np.isnan(delta_t[k]):
        return float("nan")
    a, b = np.log(delta_t[k - 1]), np.log(delta_t[k])
    return float(lams[k - 1] + (np.log(target) - a) / (b - a) * (lams[k] - lams[k - 1]))


def main(argv: list[str] | None = None) -> dict[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1000.0, help="Δt to find, in steps")
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=bool(os.environ.get("GROKSWEEP_EXAMPLES_TINY")),
        help="d_in = 20, one seed, two rounds of 3 points (also: GROKSWEEP_EXAMPLES_TINY=1)",
    )
    args = parser.parse_args(argv)
    d_in, seeds, rounds, points = (20, [0], 2, 3) if args.tiny else (200, [0, 1, 2, 3], 3, 5)

    lo, hi, found = 0.2, 0.9, {}
    for k in range(rounds):
        lams = [lam for lam in np.linspace(lo, hi, points).round(4) if lam not in found]
        found |= train(lams, d_in, seeds, steps=100_000)
        grid = np.array(sorted(found))
        delta_t = np.array([found[lam] for lam in grid])
        above = ~(delta_t < args.target)
        if above.all() or not above.any():
            print(
                f"round {k + 1}: Δt = {args.target:g} is not between λ = {grid[0]} and {grid[-1]}"
            )
            break
        first = int(np.argmax(above))
        lo, hi = grid[first - 1], grid[first]
        print(f"round {k + 1}: Δt = {args.target:g} lies between λ = {lo:g} and {hi:g}")

    print(f"{'λ':>7} {'trained Δt':>12} {'theory Δt':>12}")
    for lam in sorted(found):
        print(f"{lam:7.4g} {found[lam]:12.4g} {predicted(lam, d_in):12.4g}")
    dense = np.linspace(0.1, 0.99, 400)
    t_train, t_test = theory.grokking_time(dense, lr=LR, eps=EPS, level=LEVEL)
    grid = np.array(sorted(found))
    trained = crossing(grid, np.array([found[lam] for lam in grid]), args.target)
    print(
        f"Δt = {args.target:g} steps at λ ≈ {trained:.3f} trained (d_in = {d_in}), "
        f"{crossing(dense, t_test - t_train, args.target):.3f} in the d_in → ∞ theory"
    )
    return found


if __name__ == "__main__":
    main()
