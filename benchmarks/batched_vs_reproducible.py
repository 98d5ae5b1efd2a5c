"""How far the default batched mode drifts from reproducible mode (each run trained alone).

    python benchmarks/batched_vs_reproducible.py [--cases CASE ...] [--mlp-seeds N]

Every case trains one sweep both ways, ``gs.run(sweep)`` and ``gs.run(sweep, reproducible=True)``,
and one function compares them: the largest relative difference of the losses wherever a loss
is above 1e-6 of its initial value, the largest difference of the accuracies, the distribution
over runs (median, max, how many runs differ at all) of |t batched / t alone - 1| for the test
grokking time t_test and for Delta t, and whether the same runs are censored
(docs/RELIABILITY.md). Cases:

- ``spectral``, ``step``: the quick Fig. 1 sweep (``sweeps/fig1_lambda_quick.toml``, 48 runs of
  the linear task, float32) by the spectral path (10^5 steps) and by gradient steps (2 * 10^4);
- ``mlp_relu``: a nonlinear task, a 30-64-1 ReLU teacher-student MLP (Levi init, plain
  predictor, gd at lr 0.5, gamma 1e-3, eps 1e-3), 3 lam x 8 seeds (``--mlp-seeds``), 5000
  steps, float32; it also prints the seed-to-seed spread of t_test per lam (the scale to judge
  the drift by);
- ``mlp_relu_f64``: the same sweep in float64, to show how much of the drift is float32
  rounding;
- ``mlp_tanh`` (only when asked for): the same sweep with the smooth tanh in place of ReLU (with
  the Levi init tanh works in its linear range, so this is a smooth, nearly linear control).

Every case also prints the relative test-loss difference per decade of steps, to show whether
the difference grows along the trajectories. The four default cases take about three minutes on
a 2-core CPU (four with a cold compilation cache); ``mlp_tanh`` one more, ``--mlp-seeds 32``
about three for ``mlp_relu`` alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import groksweep as gs

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "fig1_lambda_quick.toml"

# A CPU-sized nonlinear sweep that groks: train accuracy at eps = 1e-3 is reached in ~50 steps,
# test accuracy in ~10^2-10^3 (later for larger lam; a few seeds censored at 5000 steps). The
# Levi init is small: the rich, feature-learning regime. n_test and every N_tr = round(d_in/lam)
# (545, 429, 353) are not multiples of 20, so that no accuracy can sit exactly on the level
# 0.95, where a last-bit difference would flip the crossing.
MLP = {
    "task": "mlp_teacher_student",
    "steps": 5000,
    "log_points": 150,
    "eps": [1e-3],
    "params": {
        "d_in": 30, "d_h": 64, "depth": 1, "d_out": 1, "activation": "relu", "init": "levi",
        "predictor": "plain", "n_test": 5010, "lr": 0.5, "gamma": 1e-3,
    },
    "axes": {"lam": [0.055, 0.07, 0.085], "seed": list(range(8))},
}


def linear_sweep(method: str, steps: int | None = None) -> gs.Sweep:
    base = gs.Sweep.from_toml(SPEC).to_dict()
    steps = base["steps"] if steps is None else steps
    params = base["params"] | {"method": method}
    return gs.Sweep.from_dict(base | {"steps": steps, "params": params})


def mlp_sweep(dtype: str, activation: str = "relu", seeds: int = 8) -> gs.Sweep:
    params = MLP["params"] | {"dtype": dtype, "activation": activation}
    axes = MLP["axes"] | {"seed": list(range(seeds))}
    return gs.Sweep.from_dict(MLP | {"params": params, "axes": axes})


# name: (the sweep, given the number of MLP seeds; whether to print the seed spread)
CASES = {
    "spectral": (lambda seeds: linear_sweep("spectral"), False),
    "step": (lambda seeds: linear_sweep("step", 20_000), False),
    "mlp_relu": (lambda seeds: mlp_sweep("float32", seeds=seeds), True),
    "mlp_relu_f64": (lambda seeds: mlp_sweep("float64", seeds=seeds), True),
    "mlp_tanh": (lambda seeds: mlp_sweep("float32", "tanh", seeds), True),
}
DEFAULT = ["spectral", "step", "mlp_relu", "mlp_relu_f64"]


def relative_drift(batched: np.ndarray, alone: np.ndarray) -> tuple[np.ndarray, bool]:
    """|batched / alone - 1| over the runs finite both ways, and whether the same runs are
    finite (censored runs are NaN)."""
    both = np.isfinite(batched) & np.isfinite(alone)
    same = bool((np.isfinite(batched) == np.isfinite(alone)).all())
    return np.abs(batched[both] / alone[both] - 1), same


def compare(name: str, sweep: gs.Sweep, seed_spread: bool = False) -> dict:
    """Train ``sweep`` batched and alone, print how far they differ, and return the numbers."""
    start = time.perf_counter()
    batched = gs.run(sweep, progress=False)
    alone = gs.run(sweep, progress=False, reproducible=True)
    out: dict = {"runs": int(batched.train_loss.isel(time=0).size)}
    for metric in ("train_loss", "test_loss"):
        a, b = batched[metric].values, alone[metric].values
        above = b > 1e-6 * b[..., :1]
        out[metric] = float(np.max(np.abs(a - b)[above] / b[above]))
        print(f"{name} {metric}: {out[metric]:.2e} relative")
    for metric in ("train_acc", "test_acc"):
        out[metric] = float(np.max(np.abs(batched[metric] - alone[metric])))
        print(f"{name} {metric}: {out[metric]:.2e}")
    # How the difference grows along the trajectories: the relative test-loss difference (where
    # the loss is above 1e-6 of its initial value, as above) over each decade of steps, largest
    # and median over runs and evaluations.
    a, b = batched.test_loss.values, alone.test_loss.values
    rel = np.where(b > 1e-6 * b[..., :1], np.abs(a - b) / np.where(b > 0, b, 1), np.nan)
    steps = alone.time.values
    out["test_loss_by_decade"] = {}
    for lo in 10 ** np.arange(int(np.ceil(np.log10(steps[-1])))):
        window = rel[..., (steps >= lo) & (steps < 10 * lo)]
        if np.isfinite(window).any():
            out["test_loss_by_decade"][f"{lo:.0e}"] = (
                float(np.nanmax(window)), float(np.nanmedian(window)))
    print(f"{name} test_loss relative difference by decade of steps from 1 (max, median): "
          + "; ".join(f"{m:.1e}, {md:.1e}" for m, md in out["test_loss_by_decade"].values()))
    phase_b, phase_a = gs.grokking_time(batched), gs.grokking_time(alone)
    for metric in ("t_test", "delta_t"):
        drift, same = relative_drift(phase_b[metric].values, phase_a[metric].values)
        if not drift.size:
            drift = np.array([np.nan])
        out[metric] = {"median": float(np.median(drift)), "max": float(np.max(drift)),
                       "finite": int(np.isfinite(drift).sum()), "differ": int((drift > 0).sum()),
                       "same_censored": same}
        print(f"{name} {metric}: {out[metric]['max']:.2e} relative (max), "
              f"{out[metric]['median']:.2e} (median) over {out[metric]['finite']} runs finite "
              f"both ways, {out[metric]['differ']} of them differ; the same runs censored: {same}")
    if seed_spread:
        # Seed-to-seed spread of the run-alone t_test at each non-seed point: the interquartile
        # range over seeds relative to the median (censored seeds count as +infinity).
        summary = gs.reduce_seeds(phase_a)
        dims = summary.t_test_median.dims
        points = summary.stack(point=dims)
        out["t_test_seed_iqr"] = {}
        for i in range(points.sizes["point"]):
            p = points.isel(point=i)
            label = ", ".join(f"{d} {p[d].item():g}" for d in dims)
            med, iqr = p.t_test_median.item(), (p.t_test_q75 - p.t_test_q25).item()
            censored = p.test_censored_fraction.item()
            out["t_test_seed_iqr"][label] = {"median": med, "iqr": iqr, "censored": censored}
            spread = (f"interquartile range {iqr:.0f} ({iqr / med:.1%} of the median)"
                      if np.isfinite(iqr) else "interquartile range undefined (q75 censored)")
            print(f"{name} seed spread of t_test at {label}: median {med:.0f}, {spread}, "
                  f"{censored:.0%} censored")
    out["seconds"] = time.perf_counter() - start
    print(f"{name}: {out['runs']} runs, {out['seconds']:.0f} s both ways")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT,
                        help=f"cases to run (default: {' '.join(DEFAULT)})")
    parser.add_argument("--mlp-seeds", type=int, default=8,
                        help="seeds of the MLP cases, 0 ... N-1 (default: 8)")
    args = parser.parse_args(argv)
    for name in args.cases:
        make, seed_spread = CASES[name]
        compare(name, make(args.mlp_seeds), seed_spread)


if __name__ == "__main__":
    main()
