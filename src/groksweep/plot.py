"""Figures from results and phase datasets: phase diagrams, Δt curves and learning curves.

Every function draws on a new :class:`matplotlib.figure.Figure` (never through ``pyplot``, so
no figure is left open and any backend works) or on the axes it is given, saves it when given
``path=`` (PNG at 300 dpi, or PDF / SVG by the suffix), and returns the figure. A new figure is
sized for a paper: 3.4 in wide (one column) for one panel, 7 in (two columns) for two, with
8-point text.

Conventions shared by all figures:

- Grid axes are selected by name. ``eps`` defaults to the first threshold; other axes that the
  figure does not show must be fixed with keyword arguments (``d_out=4``), except in
  :func:`learning_curves`, where they default to their first value.
- Times are reduced over seeds when a ``seed`` dim exists: the median (and quartiles) of
  :func:`groksweep.phase.reduce_seeds`, which is censored (NaN) when half the seeds or more
  never reach the level.
- A grid axis is drawn from its values (:func:`axis_kind`): linear when they are evenly
  spaced, logarithmic when they are positive, span a decade and are evenly spaced in log, and
  otherwise as even cells labelled with the values ("categorical": an axis holding 0, such as
  γ = [0, 0.03, 0.1, 0.3], or an uneven one; every axis of strings). An axis with at most
  :data:`MAX_TICKS` values has a tick on every value.
- The title names the selected axis values and the seed reduction; a second line the fixed
  parameters of the sweep (task, ``[params]``, steps), read from the ``spec`` attribute.
- ``theory=True`` (the default) draws the task's exact theory beside the trained values where
  the task has one, the linear task (gradient descent on isotropic inputs,
  :mod:`groksweep.theory_grid`): black lines of the losses and accuracies, a black Δt curve, and
  black Δt contours on phase maps. ``theory=False`` draws none; data may also be given.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import xarray as xr
from matplotlib import colormaps, colors
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

from groksweep.files import write_atomic
from groksweep.phase import reduce_seeds

LABELS = {
    "lam": "λ = d_in/N_tr",
    "gamma": "γ (weight decay)",
    "alpha": "α",
    "d_out": "d_out",
    "d_in": "d_in",
    "n_train": "N_tr",
    "lr": "lr",
    "eps": "ε",
    "noise": "σ (label noise)",
    "frac": "training fraction",
}
TIMES = {"delta_t": "Δt", "t_train": "t_train", "t_test": "t_test"}
REDUCTIONS = ("median", "q25", "q75")
MAX_TICKS = 8
"""An axis with at most this many values has a tick (and label) on every value."""
UNEVEN = 4.0
"""Largest ratio of the largest to the smallest gap between sorted values still drawn as an
evenly spaced (linear or log) axis; more uneven values get even cells."""
LOSS_DECADES = 12
"""A loss axis spans at most this many decades below the largest loss: smaller values (and exact
zeros) are drawn at the floor with a marker."""
FORMATS = ("png", "pdf", "svg")
"""Figure formats :func:`figures_for` writes on request."""
DPI = 300
ONE_COLUMN = (3.4, 2.7)
TWO_COLUMNS = (7.0, 2.8)
STYLE = {
    "font.size": 8,
    "axes.titlesize": 7,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "figure.titlesize": 7,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "legend.handlelength": 1.8,
    "hatch.linewidth": 0.6,
}
"""Text and line sizes of a new figure (none are imposed on axes passed in)."""
NEVER = {
    # kind -> (face colour, hatch, hatch colour)
    "train": ("0.82", "xxx", "0.45"),
    "test": ("white", "////", "0.55"),
    "diverged": ("0.35", "....", "0.9"),
}
"""How phase diagrams draw cells without a time: the train accuracy never reached the level,
only the test accuracy never did, or the runs diverged."""


def label(name: str) -> str:
    """Readable axis label of a grid axis or coordinate; the raw name when none is known."""
    return LABELS.get(name, name)


def axis_kind(values: Sequence | np.ndarray) -> str:
    """How a grid axis with ``values`` is drawn: ``"linear"``, ``"log"`` or ``"categorical"``.

    Linear when the sorted values are evenly spaced (largest gap at most :data:`UNEVEN` times
    the smallest), log when they are positive, span at least a decade and are evenly spaced in
    log; otherwise, and for strings, categorical: even cells labelled with the values."""
    values = np.asarray(values)
    if not _numeric(values):
        return "categorical"
    values = np.unique(values.astype(float))
    if values.size < 2:
        return "linear"
    positive = values.min() > 0
    decade = positive and values.max() / values.min() >= 10
    if values.size == 2:
        return "log" if decade else "linear"
    if _even(values):
        return "linear"
    if decade and _even(np.log(values)):
        return "log"
    return "categorical"


def _even(values: np.ndarray) -> bool:
    gaps = np.diff(values)
    return gaps.min() > 0 and gaps.max() / gaps.min() <= UNEVEN * (1 + 1e-9)


# --- public figures ----------------------------------------------------------------------------
def phase_diagram(
    phase: xr.Dataset,
    x: str,
    y: str,
    *,
    var: str = "delta_t",
    eps: float | None = None,
    reduce: str = "median",
    ax: Axes | None = None,
    path: str | Path | None = None,
    diverged: xr.DataArray | None = None,
    cmap: str = "viridis",
    norm: colors.Normalize | None = None,
    theory: bool | xr.DataArray = True,
    **fixed: Any,
) -> Figure:
    """Heat map of a grokking time (``var``: delta_t, t_train or t_test) over axes ``x`` and ``y``.

    ``phase`` is the output of :func:`groksweep.grokking_time` (or of ``reduce_seeds``). Cells are
    centred on the grid values, with edges at the midpoints in each axis's scale (geometric
    midpoints on log axes, even cells on categorical ones). The colour scale is logarithmic when
    the times are positive and span more than a decade; ``norm`` fixes it (e.g. one
    :func:`shared_norm` for maps drawn side by side).

    A cell without a time is drawn by why (:data:`NEVER`), from the censoring flags of
    ``phase``, by the most common reason among its seeds: light grey cross-hatched where the
    train accuracy never reached the level, white hatched where only the test accuracy never
    did, dark grey dotted where the runs diverged; without censoring flags (a theory's map) they
    are white. ``diverged`` (a boolean over the grid) marks instead every cell where any seed
    diverged. On a refined grid (a ``computed`` variable, :mod:`groksweep.refine`) a cell not
    computed shows the computed point nearest it, so each region appears at the resolution it
    was computed at, and the computed points are dotted.

    ``theory``: True draws the exact theory's Δt as labelled black contours where the sweep that
    wrote ``phase`` has one (the linear task), evaluated on a dense grid between the grid
    values; a DataArray of Δt over dims ``x`` and ``y`` (values within the grid's range) is
    drawn likewise; False draws none.
    """
    with _style(ax is None):
        _require_dims(phase, [x, y])
        if x == y:
            raise ValueError(f"x and y must be different axes, both are {x!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
        data, chosen = _select(_seed_stats(phase, var, keep=(x, y))[reduce], eps, fixed)
        data = _only(_sorted(data), (y, x))
        own = ax is None
        fig, ax = _axes(ax)
        xe, xp = _edges(ax, "x", x, data[x].values)
        ye, yp = _edges(ax, "y", y, data[y].values)
        colormap = colormaps[cmap].with_extremes(bad="white")
        computed = _computed(phase, data, chosen)
        values = np.ma.masked_invalid(_fill(data.values, computed))
        norm = norm or _norm(data.values)
        mesh = ax.pcolormesh(xe, ye, values, cmap=colormap, norm=norm)
        fig.colorbar(mesh, ax=ax, label=f"{TIMES[var]} (steps)")
        if diverged is not None:
            classes = _never_classes(phase, data, chosen)
            forced = _diverged_mask(diverged, data, chosen)
            classes = {k: v & ~forced for k, v in classes.items()} | {"diverged": forced}
        else:
            classes = _never_classes(phase, data, chosen)
        classes = {k: _fill(v, computed) for k, v in classes.items()}
        handles = _draw_never(ax, xe, ye, classes, _level(phase))
        if computed is not None:
            rows, cols = np.nonzero(computed)
            ax.plot(xp[cols], yp[rows], ".", color="k", ms=1.5, alpha=0.5)
            handles.append(
                Line2D([], [], ls="", marker=".", color="k", label="computed (refined grid)")
            )
        if theory is not False and var == "delta_t":
            drawn = _theory_contours(ax, phase, theory, data, chosen, norm)
            if drawn:
                handles.append(Line2D([], [], color="k", lw=0.7, label="theory Δt (contours)"))
        if handles and own:  # under the figure, where it takes no room from the map
            fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        elif handles:
            ax.legend(
                handles=handles,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.2),
                ncol=2,
                frameon=False,
                borderaxespad=0,
            )
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        _set_title(ax, phase, _title(chosen, _n_seeds(phase, (x, y)), reduce), skip=(x, y))
        return _finish(fig, path)


def delta_t_curve(
    phase: xr.Dataset,
    x: str,
    *,
    eps: float | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
    theory: bool | xr.DataArray | Mapping[str, xr.DataArray] = True,
    **fixed: Any,
) -> Figure:
    """Δt against one grid axis: the seed median with its quartile band, one curve per eps.

    Meant for sweeps with one axis besides seed; other axes must be fixed with keywords.
    Censored points (no grokking in half the seeds or more) have no value: they are marked
    with an open triangle inside the top of the panel. ``eps=None`` draws every threshold.

    ``theory``: True draws the exact theory in black where the sweep that wrote ``phase`` has
    one (the linear task: :func:`groksweep.theory_grid.theory_times`, on a dense grid along
    ``x`` where ``x`` is a continuous parameter); False draws none. Data may be given instead:
    a DataArray of Δt over a dim named ``x`` (its own, possibly denser, coordinate; NaN where
    the theory predicts no grokking), or a mapping from legend label to such arrays, drawn
    solid, dashed, dotted, dash-dotted in turn. An ``eps`` dim is matched to each threshold
    drawn; dims named in ``fixed`` are selected likewise.
    """
    with _style(ax is None):
        _require_dims(phase, [x])
        stats = {q: _sorted(v) for q, v in _seed_stats(phase, "delta_t", keep=(x,)).items()}
        thresholds = phase["eps"].values if eps is None and "eps" in phase.dims else [eps]
        fig, ax = _axes(ax)
        grid = stats["median"][x].values
        positions = _place(ax, "x", x, grid)
        medians, drawn = [], []
        censored_any = False
        for i, threshold in enumerate(thresholds):
            curve, chosen = _curve(stats, x, threshold, fixed)
            color = f"C{i}"
            name = f"ε = {_fmt(chosen['eps'])}" if "eps" in chosen else "Δt (trained)"
            ax.plot(positions, curve["median"], "o-", color=color, label=name, zorder=2)
            ax.fill_between(positions, curve["q25"], curve["q75"], color=color, alpha=0.2, lw=0)
            censored = np.isnan(curve["median"])
            if censored.any():  # an empty line would sit at the display origin (layout)
                censored_any = True
                ax.plot(
                    positions[censored],
                    np.full(censored.sum(), 0.95),
                    "^",
                    mfc="none",
                    color=color,
                    transform=ax.get_xaxis_transform(),
                    clip_on=True,
                )
            medians.append(curve["median"])
            drawn += [curve["q25"], curve["q75"]]
            if theory is True:
                line = _auto_theory_curve(phase, x, grid, positions, chosen)
                if line is not None:
                    ax.plot(
                        *line,
                        "-",
                        color="k",
                        lw=THEORY_LW,
                        zorder=3,
                        label="theory" if i == 0 else None,
                    )
            elif theory is not None and theory is not False:
                _draw_theory_delta_t(ax, theory, x, grid, positions, chosen, i == 0)
        medians = np.concatenate(medians)
        values = np.concatenate([medians, *[np.ravel(d) for d in drawn]])  # theory is clipped
        ax.set_yscale("log" if _spans_decades(values) else "linear")
        _headroom(ax, values, censored_any)
        ax.set_ylabel("Δt (steps)")
        handles = ax.get_legend_handles_labels()[0]
        if censored_any:
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker="^",
                    mfc="none",
                    color="0.3",
                    label=f"no grokking within {_steps(phase)}",
                )
            )
        if len(handles) > 1:  # a single trained curve needs no legend
            ax.legend(handles=handles, loc="best")
        _set_title(
            ax,
            phase,
            _title(
                {k: v for k, v in chosen.items() if k != "eps"},
                _n_seeds(phase, (x,)),
                "median and quartiles",
            ),
            skip=(x,),
        )
        return _finish(fig, path)


def learning_curves(
    ds: xr.Dataset,
    *,
    by: str | None = None,
    eps: float | None = None,
    ax: Sequence[Axes] | None = None,
    path: str | Path | None = None,
    theory: bool | xr.Dataset = True,
    floor: float | None = None,
    **fixed: Any,
) -> Figure:
    """Loss (log-log) and accuracy (log time, linear accuracy) against time; train dashed, test
    solid.

    One colour per value of the axis ``by`` (default: the first axis besides seed), seed median
    across seeds; a numeric ``by`` with more than three values gets a colour bar, otherwise a
    legend. Other axes are fixed with keyword arguments (``gamma=1e-3``) or else at their first
    value; accuracies at threshold ``eps`` (default: the first). Step 0 is dropped, as it has no
    place on a log time axis. ``ax`` is an optional pair of axes (loss, accuracy).

    Losses below ``floor`` (default: :data:`LOSS_DECADES` decades under the largest loss, or the
    smallest positive loss when that is higher), exact zeros included, are drawn at the floor:
    a curve ends there with a downward triangle, and the legend says so.

    ``theory``: True draws the exact theory as thin black lines in the same styles where the
    sweep that wrote ``ds`` has one (the linear task, :func:`groksweep.theory_grid.theory_on_grid`);
    False draws none. Data may be given instead: a Dataset with any of ``train_loss``,
    ``test_loss``, ``train_acc``, ``test_acc`` over a ``time`` coordinate (its own, e.g. denser,
    times) and, where it has them, the dims ``by``, ``eps`` and the fixed axes, which are
    selected like the data.
    """
    with _style(ax is None):
        grid = [d for d in ds["train_loss"].dims if d != "time"]
        by = by if by is not None else next((a for a in grid if a != "seed"), None)
        _require_dims(ds["train_loss"], [by] if by else [])
        _require_dims(ds["train_loss"], list(fixed))
        defaults = {a: ds[a].values[0] for a in grid if a not in {by, "seed", *fixed}}
        data, chosen = _select(ds, eps, fixed | defaults)
        seeds = data.sizes.get("seed", 0) if by != "seed" else 0
        if seeds:
            data = data.median("seed")
        data = data.isel(time=data["time"].values > 0)
        fig, (loss_ax, acc_ax) = _axes_pair(ax)
        if by is None:
            groups = [(None, data)]
        else:
            data = _sorted(data) if _numeric(data[by].values) else data
            groups = [(v, data.sel({by: v})) for v in data[by].values]
        palette = colormaps["viridis"](np.linspace(0, 0.9, len(groups)))
        losses = [group[f"{r}_loss"].values for _, group in groups for r in ("train", "test")]
        floor = _loss_floor(losses) if floor is None else float(floor)
        below = False
        for color, (value, group) in zip(palette, groups):
            for role, style in (("train", "--"), ("test", "-")):
                times = group["time"].values
                loss, starts = _at_floor(group[f"{role}_loss"].values, floor)
                loss_ax.plot(times, loss, style, color=color, lw=DATA_LW)
                if starts.any():
                    below = True
                    loss_ax.plot(times[starts], loss[starts], "v", color=color, ms=3, zorder=4)
                acc_ax.plot(times, group[f"{role}_acc"], style, color=color, lw=DATA_LW)
        loss_ax.set(xscale="log", yscale="log", xlabel="step", ylabel="loss")
        if floor is not None:
            loss_ax.set_ylim(bottom=floor / 3)
        acc_ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step", ylabel=_acc_label(chosen))
        if theory is True:
            theory = _auto_theory_curves(ds)
        handles = [
            Line2D([], [], color="0.4", ls=s, label=r) for r, s in (("train", "--"), ("test", "-"))
        ]
        if theory is not None and theory is not False:
            for value, _ in groups:
                _draw_theory_curves(
                    loss_ax, acc_ax, theory, chosen | ({by: value} if by else {}), floor
                )
            handles.append(Line2D([], [], color="k", lw=CURVE_THEORY_LW, label="theory"))
        if below:
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker="v",
                    color="0.4",
                    ms=3,
                    label=f"< {_fmt_sci(floor)} (or exactly 0) from here on",
                )
            )
        if by is not None and _numeric(data[by].values) and len(groups) > 3:
            _colour_bar(fig, [loss_ax, acc_ax], by, [v for v, _ in groups], palette)
        elif by is not None:
            handles += [
                Line2D([], [], color=c, label=f"{label(by)} = {_fmt(v)}")
                for c, (v, _) in zip(palette, groups)
            ]
        if ax is None:  # a row under the panels, clear of the curves
            fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        else:
            loss_ax.legend(handles=handles, loc="lower left")
        title = _title({k: v for k, v in chosen.items() if k != "eps"}, seeds, "median")
        subtitle = _subtitle(ds, skip=tuple(grid), width=2 * SUBTITLE_WIDTH)
        fig.suptitle("\n".join(t for t in (title, subtitle) if t))
        return _finish(fig, path)


FIGURES = tuple(
    f"{stem}.{fmt}" for stem in ("learning_curves", "phase_diagram", "delta_t") for fmt in FORMATS
)
"""The file names :func:`figures_for` may write (in any of :data:`FORMATS`)."""


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Figure formats from ``"png,pdf"`` or a sequence, checked against :data:`FORMATS`."""
    if isinstance(formats, str):
        formats = formats.split(",")
    chosen = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise ValueError(
            f"figure format {', '.join(bad) or '(none)'} is not one of {', '.join(FORMATS)}"
        )
    return chosen


def figures_for(
    ds: xr.Dataset,
    phase: xr.Dataset,
    out_dir: str | Path,
    *,
    theory: bool = True,
    formats: str | Iterable[str] = ("png",),
) -> list[Path]:
    """Write the default figures of a sweep into ``out_dir`` and return their paths.

    ``learning_curves``, then ``phase_diagram`` over the first two axes besides seed (further
    axes at their first value) or, with a single such axis, ``delta_t``; each in every format
    of ``formats`` (:data:`FORMATS`, e.g. ``"png,pdf"``). ``theory`` draws the task's theory
    where it has one."""
    formats = parse_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []

    def save(fig: Figure, stem: str) -> None:
        for fmt in formats:
            paths.append(out / f"{stem}.{fmt}")
            _finish(fig, paths[-1])

    save(learning_curves(ds, theory=theory), "learning_curves")
    grid = [d for d in phase["delta_t"].dims if d not in ("seed", "eps")]
    if len(grid) >= 2:
        rest = {a: phase[a].values[0] for a in grid[2:]}
        save(phase_diagram(phase, grid[0], grid[1], theory=theory, **rest), "phase_diagram")
    elif len(grid) == 1:
        save(delta_t_curve(phase, grid[0], theory=theory), "delta_t")
    return paths


def shared_norm(*maps: np.ndarray | xr.DataArray) -> colors.Normalize:
    """One colour normalisation for several maps of times (logarithmic when their finite values
    are positive and span a decade), so maps drawn side by side share a colour scale."""
    finite = [np.asarray(m, dtype=float).ravel() for m in maps]
    return _norm(np.concatenate(finite))


# --- theory overlays ---------------------------------------------------------------------------
THEORY_LW = 1.0
CURVE_THEORY_LW = 0.55
DATA_LW = 1.4
THEORY_STYLES = ("-", "--", ":", "-.")
DENSE = ("lam", "gamma", "lr", "alpha", "noise")
"""Axes along which the theory is drawn on a dense grid (continuous parameters)."""
DENSE_POINTS = {1: 200, 2: 60}


def _select_like(data: xr.DataArray | xr.Dataset, chosen: Mapping[str, Any], keep: Sequence[str]):
    """``data`` at the values ``chosen`` for each of its dims not in ``keep``; a ValueError names a
    dim that is neither kept nor chosen."""
    for name in [d for d in data.dims if d not in keep]:
        if name not in chosen:
            raise ValueError(
                f"theory has axis {name}, which the figure neither plots nor fixes; select one "
                f"value of it first"
            )
        data = data.isel({name: _index(data, name, chosen[name])})
    return data


def _theory_parameters(obj: xr.Dataset) -> dict[str, xr.DataArray] | None:
    """The theory's parameters of every run of the sweep that wrote ``obj``
    (:func:`groksweep.theory_grid.grid_parameters`), or None where the task has no theory, or
    the ``spec`` attribute is missing or does not describe ``obj``'s grid."""
    from groksweep import results, theory_grid

    try:
        sweep = results.sweep_of(obj)
    except (KeyError, ValueError, TypeError, tomllib.TOMLDecodeError):
        return None
    if sweep.task != "linear" or obj.attrs.get("on", "accuracy") != "accuracy":
        return None
    for name, values in sweep.axes.items():
        if name == "seed" and name not in obj.dims:
            continue  # reduced over seeds
        if name not in obj.dims or not np.array_equal(obj[name].values, np.asarray(values)):
            return None
    try:
        return theory_grid.grid_parameters(sweep)
    except ValueError:
        return None


def _auto_theory_curves(ds: xr.Dataset) -> xr.Dataset | None:
    """The theory's losses and accuracies on the grid of ``ds``, or None where there is none."""
    from groksweep import theory_grid

    if _theory_parameters(ds) is None or "eps" not in ds.dims:
        return None
    curves, _ = theory_grid.theory_on_grid(ds, level=_level(ds) or theory_grid.LEVEL)
    return curves


def _dense_axis(name: str, grid: np.ndarray, positions: np.ndarray, kind: str, n: int, params):
    """(positions, values) at which to evaluate the theory along one plotted axis: ``n`` points
    spanning the grid when the axis is a continuous parameter that only its own theory
    parameter depends on, else the grid itself."""
    depends = [k for k, v in params.items() if name in v.dims]
    if name not in DENSE or depends not in ([], [name]) or grid.size < 2:
        return positions, grid
    if kind == "log":
        dense = np.geomspace(grid[0], grid[-1], n)
        return dense, dense
    dense = np.linspace(positions[0], positions[-1], n)
    return dense, np.interp(dense, positions, grid)


def _theory_times_on(phase, plotted, chosen, n: int) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The theory's Δt on a dense grid over ``plotted`` ((name, grid values, positions, kind)
    per axis): the positions per axis and Δt over them (last axis first), or None."""
    from groksweep import theory_grid

    params = _theory_parameters(phase)
    if params is None or "eps" not in chosen:
        return None
    names = [p[0] for p in plotted]
    axes = []
    for name, grid, positions, kind in plotted:
        axes.append(_dense_axis(name, grid, positions, kind, n, params))
    values = {}
    for key, arr in params.items():
        for dim in arr.dims:
            if dim in names:
                i = names.index(dim)
                if key == dim and axes[i][1] is not plotted[i][1]:  # dense along its own axis
                    arr = xr.DataArray(axes[i][1], dims=f"_{dim}")
                else:
                    arr = arr.sel({dim: plotted[i][1]}).rename({dim: f"_{dim}"})
                    arr = arr.drop_vars(f"_{dim}")
            elif dim in chosen:
                arr = arr.isel({dim: _index(arr, dim, chosen[dim])})
            else:
                return None  # an axis neither plotted nor fixed
        values[key] = arr
    with np.errstate(all="ignore"):
        times = theory_grid.theory_times(
            level=_level(phase) or theory_grid.LEVEL, eps=float(chosen["eps"]), **values
        )
    dims = [f"_{name}" for name in reversed(names)]
    delta = times["delta_t"].broadcast_like(
        xr.DataArray(np.zeros([len(a[0]) for a in reversed(axes)]), dims=dims)
    )
    return [a[0] for a in axes], delta.transpose(*dims).values


def _auto_theory_curve(phase, x: str, grid, positions, chosen):
    """(positions, Δt) of the theory along ``x`` at ``chosen``, or None where there is none."""
    kind = axis_kind(grid) if _numeric(grid) else "categorical"
    if not _numeric(grid):
        return None
    result = _theory_times_on(phase, [(x, grid, positions, kind)], chosen, DENSE_POINTS[1])
    if result is None:
        return None
    (dense,), delta = result
    return dense, delta


def _theory_contours(ax, phase, theory, data, chosen, norm) -> bool:
    """Black labelled contours of the theory's Δt over the map's two axes; True when drawn."""
    y, x = data.dims
    plotted = []
    for name in (x, y):
        grid = data[name].values
        if not _numeric(grid):
            return False
        plotted.append((name, grid, _positions(ax, name, grid), axis_kind(grid)))
    if isinstance(theory, xr.DataArray):
        _require_dims(theory, [x, y])
        curve = _select_like(theory, chosen, keep=(x, y)).sortby([x, y]).transpose(y, x)
        xs = _to_positions(curve[x].values, plotted[0])
        ys = _to_positions(curve[y].values, plotted[1])
        delta = curve.values
    else:
        result = _theory_times_on(phase, plotted, chosen, DENSE_POINTS[2])
        if result is None:
            return False
        (xs, ys), delta = result
    finite = delta[np.isfinite(delta) & (delta > 0)]
    if finite.size < 4 or min(delta.shape) < 2 or np.ptp(finite) == 0:
        return False
    levels = _contour_levels(finite, norm)
    if len(levels) == 0:
        return False
    contours = ax.contour(xs, ys, delta, levels=levels, colors="k", linewidths=0.7)
    ax.clabel(contours, fmt=_fmt_sci, fontsize=5.5, inline=True, inline_spacing=2)
    return True


def _contour_levels(values: np.ndarray, norm: colors.Normalize) -> np.ndarray:
    """Round levels within ``values`` and the colour scale: decades (and 3 x decades when
    few), or linear ticks."""
    lo, hi = values.min(), values.max()
    if norm.vmin is not None and norm.vmax is not None and norm.vmax > norm.vmin:
        lo, hi = max(lo, norm.vmin), min(hi, norm.vmax)  # levels the colour bar shows
    if lo <= 0 or hi <= lo:
        return np.array([])
    if isinstance(norm, colors.LogNorm) or hi / lo >= 10:
        decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        levels = decades[(decades > lo) & (decades < hi)]
        if levels.size < 3:
            levels = np.sort(np.concatenate([decades, 3 * decades]))
            levels = levels[(levels > lo) & (levels < hi)]
        return levels
    from matplotlib.ticker import MaxNLocator

    levels = MaxNLocator(5).tick_values(lo, hi)
    return levels[(levels > lo) & (levels < hi)]


def _to_positions(values: np.ndarray, axis: tuple) -> np.ndarray:
    """Positions on a plotted axis of values within its grid's range (interpolated on even
    cells; NaN outside the range there)."""
    _, grid, positions, kind = axis
    values = np.asarray(values, dtype=float)
    if kind != "categorical":
        return values
    inside = (values >= grid[0]) & (values <= grid[-1])
    return np.where(inside, np.interp(values, grid, positions), np.nan)


def _draw_theory_curves(loss_ax, acc_ax, theory: xr.Dataset, chosen: Mapping, floor) -> None:
    """Black train (dashed) / test (solid) loss and accuracy curves of ``theory`` at ``chosen``;
    losses under ``floor`` are left out."""
    for role, style in (("train", "--"), ("test", "-")):
        for ax, var in ((loss_ax, f"{role}_loss"), (acc_ax, f"{role}_acc")):
            if var not in theory:
                continue
            curve = _select_like(theory[var], chosen, keep=("time",))
            times = curve["time"].values
            shown = times > 0
            values = curve.values[shown].astype(float)
            if ax is loss_ax and floor is not None:
                values = np.where(values >= floor, values, np.nan)
            ax.plot(times[shown], values, style, color="k", lw=CURVE_THEORY_LW, zorder=3)


def _draw_theory_delta_t(ax, theory, x: str, grid, positions, chosen: Mapping, first: bool):
    """Black Δt curves of ``theory`` (one array or label -> array) along ``x`` at ``chosen``;
    returns the values drawn."""
    curves = {"theory": theory} if isinstance(theory, xr.DataArray) else dict(theory)
    axis = (x, grid, positions, axis_kind(grid) if _numeric(grid) else "categorical")
    drawn = []
    for (name, curve), style in zip(curves.items(), THEORY_STYLES * len(curves)):
        _require_dims(curve, [x])
        if not _numeric(curve[x].values) or not _numeric(grid):
            raise ValueError(f"theory needs a numeric axis {x}")
        if "eps" not in curve.dims and not first:
            continue  # no eps dim: one curve for all thresholds
        curve = _select_like(curve, chosen, keep=(x,)).sortby(x)
        ax.plot(
            _to_positions(curve[x].values, axis),
            curve.values,
            style,
            color="k",
            lw=THEORY_LW + 0.2,
            zorder=3,
            label=name if first else None,
        )
        drawn.append(curve.values)
    return drawn


# --- selecting data ----------------------------------------------------------------------------
def _require_dims(obj: xr.Dataset | xr.DataArray, names: Sequence[str]) -> None:
    """Raise a ValueError naming each of ``names`` that is not a dim of ``obj``."""
    missing = [n for n in names if n not in obj.dims]
    if missing:
        raise ValueError(
            f"no axis {', '.join(map(repr, missing))}; the axes are {', '.join(map(str, obj.dims))}"
        )


def _seed_stats(phase: xr.Dataset, var: str, keep: Sequence[str]) -> dict[str, xr.DataArray]:
    """Median and quartiles over seeds of ``var`` (or ``var`` itself with no seed dim to reduce)."""
    if var not in TIMES:
        raise ValueError(f"var must be one of {', '.join(TIMES)}; got {var!r}")
    if var not in phase and f"{var}_median" in phase:
        return {q: phase[f"{var}_{q}"] for q in REDUCTIONS}
    if "seed" in phase.dims and "seed" not in keep:
        reduced = reduce_seeds(phase)
        return {q: reduced[f"{var}_{q}"] for q in REDUCTIONS}
    return dict.fromkeys(REDUCTIONS, phase[var])


def _select(obj, eps: float | None, fixed: Mapping[str, Any]):
    """Select threshold ``eps`` (the first if None) and the ``fixed`` axis values.

    Returns the selection and the values chosen, by axis name."""
    chosen = {}
    if "eps" in obj.dims:
        chosen["eps"] = obj["eps"].values[0 if eps is None else _index(obj, "eps", eps)]
        obj = obj.sel(eps=chosen["eps"])
    elif eps is not None:
        raise ValueError("eps was given but these data have no eps dimension")
    _require_dims(obj, list(fixed))
    for name, value in fixed.items():
        index = _index(obj, name, value)
        chosen[name] = obj[name].values[index]
        obj = obj.isel({name: index})
    return obj, chosen


def _index(obj, name: str, value: Any) -> int:
    """Position of ``value`` on axis ``name`` (floats compared to a relative 1e-9)."""
    values = obj[name].values
    if _numeric(values) and isinstance(value, (int, float, np.number)):
        matches = np.flatnonzero(np.isclose(values, value, rtol=1e-9, atol=0))
    else:
        matches = np.flatnonzero(values == value)
    if matches.size == 0:
        grid = ", ".join(map(_fmt, values))
        raise ValueError(f"{name}={value!r} is not on the grid; its values are {grid}")
    return int(matches[0])


def _curve(stats: Mapping[str, xr.DataArray], x: str, eps: float | None, fixed: Mapping):
    """The median and quartiles of ``stats`` at one threshold, as arrays along ``x``."""
    curve, chosen = {}, {}
    for q, v in stats.items():
        v, chosen = _select(v, eps, fixed)
        curve[q] = _only(v, (x,)).values
    return curve, chosen


def _only(data: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
    """``data`` transposed to ``dims``; a ValueError names any other dim left unselected."""
    extra = [d for d in data.dims if d not in dims]
    if extra:
        example = ", ".join(f"{d}={_fmt(data[d].values[0])}" for d in extra)
        raise ValueError(
            f"axis {', '.join(extra)} is neither plotted nor fixed; "
            f"select one value of each with keyword arguments, e.g. {example}"
        )
    return data.transpose(*dims)


def _sorted(data):
    """``data`` with every numeric axis in increasing order (cells need monotonic edges)."""
    for name in data.dims:
        if name in data.coords and _numeric(data[name].values):
            data = data.sortby(name)
    return data


def _diverged_mask(diverged: xr.DataArray, data: xr.DataArray, chosen: Mapping) -> np.ndarray:
    """``diverged`` reduced over seeds (any), selected like ``data`` and aligned to its cells."""
    if "seed" in diverged.dims and "seed" not in data.dims:
        diverged = diverged.any("seed")
    selection = {k: v for k, v in chosen.items() if k in diverged.dims}
    diverged = diverged.sel(selection)
    diverged = _only(diverged.broadcast_like(data), data.dims)
    return diverged.reindex_like(data, fill_value=False).values.astype(bool)


def _computed(phase: xr.Dataset, data: xr.DataArray, chosen: Mapping) -> np.ndarray | None:
    """The ``computed`` mask of a refined grid (:mod:`groksweep.refine`) aligned to the cells
    of ``data``; None for a plain grid."""
    if "computed" not in phase:
        return None
    computed = phase["computed"]
    computed = computed.sel({k: v for k, v in chosen.items() if k in computed.dims})
    return _only(_sorted(computed), data.dims).values.astype(bool)


def _fill(values: np.ndarray, computed: np.ndarray | None) -> np.ndarray:
    """On a refined grid, every cell not computed drawn as the computed point nearest it, so
    each region shows at the resolution it was computed at."""
    if computed is None:
        return values
    from groksweep.refine import fill_from_computed

    return fill_from_computed(values, computed)


def _never_classes(phase: xr.Dataset, data: xr.DataArray, chosen: Mapping) -> dict[str, np.ndarray]:
    """The cells of ``data`` without a time, by why (:data:`NEVER`): the most common reason
    among the seeds (ties: diverged, then train, then test)."""
    missing = ~np.isfinite(data.values)
    fractions = {}
    flags = (("diverged", "diverged"), ("train", "train_censored"), ("test", "test_censored"))
    for kind, flag in flags:
        if flag in phase:
            value = phase[flag].astype(float)
        elif f"{flag}_fraction" in phase:
            value = phase[f"{flag}_fraction"]
        else:
            value = None
        if value is not None:
            if "seed" in value.dims and "seed" not in data.dims:
                value = value.mean("seed")
            selection = {k: v for k, v in chosen.items() if k in value.dims}
            value = value.sel(selection)
            value = _only(_sorted(value.broadcast_like(data)), data.dims)
            fractions[kind] = value.reindex_like(data, fill_value=0.0).values
    if "train" in fractions and "test" in fractions:
        # a run whose train accuracy never reached the level is counted once, as train
        fractions["test"] = np.clip(fractions["test"] - fractions["train"], 0, None)
    if not fractions:  # no flags (a theory's map): white, as the colour map's 'bad'
        return {}
    kinds = list(fractions)
    stack = np.stack([fractions[k] for k in kinds])
    winner = np.argmax(stack, axis=0)
    known = stack.max(axis=0) > 0
    classes = {k: missing & known & (winner == i) for i, k in enumerate(kinds)}
    if "test" in classes:
        classes["test"] |= missing & ~known
    else:
        classes["test"] = missing & ~known
    return classes


# --- drawing -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _style(own: bool):
    """Paper sizes of text and lines for a figure this module creates."""
    with matplotlib.rc_context(STYLE if own else {}):
        yield


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new one-column figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=ONE_COLUMN, layout="constrained")
    return fig, fig.add_subplot()


def _axes_pair(ax: Sequence[Axes] | None) -> tuple[Figure, Sequence[Axes]]:
    """The given pair of axes and their figure, or a new two-column figure with two."""
    if ax is not None:
        return ax[0].figure, ax
    fig = Figure(figsize=TWO_COLUMNS, layout="constrained")
    return fig, fig.subplots(1, 2)


def _positions(ax: Axes, name: str, values: np.ndarray) -> np.ndarray:
    """Where grid ``values`` sit on an axis: the values, or their index on even cells."""
    if _numeric(values) and axis_kind(values) != "categorical":
        return np.asarray(values, dtype=float)
    return np.arange(len(values), dtype=float)


def _place(ax: Axes, which: str, name: str, values: np.ndarray) -> np.ndarray:
    """Set scale, ticks and label of one axis for grid ``values``; return their positions."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    kind = axis_kind(values)
    getattr(ax, f"set_{which}scale")("log" if kind == "log" else "linear")
    positions = _positions(ax, name, values)
    labels = [_fmt(v) for v in values]
    if kind == "categorical" or len(values) <= MAX_TICKS:
        step = -(-len(values) // (2 * MAX_TICKS if kind == "categorical" else MAX_TICKS))
        axis.set_ticks(positions[::step], labels[::step])
        axis.set_minor_locator(FixedLocator(positions) if step > 1 else NullLocator())
        if which == "x" and sum(len(t) for t in labels[::step]) > 36:
            ax.tick_params(axis="x", labelrotation=40)
            for tick in axis.get_ticklabels():
                tick.set_horizontalalignment("right")
                tick.set_rotation_mode("anchor")
    else:  # many values: round ticks, and an unlabelled minor tick on every value
        axis.set_minor_locator(FixedLocator(positions))
        axis.set_minor_formatter(NullFormatter())
    if kind == "categorical":
        getattr(ax, f"set_{which}lim")(positions[0] - 0.5, positions[-1] + 0.5)
    axis.set_label_text(label(name))
    return positions


def _edges(ax: Axes, which: str, name: str, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges around grid ``values`` (midpoints in the axis's scale, ends mirrored) and the
    values' positions."""
    positions = _place(ax, which, name, values)
    scale = (ax.xaxis if which == "x" else ax.yaxis).get_transform()
    centres = scale.transform(positions)
    if centres.size == 1:
        edges = centres + np.array([-0.5, 0.5]) * (1 if centres[0] == 0 else abs(centres[0]) / 2)
    else:
        middle = (centres[1:] + centres[:-1]) / 2
        edges = np.concatenate(
            [[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]]
        )
    return scale.inverted().transform(edges), positions


def _norm(values: np.ndarray) -> colors.Normalize:
    """Colour normalisation of times: logarithmic when positive and spanning decades."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return colors.Normalize(0.0, 1.0)
    if _spans_decades(finite):
        return colors.LogNorm(finite.min(), finite.max())
    return colors.Normalize(finite.min(), finite.max())


def _draw_never(ax: Axes, xe, ye, classes: Mapping[str, np.ndarray], level) -> list[Patch]:
    """Cells of each kind of :data:`NEVER` drawn in their style; their legend handles."""
    reached = f"{level:g}" if level is not None else "the level"
    names = {
        "train": f"train acc. never ≥ {reached}",
        "test": f"test acc. never ≥ {reached}",
        "diverged": "diverged",
    }
    handles = []
    for kind in ("train", "test", "diverged"):
        mask = classes.get(kind)
        if mask is None or not mask.any():
            continue
        face, hatch, ink = NEVER[kind]
        cells = np.ma.masked_where(~mask, np.zeros(mask.shape))
        collection = ax.pcolor(
            xe,
            ye,
            cells,
            cmap=colors.ListedColormap([face]),
            hatch=hatch,
            edgecolor=ink,
            linewidth=0,
        )
        collection.set_label(names[kind])
        collection.set_gid(f"never-{kind}")
        handles.append(Patch(facecolor=face, edgecolor=ink, hatch=hatch, label=names[kind]))
    return handles


def _colour_bar(fig: Figure, axes, by: str, values, palette) -> None:
    """A discrete colour bar of the curves' colours, one even cell per value of ``by``."""
    n = len(values)
    cmap = colors.ListedColormap(palette)
    norm = colors.BoundaryNorm(np.arange(n + 1) - 0.5, n)
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label(by), aspect=30, pad=0.01
    )
    step = -(-n // 16)
    bar.set_ticks(np.arange(n)[::step], labels=[_fmt(v) for v in values][::step])
    bar.ax.minorticks_off()


def _loss_floor(losses: Sequence[np.ndarray]) -> float | None:
    """The smallest positive loss, or :data:`LOSS_DECADES` decades under the largest when that
    is higher, rounded down to a power of ten."""
    values = np.concatenate([np.ravel(v) for v in losses]).astype(float)
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return None
    floor = max(positive.min(), positive.max() * 10.0**-LOSS_DECADES)
    return float(10.0 ** np.floor(np.log10(floor)))  # a round number: 1e-12, not 1.03e-12


def _at_floor(values: np.ndarray, floor: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` with each stretch under ``floor`` cut to its first point, drawn at the floor;
    and where those first points are."""
    values = np.asarray(values, dtype=float).copy()
    if floor is None:
        return values, np.zeros(values.shape, bool)
    below = values < floor  # NaN (diverged) is not below
    starts = below & ~np.concatenate([[False], below[:-1]])
    values[below] = np.nan
    values[starts] = floor
    return values, starts


def _headroom(ax: Axes, values: np.ndarray, markers: bool) -> None:
    """Leave the top of the panel free for the censored markers (and the legend)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return
    lo, hi = finite.min(), finite.max()
    share = 0.22 if markers else 0.08
    if ax.get_yscale() == "log" and lo > 0:
        span = np.log10(hi / lo) or 1.0
        ax.set_ylim(lo / 10 ** (0.06 * span), hi * 10 ** (share * span / (1 - share)))
    else:
        span = (hi - lo) or abs(hi) or 1.0
        ax.set_ylim(min(lo - 0.06 * span, 0 if lo >= 0 else lo), hi + share * span / (1 - share))


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` to ``path`` (creating its folder) when one is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_format = path.suffix.lstrip(".") or None  # the temporary name has another suffix
        options = {"metadata": {"Software": "groksweep"}} if file_format == "png" else {}
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=file_format, **options))
    return fig


# --- text --------------------------------------------------------------------------------------
def _title(chosen: Mapping[str, Any], seeds: int, reduce: str) -> str:
    """Title listing the selected axis values and the seed reduction."""
    parts = [f"{label(k)} = {_fmt(v)}" for k, v in chosen.items()]
    if seeds:
        parts.append(f"{reduce} of {seeds} seed{'s' if seeds > 1 else ''}")
    return ", ".join(parts)


def _subtitle(obj: xr.Dataset, skip: Sequence[str] = (), width: int | None = None) -> str:
    """The sweep's fixed parameters from its spec: task, ``[params]`` not in ``skip``, steps."""
    try:
        spec = tomllib.loads(obj.attrs.get("spec", ""))
    except tomllib.TOMLDecodeError:
        return ""
    parts = [str(spec["task"])] if "task" in spec else []
    axes = set(spec.get("axes", {})) | set(skip)
    for name, value in spec.get("params", {}).items():
        if name not in axes and isinstance(value, (int, float, str, bool)):
            parts.append(f"{name} = {_fmt(value)}")
    if "steps" in spec:
        parts.append(f"{_fmt(spec['steps'])} steps")
    lines, line = [], ""
    for part in parts:  # wrap between parameters, never inside one
        if line and len(line) + len(part) + 2 > (width or SUBTITLE_WIDTH):
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    return "\n".join(lines + [line] if line else lines)


SUBTITLE_WIDTH = 58
"""Characters per line of a subtitle: a one-column figure's width at 7 points."""


def _set_title(ax: Axes, obj: xr.Dataset, title: str, skip: Sequence[str]) -> None:
    """``title`` and, below it, the fixed parameters of the sweep."""
    subtitle = _subtitle(obj, skip)
    ax.set_title("\n".join(t for t in (title, subtitle) if t))


def _acc_label(chosen: Mapping[str, Any]) -> str:
    return f"accuracy (ε = {_fmt(chosen['eps'])})" if "eps" in chosen else "accuracy"


def _steps(obj: xr.Dataset) -> str:
    """'N steps' from the spec stored with ``obj``, or 'the run' when there is none."""
    try:
        return f"{tomllib.loads(obj.attrs.get('spec', ''))['steps']} steps"
    except (tomllib.TOMLDecodeError, KeyError):
        return "the run"


def _level(obj: xr.Dataset) -> float | None:
    """The accuracy level of a phase dataset's times, when it records one."""
    level = obj.attrs.get("level")
    if level is None or obj.attrs.get("on", "accuracy") != "accuracy":
        return None
    return float(level)


def _n_seeds(phase: xr.Dataset, keep: Sequence[str]) -> int:
    """How many seeds a figure over axes ``keep`` reduces over (0 when none)."""
    return phase.sizes.get("seed", 0) if "seed" not in keep else 0


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _fmt_sci(value: float) -> str:
    """A round number as 300, 3e+03 -> '3000' or '3·10⁴' style: short and exact for levels."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:g}"
    exponent = int(np.floor(np.log10(abs(value))))
    mantissa = value / 10.0**exponent
    power = f"10^{{{exponent}}}"
    if np.isclose(mantissa, 1):
        return f"${power}$"
    return f"${mantissa:g}\\cdot{power}$"


def _numeric(values: np.ndarray) -> bool:
    values = np.asarray(values)
    return np.issubdtype(values.dtype, np.number) and values.dtype != bool


def _spans_decades(values: np.ndarray) -> bool:
    """True when the finite values are all positive and max/min is at least 10."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= 10
