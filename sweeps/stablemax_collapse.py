"""Prieto et al. (*Grokking at the edge of numerical stability*, 2025): StableMax cross-entropy
against softmax cross-entropy on modular addition without weight decay, float32.

Their claim: without regularisation, softmax cross-entropy keeps scaling the logits once the
training set is fitted, until the float32 softmax of the training pairs rounds to exactly 1
(Softmax Collapse, the ``softmax_collapse`` measure): the loss is then exactly 0, learning stops
and the test accuracy stays where it is. StableMax (s(x) = x + 1 or 1/(1 - x) in place of exp)
decays polynomially, not exponentially, and keeps learning until the network groks.

The model is the square-activation, mean-field MLP (Gromov) with the plain predictor, trained
by full-batch Adam without weight decay in float32; ``loss`` is the only difference between the
two halves of the grid (each its own compiled bucket, the same seeds, splits and initial
weights). A seed *groks* when its test accuracy reaches ``LEVEL``. A softmax run *collapses* at
the first log point where ``softmax_collapse`` (Prieto et al.'s measure, on the softmax of the
raw logits) reaches ``COLLAPSED``; the measure is meaningful for the softmax runs only
(StableMax runs grow their logits far more, and their softmax collapses harmlessly).

The quick variant is CPU-sized (p = 23, width 64, frac 0.6 and 0.8, 4 seeds, 10^5 steps: the
softmax runs collapse after ~10^4); ``--full`` takes p = 47, width 128, 8 seeds and 3 10^5
steps (an accelerator; not run yet). Measured: docs/EXPERIMENTS.md, "Frontier knobs: headline
numbers".

    python sweeps/stablemax_collapse.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs

LEVEL = 0.9
COLLAPSED = 0.99
LOSSES = ("cross_entropy", "stablemax")


def sweep(full: bool) -> gs.Sweep:
    if full:
        base, seeds, steps = {"p": 47, "d_h": 128}, list(range(8)), 300_000
        fracs = [0.4, 0.6]
    else:
        base, seeds, steps = {"p": 23, "d_h": 64}, [0, 1, 2, 3], 100_000
        fracs = [0.6, 0.8]
    return gs.Sweep(
        "modular_mlp",
        params=base
        | {
            "op": "add",
            "activation": "square",
            "parametrisation": "mean_field",
            "predictor": "plain",
            "optimizer": "adam",
            "lr": 0.03,
            "gamma": 0.0,
            "dtype": "float32",
        },
        axes={"loss": list(LOSSES), "frac": fracs, "seed": seeds},
        steps=steps,
        log_points=60,
        measures=["softmax_collapse"],
    )


def collapse_step(run) -> float:
    """The first logged step where the run's softmax collapse reaches COLLAPSED (NaN: never)."""
    reached = run["softmax_collapse"].values >= COLLAPSED
    return float(run["time"].values[reached.argmax()]) if reached.any() else np.nan


def main() -> None:
    args = rp.arguments("stablemax_collapse", __doc__.splitlines()[0])
    spec = sweep(args.full)
    ds, phase = rp.train(spec, args, level=LEVEL)
    final = ds.isel(time=-1)
    grokked = np.isfinite(phase["t_test"])
    rows = []
    for frac in ds["frac"].values:
        for loss in LOSSES:
            at = {"loss": loss, "frac": frac}
            runs = [ds.sel(at | {"seed": s}) for s in ds["seed"].values]
            collapses = [collapse_step(run) for run in runs]
            at_collapse = [
                rp.fixed3(float(run["test_acc"].sel(time=t))) if np.isfinite(t) else "–"
                for run, t in zip(runs, collapses)
            ]
            rows.append([
                f"{frac:g}", loss,
                f"{int(grokked.sel(at).sum())} of {ds.sizes['seed']}",
                ", ".join(rp.fixed3(v) for v in final["test_acc"].sel(at).values),
                ", ".join(f"{t:.0f}" if np.isfinite(t) else "–" for t in collapses)
                if loss == "cross_entropy" else "(not meaningful)",
                ", ".join(at_collapse) if loss == "cross_entropy" else "",
                rp.fmt(float(final["train_loss"].sel(at).median())),
            ])  # fmt: skip
    error = 1 - final["test_acc"].median("seed")
    ratio = error.sel(loss="cross_entropy") / error.sel(loss="stablemax")
    tables = [
        rp.table(
            [
                "frac",
                "loss",
                f"test acc ≥ {LEVEL}",
                "final test acc per seed",
                f"collapse ≥ {COLLAPSED} at step",
                "test acc at collapse",
                "train loss",
            ],
            rows,
            title=f"after {spec.steps} steps (train loss: seed median)",
        ),  # fmt: skip
        "median final test error, softmax / StableMax: "
        + ", ".join(f"frac {f:g}: {float(r):.2f}" for f, r in zip(ds["frac"].values, ratio)),
    ]

    fig, (axes,) = rp.panels(3)
    for loss, colour in zip(LOSSES, ("C0", "C3")):
        for frac, style in zip(ds["frac"].values, ("-", "--")):
            for seed in ds["seed"].values:
                run = ds.sel(loss=loss, frac=frac, seed=seed)
                label = f"{loss}, frac {frac:g}" if seed == ds["seed"].values[0] else None
                time = run["time"][1:]
                axes[0].semilogx(time, run["test_acc"][1:], style, color=colour, label=label)
                axes[1].loglog(time, run["train_loss"][1:], style, color=colour)
                axes[2].semilogx(time, run["softmax_collapse"][1:], style, color=colour)
    axes[0].set(xlabel="step", ylabel="test accuracy")
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="step", ylabel="train loss (each run's own; 0 not drawn)")
    axes[2].set(xlabel="step", ylabel="softmax collapse (fraction of training pairs)")
    fig.suptitle(
        f"(a + b) mod {spec.params['p']}, width {spec.params['d_h']}, Adam lr 0.03, "
        "no weight decay, float32"
    )
    rp.finish(fig, args, tables, softmax_over_stablemax_test_error=ratio.values.tolist())


if __name__ == "__main__":
    main()
