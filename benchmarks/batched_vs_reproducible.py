"""How far the default batched mode drifts from reproducible mode, on the quick Fig. 1 sweep.

    python benchmarks/batched_vs_reproducible.py

Runs ``sweeps/fig1_lambda_quick.toml`` (48 runs, float32) both ways, by the spectral path
(10^5 steps) and by gradient steps (2 * 10^4 steps), and prints the largest relative difference
of the losses wherever a loss is above 1e-6 of its initial value, the largest difference of the
accuracies, and of the grokking-time differences Delta t (docs/RELIABILITY.md).
"""

from pathlib import Path

import numpy as np

import groksweep as gs

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "fig1_lambda_quick.toml"


def main() -> None:
    base = gs.Sweep.from_toml(SPEC).to_dict()
    for method, steps in (("spectral", base["steps"]), ("step", 20_000)):
        sweep = gs.Sweep.from_dict(
            base | {"steps": steps, "params": base["params"] | {"method": method}}
        )
        batched = gs.run(sweep, progress=False)
        alone = gs.run(sweep, progress=False, reproducible=True)
        for name in ("train_loss", "test_loss"):
            a, b = batched[name].values, alone[name].values
            above = b > 1e-6 * b[..., :1]
            print(f"{method} {name}: {np.max(np.abs(a - b)[above] / b[above]):.2e} relative")
        for name in ("train_acc", "test_acc"):
            print(f"{method} {name}: {np.max(np.abs(batched[name] - alone[name])).item():.2e}")
        dt_a = gs.grokking_time(batched).delta_t.values
        dt_b = gs.grokking_time(alone).delta_t.values
        both = np.isfinite(dt_a) & np.isfinite(dt_b)
        same = (np.isfinite(dt_a) == np.isfinite(dt_b)).all()
        print(
            f"{method} delta_t: {np.max(np.abs(dt_a[both] / dt_b[both] - 1)):.2e} relative; "
            f"the same runs censored: {bool(same)}"
        )


if __name__ == "__main__":
    main()
