"""Figures from results and phase datasets: phase diagrams, Δt curves and learning curves.

Every function draws on a new :class:`matplotlib.figure.Figure` (never through ``pyplot``, so
no figure is left open and any backend works) or on the axes it is given, saves it when given
``path=``, and returns the figure.

Conventions shared by all figures:

- Grid axes are selected by name. ``eps`` defaults to the first threshold; other axes that the
  figure does not show must be fixed with keyword arguments (``d_out=4``), except in
  :func:`learning_curves`, where they default to their first value.
- Times are reduced over seeds when a ``seed`` dim exists: the median (and quartiles) of
  :func:`groksweep.phase.reduce_seeds`, which is censored (NaN) when half the seeds or more
  never reach the level.
- A numeric axis is drawn on a log scale when its values are all positive and span at least a
  decade, on a symlog scale when they are zero and positive values spanning a decade (a
  weight-decay axis starting at 0), and linearly otherwise. Axes of strings are categorical.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps, colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

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
}
TIMES = {"delta_t": "Δt", "t_train": "t_train", "t_test": "t_test"}
REDUCTIONS = ("median", "q25", "q75")
MAX_TICKS = 8


def label(name: str) -> str:
    """Readable axis label of a grid axis or coordinate; the raw name when none is known."""
    return LABELS.get(name, name)


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
    **fixed: Any,
) -> Figure:
    """Heat map of a grokking time (``var``: delta_t, t_train or t_test) over axes ``x`` and ``y``.

    ``phase`` is the output of :func:`groksweep.grokking_time` (or of ``reduce_seeds``). Cells are
    centred on the grid values, with edges at the midpoints in each axis's scale (geometric
    midpoints on log axes). The colour scale is logarithmic when the times are positive and span
    more than a decade. Censored cells (no grokking within the steps) are white; cells where the
    boolean ``diverged`` is True (for any seed) are grey and hatched. ``norm`` fixes the colour
    scale (e.g. one :func:`shared_norm` for maps drawn side by side).
    """
    _require_dims(phase, [x, y])
    if x == y:
        raise ValueError(f"x and y must be different axes, both are {x!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    data, chosen = _select(_seed_stats(phase, var, keep=(x, y))[reduce], eps, fixed)
    data = _only(_sorted(data), (y, x))
    fig, ax = _axes(ax)
    xe = _edges(ax, "x", x, data[x].values)
    ye = _edges(ax, "y", y, data[y].values)
    colormap = colormaps[cmap].with_extremes(bad="white")
    values = np.ma.masked_invalid(data.values)
    mesh = ax.pcolormesh(xe, ye, values, cmap=colormap, norm=norm or _norm(data.values))
    note = f"white: no grokking within {_steps(phase)}"
    fig.colorbar(mesh, ax=ax, label=f"{TIMES[var]} (steps)\n{note}")
    if diverged is not None:
        _draw_diverged(ax, xe, ye, _diverged_mask(diverged, data, chosen))
    ax.set_title(_title(chosen, _n_seeds(phase, (x, y)), reduce))
    return _finish(fig, path)


def delta_t_curve(
    phase: xr.Dataset,
    x: str,
    *,
    eps: float | None = None,
    ax: Axes | None = None,
    path: str | Path | None = None,
    theory: xr.DataArray | Mapping[str, xr.DataArray] | None = None,
    **fixed: Any,
) -> Figure:
    """Δt against one grid axis: the seed median with its quartile band, one curve per eps.

    Meant for sweeps with one axis besides seed; other axes must be fixed with keywords.
    Censored points (no grokking in half the seeds or more) have no value: they are marked
    with an open triangle on the top edge of the panel. ``eps=None`` draws every threshold.

    ``theory`` overlays predictions in black: a DataArray of Δt over a dim named ``x`` (its own,
    possibly denser, coordinate; NaN where the theory predicts no grokking), or a mapping from
    legend label to such arrays, drawn solid, dashed, dotted, dash-dotted in turn. An ``eps``
    dim is matched to each threshold drawn; dims named in ``fixed`` are selected likewise.
    """
    _require_dims(phase, [x])
    stats = {q: _sorted(v) for q, v in _seed_stats(phase, "delta_t", keep=(x,)).items()}
    thresholds = phase["eps"].values if eps is None and "eps" in phase.dims else [eps]
    fig, ax = _axes(ax)
    positions = _place(ax, "x", x, stats["median"][x].values)
    medians = []
    for i, threshold in enumerate(thresholds):
        curve, chosen = _curve(stats, x, threshold, fixed)
        color = f"C{i}"
        name = f"ε = {_fmt(chosen['eps'])}" if "eps" in chosen else "Δt"
        ax.plot(positions, curve["median"], "o-", color=color, label=name)
        ax.fill_between(positions, curve["q25"], curve["q75"], color=color, alpha=0.2, lw=0)
        censored = np.isnan(curve["median"])
        if censored.any():  # an empty unclipped line would sit at the display origin (layout)
            ax.plot(
                positions[censored],
                np.ones(censored.sum()),
                "^",
                mfc="none",
                color=color,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        medians.append(curve["median"])
        if theory is not None:
            _draw_theory_delta_t(ax, theory, x, chosen, first=i == 0)
    medians = np.concatenate(medians)
    ax.set_yscale("log" if _spans_decades(medians) else "linear")
    ax.set_ylabel("Δt (steps)")
    handles = ax.get_legend_handles_labels()[0]
    if np.isnan(medians).any():
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
    ax.legend(handles=handles, fontsize="small")
    ax.set_title(
        _title(
            {k: v for k, v in chosen.items() if k != "eps"},
            _n_seeds(phase, (x,)),
            "median and quartiles",
        )
    )
    return _finish(fig, path)


def learning_curves(
    ds: xr.Dataset,
    *,
    by: str | None = None,
    eps: float | None = None,
    ax: Sequence[Axes] | None = None,
    path: str | Path | None = None,
    theory: xr.Dataset | None = None,
    **fixed: Any,
) -> Figure:
    """Loss (log-log) and accuracy (log time, linear accuracy) against time; train dashed, test
    solid.

    One colour per value of the axis ``by`` (default: the first axis besides seed), seed median
    across seeds. Other axes are fixed with keyword arguments (``gamma=1e-3``) or else at their
    first value; accuracies at threshold ``eps`` (default: the first). Step 0 is dropped, as it
    has no place on a log time axis. ``ax`` is an optional pair of axes (loss, accuracy).

    ``theory`` overlays predictions as thin black lines in the same styles: a Dataset with any of
    ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc`` over a ``time`` coordinate (its
    own, e.g. denser, times) and, where it has them, the dims ``by``, ``eps`` and the fixed axes,
    which are selected like the data.
    """
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
    groups = [(None, data)] if by is None else [(v, data.sel({by: v})) for v in data[by].values]
    palette = colormaps["viridis"](np.linspace(0, 0.9, len(groups)))
    for color, (value, group) in zip(palette, groups):
        for role, style in (("train", "--"), ("test", "-")):
            loss_ax.plot(group["time"], group[f"{role}_loss"], style, color=color)
            acc_ax.plot(group["time"], group[f"{role}_acc"], style, color=color)
    loss_ax.set(xscale="log", yscale="log", xlabel="step", ylabel="loss")
    acc_ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="step", ylabel=_acc_label(chosen))
    key = "k" if theory is None else "0.5"
    handles = [
        Line2D([], [], color=key, ls=s, label=r) for r, s in (("train", "--"), ("test", "-"))
    ]
    if theory is not None:
        for value, _ in groups:
            _draw_theory_curves(loss_ax, acc_ax, theory, chosen | ({by: value} if by else {}))
        handles.append(Line2D([], [], color="k", lw=THEORY_LW, label="theory (black)"))
    if by is not None:
        handles += [
            Line2D([], [], color=c, label=f"{label(by)} = {_fmt(v)}")
            for c, (v, _) in zip(palette, groups)
        ]
    loss_ax.legend(handles=handles, fontsize="small")
    fig.suptitle(_title({k: v for k, v in chosen.items() if k != "eps"}, seeds, "median"))
    return _finish(fig, path)


FIGURES = ("learning_curves.png", "phase_diagram.png", "delta_t.png")
"""The file names :func:`figures_for` may write."""


def figures_for(ds: xr.Dataset, phase: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """Write the default figures of a sweep into ``out_dir`` and return their paths.

    ``learning_curves.png``, then ``phase_diagram.png`` over the first two axes besides seed
    (further axes at their first value) or, with a single such axis, ``delta_t.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / FIGURES[0]]
    learning_curves(ds, path=paths[0])
    grid = [d for d in phase["delta_t"].dims if d not in ("seed", "eps")]
    if len(grid) >= 2:
        rest = {a: phase[a].values[0] for a in grid[2:]}
        paths.append(out / FIGURES[1])
        diverged = phase.get("diverged")
        phase_diagram(phase, grid[0], grid[1], path=paths[-1], diverged=diverged, **rest)
    elif len(grid) == 1:
        paths.append(out / FIGURES[2])
        delta_t_curve(phase, grid[0], path=paths[-1])
    return paths


def shared_norm(*maps: np.ndarray | xr.DataArray) -> colors.Normalize:
    """One colour normalisation for several maps of times (logarithmic when their finite values
    are positive and span a decade), so maps drawn side by side share a colour scale."""
    finite = [np.asarray(m, dtype=float).ravel() for m in maps]
    return _norm(np.concatenate(finite))


# --- theory overlays ---------------------------------------------------------------------------
THEORY_LW = 1.0
THEORY_STYLES = ("-", "--", ":", "-.")


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


def _draw_theory_curves(loss_ax: Axes, acc_ax: Axes, theory: xr.Dataset, chosen: Mapping) -> None:
    """Black train (dashed) / test (solid) loss and accuracy curves of ``theory`` at ``chosen``."""
    for role, style in (("train", "--"), ("test", "-")):
        for ax, var in ((loss_ax, f"{role}_loss"), (acc_ax, f"{role}_acc")):
            if var not in theory:
                continue
            curve = _select_like(theory[var], chosen, keep=("time",))
            times = curve["time"].values
            shown = times > 0
            ax.plot(times[shown], curve.values[shown], style, color="k", lw=THEORY_LW, zorder=3)


def _draw_theory_delta_t(ax: Axes, theory, x: str, chosen: Mapping, first: bool) -> None:
    """Black Δt curves of ``theory`` (one array or label -> array) along ``x`` at ``chosen``."""
    curves = {"theory": theory} if isinstance(theory, xr.DataArray) else dict(theory)
    for (name, curve), style in zip(curves.items(), THEORY_STYLES * len(curves)):
        _require_dims(curve, [x])
        if not _numeric(curve[x].values):
            raise ValueError(f"theory needs a numeric axis {x}")
        if "eps" not in curve.dims and not first:
            continue  # no eps dim: one curve for all thresholds
        curve = _select_like(curve, chosen, keep=(x,)).sortby(x)
        ax.plot(
            curve[x].values,
            curve.values,
            style,
            color="k",
            lw=THEORY_LW + 0.2,
            zorder=3,
            label=name if first else None,
        )


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


def _sorted(data: xr.DataArray) -> xr.DataArray:
    """``data`` with every numeric axis in increasing order (cells need monotonic edges)."""
    for name in data.dims:
        if _numeric(data[name].values):
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


# --- drawing -----------------------------------------------------------------------------------
def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    return fig, fig.add_subplot()


def _axes_pair(ax: Sequence[Axes] | None) -> tuple[Figure, Sequence[Axes]]:
    """The given pair of axes and their figure, or a new figure with two side by side."""
    if ax is not None:
        return ax[0].figure, ax
    fig = Figure(figsize=(11.0, 4.5), layout="constrained")
    return fig, fig.subplots(1, 2)


def _scale(values: np.ndarray) -> tuple[str, dict[str, float]]:
    """Matplotlib scale (and its options) for axis values: log, symlog or linear."""
    values = np.asarray(values, dtype=float)
    positive = values[values > 0]
    if positive.size < 2 or positive.max() / positive.min() < 10:
        return "linear", {}
    if positive.size == values.size:
        return "log", {}
    if values.min() == 0:
        return "symlog", {"linthresh": positive.min(), "linscale": 1.0}
    return "linear", {}


def _place(ax: Axes, which: str, name: str, values: np.ndarray) -> np.ndarray:
    """Set scale, ticks and label of one axis for grid ``values``; return their positions."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    if _numeric(values):
        scale, options = _scale(values)
        getattr(ax, f"set_{which}scale")(scale, **options)
        positions = np.asarray(values, dtype=float)
    else:
        positions = np.arange(len(values), dtype=float)
    step = -(-len(values) // MAX_TICKS)
    axis.set_ticks(positions[::step], [_fmt(v) for v in values[::step]])
    axis.set_minor_locator(NullLocator())
    axis.set_label_text(label(name))
    return positions


def _edges(ax: Axes, which: str, name: str, values: np.ndarray) -> np.ndarray:
    """Cell edges around grid ``values``: midpoints in the axis's scale, ends mirrored."""
    positions = _place(ax, which, name, values)
    scale = (ax.xaxis if which == "x" else ax.yaxis).get_transform()
    centres = scale.transform(positions)
    if centres.size == 1:
        edges = centres + np.array([-0.5, 0.5])
    else:
        middle = (centres[1:] + centres[:-1]) / 2
        edges = np.concatenate(
            [[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]]
        )
    return scale.inverted().transform(edges)


def _norm(values: np.ndarray) -> colors.Normalize:
    """Colour normalisation of times: logarithmic when positive and spanning decades."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return colors.Normalize(0.0, 1.0)
    if _spans_decades(finite):
        return colors.LogNorm(finite.min(), finite.max())
    return colors.Normalize(finite.min(), finite.max())


def _draw_diverged(ax: Axes, xe: np.ndarray, ye: np.ndarray, mask: np.ndarray) -> None:
    """Grey hatched cells where ``mask`` is True, and a legend entry for them."""
    if not mask.any():
        return
    cells = np.ma.masked_where(~mask, np.zeros(mask.shape))
    grey = colors.ListedColormap(["0.8"])
    ax.pcolor(xe, ye, cells, cmap=grey, hatch="///", edgecolor="0.4", linewidth=0)
    patch = Patch(facecolor="0.8", edgecolor="0.4", hatch="///", label="diverged")
    ax.legend(handles=[patch], loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    """Save ``fig`` to ``path`` (creating its folder) when one is given; return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_format = path.suffix.lstrip(".") or None  # the temporary name has another suffix
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=150, format=file_format))
    return fig


# --- text --------------------------------------------------------------------------------------
def _title(chosen: Mapping[str, Any], seeds: int, reduce: str) -> str:
    """Title listing the selected axis values and the seed reduction."""
    parts = [f"{label(k)} = {_fmt(v)}" for k, v in chosen.items()]
    if seeds:
        parts.append(f"{reduce} of {seeds} seed{'s' if seeds > 1 else ''}")
    return ", ".join(parts)


def _acc_label(chosen: Mapping[str, Any]) -> str:
    return f"accuracy (ε = {_fmt(chosen['eps'])})" if "eps" in chosen else "accuracy"


def _steps(obj: xr.Dataset) -> str:
    """'N steps' from the spec stored with ``obj``, or 'the run' when there is none."""
    try:
        return f"{tomllib.loads(obj.attrs.get('spec', ''))['steps']} steps"
    except (tomllib.TOMLDecodeError, KeyError):
        return "the run"


def _n_seeds(phase: xr.Dataset, keep: Sequence[str]) -> int:
    """How many seeds a figure over axes ``keep`` reduces over (0 when none)."""
    return phase.sizes.get("seed", 0) if "seed" not in keep else 0


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _numeric(values: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(values).dtype, np.number)


def _spans_decades(values: np.ndarray) -> bool:
    """True when the finite values are all positive and max/min is at least 10."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() >= 10
