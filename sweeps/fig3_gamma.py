"""Fig. 3 of Levi, Beck & Bar-Sinai: the effect of weight decay gamma.

Left: losses for gamma = 1e-5, 1e-3, 1e-2 at lam = 0.9; centre: accuracies (at gamma = 1e-2
the test accuracy saturates below 95%: the weight-decay plateau of the test loss lies above
the threshold); right: Δt against gamma for several lam, the gamma range where the test
accuracy saturates below the level shaded grey (one shade per lam, from the theory). d_out = 1,
lr = 0.01, eps = 1e-3. Weight decay is PyTorch's (S <- S - lr (grad L + gamma S)).

    python sweeps/fig3_gamma.py [--full] [--out DIR] [--docs]

Quick: d_in = 400, 4 seeds. Full: the paper's d_in = 1000, 8 seeds.
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs
from groksweep import theory
from groksweep import theory_grid as tg

LAMS = [0.3, 0.5, 0.7, 0.9]
GAMMAS = [1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2]
CURVE_LAM = 0.9
CURVES = [1e-5, 1e-3, 1e-2]


def sweep(full: bool) -> gs.Sweep:
    return gs.Sweep(
        "linear",
        params={
            "d_in": 1000 if full else 400,
            "d_out": 1,
            "lr": 0.01,
            "n_test": 10_000 if full else 4000,
        },
        axes={"lam": LAMS, "gamma": GAMMAS, "seed": list(range(8 if full else 4))},
        steps=1_000_000,
        log_points=300 if full else 200,
        eps=[1e-3],
    )


def main() -> None:
    args = rp.arguments("fig3", __doc__.splitlines()[0])
    ds, phase = rp.train(sweep(args.full), args)
    curves, theory_phase = tg.theory_on_grid(ds)
    rp.save_theory(args, curves, theory_phase)

    fig, axes = rp.panels(3)
    loss_ax, acc_ax, dt_ax = axes[0]
    rp.curves_panels(ds, curves, (loss_ax, acc_ax), "gamma", CURVES, lam=CURVE_LAM)
    loss_ax.set_title(f"loss at λ = {CURVE_LAM} (train dashed, test solid)")
    dense = np.geomspace(1e-6, 1e-1, 121)
    dense_times = tg.theory_times(lam=ds["lam"].values, gamma=dense)
    shade = rp.Line2D([], [], color="0.6", lw=6, alpha=0.5, label="test accuracy saturates < 95%")
    rp.family_delta_t(
        dt_ax,
        phase,
        "gamma",
        "lam",
        dense_times["delta_t"],
        extra_handles=[shade],
        legend_loc="center left",
    )
    for lam in ds["lam"].values:
        never = np.isnan(dense_times["t_test"].sel(lam=lam).values)
        rp.shade_no_grokking(dt_ax, dense, never, alpha=0.15)
    dt_ax.set(
        xscale="log",
        yscale="log",
        xlim=(dense[0], dense[-1]),
        title="Δt against γ (grey: no grokking, per λ)",
    )
    d_in = int(tg.run_parameters(ds, ("d_in",))["d_in"])
    fig.suptitle(
        f"Fig. 3: grokking against weight decay γ (d_in = {d_in}, d_out = 1, "
        f"lr = 0.01, ε = 1e-3, {ds.sizes['seed']} seeds; theory black)"
    )

    tables = [
        rp.grokking_table(
            phase,
            theory_phase,
            "gamma",
            f"Grokking times at λ = {lam:g} (trained: median of {ds.sizes['seed']} seeds)",
            lam=lam,
            eps=1e-3,
        )
        for lam in ds["lam"].values
    ]
    rows = []
    threshold = float(theory.loss_threshold(1e-3, rp.LEVEL))
    for lam in ds["lam"].values:
        never = np.isnan(dense_times["t_test"].sel(lam=lam).values)
        edge = dense[np.argmax(never)] if never.any() else np.nan
        plateau = theory.losses(
            np.inf, tg.grid_parameters(ds)["lam"].sel(lam=lam).item(), gamma=dense
        )[1]
        crossing = dense[np.argmax(plateau > threshold)]
        for gamma in (1e-3, 1e-2):
            final = float(ds["test_loss"].sel(lam=lam, gamma=gamma).isel(time=-1).median("seed"))
            exact = float(curves["test_loss"].sel(lam=lam, gamma=gamma).isel(time=-1))
            eq15 = float(theory.weight_decay_plateaus(lam, gamma=gamma)[1])
            rows.append(
                [
                    f"{lam:g}",
                    f"{gamma:g}",
                    final,
                    exact,
                    rp.ratio(final, exact),
                    eq15,
                    f"{edge:.2g}",
                    f"{crossing:.2g}",
                ]
            )
    tables.append(
        rp.table(
            [
                "λ",
                "γ",
                f"trained test loss at step {int(ds['time'][-1])}",
                "theory",
                "trained/theory",
                "eq. 15 plateau (small γ)",
                "theory: no grokking from γ ≈",
                "plateau > L* from γ ≈",
            ],
            rows,
            f"Weight-decay saturation (L* = {threshold:.3g}: accuracy 95% at ε = 1e-3)",
        )
    )
    eq15_rows = []
    for lam in ds["lam"].values:
        for gamma in (0.0, 1e-4, 1e-3):
            exact = tg.theory_times(lam=lam, gamma=gamma)["delta_t"].item()
            eq15_rows.append(
                [
                    f"{lam:g}",
                    f"{gamma:g}",
                    exact,
                    float(theory.delta_t_weight_decay(lam)),
                    float(theory.delta_t_asymptotic(lam)),
                ]
            )
    tables.append(
        rp.table(
            ["λ", "γ", "exact Δt", "eq. 15 Δt", "eq. 11 Δt"],
            eq15_rows,
            "Eq. 15's Δt against the exact theory (ε = 1e-3)",
        )
    )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
