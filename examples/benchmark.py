"""Time a sweep: how many gradient steps per second groksweep trains, summed over runs.

Builds a grid of runs of one task (weight decay x learning rate x seeds), trains it once to
compile (the compiled program is then cached in the process), then times ``--repeat`` more
trainings and reports the best: wall seconds and run-steps/s = runs x steps / seconds. Every
run takes gradient steps (``method = "step"``), so the linear task is not jumped through in
closed form. benchmarks/ holds the comparisons against hand-written JAX and PyTorch loops.

    python examples/benchmark.py                                   # linear, d_in = 200: ~30 s
    python examples/benchmark.py --task mlp_teacher_student --runs 64 --steps 2000
    python examples/benchmark.py --tiny                            # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import os
import time

import jax

import groksweep as gs

GAMMAS = [0.0, 1e-4, 1e-3, 1e-2]
LRS = [0.005, 0.01]


def make_sweep(task: str, runs: int, steps: int, d_in: int) -> gs.Sweep:
    """``runs`` runs (rounded up to whole seeds of the γ x lr grid), each ``steps`` steps."""
    seeds = list(range(max(1, -(-runs // (len(GAMMAS) * len(LRS))))))
    params = {"d_in": d_in, "lam": 0.5, "n_test": 2 * d_in, "method": "step"}
    if task == "mlp_teacher_student":
        params |= {"d_h": d_in}
    return gs.Sweep(
        task,
        params=params,
        axes={"gamma": GAMMAS, "lr": LRS, "seed": seeds},
        steps=steps,
        log_points=20,
        eps=[1e-3],
    )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="linear", choices=["linear", "mlp_teacher_student"])
    parser.add_argument("--runs", type=int, default=256, help="runs in the sweep (at least)")
    parser.add_argument("--steps", type=int, default=10_000, help="gradient steps per run")
    parser.add_argument("--d-in", type=int, default=200, help="input dimension")
    parser.add_argument("--repeat", type=int, default=3, help="timed trainings after the first")
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=bool(os.environ.get("GROKSWEEP_EXAMPLES_TINY")),
        help="8 runs of 200 steps at d_in = 10 (also: GROKSWEEP_EXAMPLES_TINY=1)",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.runs, args.steps, args.d_in, args.repeat = 8, 200, 10, 1

    sweep = make_sweep(args.task, args.runs, args.steps, args.d_in)
    start = time.perf_counter()
    gs.run(sweep, progress=False)  # compiles, then trains
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        gs.run(sweep, progress=False)
        best = min(best, time.perf_counter() - start)
    rate = sweep.n_runs * args.steps / best
    print(
        f"{args.task}: {sweep.n_runs} runs x {args.steps} steps at d_in = {args.d_in} on "
        f"{len(jax.devices())} x {jax.devices()[0].device_kind} ({jax.default_backend()})"
    )
    print(
        f"first call (compile + train) {first:.2f} s; best of {args.repeat}: {best:.3f} s, "
        f"{rate:.3g} run-steps/s"
    )
    return rate


if __name__ == "__main__":
    main()
