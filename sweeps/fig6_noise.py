"""Fig. 6 of Levi, Beck & Bar-Sinai (App. C): training-label noise.

Left: losses for label-noise standard deviations sigma = 0, 0.01, 0.03, 0.1, 0.3 at lam = 0.9
(train loss against the noisy labels, test loss against clean ones); centre: accuracies at
eps = 1e-2; right: the losses at the last step against sigma^2, trained (markers) against the
exact theory (black, which lets the student fit the noise) and App. C's claim (grey: the
dynamics are unchanged, the train loss gains sigma^2, the test loss is unaffected and goes to
0). d_out = 1, lr = 0.01, gamma = 0.

    python sweeps/fig6_noise.py [--full] [--out DIR] [--docs]

Quick: d_in = 400, 4 seeds. Full: d_in = 1000, 8 seeds.
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np

import groksweep as gs
from groksweep import theory
from groksweep import theory_grid as tg

LAMS = [0.5, 0.9]
NOISE = [0.0, 0.01, 0.03, 0.1, 0.3]
CURVE_LAM = 0.9
EPS = 1e-2


def sweep(full: bool) -> gs.Sweep:
    return gs.Sweep(
        "linear",
        params={
            "d_in": 1000 if full else 400,
            "d_out": 1,
            "lr": 0.01,
            "n_test": 10_000 if full else 4000,
        },
        axes={"lam": LAMS, "noise": NOISE, "seed": list(range(8 if full else 4))},
        steps=1_000_000,
        log_points=300 if full else 200,
        eps=[EPS],
    )


def main() -> None:
    args = rp.arguments("fig6", __doc__.splitlines()[0])
    ds, phase = rp.train(sweep(args.full), args)
    curves, theory_phase = tg.theory_on_grid(ds)
    rp.save_theory(args, curves, theory_phase)

    fig, axes = rp.panels(3)
    loss_ax, acc_ax, end_ax = axes[0]
    rp.curves_panels(ds, curves, (loss_ax, acc_ax), "noise", NOISE, lam=CURVE_LAM)
    loss_ax.set_title(f"loss at λ = {CURVE_LAM} (train dashed, test solid)")
    threshold = float(theory.loss_threshold(EPS, rp.LEVEL))
    loss_ax.axhline(threshold, color="0.5", lw=0.8, ls=":")
    loss_ax.text(1.5, threshold * 1.3, "L* (95% accuracy)", color="0.4", fontsize="small")

    final = ds.isel(time=-1).median("seed")
    sigma2 = np.asarray(NOISE[1:]) ** 2
    dense = np.geomspace(sigma2[0] / 2, sigma2[-1] * 2, 100)
    lam_eff = tg.grid_parameters(ds)["lam"]
    for colour, lam in zip(("tab:purple", "tab:orange"), LAMS):
        at = final.sel(lam=lam, noise=NOISE[1:])
        end_ax.plot(sigma2, at["train_loss"], "v", color=colour, label=f"trained train, λ = {lam}")
        end_ax.plot(sigma2, at["test_loss"], "o", color=colour, label=f"trained test, λ = {lam}")
        train_inf, test_inf = theory.losses(
            np.inf, lam_eff.sel(lam=lam).item(), noise=np.sqrt(dense)
        )
        end_ax.plot(dense, train_inf, "--", color="k", lw=1)
        end_ax.plot(dense, test_inf, "-", color="k", lw=1)
    end_ax.plot(dense, dense, ":", color="0.5", lw=2, label="App. C: train = σ², test → 0")
    end_ax.axhline(threshold, color="0.5", lw=0.8, ls=":")
    handles, _ = end_ax.get_legend_handles_labels()
    handles += [
        rp.Line2D([], [], color="k", ls="--", lw=1, label="theory train (t → ∞)"),
        rp.Line2D([], [], color="k", lw=1, label="theory test (t → ∞)"),
    ]
    end_ax.legend(handles=handles, fontsize="small")
    end_ax.set(
        xscale="log",
        yscale="log",
        xlabel="σ² (label-noise variance)",
        ylabel=f"loss at step {int(ds['time'][-1])}",
        title="late-time losses",
    )
    d_in = int(tg.run_parameters(ds, ("d_in",))["d_in"])
    fig.suptitle(
        f"Fig. 6: label noise (d_in = {d_in}, d_out = 1, lr = 0.01, ε = {EPS:g}, "
        f"{ds.sizes['seed']} seeds; theory black)"
    )

    tables = [
        rp.grokking_table(
            phase,
            theory_phase,
            "noise",
            f"Grokking times at λ = {lam:g} (trained: median of {ds.sizes['seed']} seeds)",
            lam=lam,
            eps=EPS,
        )
        for lam in LAMS
    ]
    rows = []
    for lam in LAMS:
        for sigma in NOISE[1:]:
            at = final.sel(lam=lam, noise=sigma)
            train_inf, test_inf = theory.losses(np.inf, lam_eff.sel(lam=lam).item(), noise=sigma)
            test_curve = ds["test_loss"].sel(lam=lam, noise=sigma).median("seed")
            theory_curve = curves["test_loss"].sel(lam=lam, noise=sigma)
            rows.append(
                [
                    f"{lam:g}",
                    f"{sigma:g}",
                    float(at["train_loss"]),
                    float(train_inf),
                    sigma**2,
                    float(at["test_loss"]),
                    float(test_inf),
                    float(test_curve.min()),
                    float(theory_curve.min()),
                ]
            )
    tables.append(
        rp.table(
            [
                "λ",
                "σ",
                "train loss (last step)",
                "theory t→∞",
                "App. C: σ²",
                "test loss (last step)",
                "theory t→∞",
                "min test loss (trained)",
                "min (theory)",
            ],
            rows,
            f"Late-time losses with label noise (trained: median of {ds.sizes['seed']} seeds; "
            "App. C predicts the clean test loss, 0 at t → ∞)",
        )
    )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
