"""A sweep to a phase diagram, through the Python API.

Trains the linear teacher-student model of Levi, Beck & Bar Sinai over the sample ratio
λ = d_in/N_tr and the weight decay γ, several seeds per cell, reduces every run to its grokking
time Δt = t_test - t_train, and draws the seed median as a phase diagram (white: the test
accuracy never reached 95% within the steps). The same sweep as a spec file would run with
``groksweep run``; here every step is a call you can change.

    python examples/phase_diagram.py                      # d_in = 200, 8 x 5 cells, 2 seeds: ~10 s
    python examples/phase_diagram.py --tiny --out /tmp/x  # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import groksweep as gs
from groksweep import plot


def make_sweep(tiny: bool) -> gs.Sweep:
    """λ x γ at one output, accuracy threshold ε = 1e-3; gradient descent at lr 0.01, which
    the linear task trains with its exact spectral path (any step count costs the same)."""
    if tiny:
        lam, gamma, seeds = [0.3, 0.7], [1e-4, 1e-2], [0]
        params, log_points = {"d_in": 20, "n_test": 200}, 20
    else:
        lam, gamma, seeds = (
            [0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.1, 1.5],
            [1e-5, 1e-4, 1e-3, 1e-2, 3e-2],
            [0, 1],
        )
        params, log_points = {"d_in": 200, "n_test": 1000}, 100
    return gs.Sweep(
        "linear",
        params=params | {"d_out": 1, "lr": 0.01},
        axes={"lam": lam, "gamma": gamma, "seed": seeds},
        steps=1_000_000,
        log_points=log_points,
        eps=[1e-3],
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/examples"), help="output folder")
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=bool(os.environ.get("GROKSWEEP_EXAMPLES_TINY")),
        help="a few runs at d_in = 20 (also: GROKSWEEP_EXAMPLES_TINY=1)",
    )
    args = parser.parse_args(argv)

    sweep = make_sweep(args.tiny)
    start = time.perf_counter()
    ds = gs.run(sweep, progress=not args.tiny)  # trajectories: (lam, gamma, seed[, eps], time)
    phase = gs.grokking_time(ds, level=0.95)  # t_train, t_test, delta_t and censoring flags
    seconds = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "phase_diagram.png"
    plot.phase_diagram(phase, "lam", "gamma", diverged=phase["diverged"], path=path)
    summary = gs.reduce_seeds(phase)
    grokked = int(summary["delta_t_median"].notnull().sum())
    print(
        f"{sweep.n_runs} runs in {seconds:.1f} s; {grokked} of {summary['delta_t_median'].size} "
        f"cells grok; figure: {path}"
    )
    return path


if __name__ == "__main__":
    main()
