"""Kumar, Bordelon, Gershman & Pehlevan §3, Fig. 2 and App. 8.3: modular addition in a
two-layer perceptron groks under vanilla gradient descent *without* weight decay while its
weight norm increases, and the output scale alpha controls how much it groks.

Both parts use (a + b) mod 23, one-hot inputs (d_in = 46), width 100, 90% of the pairs for
training, MSE on one-hot targets, full-batch GD, no weight decay; the architecture is Gromov's
(square activation, mean-field parametrisation), which App. 8.3 says its results agree with, and
the predictor is centred, alpha (f(theta) - f(theta_0)) (App. 8.1).

1. Fig. 2(a, b): alpha = 1 at the paper's lr = 100 (groksweep's MSE averages over the p outputs
   as PyTorch's MSELoss does).
2. Fig. 2(c): a sweep over alpha with lr = eta_0 / alpha^2 (App. 8.1), eta_0 = 2000 to keep it
   short (time scales are ~ 1/lr: at alpha = 1 lr 2000 is 20x faster than lr 100). Grokking is
   measured on accuracy (level 0.95) and on loss (the first time a loss falls to LOSS_LEVEL
   times its initial value, Kumar et al.'s definition); the delay is t_test / t_train.

Measured. Part 1 (3 seeds): train accuracy 0.95 at steps 17500-18600, test accuracy at
25600-27500; the weight norm does not fall below its initial value (to 3 digits) and grows from
~84 to ~270, as in the paper's Fig. 2(a). Part 2 (seed medians; full variant on an H100,
alpha up to 16, 200000 steps; the quick CPU variant, alpha <= 4 and 40000 steps, 2 min of
training, agrees to a few % on the ratios):

    alpha                    0.25  0.5   1     2     4     8     16
    t_test / t_train (acc)   1.27  1.35  1.46  1.64  2.05  2.84  5.69
    t_test / t_train (loss)  1.48  1.50  1.67  1.88  2.21  4.77  (test loss never reaches 0.1)
    min test loss / initial  2e-4  6e-4  2e-3  7e-3  0.025 0.088 0.33
    |theta| at the end       458   349   275   219   175   145   121     (84 at the start)

Larger alpha makes grokking more pronounced and the final test loss worse (the lazy limit),
smaller alpha nearly removes the delay, as in Fig. 2(c); the delay does not vanish completely
at small alpha (ratio -> ~1.25; alpha = 0.125 at lr = 128000 diverges).

lr = eta_0 / alpha^2 keeps the early dynamics fixed (train loss at step 60 within 0.2% of each
other from alpha = 1 to 4096, the column "at step 60"), but t_train grows ~ alpha (206 steps at
alpha = 0.25, 10800 at 16) until it meets the kernel's own time: at alpha = 256 and 4096 (the
linearised network) t_train ~ 14000 steps (``--alphas 0.25 1 16 256 4096 --steps 30000``). The
mean-field square network's initial kernel is small, so at alpha <= 16 feature learning, whose
share of each step goes as 1 / alpha, fits the train set before the kernel does. With the
standard parametrisation (an O(1) kernel; ``--parametrisation standard --eta0 20``) t_train is
131, 221, 258 at alpha = 1, 4, 16: near the kernel time already at alpha = 4.

    python sweeps/modular_mlp_lazy_rich.py [--full] [--alphas A ...] [--eta0 ETA] [--steps N]
        [--parametrisation mean_field|standard] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
from matplotlib import colormaps

import groksweep as gs
from groksweep import results

LEVEL, LOSS_LEVEL, ETA_0 = 0.95, 0.1, 2000.0
EARLY = 60  # a step of the early dynamics, which lr = eta_0 / alpha^2 keeps alpha-free
BASE = {
    "p": 23,
    "d_h": 100,
    "frac": 0.9,
    "op": "add",
    "activation": "square",
    "parametrisation": "mean_field",
    "predictor": "centred",
    "loss": "mse",
    "optimizer": "gd",
    "gamma": 0.0,
}


def sweeps(args) -> tuple[gs.Sweep, dict[float, gs.Sweep]]:
    """The alpha = 1, lr = 100 sweep and one sweep per alpha at lr = eta0 / alpha^2 (each the
    same compiled program: alpha and lr are traced)."""
    seeds = [0, 1, 2] if args.full else [0, 1]
    default = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0] if args.full else [0.25, 0.5, 1.0, 2.0, 4.0]
    steps = args.steps or (200_000 if args.full else 40_000)
    paper = gs.Sweep(
        "modular_mlp",
        params=BASE | {"lr": 100.0},
        axes={"seed": seeds},
        steps=60_000,
        log_points=200,
    )
    by_alpha = {
        a: gs.Sweep(
            "modular_mlp",
            params=BASE
            | {"parametrisation": args.parametrisation, "alpha": a, "lr": args.eta0 / a**2},
            axes={"seed": seeds},
            steps=steps,
            log_points=200,
        )
        for a in args.alphas or default
    }
    return paper, by_alpha


def _options(parser) -> None:
    parser.add_argument(
        "--eta0", type=float, default=ETA_0, help=f"lr = eta0 / alpha^2 ({ETA_0:g})"
    )
    parser.add_argument("--alphas", type=float, nargs="+", help="output scales (default: all)")
    parser.add_argument("--steps", type=int, help="steps of the alpha sweep")
    parser.add_argument(
        "--parametrisation",
        choices=("mean_field", "standard"),
        default="mean_field",
        help="of the alpha sweep: mean_field (Gromov's, the paper's) or standard (O(1) kernel)",
    )


def main() -> None:
    args = rp.arguments("modular_mlp_lazy_rich", __doc__.splitlines()[0], extra=_options)
    paper_sweep, alpha_sweeps = sweeps(args)
    paper, paper_phase = rp.train(paper_sweep, args, tag="paper", level=LEVEL)
    runs = {
        a: rp.train(s, args, tag=f"alpha_{a:g}", level=LEVEL)[0] for a, s in alpha_sweeps.items()
    }

    rows = []
    for a, ds in runs.items():
        acc = gs.grokking_time(ds, level=LEVEL)
        loss = gs.grokking_time(ds, on="loss", loss_level=LOSS_LEVEL)
        results.save(loss, args.out / f"loss_phase_alpha_{a:g}.nc")
        best = (ds["test_loss"].min("time") / ds["test_loss"].isel(time=0)).median()
        early = ds["train_loss"].interp(time=EARLY) / ds["train_loss"].isel(time=0)
        rows.append(
            [
                f"{a:g}",
                f"{args.eta0 / a**2:g}",
                float(acc.t_train.median()),
                float(acc.t_test.median()),
                float((acc.t_test / acc.t_train).median()),
                float(loss.t_train.median()),
                float(loss.t_test.median()),
                float((loss.t_test / loss.t_train).median()),
                float(early.median()),
                float(best),
                float(ds["weight_norm"].isel(time=0).median()),
                float(ds["weight_norm"].isel(time=-1).median()),
                f"{int(ds['diverged'].sum()) if 'diverged' in ds else 0}",
            ]
        )
    headers = [
        "α",
        "lr",
        "t_train (acc)",
        "t_test (acc)",
        "ratio",
        f"t_train (loss {LOSS_LEVEL:g})",
        "t_test (loss)",
        "ratio",
        f"train loss / initial at step {EARLY}",
        "min test loss / initial",
        "|θ| at 0",
        "|θ| at end",
        "diverged",
    ]
    norm = paper["weight_norm"]
    paper_rows = [
        [
            int(s),
            float(paper_phase.t_train.sel(seed=s)),
            float(paper_phase.t_test.sel(seed=s)),
            float(norm.sel(seed=s).isel(time=0)),
            float(norm.sel(seed=s).min()),
            float(norm.sel(seed=s).isel(time=-1)),
        ]
        for s in paper["seed"].values
    ]
    tables = [
        rp.table(
            ["seed", "t_train", "t_test", "|θ| at 0", "min |θ|", "|θ| at end"],
            paper_rows,
            title=f"α = 1, lr = 100 (Fig. 2a, b), level {LEVEL}",
        ),
        rp.table(
            headers,
            rows,
            title=f"α sweep, {args.parametrisation}, lr = {args.eta0:g}/α² (Fig. 2c), seed medians",
        ),
    ]

    fig, (axes,) = rp.panels(3)
    run = paper.isel(seed=0)
    t = run["time"][1:]
    axes[0].semilogx(t, run["train_acc"][1:], "--", label="train acc")
    axes[0].semilogx(t, run["test_acc"][1:], "-", label="test acc")
    twin = axes[0].twinx()
    twin.semilogx(t, run["weight_norm"][1:], "k:", label="|θ|")
    twin.set_ylabel("weight norm |θ|")
    axes[0].set(xlabel="step", ylabel="accuracy", title="α = 1, lr = 100 (seed 0)")
    axes[0].legend(loc="center left", fontsize=7)
    twin.legend(loc="lower right", fontsize=7)
    axes[1].loglog(t, run["train_loss"][1:], "--", label="train")
    axes[1].loglog(t, run["test_loss"][1:], "-", label="test")
    axes[1].set(xlabel="step", ylabel="MSE loss", title="α = 1, lr = 100 (seed 0)")
    axes[1].legend(fontsize=7)
    colours = colormaps["plasma"](np.linspace(0, 0.85, len(runs)))
    for colour, (a, ds) in zip(colours, runs.items()):
        one = ds.isel(seed=0)
        axes[2].loglog(one["time"][1:], one["train_loss"][1:], "--", color=colour)
        axes[2].loglog(one["time"][1:], one["test_loss"][1:], "-", color=colour, label=f"α = {a:g}")
    axes[2].set(
        xlabel="step",
        ylabel="MSE loss (train dashed, test solid)",
        title=f"{args.parametrisation}, lr = {args.eta0:g}/α² (seed 0)",
    )
    axes[2].legend(fontsize=7)
    fig.suptitle("Modular addition p = 23, width 100, 90% train, GD without weight decay")
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
