"""Fig. 2 of Levi, Beck & Bar-Sinai: the effect of the output dimension d_out.

Left: losses for d_out = 1, 50, 700 at lam = 0.9; centre: accuracies; right: Δt against
d_out for several lam. Δt first rises (the effective learning rate lr / d_out slows both
losses) and then falls (the accuracy of eq. 12 becomes a sharp step as d_out grows), with a
maximum at d_out^max(lam), marked with a star (theory) and a diamond (trained). lr = 0.01,
eps = 1e-3, gamma = 0.

    python sweeps/fig2_dout.py [--full] [--out DIR] [--docs]

Quick: d_in = 200, 2 seeds, n_test = 1000. Full: the paper's d_in = 1000, 4 seeds.
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs
from groksweep import theory_grid as tg

LAMS = [0.5, 0.7, 0.9]
CURVE_LAM = 0.9
CURVES = [1, 50, 700]


def sweep(full: bool) -> gs.Sweep:
    d_out = (
        [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 400, 700, 1000]
        if full
        else [1, 3, 10, 25, 50, 100, 250, 700]
    )
    return gs.Sweep(
        "linear",
        params={"d_in": 1000 if full else 200, "lr": 0.01, "n_test": 10_000 if full else 1000},
        axes={"lam": LAMS, "d_out": d_out, "seed": list(range(4 if full else 2))},
        steps=400_000,
        log_points=300 if full else 120,
        eps=[1e-3],
    )


def main() -> None:
    args = rp.arguments("fig2", __doc__.splitlines()[0])
    ds, phase = rp.train(sweep(args.full), args)
    curves, theory_phase = tg.theory_on_grid(ds)
    rp.save_theory(args, curves, theory_phase)

    fig, axes = rp.panels(3)
    loss_ax, acc_ax, dt_ax = axes[0]
    rp.curves_panels(ds, curves, (loss_ax, acc_ax), "d_out", CURVES, lam=CURVE_LAM)
    loss_ax.set_title(f"loss at λ = {CURVE_LAM} (train dashed, test solid)")
    dense = np.unique(np.round(np.geomspace(1, 1000, 61)))
    dense_dt = tg.theory_times(lam=ds["lam"].values, d_out=dense)["delta_t"]
    d_in = int(tg.run_parameters(ds, ("d_in",))["d_in"])
    finite = {
        lam: np.array(
            [np.subtract(*tg.finite_size_times(d_in, lam=lam, d_out=d)[::-1]) for d in dense]
        )
        for lam in ds["lam"].values
    }
    dotted = rp.Line2D([], [], color="k", ls=":", lw=1.2, label=f"eq. 12 at finite d_in = {d_in}")
    colours = rp.family_delta_t(dt_ax, phase, "d_out", "lam", dense_dt, extra_handles=[dotted])
    for lam, curve in finite.items():
        dt_ax.plot(dense, curve, ":", color="k", lw=1.2, zorder=3)
    dt_ax.set(xscale="log", yscale="log", title="Δt (★ theory max, ◇ trained max)")

    summary = gs.reduce_seeds(phase).isel(eps=0)
    rows = []
    for lam in ds["lam"].values:
        curve = dense_dt.sel(lam=lam)
        best = int(np.nanargmax(curve.values))
        trained = summary["delta_t_median"].sel(lam=lam)
        k = int(np.nanargmax(trained.values))
        dt_ax.plot(
            curve["d_out"].values[best],
            curve.values[best],
            "*",
            ms=14,
            color=colours[lam],
            mec="k",
            zorder=4,
        )
        dt_ax.plot(
            trained["d_out"].values[k],
            trained.values[k],
            "D",
            ms=8,
            mfc="none",
            mec=colours[lam],
            mew=2,
            zorder=4,
        )
        at_trained = float(
            theory_phase["delta_t"].sel(lam=lam, d_out=trained["d_out"].values[k], eps=1e-3)
        )
        j = int(np.nanargmax(finite[lam]))
        rows.append(
            [
                f"{lam:g}",
                f"{curve['d_out'].values[best]:g}",
                float(curve.values[best]),
                f"{dense[j]:g}",
                float(finite[lam][j]),
                f"{trained['d_out'].values[k]:g}",
                float(trained.values[k]),
                at_trained,
                rp.ratio(float(trained.values[k]), at_trained),
            ]
        )
    fig.suptitle(
        f"Fig. 2: grokking against d_out (d_in = {d_in}, lr = 0.01, ε = 1e-3, "
        f"{ds.sizes['seed']} seeds; theory black)"
    )
    tables = [
        rp.table(
            [
                "λ",
                "theory d_out^max",
                "theory Δt max",
                "finite-d_in d_out^max",
                "finite-d_in Δt max",
                "trained argmax d_out",
                "trained Δt there",
                "theory Δt there",
                "trained/theory",
            ],
            rows,
            "Maximum of Δt over d_out (theory: dense d_out grid, 1 to 1000)",
        )
    ]
    for lam in ds["lam"].values:
        corrected = [tg.finite_size_times(d_in, lam=lam, d_out=d) for d in ds["d_out"].values]
        corrected = rp.xr.Dataset(
            {k: ("d_out", v) for k, v in zip(("t_train", "t_test"), np.array(corrected).T)},
            coords={"d_out": ds["d_out"].values},
        )
        corrected["delta_t"] = corrected["t_test"] - corrected["t_train"]
        tables.append(
            rp.grokking_table(
                phase,
                theory_phase,
                "d_out",
                f"Grokking times at λ = {lam:g} (trained: median of "
                f"{ds.sizes['seed']} seeds; finite-d_in: eq. 12 with "
                f"the effective degrees of freedom of D^T D)",
                corrected=corrected,
                lam=lam,
                eps=1e-3,
            )
        )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
