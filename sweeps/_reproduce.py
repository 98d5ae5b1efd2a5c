"""Shared code of the figure reproductions in ``sweeps/`` (Levi, Beck & Bar-Sinai).

Every script ``sweeps/figN_*.py`` is run as ``python sweeps/figN_*.py [--full] [--out DIR]
[--docs]``: it builds a :class:`groksweep.Sweep`, trains it, writes ``spec.toml``,
``results.nc`` and ``phase.nc`` (trained), ``theory.nc`` (the exact theory on the same grid),
the figure ``figN.png``, ``agreement.md`` (trained against theory) and ``summary.json``
(run time, sizes) into DIR (default ``out/<script>/quick`` or ``out/<script>/full``, e.g.
``out/fig1_lambda/quick``: a folder of the script's own, which no ``groksweep run`` of the
README writes to). ``--docs`` also copies the figure into ``docs/figures/``.

This module holds only the scripts' plumbing and layout: arguments, files, panels and
markdown tables. The theory on a sweep's grid and the numbers of its agreement with the trained
runs come from :mod:`groksweep.theory_grid` (each run's own parameters, lam the effective
d_in / n_train).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
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
from groksweep import plot, refine, results, theory_grid

ROOT = Path(__file__).resolve().parents[1]
DOCS_FIGURES = ROOT / "docs" / "figures"
LEVEL = theory_grid.LEVEL  # grokking at 95% accuracy (the paper's Fig. 7; Fig. 1 uses Erf(sqrt 2))
DPI = 100
LOSS_FLOOR = 1e-8  # loss panels show 8 decades below the initial loss (float32 stops near 1e-11)


# --- command line and files --------------------------------------------------------------------
def arguments(name: str, description: str, extra=None) -> argparse.Namespace:
    """Parse ``--full``, ``--out``, ``--docs`` (and what ``extra(parser)`` adds)."""
    script = Path(sys.argv[0]).stem
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--full", action="store_true", help="the paper-sized variant")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default out/{script}/quick or /full)"
    )
    parser.add_argument("--docs", action="store_true", help="copy the figure into docs/figures/")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    args.name = name
    args.variant = "full" if args.full else "quick"
    args.out = args.out or Path("out") / script / args.variant
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
    ds = refine.run(sweep, progress=False) if sweep.refine else gs.run(sweep, progress=False)
    seconds = time.perf_counter() - start
    phase = gs.grokking_time(ds, level=level)
    results.save(ds, args.out / f"results{suffix}.nc")
    results.save(phase, args.out / f"phase{suffix}.nc")
    runs = int(ds["computed"].sum()) * ds.sizes["seed"] if sweep.refine else sweep.n_runs
    args.timings[tag or "sweep"] = {
        "runs": runs,
        "steps": sweep.steps,
        "log_points": sweep.log_points,
        "seconds": round(seconds, 1),
    }
    print(
        f"{args.name}{suffix}: {runs} runs, {sweep.steps} steps, trained in {seconds:.1f} s"
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
    subset = theory_grid.select(ds, **{by: list(values)})
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
    summary = theory_grid.select(summary, **fixed)
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
    return fixed3(a / b) if np.isfinite(a) and np.isfinite(b) and b != 0 else "—"


def fixed3(value: float) -> str:
    """A ratio or deviation to three decimals; "—" where it is undefined (NaN)."""
    return f"{value:.3f}" if np.isfinite(value) else "—"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A markdown table (cells formatted with :func:`fmt` unless already strings; a "|" inside
    a cell, as in a norm |θ|, is escaped so that it does not split the cell)."""
    cell = lambda v: (v if isinstance(v, str) else fmt(v)).replace("|", "\\|")
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cell(h) for h in headers) + " |")
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
    """Trained (seed median) against theory t_train, t_test and Δt along ``x`` at ``fixed``
    (:func:`groksweep.theory_grid.grokking_agreement`); with ``corrected`` (t_train, t_test,
    delta_t over x) a column of its Δt and ratio."""
    agreement = theory_grid.grokking_agreement(phase, theory_phase)
    rows = []
    for value in agreement[x].values:
        at = {k: float(v) for k, v in theory_grid.select(agreement, **{x: value}, **fixed).items()}
        rows.append(
            [
                f"{value:g}",
                at["t_train"],
                at["t_train_theory"],
                at["t_test"],
                at["t_test_theory"],
                at["delta_t"],
                at["delta_t_theory"],
                fixed3(at["delta_t_ratio"]),
                f"{at['test_censored_fraction']:.2f}",
            ]
        )
        if corrected is not None:
            c = float(theory_grid.select(corrected["delta_t"], **{x: value}))
            rows[-1] += [c, ratio(at["delta_t"], c)]
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


def loss_table(
    ds: xr.Dataset,
    by: str,
    title: str,
    min_modes: float = 100.0,
    floor: float = 1e-6,
    **fixed: Any,
) -> str:
    """Seed-mean trained loss against theory loss at the evaluation times, one row per value of
    ``by`` at ``fixed`` (:func:`groksweep.theory_grid.loss_agreement`): max |deviation| while
    at least ``min_modes`` modes carry the loss, the last such step, and over every time where
    the theory loss is above ``floor`` times its initial value."""
    agreement = theory_grid.loss_agreement(ds, min_modes=min_modes, floor=floor)
    rows = []
    for value in agreement[by].values:
        at = {k: float(v) for k, v in theory_grid.select(agreement, **{by: value}, **fixed).items()}
        cells = [f"{value:g}"]
        for role in ("train", "test"):
            cells += [
                fixed3(at[f"{role}_deviation"]),
                f"{int(at[f'{role}_self_averaging_until']):d}",
                fixed3(at[f"{role}_deviation_all"]),
            ]
        rows.append(cells)
    headers = [
        plot.label(by),
        f"train: max |dev| (≥ {min_modes:g} modes)",
        "up to step",
        "all times",
        f"test: max |dev| (≥ {min_modes:g} modes)",
        "up to step",
        "all times",
    ]
    return table(headers, rows, title)
