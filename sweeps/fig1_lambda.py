"""Fig. 1 of Levi, Beck & Bar-Sinai: grokking as a function of lam = d_in / N_tr.

Left: train (dashed) and test (solid) losses for lam = 0.1, 0.9, 1.5; centre: accuracies;
right: Δt = t_test - t_train against lam for eps = 1e-3 and 1e-2, with the exact theory
(black) and the small-eps asymptote eq. 11 (black dashed). d_out = 1, lr = 0.01, gamma = 0.

    python sweeps/fig1_lambda.py [--full] [--out DIR] [--docs] [--spec sweeps/fig1_lambda.toml]

Quick: d_in = 400, 4 seeds. Full: the paper's d_in = 1000, 8 seeds. ``--spec`` trains a TOML
spec instead (it must sweep lam at d_out = 1, e.g. sweeps/fig1_lambda*.toml).
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs
from groksweep import plot, theory
from groksweep import theory_grid as tg

LAMS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.1, 1.3, 1.5]
CURVES = [0.1, 0.9, 1.5]
EPS = [1e-3, 1e-2]


def sweep(full: bool) -> gs.Sweep:
    return gs.Sweep(
        "linear",
        params={
            "d_in": 1000 if full else 400,
            "d_out": 1,
            "lr": 0.01,
            "n_test": 10_000 if full else 4000,
        },
        axes={"lam": LAMS, "seed": list(range(8 if full else 4))},
        steps=300_000,
        log_points=300 if full else 200,
        eps=EPS,
    )


def main() -> None:
    args = rp.arguments(
        "fig1",
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--spec", help="train this TOML spec instead"),
    )
    spec = gs.Sweep.from_toml(args.spec) if args.spec else sweep(args.full)
    ds, phase = rp.train(spec, args)
    curves, theory_phase = tg.theory_on_grid(ds)
    rp.save_theory(args, curves, theory_phase)

    fig, axes = rp.panels(3)
    (loss_ax, acc_ax, dt_ax) = axes[0]
    rp.curves_panels(ds, curves, (loss_ax, acc_ax), "lam", [v for v in CURVES if v in ds["lam"]])
    dense = np.concatenate([np.linspace(0.05, 0.95, 91), np.linspace(0.955, 0.98, 6)])
    exact = tg.theory_times(lam=dense, eps=ds["eps"].values)["delta_t"]
    eq11 = theory.delta_t_asymptotic(dense)
    eq11 = exact.isel(eps=0, drop=True).copy(data=eq11)
    plot.delta_t_curve(phase, "lam", ax=dt_ax, theory={"theory (exact)": exact, "eq. 11": eq11})
    dt_ax.set(yscale="log", xscale="linear", xticks=np.arange(0, 1.51, 0.25), xlim=(0, 1.6))
    dt_ax.set_xticklabels([f"{v:g}" for v in np.arange(0, 1.51, 0.25)])
    dt_ax.set_title("grokking time difference")
    d_in = int(tg.run_parameters(ds, ("d_in",))["d_in"])
    fig.suptitle(
        f"Fig. 1: grokking against λ (d_in = {d_in}, d_out = 1, lr = 0.01, "
        f"{ds.sizes['seed']} seeds; theory black)"
    )

    tables = [
        rp.grokking_table(
            phase,
            theory_phase,
            "lam",
            f"Grokking times, ε = {e:g} (trained: median of {ds.sizes['seed']} seeds)",
            eps=e,
        )
        for e in ds["eps"].values
    ]
    eq11_rows = []
    for lam in [v for v in ds["lam"].values if v < 1]:
        t_tr, t_te = theory.grokking_time(lam, eps=1e-3, level=rp.LEVEL)
        t_tr_p, t_te_p = theory.grokking_time(lam, eps=1e-3, level=theory.ERF_SQRT2)
        eq11_rows.append(
            [
                f"{lam:g}",
                float(t_te - t_tr),
                float(t_te_p - t_tr_p),
                float(theory.delta_t_asymptotic(lam)),
                rp.ratio(float(theory.delta_t_asymptotic(lam)), float(t_te_p - t_tr_p)),
                float(theory.delta_t_subleading(lam, eps=1e-3)),
                rp.ratio(float(theory.delta_t_subleading(lam, eps=1e-3)), float(t_te_p - t_tr_p)),
            ]
        )
    tables.append(
        rp.table(
            [
                "λ",
                "exact Δt (level 0.95)",
                "exact Δt (level Erf√2)",
                "eq. 11",
                "eq. 11 / exact",
                "eq. 25",
                "eq. 25 / exact",
            ],
            eq11_rows,
            "Eq. 11 (ε → 0 asymptote) against the exact theory at ε = 1e-3",
        )
    )
    tables.append(
        rp.loss_table(
            ds,
            "lam",
            "Losses: |seed-mean trained / theory − 1| "
            "at the evaluation times (theory loss > 1e-6 × initial)",
        )
    )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
