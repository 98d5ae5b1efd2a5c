"""Gu et al.'s progress measure and structured splits on the quick transformer
(sweeps/transformer_quick.toml): how closely the main embedding difference (MED) follows the test
loss during training, and the test accuracy that random, block and strips splits allow.

For every run, the Pearson correlation across the log points between MED and the test loss (and
log test loss), and the same for the embedding uniformity; the medians over frac and seeds per
split. Then, per split and frac, the final and the best test accuracy (seed medians). The quick
sweep's axes are used as they are, with a ``split`` axis added.

Measured (2-core CPU, 36 runs of 3000 steps, 149 s with three compilations; medians [min, max]
over frac 0.5-0.8 and seeds 0-2). Correlation of MED with the test loss: random +0.18
[-0.40, +0.73], block -0.50 [-0.81, +0.96], strips -0.46 [-0.93, +0.69]; of the uniformity with
the test loss: random +0.74 [-0.85, +0.92], block +0.01, strips +0.69. So at this size MED does
not follow the test loss consistently. In the p = 113 sweep (sweeps/transformer_p113.toml, H100)
it does better: +0.16 to +0.88 (median +0.54) where the runs grok (gamma 1 and 3), MED rising
from 1.4 to 2.4-3.7 while they memorise and falling before they generalise, and +0.67 to +0.79
at gamma 0.3, where MED keeps rising (to 4.3-4.5) and the runs do not grok. Test accuracy at
the end / best (seed medians), with train accuracy 0.98-1:

    frac   random         block          strips
    0.5    0.962 / 0.962  0.355 / 0.414  0.703 / 0.779
    0.6    0.976 / 1.000  0.316 / 0.538  0.947 / 0.986
    0.7    0.994 / 0.994  0.592 / 0.923  0.932 / 0.975
    0.8    1.000 / 1.000  1.000 / 1.000  0.991 / 0.991

Holding out a block of (a, b) values caps the test accuracy far below a random split of the same
size (Gu et al.'s dataset-driven upper bound); holding out whole rows (strips) caps it less,
since every token is still trained on at the other position.

    python sweeps/transformer_med.py [--steps N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import xarray as xr

import groksweep as gs

QUICK = Path(__file__).with_name("transformer_quick.toml")
SPLITS = ["random", "block", "strips"]


def correlation(x: xr.DataArray, y: xr.DataArray) -> xr.DataArray:
    """Pearson correlation of x and y across time, per run."""
    return xr.corr(x, y, dim="time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="steps per run (default: the quick sweep's)")
    args = parser.parse_args()
    quick = gs.Sweep.from_toml(QUICK)
    spec = gs.Sweep(
        quick.task,
        params=quick.params,
        axes={"split": SPLITS, **quick.axes},
        steps=args.steps or quick.steps,
        log_points=quick.log_points,
    )
    start = time.perf_counter()
    ds = gs.run(spec, progress=False)
    print(f"{spec.n_runs} runs of {spec.steps} steps in {time.perf_counter() - start:.0f} s\n")

    measures = {
        "corr(MED, test loss)": correlation(ds.med, ds.test_loss),
        "corr(MED, log test loss)": correlation(ds.med, np.log(ds.test_loss)),
        "corr(uniformity, test loss)": correlation(ds.embedding_uniformity, ds.test_loss),
    }
    print(f"{'split':8s}" + "".join(f"{name:>30s}" for name in measures))
    for split in SPLITS:
        cells = []
        for values in measures.values():
            v = values.sel(split=split)
            cells.append(f"{float(v.median()):+.2f} [{float(v.min()):+.2f}, {float(v.max()):+.2f}]")
        print(f"{split:8s}" + "".join(f"{c:>30s}" for c in cells))
    print("(median [min, max] over frac and seeds)\n")

    final = ds.test_acc.isel(time=-1).median("seed")
    best = ds.test_acc.max("time").median("seed")
    train = ds.train_acc.isel(time=-1).median("seed")
    print("test accuracy, final / best over training (seed medians); train accuracy at the end")
    print(f"{'frac':>6s}" + "".join(f"{s:>22s}" for s in SPLITS))
    for frac in ds.frac.values:
        cell = lambda v, s: float(v.sel(split=s, frac=frac))  # noqa: E731
        row = [
            f"{cell(final, s):.3f} / {cell(best, s):.3f} ({cell(train, s):.2f})" for s in SPLITS
        ]
        print(f"{frac:6.2f}" + "".join(f"{r:>22s}" for r in row))


if __name__ == "__main__":
    main()
