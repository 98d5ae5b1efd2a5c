"""Fig. 5 of Levi, Beck & Bar-Sinai (App. B): late-time asymptotics against the exact losses.

Left: train loss at lam = 0.9, trained (seed mean, pink), exact eq. 8 (black), its closed
form eq. 19 (grey dotted) and the late-time eq. 21 (red dashed). Centre: test loss, trained
(light blue), exact (black), eq. 22 (blue dashed) and eq. 10 (blue dash-dotted). Right: how
far the small-eps grokking time eq. 11 (and eq. 25, its next order) is from the exact Δt, as
the ratio to the exact Δt against eps, with the trained Δt / exact at the swept eps (markers).
d_out = 1, lr = 0.01, gamma = 0; grokking at accuracy Erf(sqrt 2) (L = eps / 4), as in App. B.

    python sweeps/fig5_asymptotics.py [--full] [--out DIR] [--docs]

Quick: d_in = 400, 4 seeds. Full: d_in = 1000, 8 seeds.
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs
from groksweep import theory
from groksweep import theory_grid as tg

LAMS = [0.5, 0.9]
CURVE_LAM = 0.9
EPS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
LEVEL = float(theory.ERF_SQRT2)
LR = 0.01


def sweep(full: bool) -> gs.Sweep:
    return gs.Sweep(
        "linear",
        params={
            "d_in": 1000 if full else 400,
            "d_out": 1,
            "lr": LR,
            "n_test": 10_000 if full else 4000,
        },
        axes={"lam": LAMS, "seed": list(range(8 if full else 4))},
        steps=300_000,
        log_points=300 if full else 200,
        eps=EPS,
    )


def main() -> None:
    args = rp.arguments("fig5", __doc__.splitlines()[0])
    ds, phase = rp.train(sweep(args.full), args, level=LEVEL)
    curves, theory_phase = tg.theory_on_grid(ds, level=LEVEL)
    rp.save_theory(args, curves, theory_phase)
    lam = float(tg.grid_parameters(ds)["lam"].sel(lam=CURVE_LAM))  # effective lam

    fig, axes = rp.panels(3)
    train_ax, test_ax, ratio_ax = axes[0]
    t = curves["time"].values[1:]
    mean = ds.sel(lam=CURVE_LAM).mean("seed").isel(time=slice(1, None))
    exact = curves.sel(lam=CURVE_LAM).isel(time=slice(1, None))
    late = t >= 30
    eq10_train, eq10_test = theory.losses_asymptotic(t[late], lam, LR)
    train_ax.plot(
        mean["time"],
        mean["train_loss"],
        color="tab:pink",
        lw=3,
        alpha=0.7,
        label="trained (seed mean)",
    )
    train_ax.plot(t, exact["train_loss"], "k", lw=1, label="exact, eq. 8")
    train_ax.plot(
        t,
        theory.train_loss_closed_form(t, lam, LR),
        ":",
        color="0.5",
        lw=2,
        label="closed form, eq. 19",
    )
    train_ax.plot(t[late], eq10_train, "--", color="tab:red", label="late time, eq. 21")
    test_ax.plot(
        mean["time"],
        mean["test_loss"],
        color="tab:cyan",
        lw=3,
        alpha=0.7,
        label="trained (seed mean)",
    )
    test_ax.plot(t, exact["test_loss"], "k", lw=1, label="exact, eq. 8")
    test_ax.plot(
        t[late],
        theory.gen_loss_late_time(t[late], lam, LR),
        "--",
        color="tab:blue",
        label="late time, eq. 22",
    )
    test_ax.plot(t[late], eq10_test, "-.", color="tab:blue", label="late time, eq. 10")
    for ax, role in ((train_ax, "train"), (test_ax, "test")):
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="step",
            ylabel=f"{role} loss",
            ylim=(1e-9, 3),
            title=f"{role} loss at λ = {CURVE_LAM}",
        )
        ax.legend(fontsize="small", loc="lower left")

    eps = np.geomspace(1e-1, 1e-16, 200)
    dense = tg.theory_times(
        lam=[tg.grid_parameters(ds)["lam"].sel(lam=v).item() for v in LAMS], eps=eps, level=LEVEL
    )["delta_t"]
    summary = gs.reduce_seeds(phase)
    rows = []
    for colour, (nominal, effective) in zip(
        ("tab:purple", "tab:orange"), zip(LAMS, dense["lam"].values)
    ):
        exact_dt = dense.sel(lam=effective).values
        ratio_ax.plot(
            eps,
            theory.delta_t_asymptotic(effective, LR) / exact_dt,
            "--",
            color=colour,
            label=f"eq. 11 / exact, λ = {nominal}",
        )
        ratio_ax.plot(
            eps,
            theory.delta_t_subleading(effective, lr=LR, eps=eps, level=LEVEL) / exact_dt,
            ":",
            color=colour,
            lw=2,
            label=f"eq. 25 / exact, λ = {nominal}",
        )
        trained = summary["delta_t_median"].sel(lam=nominal).values
        on_grid = theory_phase["delta_t"].sel(lam=nominal).values
        ratio_ax.plot(
            ds["eps"].values,
            trained / on_grid,
            "o",
            color=colour,
            label=f"trained / exact, λ = {nominal}",
        )
        for e, tr, ex in zip(ds["eps"].values, trained, on_grid):
            eq11 = float(theory.delta_t_asymptotic(effective, LR))
            eq25 = float(theory.delta_t_subleading(effective, lr=LR, eps=e, level=LEVEL))
            rows.append(
                [
                    f"{nominal:g}",
                    f"{e:g}",
                    float(tr),
                    float(ex),
                    rp.ratio(tr, ex),
                    eq11,
                    rp.ratio(eq11, ex),
                    eq25,
                    rp.ratio(eq25, ex),
                ]
            )
    ratio_ax.axhline(1.0, color="k", lw=1)
    ratio_ax.set(
        xscale="log",
        xlim=(eps[0], eps[-1]),
        ylim=(0.5, 3.5),
        xlabel="ε",
        ylabel="Δt / exact Δt",
        title="small-ε asymptotes against the exact Δt",
    )
    ratio_ax.legend(fontsize="small", ncol=1, loc="upper right")
    d_in = int(tg.run_parameters(ds, ("d_in",))["d_in"])
    fig.suptitle(
        f"Fig. 5: late-time asymptotics (d_in = {d_in}, d_out = 1, lr = 0.01, "
        f"{ds.sizes['seed']} seeds; exact theory black)"
    )

    tables = [
        rp.table(
            [
                "λ",
                "ε",
                "trained Δt",
                "exact Δt",
                "trained/exact",
                "eq. 11",
                "eq. 11/exact",
                "eq. 25",
                "eq. 25/exact",
            ],
            rows,
            f"Δt at accuracy Erf(√2) (trained: median of {ds.sizes['seed']} seeds)",
        )
    ]
    at = np.array([1e3, 1e4, 3e4, 1e5])
    exact_tr, exact_te = theory.losses(at, lam, lr=LR)
    eq21, eq10 = theory.losses_asymptotic(at, lam, LR)
    eq22 = theory.gen_loss_late_time(at, lam, LR)
    tables.append(
        rp.table(
            [
                "step",
                "exact train",
                "eq. 21 / exact",
                "exact test",
                "eq. 22 / exact",
                "eq. 10 / exact",
            ],
            [
                [f"{s:g}", a, rp.ratio(b, a), c, rp.ratio(d, c), rp.ratio(e, c)]
                for s, a, b, c, d, e in zip(at, exact_tr, eq21, exact_te, eq22, eq10)
            ],
            f"Asymptotic losses against the exact theory at λ = {CURVE_LAM}",
        )
    )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
