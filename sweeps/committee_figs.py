r"""Kumar, Bordelon, Gershman & Pehlevan §5 and App. 8.2, 8.3.2: grokking of the committee machine
on y = (beta* . x)^2 / 2 as the transition from lazy to rich training (CPU-sized).

Panels (groksweep.tasks.committee; full-batch GD, no weight decay, lr = eta_0 N / alpha^2 with
eta_0 = 4 unless stated, one sweep per alpha so that lr pairs with it):

- Fig. 3(a): train (dashed) and test (solid) loss over alpha at eps_align = 0.05;
- Fig. 3(b): the same over eps_align at alpha = 1;
- Fig. 3(e): the time to grok t_test - t_train over (eps_align, alpha), each time the first at
  which a loss falls to 10% of its initial value (``grokking_time(on="loss")``; the paper uses
  an absolute 0.1, 14-21% of the initial test loss here); white: the test loss never got there;
- Fig. 4: the loss decomposition of eq. 6 during a grokking run (alpha = 1, eps_align = 0.05);
- Fig. 9 (App. 8.3.2): the goldilocks training-set size, P = D, 5.5 D, 25 D at alpha = 1,
  eps_align = 0.05: losses and the power in linear modes;
- App. 8.2 (Fig. 7): the initial weight scale sigma in {0.5, 1, 2} against alpha: final test
  loss and relative parameter change |W - W_0| / |W_0| against alpha sigma^2, over which the
  paper says they collapse. For the committee machine the exact symmetry is
  (alpha, sigma, eps_align, lr) = (alpha sigma, 1, eps_align sigma, lr / sigma^2): runs agree
  exactly at equal alpha sigma *and* eps_align sigma; at fixed eps_align the quadratic part,
  which must learn the target, scales as alpha eps_align sigma^2. The table measures the
  collapse on alpha sigma^2 and on alpha sigma.

Quick: D = 50, N = 200, P = 275 (the paper's P/D = 5.5), 20000 steps, 2 seeds: 5.5 minutes
on a 2-core CPU (shared), compilation included. Full: the paper's D = 100, N = 500, P = 550,
100000 steps, 3 seeds, meant for an accelerator (not run yet). Tables go to agreement.md.

Measured (quick, seed medians). Fig. 3(e), Δt = t_test - t_train in steps ("-": the test loss
did not reach 10% of its start within 20000 steps):

    alpha \ eps_align  0.02   0.05   0.1    0.2    0.4
    0.25               734    366    220    135    84
    0.5                1650   809    482    301    222
    1                  3770   1860   1140   835    -
    2                  8740   4520   3260   -      -
    4                  -      13000  -      -      -
    8                  -      -      -      -      -

Lazier and less aligned networks grok later, as in the paper; the censored cells are lazy runs
whose test loss is still above 10% at the end (final test / initial 0.12-0.51), and at
eps_align = 0.02, alpha = 4 the run is slow rather than stuck (0.12 at 20000 steps). The test
loss peaks at 1.31x its initial value at eps_align = 0.02 (1.0x at 0.4) before falling; the final
test loss grows with alpha (at eps_align = 0.05: 8.5e-4 of the initial at alpha = 0.25, 0.18 at
alpha = 8) and at every alpha is lowest at eps_align = 0.05 (at 20000 steps), not at the
best-aligned 0.4 (Fig. 3(b): worse initial alignment, better end). With
lr = eta_0 N / alpha^2 the early linear fit is the same for every alpha, but t_train (train loss
at 10%) still grows ~ alpha^0.85 because fitting P = 5.5 D points needs the quadratic features.
Fig. 4 (seed 0): linear_power rises from 0 to 0.16 by step ~70 and falls after step ~130 as the
misalignment error falls; the sum of the three terms (the population risk) lies 7-16% above the
test loss throughout, within the ~10% sampling error of a 1000-point mean of this heavy-tailed
loss (y^2 ~ z^4).
Fig. 9: P = D fails (test loss 0.60 -> 2.8, linear power stays 2.2), P = 5.5 D groks (peak 0.77,
end 0.0054), P = 25 D generalises with train and test together (peak 0.63, linear power <=
0.027). App. 8.2: the relative parameter change collapses on alpha sigma^2 (median spread across
sigma 0.016 decades, against 0.31 on alpha sigma), as the paper says; the final test loss does
not (0.64 decades on alpha sigma^2, 0.21 on alpha sigma): at equal alpha sigma^2 the smaller
sigma, i.e. the smaller eps_align sigma, ends much lower.

    python sweeps/committee_figs.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import itertools

import _reproduce as rp
import numpy as np
import xarray as xr
from matplotlib import colormaps

import groksweep as gs
from groksweep import plot
from groksweep.tasks.committee import DECOMPOSITION, lazy_lr

ETA_0, LOSS_LEVEL, CURVE_EPS, CURVE_ALPHA = 4.0, 0.1, 0.05, 1.0
ALPHAS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
EPS_ALIGNS = [0.02, 0.05, 0.1, 0.2, 0.4]
SIGMAS = [0.5, 1.0, 2.0]
SIGMA_ALPHAS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
P_OVER_D = [1.0, 5.5, 25.0]
SIZES = {
    "quick": {"d_in": 50, "width": 200, "n_train": 275, "n_test": 1000},
    "full": {"d_in": 100, "width": 500, "n_train": 550, "n_test": 1000},
}
RUN = {"quick": {"steps": 20_000, "seeds": [0, 1]}, "full": {"steps": 100_000, "seeds": [0, 1, 2]}}
LOG_POINTS = 80


def paired_sweeps(base: dict, alphas, axes: dict, steps: int) -> dict[float, gs.Sweep]:
    """One sweep per alpha at lr = eta_0 N / alpha^2 (axes are Cartesian, so lr cannot pair
    with an alpha axis; alpha and lr are traced, so every sweep reuses one compiled program)."""
    fixed = {k: v for k, v in base.items() if k not in axes}
    return {
        a: gs.Sweep(
            "committee",
            params=fixed | {"alpha": a, "lr": lazy_lr(ETA_0, a, base["width"])},
            axes=axes,
            steps=steps,
            log_points=LOG_POINTS,
            eps=[0.01],
        )
        for a in alphas
    }


def train_paired(args, sweeps: dict[float, gs.Sweep], tag: str) -> xr.Dataset:
    """Train each alpha's sweep and stack the results along a new leading ``alpha`` axis."""
    runs = [
        rp.train(s, args, tag=f"{tag}_alpha_{a:g}")[0].expand_dims(alpha=[a])
        for a, s in sweeps.items()
    ]
    return xr.concat(runs, dim="alpha", combine_attrs="override")


def loss_phase(ds: xr.Dataset) -> xr.Dataset:
    return gs.grokking_time(ds, on="loss", loss_level=LOSS_LEVEL)


def curves(ax, ds: xr.Dataset, by: str, title: str) -> None:
    """Train (dashed) and test (solid) loss over their initial values, seed 0, one colour per
    value of ``by`` (the paper's Fig. 3 normalisation)."""
    colours = colormaps["viridis"](np.linspace(0, 0.9, ds.sizes[by]))
    for colour, value in zip(colours, ds[by].values):
        run = ds.sel({by: value}).isel(seed=0)
        t = run["time"][1:]
        for role, style in (("train", "--"), ("test", "-")):
            loss = run[f"{role}_loss"]
            label = f"{plot.label(by)} = {value:g}" if role == "test" else None
            ax.loglog(t, loss[1:] / loss[0], style, color=colour, label=label)
    ax.set(xlabel="step", ylabel="loss / initial loss", title=title, ylim=(1e-3, 10))
    ax.legend(fontsize=7)


def decomposition(ax, run: xr.Dataset, title: str) -> None:
    """Test loss against the three terms of eq. 6 and their sum (the population risk)."""
    t = run["time"][1:]
    ax.loglog(t, run["train_loss"][1:], "--", color="C0", label="train loss")
    ax.loglog(t, run["test_loss"][1:], color="C0", label="test loss")
    ax.loglog(t, sum(run[n] for n in DECOMPOSITION)[1:], ":", color="k", label="sum of eq. 6")
    styles = {"variance_error": "C3", "misalignment_error": "C2", "linear_power": "C1"}
    for name, colour in styles.items():
        ax.loglog(t, run[name][1:], "--", color=colour, label=name.replace("_", " "))
    ax.set(xlabel="step", ylabel="MSE", title=title, ylim=(1e-4, 5))
    ax.legend(fontsize=7)


def spread(values: xr.DataArray, x: xr.DataArray) -> float:
    """Median over the x values shared by several sigmas of log10(max/min) of ``values``
    across them: 0 is a perfect collapse on x."""
    table: dict[float, list[float]] = {}
    for a, s in itertools.product(values["alpha"].values, values["sigma"].values):
        key = round(float(x.sel(alpha=a, sigma=s)), 9)
        table.setdefault(key, []).append(float(values.sel(alpha=a, sigma=s)))
    logs = [np.log10(max(v) / min(v)) for v in table.values() if len(v) > 1]
    return float(np.median(logs))


def grid_rows(grid: xr.Dataset, phase: xr.Dataset) -> list[list]:
    """Seed medians of the grokking times and of the test loss's peak and end (over its
    initial value) at every (alpha, eps_align)."""
    summary = gs.reduce_seeds(phase)
    test = grid["test_loss"] / grid["test_loss"].isel(time=0)
    peak, final = test.max("time").median("seed"), test.isel(time=-1).median("seed")
    rows = []
    for a, e in itertools.product(ALPHAS, EPS_ALIGNS):
        at = {"alpha": a, "eps_align": e}
        times = [float(summary[f"{v}_median"].sel(at)) for v in ("t_train", "t_test", "delta_t")]
        rows.append([f"{a:g}", f"{e:g}", *times, float(peak.sel(at)), float(final.sel(at))])
    return rows


def main() -> None:
    args = rp.arguments("committee_figs", __doc__.splitlines()[0])
    base, run = SIZES[args.variant], RUN[args.variant]
    steps, seeds = run["steps"], run["seeds"]

    # Fig. 3 (a, b, e) and Fig. 4: one alpha x eps_align grid.
    grid = train_paired(
        args, paired_sweeps(base, ALPHAS, {"eps_align": EPS_ALIGNS, "seed": seeds}, steps), "grid"
    )
    phase = loss_phase(grid)
    # Fig. 9: P = D, 5.5 D, 25 D (separate shape buckets: padding would be > 2x).
    sizes = [round(r * base["d_in"]) for r in P_OVER_D]
    goldilocks = rp.train(
        paired_sweeps(
            base | {"eps_align": CURVE_EPS}, [CURVE_ALPHA], {"n_train": sizes, "seed": seeds}, steps
        )[CURVE_ALPHA],
        args,
        tag="goldilocks",
    )[0]
    # App. 8.2: sigma x alpha, one seed.
    sigma = train_paired(
        args,
        paired_sweeps(
            base | {"eps_align": CURVE_EPS}, SIGMA_ALPHAS, {"sigma": SIGMAS, "seed": [0]}, steps
        ),
        "sigma",
    ).isel(seed=0)

    fig, axes = rp.panels(4, rows=2)
    curves(axes[0, 0], grid.sel(eps_align=CURVE_EPS), "alpha", f"Fig. 3(a): ε = {CURVE_EPS:g}")
    curves(axes[0, 1], grid.sel(alpha=CURVE_ALPHA), "eps_align", f"Fig. 3(b): α = {CURVE_ALPHA:g}")
    plot.phase_diagram(phase, "eps_align", "alpha", ax=axes[0, 2], diverged=grid.get("diverged"))
    axes[0, 2].set_title(f"Fig. 3(e): time to grok, loss level {LOSS_LEVEL:g}")
    decomposition(
        axes[0, 3],
        grid.sel(alpha=CURVE_ALPHA, eps_align=CURVE_EPS).isel(seed=0),
        f"Fig. 4: eq. 6, α = {CURVE_ALPHA:g}, ε = {CURVE_EPS:g}",
    )
    curves(axes[1, 0], goldilocks, "n_train", "Fig. 9(a-c): training-set size P")
    colours = colormaps["viridis"](np.linspace(0, 0.9, len(sizes)))
    for colour, n in zip(colours, sizes):
        one = goldilocks.sel(n_train=n).isel(seed=0)
        axes[1, 1].loglog(one["time"][1:], one["linear_power"][1:], color=colour, label=f"P = {n}")
        axes[1, 1].loglog(one["time"][1:], one["misalignment_error"][1:], "--", color=colour)
    axes[1, 1].set(
        xlabel="step",
        ylabel="linear power (solid), misalignment (dashed)",
        title="Fig. 9(d-f): eq. 6 terms",
    )
    axes[1, 1].legend(fontsize=7)
    product = sigma["alpha"] * sigma["sigma"] ** 2
    final = sigma["test_loss"].isel(time=-1) / sigma["test_loss"].isel(time=0)
    change = sigma["param_change"].isel(time=-1)
    panels = (
        (axes[1, 2], final, "final test loss / initial"),
        (axes[1, 3], change, "|W - W_0| / |W_0| at the end"),
    )
    sigma_colours = colormaps["plasma"](np.linspace(0, 0.8, len(SIGMAS)))
    for ax, values, name in panels:
        for colour, s in zip(sigma_colours, SIGMAS):
            ax.loglog(
                product.sel(sigma=s), values.sel(sigma=s), "o-", color=colour, label=f"σ = {s:g}"
            )
        ax.set(xlabel="α σ²", ylabel=name, title=f"App. 8.2: σ × α, ε = {CURVE_EPS:g}")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Committee machine, D = {base['d_in']}, N = {base['width']}, P = {base['n_train']}, "
        f"GD at lr = {ETA_0:g} N/α², seed 0 curves"
    )

    rows = grid_rows(grid, phase)
    headers = ["α", "ε", "t_train", "t_test", "Δt", "peak test / initial", "final test / initial"]
    gold_rows = [
        [
            n,
            float(goldilocks["train_loss"].sel(n_train=n).isel(time=-1).median()),
            float(goldilocks["test_loss"].sel(n_train=n).isel(time=0).median()),
            float(goldilocks["test_loss"].sel(n_train=n).max("time").median()),
            float(goldilocks["test_loss"].sel(n_train=n).isel(time=-1).median()),
            float(goldilocks["linear_power"].sel(n_train=n).max("time").median()),
            float(goldilocks["linear_power"].sel(n_train=n).isel(time=-1).median()),
        ]
        for n in sizes
    ]
    gold_headers = [
        "P",
        "final train",
        "initial test",
        "peak test",
        "final test",
        "peak linear power",
        "final linear power",
    ]
    sigma_alpha = sigma["alpha"] * sigma["sigma"]
    collapse = [
        [name, spread(values, product), spread(values, sigma_alpha)]
        for name, values in (("final test loss", final), ("param change", change))
    ]
    tables = [
        rp.table(headers, rows, title=f"Fig. 3(e): loss level {LOSS_LEVEL:g}, seed medians"),
        rp.table(gold_headers, gold_rows, title="Fig. 9: goldilocks P, seed medians"),
        rp.table(
            ["quantity", "spread on α σ²", "spread on α σ"],
            collapse,
            title="App. 8.2: median log10(max/min) across σ at equal x (0: collapse)",
        ),
    ]
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
