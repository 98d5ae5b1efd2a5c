"""Fig. 7 of Levi, Beck & Bar-Sinai: grokking-time phase diagrams, trained and theory.

Three maps of Δt = t_test - t_train (seed median; white: no grokking): gamma x d_out at
lam = 0.7, gamma x lam at d_out = 1, and d_out x lam at gamma = 0; each trained on a coarse
grid (left) and from the exact theory on a 40 x 40 grid (right), the pair on one colour
scale (red: short, blue: long, as in the paper). lr = 0.01, eps = 1e-3, accuracy 95%.

    python sweeps/fig7_phase.py [--full] [--out DIR] [--docs]

Quick: d_in = 200, 2 seeds, 6-8 values per axis (d_out <= 300), grokking times interpolated
between 100 log points. Full: d_in = 1000, 4 seeds, more values and d_out up to 1000; grokking
times solved exactly on the spectral path to 1% (groksweep.crossings, 16 log points), and the
γ × λ map refined at its grokking boundary from every other value (groksweep.refine; grey dots
mark its computed points). The theory maps alone (3 x 40 x 40 points) take about a second.
"""

from __future__ import annotations

import time

import _reproduce as rp
import numpy as np
from matplotlib import ticker

import groksweep as gs
from groksweep import plot
from groksweep import theory_grid as tg

FIXED_LAM = 0.7
GRID = 40
MAPS = [  # (x, y, fixed values): trained axes come from sweeps(), theory axes from THEORY_AXES
    ("gamma", "d_out", {"lam": FIXED_LAM}),
    ("gamma", "lam", {"d_out": 1}),
    ("d_out", "lam", {"gamma": 0.0}),
]
THEORY_AXES = {
    "gamma": np.geomspace(1e-5, 1e-1, GRID),
    "d_out": np.geomspace(1, 1000, GRID),  # the theory is analytic in d_out
    "lam": np.linspace(0.05, 1.5, GRID),
}


REFINE_ROUNDS = 3
"""Rounds of the full γ × λ map: from every other value of the uniform axes, three rounds reach
a quarter of their spacing at the grokking boundary (groksweep.refine)."""
SOLVED = {"method": "solve", "rtol": 1e-2}
"""The full grid's crossings: solved to 1% (groksweep.crossings), below the seed spread."""


def sweeps(full: bool, uniform: bool = False) -> list[gs.Sweep]:
    """The three maps' sweeps. Full: solved crossings bracketed by 16 log points, and the γ × λ
    map refined from a coarse grid, unless ``uniform`` (the full axes everywhere, no
    refinement; the crossings as given, for the benchmark's comparisons)."""
    fields = {}
    if full:
        gamma = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
        d_out = [1, 3, 10, 30, 100, 300, 1000]
        lam = [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.1, 1.5]
        base, seeds = {"d_in": 1000, "n_test": 4000}, list(range(4))
        fields = {"log_points": 16, "crossings": SOLVED}
    else:
        gamma = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
        d_out = [1, 3, 10, 30, 100, 300]
        lam = [0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.1, 1.5]
        base, seeds, fields = {"d_in": 200, "n_test": 1000}, [0, 1], {"log_points": 100}
    axes = {"gamma": gamma, "d_out": d_out, "lam": lam}
    out = []
    for x, y, fixed in MAPS:
        grid = {y: axes[y], x: axes[x]}
        refine = {}
        if full and not uniform and "d_out" not in grid:  # refinement needs real-valued axes
            grid = {name: values[::2] for name, values in grid.items()}
            refine = {"refine": {"rounds": REFINE_ROUNDS}}
        out.append(
            gs.Sweep(
                "linear",
                params=base | {"lr": 0.01} | fixed,
                axes=grid | {"seed": seeds},
                steps=1_000_000,
                eps=[1e-3],
                **fields,
                **refine,
            )
        )
    return out


def main() -> None:
    args = rp.arguments("fig7", __doc__.splitlines()[0])
    start = time.perf_counter()
    theory_maps = [
        tg.theory_times(**{y: THEORY_AXES[y], x: THEORY_AXES[x]}, **fixed) for x, y, fixed in MAPS
    ]
    theory_seconds = time.perf_counter() - start
    print(f"theory: 3 maps of {GRID} x {GRID} points in {theory_seconds:.2f} s")

    fig, axes = rp.panels(2, rows=3, width=5.6, height=4.2)
    tables = []
    for k, ((x, y, fixed), sweep, theory_map) in enumerate(
        zip(MAPS, sweeps(args.full), theory_maps)
    ):
        tag = f"{y}_{x}"
        ds, phase = rp.train(sweep, args, tag=tag)
        rp.save_theory(args, tg.theory_on_grid(ds)[0], theory_map, tag=tag)
        trained = gs.reduce_seeds(phase)["delta_t_median"].isel(eps=0)
        norm = plot.shared_norm(trained.values, theory_map["delta_t"].values)
        where = ", ".join(f"{plot.label(n)} = {v:g}" for n, v in fixed.items())
        for ax, data, source in (
            (axes[k][0], phase, "trained"),
            (axes[k][1], theory_map, "theory"),
        ):
            plot.phase_diagram(data, x, y, ax=ax, norm=norm, cmap="Spectral")
            ax.set_title(
                f"{source}: {where}"
                + (
                    f" ({ds.sizes['seed']} seeds, median)"
                    if source == "trained"
                    else f" ({GRID}×{GRID})"
                )
            )
        mesh = next(c for c in axes[k][1].collections if getattr(c, "colorbar", None))
        mesh.colorbar.set_label("Δt (steps)\nwhite: never groks")
        for which, name in (("x", x), ("y", y)):
            tidy(axes[k][1], which, name)
            if plot.axis_kind(phase[name].values) == "categorical":
                continue  # unevenly spaced values: even cells labelled with them, no shared scale
            limits = getattr(axes[k][1], f"get_{which}lim")()
            tidy(axes[k][0], which, name)
            getattr(axes[k][0], f"set_{which}lim")(limits)
        axes[k][0].set_facecolor("0.85")  # outside the trained grid
        tables.append(map_table(phase, x, y, fixed, sweep.params["d_in"]))
    d_in = sweeps(args.full)[0].params["d_in"]
    fig.suptitle(
        f"Fig. 7: Δt phase diagrams, trained (left, d_in = {d_in}; grey: outside the "
        f"trained grid) and exact theory (right); lr = 0.01, ε = 1e-3"
    )
    rp.finish(fig, args, tables, theory_seconds=round(theory_seconds, 2))


def tidy(ax, which: str, name: str) -> None:
    """lam on a linear axis, gamma and d_out on log axes, with default tick locators."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    getattr(ax, f"set_{which}scale")("linear" if name == "lam" else "log")
    if name == "lam":
        axis.set_major_locator(ticker.MultipleLocator(0.25))
        axis.set_major_formatter(ticker.ScalarFormatter())
    else:
        axis.set_major_locator(ticker.LogLocator())
        axis.set_major_formatter(ticker.LogFormatterSciNotation())
        axis.set_minor_locator(ticker.LogLocator(subs="auto"))


def against_theory(phase, x: str, y: str, fixed: dict) -> dict[str, np.ndarray]:
    """A trained map's seed-median Δt and the exact theory's at its trained points (every
    point, or a refined map's computed ones), flat, with the points' axis values."""
    summary = gs.reduce_seeds(phase).isel(eps=0)
    points = np.ones((summary.sizes[y], summary.sizes[x]), bool)
    if "computed" in summary:
        points = summary["computed"].transpose(y, x).values
    values = {name: summary[name].values.astype(float) for name in (y, x)}
    exact = tg.theory_times(**values, **fixed)
    grid = np.meshgrid(values[y], values[x], indexing="ij")
    return {
        "trained": summary["delta_t_median"].transpose(y, x).values[points],
        "theory": exact["delta_t"].transpose(y, x).values[points],
        y: grid[0][points],
        x: grid[1][points],
    }


def map_table(phase, x, y, fixed, d_in) -> str:
    """Agreement of one trained map with the theory at its trained points."""
    found = against_theory(phase, x, y, fixed)
    trained, theory_dt = found["trained"], found["theory"]
    both = np.isfinite(trained) & np.isfinite(theory_dt)
    ratio = trained[both] / theory_dt[both]
    disagree = (np.isfinite(trained) != np.isfinite(theory_dt)).sum()
    # eq. 12 at the trained d_in (see tg.finite_size_times), at the points where both grok
    finite = np.array(
        [
            np.subtract(*tg.finite_size_times(d_in, **({y: a, x: b} | fixed))[::-1])
            for a, b in zip(found[y][both], found[x][both])
        ]
    )
    corrected = trained[both] / finite
    rows = [
        [
            f"{y} × {x}",
            ", ".join(f"{n} = {v:g}" for n, v in fixed.items()),
            f"{trained.size}",
            f"{both.sum()}",
            f"{np.median(np.abs(ratio - 1)):.3f}",
            f"{np.max(np.abs(ratio - 1)):.3f}",
            f"{np.median(np.abs(corrected - 1)):.3f}",
            f"{np.max(np.abs(corrected - 1)):.3f}",
            f"{disagree}",
        ]
    ]
    return rp.table(
        [
            "map",
            "fixed",
            "points",
            "both grok",
            "median |trained/theory − 1|",
            "max",
            "median vs finite-d_in eq. 12",
            "max",
            "points where only one groks",
        ],
        rows,
        f"Phase map {y} × {x}: trained (seed median) against theory",
    )


if __name__ == "__main__":
    main()
