"""Grokking in overparameterised ridge regression (Xu, Vardi & Safran): the three stages and
their scalings with weight decay gamma and initial scale alpha (the paper's nu).

The linear task at lam = d_in / N_tr = 2 (more parameters than samples) trained by gradient
descent with weight decay. Gradient descent fits the training data within the row space of
X quickly (stage 1), while the student's initial null-space component, invisible to the data,
keeps the test loss high (stage 2, the plateau) until weight decay has shrunk it by
(1 - lr gamma)^t (stage 3). The stage times come from :func:`groksweep.stage_times`: the times
after which the train (t_fit) and test (t_generalise) losses stay within ``LEVEL`` of their
final values.

Predictions (the paper: t_2 ~ 1/gamma, t_1, t_2 ~ ln nu^2): the excess test loss decays as
alpha^2 (1 - lr gamma)^(2t), so t_generalise = ln(c alpha^2 / LEVEL) / (-2 ln(1 - lr gamma)):
exponent -1 in gamma, and slope d t / d ln(alpha^2) = 1 / (-2 ln(1 - lr gamma)) ~ 1/(2 lr gamma).
Fits are made per seed and reported as the seed mean with a 95% t-interval.

    python sweeps/ridge_scaling.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
import xarray as xr
from scipy import stats

import groksweep as gs
from groksweep import results

LR, LAM, LEVEL = 0.1, 2.0, 1e-3
LARGE_ALPHA = 3.0  # slopes in ln(alpha^2) are fitted where the alpha^2 term dominates


def sweep(full: bool) -> gs.Sweep:
    if full:
        gamma = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
        alpha = [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]
        base, seeds, steps = {"d_in": 200, "n_test": 2000}, list(range(8)), 10**8
    else:
        gamma = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
        alpha = [1.0, 3.0, 10.0, 30.0, 100.0]
        base, seeds, steps = {"d_in": 100, "n_test": 1000}, [0, 1, 2], 10**7
    return gs.Sweep(
        "linear",
        params=base | {"lam": LAM, "lr": LR, "dtype": "float64"},
        axes={"gamma": gamma, "alpha": alpha, "seed": seeds},
        steps=steps,
        log_points=300,
        eps=[1e-3],
    )


def per_seed_slopes(x: np.ndarray, t: xr.DataArray, over: str) -> xr.DataArray:
    """Least-squares slope of ``t`` against ``x`` along dim ``over``, for every other index."""

    def slope(values):
        ok = np.isfinite(values)
        return stats.linregress(x[ok], values[ok]).slope if ok.sum() >= 2 else np.nan

    return xr.apply_ufunc(slope, t, input_core_dims=[[over]], vectorize=True)


def interval(values: np.ndarray) -> tuple[float, float, int]:
    """Seed mean and the half-width of its 95% t-interval."""
    values = values[np.isfinite(values)]
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
    return float(values.mean()), float(half), n


def main() -> None:
    args = rp.arguments("ridge_scaling", __doc__.splitlines()[0])
    ds, _ = rp.train(sweep(args.full), args)
    stages = gs.stage_times(ds, LEVEL)
    results.save(stages, args.out / "stages.nc")
    gamma, alpha = ds["gamma"].values, ds["alpha"].values

    rows_gamma = []
    exponents = per_seed_slopes(np.log(gamma), np.log(stages["t_generalise"]), "gamma")
    for a in alpha:
        mean, half, n = interval(exponents.sel(alpha=a).values)
        rows_gamma.append([rp.fmt(a), f"{mean:.3f} ± {half:.3f}", n, "-1"])
    big = stages.sel(alpha=alpha[alpha >= LARGE_ALPHA])
    log_alpha2 = np.log(big["alpha"].values ** 2)
    rows_alpha = []
    for g in gamma:
        predicted = 1 / (-2 * np.log1p(-LR * g))
        fits = {
            name: interval(per_seed_slopes(log_alpha2, big[name].sel(gamma=g), "alpha").values)
            for name in ("t_generalise", "t_fit")
        }
        rows_alpha.append(
            [rp.fmt(g)]
            + [f"{mean:.4g} ± {half:.2g}" for mean, half, _ in fits.values()]
            + [f"{predicted:.4g}", rp.ratio(fits["t_generalise"][0], predicted)]
        )
    tables = [
        rp.table(["alpha", "exponent of gamma in t_generalise (seed mean ± 95%)", "seeds",
                  "predicted"], rows_gamma, title="t_generalise against gamma (log-log fit)"),
        rp.table(["gamma", "d t_generalise / d ln alpha^2", "d t_fit / d ln alpha^2",
                  "predicted for t_generalise, 1/(-2 ln(1 - lr gamma))", "measured / predicted"],
                 rows_alpha,
                 title=f"stage times against ln(alpha^2), alpha >= {LARGE_ALPHA:g} (linear fit)"),
        f"converged runs: {int(stages['converged'].sum())} of {stages['converged'].size}",
    ]

    fig, (axes,) = rp.panels(3)
    example = ds.sel(gamma=gamma[len(gamma) // 2], alpha=alpha[-1], seed=ds["seed"].values[0])
    marks = stages.sel(gamma=example["gamma"], alpha=example["alpha"], seed=example["seed"])
    for role, style in (("train", "--"), ("test", "-")):
        axes[0].loglog(example["time"][1:], example[f"{role}_loss"][1:], style, label=role)
    for name, colour in (("t_fit", "C2"), ("t_generalise", "C3")):
        axes[0].axvline(float(marks[name]), color=colour, lw=0.8, label=name)
    where = f"γ = {rp.fmt(float(example['gamma']))}, α = {rp.fmt(float(example['alpha']))}"
    axes[0].set(xlabel="step", ylabel="loss", title=where)
    axes[0].legend()
    median = stages.median("seed")
    for a in alpha:
        axes[1].loglog(gamma, median["t_generalise"].sel(alpha=a), "o-", label=f"α = {rp.fmt(a)}")
    axes[1].loglog(gamma, median["t_generalise"].sel(alpha=alpha[-1]).values[0] * gamma[0] / gamma,
                   "k:", label="∝ 1/γ")
    axes[1].set(xlabel="weight decay γ", ylabel="t_generalise (seed median)")
    axes[1].legend(fontsize=7)
    for g in gamma:
        axes[2].plot(np.log(alpha**2), median["t_generalise"].sel(gamma=g), "o-",
                     label=f"γ = {rp.fmt(g)}")
    axes[2].set(xlabel="ln α²", ylabel="t_generalise (seed median)", yscale="log")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"Ridge regression stages: lam = {LAM:g}, lr = {LR:g}, level = {LEVEL:g}")
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
