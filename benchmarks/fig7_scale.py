"""Time, peak memory and FLOPs of the paper-sized Fig. 7 sweep (``sweeps/fig7_phase.py --full``).

    python benchmarks/fig7_scale.py [--log-points N] [--maps K ...] [--json results.json]

The full grid's three maps (892 runs at d_in = 1000, d_out up to 1000, n_test = 4000), run
with ``groksweep.run`` one map after another in this process, with the progress bar. Reports
each map's wall time (compilation included), the process's peak resident memory, and the
FLOPs of the per-sample evaluations that every method must make: two per multiply-add of
x @ (S - T) for the padded training rows and the test rows, at every log point after 0.

``--log-points`` below the sweep's 200 cuts the evaluations (the cost) in proportion without
changing the chunks: the memory budget sizes chunks from the runs' data, and an evaluation
block is held within ``engine.EVALUATION_BLOCK_BYTES`` either way.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))

import fig7_phase  # noqa: E402

import groksweep as gs  # noqa: E402
from groksweep.plan import plan  # noqa: E402
from groksweep.tasks import get_task  # noqa: E402


def evaluation_flops(sweep: gs.Sweep) -> float:
    """FLOPs of the per-sample evaluations, at the bucket's padded N_tr and d_out."""
    total = 0.0
    for bucket in plan(get_task(sweep.task), sweep.runs()):
        shape = dict(bucket.shape)
        rows = shape["n_train"] + shape["n_test"]
        total += 2.0 * rows * shape["d_in"] * shape["d_out"] * bucket.n_runs
    return total * (sweep.log_points - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-points", type=int, default=200)
    parser.add_argument("--maps", type=int, nargs="*", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = []
    for k in args.maps:
        sweep = fig7_phase.sweeps(full=True)[k]
        sweep = gs.Sweep.from_dict(sweep.to_dict() | {"log_points": args.log_points})
        x, y, fixed = fig7_phase.MAPS[k]
        start = time.perf_counter()
        ds = gs.run(sweep)
        seconds = time.perf_counter() - start
        flops = evaluation_flops(sweep)
        results.append(
            {
                "map": f"{y} x {x}",
                "runs": sweep.n_runs,
                "log_points": sweep.log_points,
                "seconds": seconds,
                "evaluation_tflop": flops / 1e12,
                "tflop_per_s": flops / seconds / 1e12,
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "finite_test_acc": float(np.isfinite(ds["test_acc"]).mean()),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
