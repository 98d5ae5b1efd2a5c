r"""Kumar, Bordelon, Gershman & Pehlevan App. 8.3.3 (Fig. 10): grokking of the committee machine
vanishes as a fraction of the analytic solution is added to the initial weights.

The committee machine (groksweep.tasks.committee) on y = (beta* . x)^2 / 2 at the grokking
setting of sweeps/committee_figs.py (alpha = 1, eps_align = 0.05, full-batch GD at
lr = eta_0 N / alpha^2 with eta_0 = 4, no weight decay), started from W_0 = V + align W*, where W*
is the analytic solution (rows +-beta* / sqrt(alpha eps_align): alpha g(W*, x) = y(x) exactly)
and ``align`` the fraction added. The predictor is centred, so every run starts at f = 0 and the
initial loss is the same; what changes is the initial kernel, whose alignment with the target
(``ntk_alignment``, the CKA y^T K y / (|K|_F |y|^2) on the first test inputs) the table reports
at t = 0. Grokking is read on the loss: the first step at which a loss falls to LOSS_LEVEL of its
initial value, and the test loss's rise above its start while the train loss falls.

Quick: D = 50, N = 200, P = 275 (the paper's P/D = 5.5), align in {0, 0.01, 0.03, 0.1, 0.3, 1,
3}, 20000 steps, 2 seeds (a few minutes on a 2-core CPU). Full: D = 100, N = 500, P = 550,
100000 steps, 3 seeds (not run yet).

    python sweeps/kumar_initial_alignment.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
from matplotlib import colormaps

import groksweep as gs
from groksweep.tasks.committee import lazy_lr

ETA_0, EPS_ALIGN, LOSS_LEVEL = 4.0, 0.05, 0.1
ALIGN = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


def sweep(full: bool) -> gs.Sweep:
    d_in, width, steps = (100, 500, 100_000) if full else (50, 200, 20_000)
    seeds = [0, 1, 2] if full else [0, 1]
    return gs.Sweep(
        "committee",
        params={
            "d_in": d_in, "width": width, "n_train": round(5.5 * d_in), "n_test": 1000,
            "eps_align": EPS_ALIGN, "alpha": 1.0, "lr": lazy_lr(ETA_0, 1.0, width), "gamma": 0.0,
        },
        axes={"align": ALIGN, "seed": seeds},
        steps=steps,
        log_points=60,
        measures=["ntk_alignment"],
    )  # fmt: skip


def main() -> None:
    args = rp.arguments("kumar_initial_alignment", __doc__.splitlines()[0])
    ds, _ = rp.train(sweep(args.full), args)
    phase = gs.grokking_time(ds, on="loss", loss_level=LOSS_LEVEL).median("seed")
    test0 = ds.test_loss.isel(time=0)
    peak = (ds.test_loss.max("time") / test0).median("seed")
    final = (ds.test_loss.isel(time=-1) / test0).median("seed")
    cka0 = ds.ntk_alignment.isel(time=0).median("seed")

    rows, summary = [], {}
    for a in ds.align.values:
        row = {
            "cka_0": float(cka0.sel(align=a)),
            "t_train": float(phase.t_train.sel(align=a)),
            "t_test": float(phase.t_test.sel(align=a)),
            "test_peak": float(peak.sel(align=a)),
            "test_end": float(final.sel(align=a)),
        }
        summary[f"{a:g}"] = row
        ratio = rp.ratio(row["t_test"], row["t_train"])
        rows.append([f"{a:g}", row["cka_0"], row["t_train"], row["t_test"], ratio,
                     row["test_peak"], row["test_end"]])  # fmt: skip
    headers = ["align", "NTK alignment at 0", f"t_train ({LOSS_LEVEL:g} of initial)", "t_test",
               "t_test / t_train", "peak test / initial", "test end / initial"]  # fmt: skip
    tables = [rp.table(headers, rows, title=f"initial alignment, medians over {ds.sizes['seed']} "
                       f"seeds, {int(ds.time[-1])} steps (— : not reached)")]  # fmt: skip

    fig, (axes,) = rp.panels(3)
    colours = colormaps["plasma"](np.linspace(0, 0.85, ds.sizes["align"]))
    for colour, a in zip(colours, ds.align.values):
        one = ds.sel(align=a).isel(seed=0)
        t = one.time[1:]
        axes[0].loglog(t, one.train_loss[1:], "--", color=colour)
        axes[0].loglog(t, one.test_loss[1:], "-", color=colour, label=f"align = {a:g}")
        axes[1].semilogx(t, one.ntk_alignment[1:], "-", color=colour, label=f"align = {a:g}")
    axes[0].set(xlabel="step", ylabel="MSE (train dashed, test solid)", title="seed 0")
    axes[1].set(xlabel="step", ylabel="NTK alignment (CKA)", title="seed 0")
    positive = ds.align.values > 0
    axes[2].loglog(ds.align.values[positive], peak.values[positive], "o-",
                   label="peak test / initial")  # fmt: skip
    axes[2].loglog(ds.align.values[positive], final.values[positive], "s--",
                   label="test end / initial")  # fmt: skip
    axes[2].axhline(float(peak.sel(align=0)), color="0.5", ls=":", label="peak at align 0")
    axes[2].set(xlabel="align (fraction of W* added to W_0)", ylabel="test loss / initial")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"Committee machine from W_0 + align W* (eps_align {EPS_ALIGN:g}, α = 1)")
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
