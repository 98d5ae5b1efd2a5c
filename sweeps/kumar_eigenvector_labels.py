r"""Kumar, Bordelon, Gershman & Pehlevan §6.1 (Fig. 5) and App. 17 (Fig. 19): grokking induced
on Gaussian inputs by labels that are the j-th eigenvector of the initial NTK, over j and the
training-set size P.

The committee machine (groksweep.tasks.committee, ``labels = "eigenvector"``) at alpha = 1 with
full-batch GD at lr = eta_0 N / alpha^2, eta_0 = 2, no weight decay. The labels are the unit-norm
j-th eigenvector (by descending eigenvalue) of K_0 on the training and test inputs together, so
every curve starts near 1 / (P + n_test). K_0's features are the linear and quadratic functions
of x: its top D eigenvectors are linear functions, the next D (D + 1) / 2 quadratic ones.
Grokking is read on the loss (``grokking_time(on="loss")``: the first step at which a loss falls
to LOSS_LEVEL of its initial value).

Quick: D = 30, N = 100, n_test = 300, eps_align = 0.5, P in {150, 300, 450}, j in {1, 20, 40,
100, 250, 400}, 10000 steps, one seed (a few minutes on a 2-core CPU). Full: D = 100, N = 500,
n_test = 1000, P in {550, 1100, 2200}, j in {1, 70, 100, 200, 500, 1000, 1500}, 40000 steps,
3 seeds (not run yet).

    python sweeps/kumar_eigenvector_labels.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
from matplotlib import colormaps

import groksweep as gs
from groksweep.tasks.committee import lazy_lr

ETA_0, LOSS_LEVEL = 2.0, 0.1


def sizes(full: bool) -> dict:
    if full:
        return {
            "d_in": 100,
            "width": 500,
            "n_test": 1000,
            "steps": 40_000,
            "seeds": [0, 1, 2],
            "n_train": [550, 1100, 2200],
            "j": [1, 70, 100, 200, 500, 1000, 1500],
        }
    return {"d_in": 30, "width": 100, "n_test": 300, "steps": 10_000, "seeds": [0],
            "n_train": [150, 300, 450], "j": [1, 20, 40, 100, 250, 400]}  # fmt: skip


def sweep(full: bool) -> gs.Sweep:
    s = sizes(full)
    return gs.Sweep(
        "committee",
        params={
            "d_in": s["d_in"], "width": s["width"], "n_test": s["n_test"],
            "labels": "eigenvector", "eps_align": 0.5, "alpha": 1.0,
            "lr": lazy_lr(ETA_0, 1.0, s["width"]), "gamma": 0.0,
        },
        axes={"n_train": s["n_train"], "j": s["j"], "seed": s["seeds"]},
        steps=s["steps"],
        log_points=60,
    )  # fmt: skip


def main() -> None:
    args = rp.arguments("kumar_eigenvector_labels", __doc__.splitlines()[0])
    ds, _ = rp.train(sweep(args.full), args)
    phase = gs.grokking_time(ds, on="loss", loss_level=LOSS_LEVEL).median("seed")
    test0 = ds.test_loss.isel(time=0)
    final = (ds.test_loss.isel(time=-1) / test0).median("seed")
    peak = (ds.test_loss.max("time") / test0).median("seed")
    train_end = (ds.train_loss.isel(time=-1) / ds.train_loss.isel(time=0)).median("seed")

    rows, summary = [], {}
    for p in ds.n_train.values:
        for j in ds.j.values:
            at = {"n_train": p, "j": j}
            row = {
                "t_train": float(phase.t_train.sel(at)),
                "t_test": float(phase.t_test.sel(at)),
                "test_end": float(final.sel(at)),
                "test_peak": float(peak.sel(at)),
                "train_end": float(train_end.sel(at)),
            }
            summary[f"P{p}_j{j}"] = row
            rows.append([int(p), int(j), row["t_train"], row["t_test"],
                         rp.ratio(row["t_test"], row["t_train"]), row["test_peak"],
                         row["test_end"], row["train_end"]])  # fmt: skip
    headers = ["P", "j", f"t_train ({LOSS_LEVEL:g} of initial)", "t_test", "t_test / t_train",
               "peak test / initial", "test end / initial", "train end / initial"]  # fmt: skip
    n_seeds = ds.sizes["seed"]
    tables = [rp.table(headers, rows, title=f"eigenvector labels, medians over {n_seeds} "
                       f"seed(s), {int(ds.time[-1])} steps (— : not reached)")]  # fmt: skip

    fig, (axes,) = rp.panels(3)
    colours = colormaps["viridis"](np.linspace(0, 0.9, ds.sizes["j"]))
    for ax, p in zip(axes[:2], ds.n_train.values[[0, -1]]):
        for colour, j in zip(colours, ds.j.values):
            one = ds.sel(n_train=p, j=j).isel(seed=0)
            t = one.time[1:]
            ax.loglog(t, one.train_loss[1:], "--", color=colour)
            ax.loglog(t, one.test_loss[1:], "-", color=colour, label=f"j = {j}")
        ax.set(xlabel="step", ylabel="MSE (train dashed, test solid)", title=f"P = {p}, seed 0")
        ax.legend(fontsize=7)
    for marker, p in zip("os^v", ds.n_train.values):
        axes[2].loglog(ds.j.values, final.sel(n_train=p), marker + "-", label=f"P = {p}")
    axes[2].axhline(1, color="0.5", lw=0.8, ls=":")
    axes[2].set(xlabel="eigenvector index j", ylabel="final test loss / initial",
                title="more data generalises at larger j")  # fmt: skip
    axes[2].legend(fontsize=7)
    s = sizes(args.full)
    fig.suptitle(f"Committee machine, labels = j-th eigenvector of K_0 (D = {s['d_in']}, "
                 f"N = {s['width']}, eps_align 0.5, α = 1)")  # fmt: skip
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
