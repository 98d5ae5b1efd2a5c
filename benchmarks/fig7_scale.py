"""Time, peak memory, FLOPs and agreement with theory of the paper-sized Fig. 7 sweep
(``sweeps/fig7_phase.py --full``).

    python benchmarks/fig7_scale.py [--uniform] [--crossings interpolate|solve] [--rtol R]
                                    [--log-points N] [--maps K ...] [--json results.json]

The full grid's three maps (d_in = 1000, d_out up to 1000, n_test = 4000) as
``sweeps/fig7_phase.py --full`` trains them (solved crossings; the γ × λ map refined), or with
``--uniform --crossings interpolate --log-points 200`` as before both features (892 runs),
run one map after another in this process, with the progress bar. Reports
each map's runs, wall time (compilation included), the process's peak resident memory, the
FLOPs of the per-sample evaluations (two per multiply-add of x @ (S - T) for the padded training
rows and the test rows: at every log point after 0, and with ``--crossings solve`` at every
bisection iteration, for the one set each crossing refines), and the agreement of the seed
median Δt with the exact theory at the trained points: the fraction of points whose verdict
(groks or not) matches it, and the median |trained/theory - 1| where both grok.

Fewer ``--log-points`` cut the evaluations at log points in proportion without changing the
chunks: the memory budget sizes chunks from the runs' data, and an evaluation block is held
within ``engine.EVALUATION_BLOCK_BYTES`` either way.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))

import fig7_phase  # noqa: E402

import groksweep as gs  # noqa: E402
from groksweep import refine  # noqa: E402

BUCKET = re.compile(r"bucket (\d+): (\{.*?\}); (\d+) runs as")
SOLVED = re.compile(
    r"bucket (\d+) chunk \S+: crossings solved in (\d+) bisection iterations over (\d+) runs"
)


class EvaluationCount:
    """Evaluation FLOPs of a sweep, read from the engine's log lines as they come: the log
    points of every bucket's runs, and the bisection iterations of every solved chunk (each
    evaluates a crossing's set, train or test, per threshold, for every run of the chunk)."""

    def __init__(self, log_points: int, n_eps: int):
        self.log_points, self.n_eps = log_points, n_eps
        self.shapes: dict[int, dict] = {}
        self.flops = self.solve_flops = 0.0
        self.crossings = 0

    @staticmethod
    def _row_flops(shape: dict, rows: int) -> float:
        return 2.0 * rows * shape["d_in"] * shape["d_out"]

    def __call__(self, line: str) -> None:
        if found := BUCKET.match(line):
            index, shape = int(found[1]), ast.literal_eval(found[2])
            self.shapes[index] = shape
            rows = shape["n_train"] + shape["n_test"]
            self.flops += self._row_flops(shape, rows) * int(found[3]) * (self.log_points - 1)
        elif found := SOLVED.match(line):
            shape = self.shapes[int(found[1])]
            rows = shape["n_train"] + shape["n_test"]  # train crossings, then test crossings
            runs = int(found[3])
            flops = self._row_flops(shape, rows) * int(found[2]) * runs * self.n_eps
            self.flops += flops
            self.solve_flops += flops
            self.crossings += 2 * runs * self.n_eps


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product speed through JAX, FLOP/s: the best of
    ``repeats`` products of two n x n matrices (the roofline of the evaluations)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    product = jax.jit(lambda m: m @ m)
    product(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def agreement(phase, x: str, y: str, fixed: dict) -> dict:
    """Verdicts (groks or not) and Δt of the trained seed median against the exact theory, at
    the trained points."""
    found = fig7_phase.against_theory(phase, x, y, fixed)
    trained, theory = found["trained"], found["theory"]
    both = np.isfinite(trained) & np.isfinite(theory)
    return {
        "verdict_agreement": float(np.mean(np.isfinite(trained) == np.isfinite(theory))),
        "median_abs_ratio_error": float(np.median(np.abs(trained[both] / theory[both] - 1))),
        "points_compared": int(trained.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-points", type=int, help="default: the script's 16")
    parser.add_argument("--crossings", choices=["interpolate", "solve"], default="solve")
    parser.add_argument("--rtol", type=float, help="of solved crossings; default the script's")
    parser.add_argument("--uniform", action="store_true", help="no refinement: the full axes")
    parser.add_argument("--maps", type=int, nargs="*", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    peak = matmul_peak()
    print(json.dumps({"matmul_peak_tflop_per_s": peak / 1e12}), flush=True)
    results = []
    for k in args.maps:
        spec = fig7_phase.sweeps(full=True, uniform=args.uniform)[k].to_dict()
        spec["log_points"] = args.log_points or spec["log_points"]
        spec["crossings"] = "interpolate"
        if args.crossings == "solve":
            spec["crossings"] = fig7_phase.SOLVED | ({"rtol": args.rtol} if args.rtol else {})
        x, y, fixed = fig7_phase.MAPS[k]
        sweep = gs.Sweep.from_dict(spec)
        refined = bool(sweep.refine)
        count = EvaluationCount(sweep.log_points, len(sweep.eps))
        start = time.perf_counter()
        ds = refine.run(sweep, log=count) if refined else gs.run(sweep, log=count)
        seconds = time.perf_counter() - start
        phase = gs.grokking_time(ds)
        runs = int(ds["computed"].sum()) * ds.sizes["seed"] if refined else sweep.n_runs
        results.append(
            {
                "map": f"{y} x {x}",
                "runs": runs,
                "grid": "x".join(str(ds.sizes[a]) for a in (y, x)),
                "log_points": sweep.log_points,
                "crossings": args.crossings,
                "rtol": sweep.crossings["rtol"] if args.crossings == "solve" else None,
                "refine_rounds": sweep.refine["rounds"] if refined else 0,
                "seconds": seconds,
                "evaluation_tflop": count.flops / 1e12,
                "tflop_per_s": count.flops / seconds / 1e12,
                "solve_tflop": count.solve_flops / 1e12,
                "solve_flop_per_crossing": count.solve_flops / max(count.crossings, 1),
                "seconds_at_matmul_peak": count.flops / peak,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            }
            | agreement(phase, x, y, fixed)
        )
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
