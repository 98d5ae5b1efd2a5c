"""Kumar, Bordelon, Gershman & Pehlevan Fig. 6(b): the output scale alpha of the one-layer
transformer on (a + b) mod p, with the centred predictor alpha (f(theta) - f(theta_0)).

One sweep per alpha, each with its paired optimizer settings. Adam's step does not scale with
the gradient (its first step is -lr sign(g)), so the predictor moves by ~ alpha lr per step and
lr = lr0 / alpha keeps the early function-space path alpha-free (tests/test_alpha_scaling.py).
AdamW's decoupled decay -lr gamma theta then moves the predictor by -lr0 gamma J theta: a fixed
gamma keeps that too (``--gamma-rule fixed``, the default); ``per-step`` keeps lr gamma fixed
(gamma = gamma0 alpha), which weakens the decay's share of the step at small alpha by alpha.
Grokking is read on accuracy (level 0.95): t_train, t_test and their ratio.

Quick (CPU): the transformer_quick.toml model (p = 23, d_model 32, 4 heads, d_mlp 128, no
LayerNorm), frac 0.7, 3 seeds, 3000 steps: about a minute on a 2-core CPU. Full (GPU):
Nanda's p = 113, d_model 128, d_mlp 512, frac 0.3, 20000 steps.

Measured (quick, 2-core CPU, seeds 0-2; median t_test / t_train at alpha 0.1, 0.3, 1, 3):
``--gamma-rule per-step``: 11.4, 14.9, 4.2, 6.4 (t_train 30-40 steps at alpha <= 0.3, 292-325
at alpha 3). ``fixed`` (default, lr0 0.005, gamma 2): alpha 0.1 breaks (lr gamma = 0.1 per step
collapses the weights: 1 seed of 3 fits the train set), then 2.7, 4.3, 5.7 (t_train 46-65,
63-79, 125): monotone in alpha, but the delay does not vanish. With Nanda's lr0 = 1e-3,
gamma 1 (``--alphas 0.1 0.15 0.3 1 --lr0 0.001 --gamma0 1 --steps 10000``): 10.6, 19.8, 19.6
at alpha 0.1, 0.15, 0.3 and 14.2 at 1. docs/EXPERIMENTS.md ("Lazy -> rich: claim by claim")
has the test of why.

    python sweeps/transformer_alpha.py [--full] [--alphas A ...] [--lr0 LR] [--gamma0 G] [--seeds N]
        [--gamma-rule fixed|per-step] [--steps N] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
import xarray as xr

import groksweep as gs

LEVEL, LR_0, GAMMA_0 = 0.95, 0.005, 2.0
ALPHAS = [0.1, 0.3, 1.0, 3.0]


def settings(alpha: float, args) -> dict[str, float]:
    """AdamW's lr and weight decay at output scale ``alpha``: lr = lr0 / alpha, and gamma
    ``fixed`` (then every parameter displacement, decay included, is 1/alpha times an alpha-free
    one to first order, and the prediction's early path is alpha-free) or ``per-step`` (lr gamma
    fixed, gamma = gamma0 alpha)."""
    gamma = args.gamma0 if args.gamma_rule == "fixed" else args.gamma0 * alpha
    return {"alpha": alpha, "lr": args.lr0 / alpha, "gamma": gamma}


def sweeps(args) -> list[gs.Sweep]:
    model = (
        {"p": 113, "d_model": 128, "d_mlp": 512, "frac": 0.3}
        if args.full
        else {"p": 23, "d_model": 32, "d_mlp": 128, "frac": 0.7}
    )
    base = model | {"n_heads": 4, "layer_norm": "none", "predictor": "centred", "op": "add",
                    "loss": "cross_entropy", "optimizer": "adamw", "beta2": 0.98}
    steps = args.steps or (20_000 if args.full else 3000)
    return [
        gs.Sweep("transformer", params=base | settings(a, args),
                 axes={"seed": list(range(args.seeds))},
                 steps=steps, log_points=60)
        for a in args.alphas
    ]


def _options(parser) -> None:
    parser.add_argument("--alphas", type=float, nargs="+", default=ALPHAS, help="output scales")
    parser.add_argument("--lr0", type=float, default=LR_0, help=f"lr = lr0 / alpha ({LR_0:g})")
    parser.add_argument("--gamma0", type=float, default=GAMMA_0, help=f"weight decay ({GAMMA_0:g})")
    parser.add_argument("--gamma-rule", choices=("fixed", "per-step"), default="fixed",
                        help="gamma0 at every alpha, or gamma0 alpha (lr gamma fixed)")
    parser.add_argument("--steps", type=int, help="steps (default 3000, --full 20000)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")


def main() -> None:
    args = rp.arguments("transformer_alpha", __doc__.splitlines()[0], extra=_options)
    fig, (axes,) = rp.panels(2)
    rows = []
    for k, (alpha, sweep) in enumerate(zip(args.alphas, sweeps(args))):
        ds, phase = rp.train(sweep, args, tag=f"alpha{alpha:g}", level=LEVEL)
        median = ds.median("seed")
        for role, style in (("train", "--"), ("test", "-")):  # one colour per alpha
            axes[0].semilogx(median["time"][1:], median[f"{role}_acc"][1:], style, color=f"C{k}",
                             label=f"α = {alpha:g}" if role == "test" else None)
            axes[1].loglog(median["time"][1:], median[f"{role}_loss"][1:], style, color=f"C{k}")
        t_train, t_test = phase["t_train"].values, phase["t_test"].values
        ratio = xr.DataArray(t_test / t_train).median().item()
        lr, gamma = settings(alpha, args)["lr"], settings(alpha, args)["gamma"]
        rows.append([f"{alpha:g}", f"{lr:g}", f"{gamma:g}",
                     " / ".join(rp.fmt(t) for t in t_train), " / ".join(rp.fmt(t) for t in t_test),
                     rp.fmt(ratio), rp.fmt(float(np.median(ds["test_acc"].isel(time=-1))))])
    axes[0].set(xlabel="step", ylabel="accuracy (train dashed, test solid)")
    axes[0].legend()
    axes[1].set(xlabel="step", ylabel="cross-entropy (seed median)")
    fig.suptitle("Transformer, centred predictor: lazier (larger α) learns later")
    rp.finish(fig, args, [rp.table(
        ["alpha", "lr", "gamma", "t_train (seeds)", "t_test (seeds)", "median t_test/t_train",
         "final test acc (median)"], rows, title=f"grokking on accuracy, level {LEVEL}")])


if __name__ == "__main__":
    main()
