r"""Omnigrok's grokking on real images (Liu, Michaud & Tegmark 2022; Kumar et al. §6, Fig. 6(a))
with scikit-learn's bundled 8x8 digits: an MLP started at init_scale 1 or 8, with weight decay.

The digits task (groksweep.tasks.digits): 64 -> width -> width -> 10 ReLU MLP, MSE on one-hot
labels, full-batch AdamW at lr 1e-3, over the initial scale and the weight decay gamma. From the
large initialisation the network fits its training images first and generalises only once
weight decay has shrunk the weights; from the standard one both rise together. Grokking times
are first crossings of the train accuracy at TRAIN_LEVEL and of the test accuracy at TEST_LEVEL
(the test accuracy of this small training set saturates near 0.95).

Quick: n_train = 200, width 100, init_scale {1, 8} x gamma {0.03, 0.1, 0.3}, 12000 steps, one
seed (a few minutes on a 2-core CPU). Full: the task's defaults (n_train = 1000, width 200,
Omnigrok's gamma 0.01 added), 100000 steps, 3 seeds (not run yet).

    python sweeps/digits_grokking.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
from matplotlib import colormaps

import groksweep as gs

TRAIN_LEVEL, TEST_LEVEL = 0.99, 0.8


def sweep(full: bool) -> gs.Sweep:
    if full:
        params, steps, seeds, gammas = {}, 100_000, [0, 1, 2], [0.01, 0.03, 0.1, 0.3]
    else:
        params, steps, seeds, gammas = {"n_train": 200, "width": 100}, 12_000, [0], [0.03, 0.1, 0.3]
    return gs.Sweep(
        "digits",
        params=params,
        axes={"init_scale": [1.0, 8.0], "gamma": gammas, "seed": seeds},
        steps=steps,
        log_points=60,
    )


def main() -> None:
    args = rp.arguments("digits_grokking", __doc__.splitlines()[0])
    ds, _ = rp.train(sweep(args.full), args, level=TRAIN_LEVEL)
    # Seed medians with censored seeds as +inf (NaN where half or more never got there).
    train = gs.reduce_seeds(gs.grokking_time(ds, level=TRAIN_LEVEL))
    test = gs.reduce_seeds(gs.grokking_time(ds, level=TEST_LEVEL))

    rows, summary = [], {}
    for scale in ds.init_scale.values:
        for gamma in ds.gamma.values:
            at = {"init_scale": scale, "gamma": gamma}
            runs = ds.sel(at)
            t_train, t_test = float(train.t_train_median.sel(at)), float(test.t_test_median.sel(at))
            early = [
                float(runs.test_acc.isel(seed=i).interp(time=t_train))
                if np.isfinite(t_train) else np.nan
                for i in range(ds.sizes["seed"])
            ]  # fmt: skip
            row = {
                "t_train": t_train,
                "t_test": t_test,
                "test_acc_at_t_train": float(np.nanmedian(early)) if np.isfinite(early).any()
                else np.nan,
                "test_acc_end": float(runs.test_acc.isel(time=-1).median()),
                "norm_ratio": float((runs.weight_norm.isel(time=-1)
                                     / runs.weight_norm.isel(time=0)).median()),
            }  # fmt: skip
            summary[f"scale{scale:g}_gamma{gamma:g}"] = row
            rows.append([f"{scale:g}", f"{gamma:g}", row["t_train"], row["t_test"],
                         rp.ratio(row["t_test"], row["t_train"]), row["test_acc_at_t_train"],
                         row["test_acc_end"], row["norm_ratio"]])  # fmt: skip
    headers = ["init_scale", "γ", f"t_train (acc {TRAIN_LEVEL})", f"t_test (acc {TEST_LEVEL})",
               "t_test / t_train", "test acc at t_train", "test acc at end",
               "‖θ‖ end / start"]  # fmt: skip
    tables = [rp.table(headers, rows, title=f"digits, medians over {ds.sizes['seed']} seed(s), "
                       f"{int(ds.time[-1])} steps (— : not reached)")]  # fmt: skip

    fig, (axes,) = rp.panels(3)
    colours = colormaps["viridis"](np.linspace(0, 0.85, ds.sizes["gamma"]))
    for ax, scale in zip(axes[:2], ds.init_scale.values):
        for colour, gamma in zip(colours, ds.gamma.values):
            one = ds.sel(init_scale=scale, gamma=gamma).isel(seed=0)
            t = one.time[1:]
            ax.semilogx(t, one.train_acc[1:], "--", color=colour)
            ax.semilogx(t, one.test_acc[1:], "-", color=colour, label=f"γ = {gamma:g}")
        ax.set(xlabel="step", ylabel="accuracy (train dashed, test solid)",
               title=f"init_scale {scale:g}, seed 0")  # fmt: skip
        ax.legend(fontsize=7)
    for colour, gamma in zip(colours, ds.gamma.values):
        one = ds.sel(init_scale=ds.init_scale.values[-1], gamma=gamma).isel(seed=0)
        axes[2].semilogx(one.time[1:], one.weight_norm[1:], color=colour, label=f"γ = {gamma:g}")
    axes[2].set(xlabel="step", ylabel="|θ|", title=f"init_scale {ds.init_scale.values[-1]:g}")
    axes[2].legend(fontsize=7)
    fig.suptitle("sklearn 8x8 digits, ReLU MLP, MSE, AdamW lr 1e-3: large init + weight decay")
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
