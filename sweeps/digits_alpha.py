r"""Kumar et al. Fig. 6(a): the output scale alpha alone makes Omnigrok's digit grokking vanish,
at a fixed initial weight norm.

The digits task (groksweep.tasks.digits) from init_scale 8 with AdamW weight decay, the setting
where sweeps/digits_grokking.py finds grokking, with the *plain* predictor alpha f(x) over alpha.
Every run of a seed starts from the same weights (|theta_0| is alpha-free); only how far the
weights must move to fit changes. For a bias-free ReLU net of three linear layers
alpha f(x; theta) = f(x; alpha^(1/3) theta), so a smaller alpha acts as a smaller initialisation:
the rich regime. The centred predictor alpha (f - f_0) is no such control here: weight decay
pulls theta to 0, where it predicts -alpha f_0 (docs/EXPERIMENTS.md).

Two learning-rate rules: ``fixed`` (lr0 at every alpha, one compiled program with alpha a traced
axis; the default) and ``cube`` (lr = lr0 alpha^(-1/3), which keeps Adam's step in the rescaled
weights alpha^(1/3) theta the same, one program per alpha). Grokking times are first crossings of
the train accuracy at TRAIN_LEVEL and of the test accuracy at TEST_LEVEL.

Quick: n_train 200, width 100, gamma 0.1, alpha {1, 0.1, 0.01, 0.002, 1e-4}, 3 seeds, 12000
steps (about 2 min on a 2-core CPU). Full: the task's defaults (n_train 1000, width 200,
gamma 0.01 as Omnigrok), 100000 steps, 3 seeds (not run yet).

    python sweeps/digits_alpha.py [--full] [--lr-rule fixed|cube] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
import xarray as xr

import groksweep as gs

TRAIN_LEVEL, TEST_LEVEL = 0.99, 0.8
ALPHAS = [1.0, 0.1, 0.01, 0.002, 1e-4]
LR_0 = 1e-3


def learning_rate(alpha: float, rule: str) -> float:
    return LR_0 if rule == "fixed" else LR_0 * alpha ** (-1 / 3)


def sweeps(args) -> list[gs.Sweep]:
    """One sweep over alpha (``fixed``), or one per alpha with its own lr (``cube``)."""
    if args.full:
        params, steps = {"gamma": 0.01}, 100_000
    else:
        params, steps = {"n_train": 200, "width": 100, "gamma": 0.1}, 12_000
    params |= {"init_scale": 8.0, "predictor": "plain"}
    seeds = [0, 1, 2]
    if args.lr_rule == "fixed":
        return [
            gs.Sweep(
                "digits",
                params=params | {"lr": LR_0},
                axes={"alpha": ALPHAS, "seed": seeds},
                steps=steps,
                log_points=60,
            )
        ]
    return [
        gs.Sweep("digits", params=params | {"alpha": a, "lr": learning_rate(a, "cube")},
                 axes={"seed": seeds}, steps=steps, log_points=60)
        for a in ALPHAS
    ]  # fmt: skip


def _options(parser) -> None:
    parser.add_argument("--lr-rule", choices=("fixed", "cube"), default="fixed",
                        help="lr0 at every alpha, or lr0 alpha^(-1/3)")  # fmt: skip


def main() -> None:
    args = rp.arguments("digits_alpha", __doc__.splitlines()[0], extra=_options)
    trained = [rp.train(s, args, tag=f"sweep{i}" if args.lr_rule == "cube" else "",
                        level=TRAIN_LEVEL)[0] for i, s in enumerate(sweeps(args))]  # fmt: skip
    if args.lr_rule == "cube":  # alpha is a parameter of each sweep: stack them on an axis
        trained = [d.expand_dims(alpha=[a]) for d, a in zip(trained, ALPHAS)]
    ds = xr.concat(trained, dim="alpha")
    train_phase, test_phase = (gs.grokking_time(ds, level=lv) for lv in (TRAIN_LEVEL, TEST_LEVEL))
    t_train = train_phase.t_train
    # Seed medians with censored seeds as +inf (NaN where half or more never got there).
    median_train = gs.reduce_seeds(train_phase).t_train_median
    median_test = gs.reduce_seeds(test_phase).t_test_median

    rows, summary = [], {}
    for alpha in ds.alpha.values:
        runs, tr = ds.sel(alpha=alpha), t_train.sel(alpha=alpha)
        early = [float(runs.test_acc.isel(seed=i).interp(time=float(tr.isel(seed=i))))
                 if np.isfinite(tr.isel(seed=i)) else np.nan
                 for i in range(ds.sizes["seed"])]  # fmt: skip
        row = {
            "lr": learning_rate(alpha, args.lr_rule),
            "t_train": float(median_train.sel(alpha=alpha)),
            "t_test": float(median_test.sel(alpha=alpha)),
            "test_acc_at_t_train": float(np.nanmedian(early)) if np.isfinite(early).any()
            else np.nan,
            "test_acc_end": float(runs.test_acc.isel(time=-1).median()),
            "norm_start": float(runs.weight_norm.isel(time=0).median()),
            "norm_end": float(runs.weight_norm.isel(time=-1).median()),
        }  # fmt: skip
        summary[f"alpha{alpha:g}"] = row
        rows.append([f"{alpha:g}", f"{row['lr']:.3g}", row["t_train"], row["t_test"],
                     rp.ratio(row["t_test"], row["t_train"]), row["test_acc_at_t_train"],
                     row["test_acc_end"], row["norm_start"], row["norm_end"]])  # fmt: skip
    headers = ["α", "lr", f"t_train (acc {TRAIN_LEVEL})", f"t_test (acc {TEST_LEVEL})",
               "t_test / t_train", "test acc at t_train", "test acc at end", "‖θ₀‖",
               "‖θ‖ at end"]  # fmt: skip
    title = (f"digits, init_scale 8, plain predictor, lr rule {args.lr_rule}: medians over "
             f"{ds.sizes['seed']} seeds, {int(ds.time[-1])} steps (— : not reached)")  # fmt: skip
    tables = [rp.table(headers, rows, title=title)]

    fig, (axes,) = rp.panels(2)
    for alpha in ds.alpha.values:
        median = ds.sel(alpha=alpha).median("seed")
        t = median.time[1:]
        (line,) = axes[0].semilogx(t, median.test_acc[1:], "-", label=f"α = {alpha:g}")
        axes[0].semilogx(t, median.train_acc[1:], "--", color=line.get_color())
        axes[1].semilogx(t, median.weight_norm[1:], color=line.get_color(), label=f"α = {alpha:g}")
    axes[0].set(xlabel="step", ylabel="accuracy (train dashed, test solid; seed median)")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="step", ylabel="|θ| (seed median)")
    fig.suptitle("sklearn 8x8 digits from init ×8: smaller α, less grokking (Kumar et al. Fig. 6a)")
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
