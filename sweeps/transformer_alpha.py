"""Kumar, Bordelon, Gershman & Pehlevan Fig. 6(b): the output scale alpha of the one-layer
transformer on (a + b) mod p, with the centred predictor alpha (f(theta) - f(theta_0)).

One sweep per alpha, each with its paired optimizer settings: AdamW's steps do not scale with
the gradient, so the predictor moves by ~ alpha lr per step; lr = LR_0 / alpha keeps that
initial function-space speed, and gamma = GAMMA_0 alpha keeps the decoupled decay per step
(lr gamma) fixed. Grokking is read on accuracy (level 0.95): t_train, t_test and their ratio.

Quick (CPU): the transformer_quick.toml model (p = 23, d_model 32, 4 heads, d_mlp 128, no
LayerNorm), frac 0.7, 3 seeds, 3000 steps: about a minute on a 2-core CPU. Full (GPU):
Nanda's p = 113, d_model 128, d_mlp 512, frac 0.3, 20000 steps.

Measured (quick, 2-core CPU, seeds 0-2, ~40 s of training): t_train = 30-40 steps at alpha 0.1
and 0.3, 63-79 at alpha 1, 292-325 at alpha 3; t_test = 124-829 (alpha 0.1), 210-926 (0.3),
192-379 with one run still below 0.95 at the end (1), 2090 for one run and never within 3000
steps for two (3; final test accuracy median 0.94). Median t_test / t_train: 11.4, 14.9, 4.2,
6.4. Larger alpha (lazier) slows learning and pushes generalisation out, as in the paper; but at
this size the delay does not vanish at small alpha: where the paper's curves at alpha = 0.15
show train and test accuracy rising together, here t_test / t_train stays above 10 at
alpha 0.1-0.3 (faster memorisation, generalisation no faster). Not reproduced.

    python sweeps/transformer_alpha.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
import xarray as xr

import groksweep as gs

LEVEL, LR_0, GAMMA_0 = 0.95, 0.005, 2.0
ALPHAS = [0.1, 0.3, 1.0, 3.0]


def sweeps(full: bool) -> list[gs.Sweep]:
    model = (
        {"p": 113, "d_model": 128, "d_mlp": 512, "frac": 0.3}
        if full
        else {"p": 23, "d_model": 32, "d_mlp": 128, "frac": 0.7}
    )
    base = model | {"n_heads": 4, "layer_norm": "none", "predictor": "centred", "op": "add",
                    "loss": "cross_entropy", "optimizer": "adamw", "beta2": 0.98}
    return [
        gs.Sweep("transformer", params=base | {"alpha": a, "lr": LR_0 / a, "gamma": GAMMA_0 * a},
                 axes={"seed": [0, 1, 2]}, steps=20_000 if full else 3000, log_points=60)
        for a in ALPHAS
    ]


def main() -> None:
    args = rp.arguments("transformer_alpha", __doc__.splitlines()[0])
    fig, (axes,) = rp.panels(2)
    rows = []
    for alpha, sweep in zip(ALPHAS, sweeps(args.full)):
        ds, phase = rp.train(sweep, args, tag=f"alpha{alpha:g}", level=LEVEL)
        median = ds.median("seed")
        for role, style in (("train", "--"), ("test", "-")):
            (line,) = axes[0].semilogx(median["time"][1:], median[f"{role}_acc"][1:], style,
                                       label=f"α = {alpha:g}" if role == "test" else None)
            axes[1].loglog(median["time"][1:], median[f"{role}_loss"][1:], style,
                           color=line.get_color())
        t_train, t_test = phase["t_train"].values, phase["t_test"].values
        ratio = xr.DataArray(t_test / t_train).median().item()
        rows.append([f"{alpha:g}", f"{LR_0 / alpha:g}", f"{GAMMA_0 * alpha:g}",
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
