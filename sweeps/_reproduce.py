"""Shared code of the figure reproductions in ``sweeps/`` (Levi, Beck & Bar-Sinai).

Every script ``sweeps/figN_*.py`` is run as ``python sweeps/figN_*.py [--full] [--out DIR]
[--docs]``: it builds a :class:`groksweep.Sweep`, trains it, writes ``spec.toml``,
``results.nc`` and ``phase.nc`` (trained), ``theory.nc`` (the exact theory on the same grid),
the figure ``figN.png``, ``agreement.md`` (trained against theory) and ``summary.json``
(run time, sizes) into DIR (default ``out/figN_quick`` or ``out/figN_full``). ``--docs`` also
copies the figure into ``docs/figures/``.

Theory values come from :mod:`groksweep.theory` in the trainer's conventions; the helpers
here only map a sweep's parameters onto it: lam is the *effective* d_in / round(d_in / lam)
that the trainer uses, every other parameter is the run's own.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

import groksweep as gs
from groksweep import plot, results, theory

ROOT = Path(__file__).resolve().parents[1]
DOCS_FIGURES = ROOT / "docs" / "figures"
LEVEL = (
    0.95  # accuracy level defining the grokking times (the paper's Fig. 7; Fig. 1 uses Erf(sqrt 2))
)
DPI = 100
LOSS_FLOOR = 1e-8  # loss panels show 8 decades below the initial loss (float32 stops near 1e-11)
THEORY_PARAMS = {"lr": 0.01, "gamma": 0.0, "d_out": 1, "alpha": 1.0, "noise": 0.0}


# --- command line and files --------------------------------------------------------------------
def arguments(name: str, description: str, extra=None) -> argparse.Namespace:
    """Parse ``--full``, ``--out``, ``--docs`` (and what ``extra(parser)`` adds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--full", action="store_true", help="the paper-sized variant")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default out/{name}_quick or _full)"
    )
    parser.add_argument("--docs", action="store_true", help="copy the figure into docs/figures/")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    args.name = name
    args.variant = "full" if args.full else "quick"
    args.out = args.out or Path("out") / f"{name}_{args.variant}"
    args.out.mkdir(parents=True, exist_ok=True)
    args.timings = {}
    return args


def train(sweep: gs.Sweep, args: argparse.Namespace, tag: str = "", level: float = LEVEL):
    """Run ``sweep`` and save its spec, results and grokking times under ``args.out``.

    Returns (results, phase). ``tag`` names the files of a script's second, third... sweep
    (``results_<tag>.nc``). The wall time (compilation included) goes into ``summary.json``.
    """
    suffix = f"_{tag}" if tag else ""
    (args.out / f"spec{suffix}.toml").write_text(sweep.to_toml())
    start = time.perf_counter()
    ds = gs.run(sweep, progress=False)
    seconds = time.perf_counter() - start
    phase = gs.grokking_time(ds, level=level)
    results.save(ds, args.out / f"results{suffix}.nc")
    results.save(phase, args.out / f"phase{suffix}.nc")
    args.timings[tag or "sweep"] = {
        "runs": sweep.n_runs,
        "steps": sweep.steps,
        "log_points": sweep.log_points,
        "seconds": round(seconds, 1),
    }
    print(
        f"{args.name}{suffix}: {sweep.n_runs} runs, {sweep.steps} steps, trained in {seconds:.1f} s"
    )
    return ds, phase


def finish(
    fig: Figure, args: argparse.Namespace, tables: Sequence[str] = (), **summary: Any
) -> Path:
    """Save the figure (and a copy in docs/figures with ``--docs``), the tables and summary."""
    path = args.out / f"{args.name}.png"
    fig.savefig(path, dpi=DPI)
    if args.docs:
        DOCS_FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_FIGURES / f"{args.name}_{args.variant}.png")
    text = "\n\n".join(tables)
    (args.out / "agreement.md").write_text(text + "\n")
    print(text)
    info = {
        "figure": str(path),
        "variant": args.variant,
        "timings": args.timings,
        "total_train_seconds": round(sum(t["seconds"] for t in args.timings.values()), 1),
        "machine": platform.processor() or platform.machine(),
    } | summary
    (args.out / "summary.json").write_text(json.dumps(info, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path


# --- theory on a sweep's grid ------------------------------------------------------------------
def grid_parameters(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """The theory's parameters (lam, lr, gamma, d_out, alpha, noise) of every run of ``ds``,
    as arrays over the sweep's axes (seed excluded): axes where they are axes, fixed values
    otherwise. lam is the trainer's effective d_in / round(d_in / lam)."""
    sweep = results.sweep_of(ds)
    if sweep.task != "linear" or sweep.params.get("optimizer", "gd") != "gd":
        raise ValueError("the theory covers the linear task trained with gradient descent")

    def value(name: str, default: Any) -> xr.DataArray:
        if name in ds.dims:
            return ds[name].astype(float)
        return xr.DataArray(float(sweep.params.get(name, default)))

    params = {name: value(name, default) for name, default in THEORY_PARAMS.items()}
    d_in = value("d_in", 200)
    if "n_train" in ds.dims or "n_train" in sweep.params:
        n_train = value("n_train", 0)
    else:
        n_train = np.round(d_in / value("lam", 0.5))
    params["lam"] = d_in / n_train
    return params


def _as_array(name: str, values: Any) -> xr.DataArray:
    if isinstance(values, xr.DataArray):
        return values
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        return xr.DataArray(values)
    return xr.DataArray(values, dims=name, coords={name: values})


def theory_times(*, level: float = LEVEL, **values: Any) -> xr.Dataset:
    """Exact theory grokking times over ``values`` (lam, lr, gamma, d_out, alpha, noise, eps):
    1-D sequences become dims named after the parameter (in the order given), DataArrays keep
    their dims, scalars are fixed; omitted parameters take the trainer's defaults. Returns
    t_train, t_test and delta_t (NaN: never reaches ``level``)."""
    values = {"eps": 1e-3} | THEORY_PARAMS | values
    names = ["lam", "lr", "gamma", "d_out", "eps", "alpha", "noise"]
    arrays = [_as_array(n, values[n]) for n in names]

    def times(lam, lr, gamma, d_out, eps, alpha, noise):
        return theory.grokking_time(
            lam, lr=lr, gamma=gamma, d_out=d_out, eps=eps, level=level, alpha=alpha, noise=noise
        )

    t_train, t_test = xr.apply_ufunc(times, *arrays, output_core_dims=[[], []])
    order = [n for n in values if n in t_train.dims] + [d for d in t_train.dims if d not in values]
    out = xr.Dataset({"t_train": t_train, "t_test": t_test, "delta_t": t_test - t_train})
    return out.transpose(*order)


def theory_curves(times: Any, **values: Any) -> xr.Dataset:
    """Exact theory train/test losses and accuracies at ``times`` (steps) over ``values``, named
    as in :func:`theory_times`; accuracies are given for each ``eps``."""
    values = {"eps": 1e-3} | THEORY_PARAMS | values
    t = _as_array("time", times)
    names = ["lam", "lr", "gamma", "d_out", "alpha", "noise"]
    arrays = [_as_array(n, values[n]) for n in names]

    def losses(t, lam, lr, gamma, d_out, alpha, noise):
        return theory.losses(t, lam, lr=lr, gamma=gamma, d_out=d_out, alpha=alpha, noise=noise)

    train, test = xr.apply_ufunc(losses, t, *arrays, output_core_dims=[[], []])
    eps, d_out = _as_array("eps", values["eps"]), arrays[3]
    out = xr.Dataset({"train_loss": train, "test_loss": test})
    with np.errstate(over="ignore"):  # eps / loss where the loss underflows to 0: accuracy 1
        for role in ("train", "test"):
            out[f"{role}_acc"] = xr.apply_ufunc(theory.accuracy, out[f"{role}_loss"], eps, d_out)
    return out


def theory_on_grid(ds: xr.Dataset, level: float = LEVEL, n_times: int = 400):
    """(curves, phase): the theory of every run of ``ds`` (seed excluded): losses and accuracies
    on a dense log time grid up to the sweep's steps, and grokking times at each eps."""
    params = grid_parameters(ds) | {"eps": ds["eps"]}
    steps = int(ds["time"].values[-1])
    times = np.unique(np.concatenate([[0.0], np.geomspace(1.0, steps, n_times)]))
    return theory_curves(times, **params), theory_times(level=level, **params)


def save_theory(args: argparse.Namespace, curves: xr.Dataset, phase: xr.Dataset, tag: str = ""):
    """Write the theory of a sweep next to its results (``theory.nc``, ``theory_phase.nc``)."""
    suffix = f"_{tag}" if tag else ""
    results.save(curves, args.out / f"theory{suffix}.nc")
    results.save(phase, args.out / f"theory_phase{suffix}.nc")


# --- figures -----------------------------------------------------------------------------------
def panels(n: int = 3, rows: int = 1, width: float = 5.0, height: float = 4.2):
    """A constrained-layout figure with ``rows`` x ``n`` axes."""
    fig = Figure(figsize=(width * n, height * rows), layout="constrained")
    return fig, fig.subplots(rows, n, squeeze=False)


def curves_panels(
    ds: xr.Dataset,
    curves: xr.Dataset,
    axes: Sequence[Axes],
    by: str,
    values: Sequence[Any],
    **fixed: Any,
) -> None:
    """Loss and accuracy panels (trained: seed median in colour; theory: black) for a few
    values of ``by``."""
    indices = [plot._index(ds, by, v) for v in values]
    subset = ds.isel({by: indices})
    plot.learning_curves(subset, by=by, ax=axes, theory=curves, **fixed)
    initial = float(subset["test_loss"].isel(time=0).max())
    axes[0].set_ylim(LOSS_FLOOR * initial, 3 * initial)
    axes[0].set_title("loss (train dashed, test solid)")
    axes[1].set_title("accuracy")


def family_delta_t(
    ax: Axes,
    phase: xr.Dataset,
    x: str,
    by: str,
    theory_dt: xr.DataArray | None,
    *,
    eps: float | None = None,
    extra_handles: Sequence[Line2D] = (),
    legend_loc: str = "best",
    **fixed: Any,
) -> dict[Any, Any]:
    """Δt against ``x``, one colour per value of ``by``: trained seed median (markers, quartile
    band), theory in black (``theory_dt`` over dims x, by and optionally eps, at its own x
    values). Censored medians are open triangles on the top edge. Returns the colours by value."""
    summary = gs.reduce_seeds(phase) if "seed" in phase.dims else phase
    eps = phase["eps"].values[0] if eps is None else eps
    summary = summary.sel(eps=eps, method="nearest")
    for name, value in fixed.items():
        summary = summary.isel({name: plot._index(summary, name, value)})
    colours = {}
    byvalues = summary[by].values
    palette = colormaps["plasma"](np.linspace(0.0, 0.85, len(byvalues)))
    for colour, value in zip(palette, byvalues):
        row = summary.sel({by: value})
        xs = row[x].values.astype(float)
        median = row["delta_t_median"].values
        ax.plot(xs, median, "o", color=colour, ms=5, label=f"{plot.label(by)} = {value:g}")
        ax.fill_between(
            xs, row["delta_t_q25"].values, row["delta_t_q75"].values, color=colour, alpha=0.2, lw=0
        )
        censored = np.isnan(median)
        if censored.any():
            ax.plot(
                xs[censored],
                np.ones(censored.sum()),
                "^",
                mfc="none",
                color=colour,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        colours[value] = colour
        if theory_dt is not None and value in theory_dt[by].values:
            curve = theory_dt.sel({by: value})
            if "eps" in curve.dims:
                curve = curve.sel(eps=eps, method="nearest")
            ax.plot(curve[x].values, curve.values, "-", color="k", lw=1.2, zorder=3)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", lw=1.2, label="theory (exact)"))
    handles += list(extra_handles)
    handles.append(
        Line2D([], [], ls="", marker="^", mfc="none", color="0.3", label="no grokking (median)")
    )
    ax.legend(handles=handles, fontsize="small", loc=legend_loc)
    ax.set_ylabel("Δt = t_test − t_train (steps)")
    ax.set_xlabel(plot.label(x))
    return colours


def shade_no_grokking(
    ax: Axes,
    xs: np.ndarray,
    censored: np.ndarray,
    colour="0.6",
    alpha=0.25,
    label: str | None = None,
) -> None:
    """Shade the x ranges where ``censored`` (on the dense grid ``xs``) is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], censored.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        lo = xs[start - 1] if start > 0 else xs[0]
        ax.axvspan(
            np.sqrt(lo * xs[start]) if start > 0 and lo > 0 else xs[start],
            xs[stop - 1],
            color=colour,
            alpha=alpha,
            lw=0,
            label=label,
        )
        label = None


# --- agreement tables --------------------------------------------------------------------------
def fmt(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.2e}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if np.isfinite(a) and np.isfinite(b) and b != 0 else "—"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A markdown table (cells formatted with :func:`fmt` unless already strings)."""
    cell = lambda v: v if isinstance(v, str) else fmt(v)
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def grokking_table(
    phase: xr.Dataset,
    theory_phase: xr.Dataset,
    x: str,
    title: str,
    corrected: xr.Dataset | None = None,
    **fixed: Any,
) -> str:
    """Trained (seed median) against theory t_train, t_test and Δt along ``x`` at ``fixed``;
    with ``corrected`` (t_train, t_test, delta_t over x) a column of its Δt and ratio."""
    summary = gs.reduce_seeds(phase)
    rows = []
    for value in summary[x].values:
        where = {x: value} | fixed
        s = {
            k: float(summary[f"{k}_median"].sel(where, method="nearest"))
            for k in ("t_train", "t_test", "delta_t")
        }
        t = {
            k: float(theory_phase[k].sel(where, method="nearest"))
            for k in ("t_train", "t_test", "delta_t")
        }
        censored = float(summary["test_censored_fraction"].sel(where, method="nearest"))
        rows.append(
            [
                f"{value:g}",
                s["t_train"],
                t["t_train"],
                s["t_test"],
                t["t_test"],
                s["delta_t"],
                t["delta_t"],
                ratio(s["delta_t"], t["delta_t"]),
                f"{censored:.2f}",
            ]
        )
        if corrected is not None:
            c = float(corrected["delta_t"].sel({x: value}, method="nearest"))
            rows[-1] += [c, ratio(s["delta_t"], c)]
    headers = [
        plot.label(x),
        "t_train",
        "theory",
        "t_test",
        "theory",
        "Δt",
        "theory Δt",
        "Δt trained/theory",
        "test censored",
    ]
    if corrected is not None:
        headers += ["finite-d_in Δt", "trained/finite-d_in"]
    return table(headers, rows, title)


def effective_modes(t, lam, *, role: str, d_in: int, lr=0.01, gamma=0.0, d_out=1, alpha=1.0):
    """How many independent Gaussian modes carry the expected loss at step ``t``:
    n = d_in d_out E[w]^2 / E[w^2], w(nu) the loss weight of one eigenmode of Sigma (q c(nu, t),
    q = nu for train, 1 for test, c as in theory.losses; label noise ignored). A seed's loss is
    a chi-square-like sum whose relative standard deviation is about sqrt(2 / n): the theory's
    expectation describes one seed only where n is large (self-averaging); at late times n
    falls to a few modes at the MP edge and single seeds scatter by O(1)."""
    s = 4.0 * lr * np.asarray(t, dtype=float) / d_out
    g = gamma * d_out / 2.0

    def weight(nu, s, power):
        decay = np.exp(-(nu + g) * s / 2.0)
        rate = nu + g
        teacher = np.where(rate > 0, (decay * nu + g) / np.where(rate > 0, rate, 1.0), 1.0)
        q = nu if role == "train" else 1.0
        return (q * (alpha**2 * decay**2 + teacher**2)) ** power

    with np.errstate(invalid="ignore", divide="ignore"):
        first = theory.mp_expectation(weight, lam, s, 1.0)
        second = theory.mp_expectation(weight, lam, s, 2.0)
        return d_in * d_out * first**2 / second


def finite_size_times(
    d_in: int,
    *,
    level: float = LEVEL,
    t_max: float = 1e7,
    lam,
    lr=0.01,
    gamma=0.0,
    d_out=1,
    eps=1e-3,
    alpha=1.0,
) -> tuple[float, float]:
    """(t_train, t_test) with eq. 12's accuracy corrected for a finite d_in (not in the paper).

    Eq. 12 takes ||z||^2 / L ~ chi^2 with d_out degrees of freedom: z = D^T x has covariance
    D^T D, isotropic only when each column of D spreads over infinitely many eigenmodes of
    Sigma. With m(t) = effective_modes / d_out eigenmodes per column, D^T D is a Wishart-like
    matrix and ||z||^2 a weighted chi-square; matching its first two moments gives a scaled
    chi-square with k = (d_out + 2/m) / (1 + (d_out + 1)/m) degrees of freedom
    (k = 1 at d_out = 1, k -> d_out as m -> infinity). Solved on a dense log grid in t."""
    from scipy import special

    from groksweep.phase import first_crossing

    times = np.geomspace(1.0, t_max, 1500)
    out = []
    for role, loss in zip(
        ("train", "test"), theory.losses(times, lam, lr=lr, gamma=gamma, d_out=d_out, alpha=alpha)
    ):
        modes = (
            effective_modes(
                times, lam, role=role, d_in=d_in, lr=lr, gamma=gamma, d_out=d_out, alpha=alpha
            )
            / d_out
        )
        k = (d_out + 2.0 / modes) / (1.0 + (d_out + 1.0) / modes)
        accuracy = special.gammainc(k / 2.0, k * eps / (2.0 * loss))
        out.append(float(first_crossing(accuracy, times, level)))
    return out[0], out[1]


def loss_agreement(
    ds: xr.Dataset,
    curves_at_eval: xr.Dataset,
    by: str,
    title: str,
    min_modes: float = 100.0,
    floor: float = 1e-6,
    **fixed: Any,
) -> str:
    """Seed-mean trained loss against theory loss at the evaluation times, per value of ``by``.

    Two windows: self-averaging times, where at least ``min_modes`` effective modes carry the
    loss (:func:`effective_modes`) and the theory is exact as d_in -> infinity; and every time
    where the theory loss is above ``floor`` times its initial value."""
    sweep = results.sweep_of(ds)
    params = grid_parameters(ds)
    times = ds["time"].values
    rows = []
    for value in ds[by].values:
        where = {by: value} | fixed
        at = {k: float(v.sel({d: where[d] for d in v.dims})) for k, v in params.items()}
        cells = [f"{value:g}"]
        for role in ("train", "test"):
            trained = ds[f"{role}_loss"].sel(where).mean("seed").values
            expected = curves_at_eval[f"{role}_loss"].sel(where).values
            dev = np.abs(trained / expected - 1)
            above = (expected > floor * expected[0]) & (times > 0)
            modes = effective_modes(
                times,
                at["lam"],
                role=role,
                d_in=sweep.params["d_in"],
                lr=at["lr"],
                gamma=at["gamma"],
                d_out=at["d_out"],
                alpha=at["alpha"],
            )
            window = above & (modes >= min_modes)
            last = times[window].max() if window.any() else 0
            cells += [
                f"{dev[window].max():.3f}" if window.any() else "—",
                f"{last:d}",
                f"{dev[above].max():.3f}",
            ]
        rows.append(cells)
    headers = [
        plot.label(by),
        f"train: max \\|dev\\| (≥ {min_modes:g} modes)",
        "up to step",
        "all times",
        f"test: max \\|dev\\| (≥ {min_modes:g} modes)",
        "up to step",
        "all times",
    ]
    return table(headers, rows, title)
