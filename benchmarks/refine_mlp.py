"""Adaptive refinement against a uniform fine grid, on two γ × λ maps.

1. The teacher-student MLP (the parameters of ``sweeps/mlp_gamma_lam_quick.toml``) on a coarse
   γ × λ grid refined ``--rounds`` times (``refine = {rounds, on = "boundary"}``), against the
   uniform grid of the same finest resolution, both trained here.
2. Fig. 7's γ × λ map of the linear task (d_out = 1) from the exact theory, coarse 6 x 6
   refined 3 and 5 times, against the theory on every point of the fine grid.

For each: points and runs computed, the cells where grokking starts or stops (four corners
that disagree) on the uniform grid and how many of them the refinement found, and the share of
the fine grid's points whose verdict (groks or not) the refined map, drawn as
``plot.phase_diagram`` draws it (each point not computed as the computed point nearest it),
gets right: everywhere, and at the corners of the boundary cells.

    python benchmarks/refine_mlp.py [--rounds 2] [--json FILE]

Prints a Markdown table (docs/PERFORMANCE.md quotes it). On the 2-core development machine,
under load: about 7 minutes with ``--rounds 2``, 33 with ``--rounds 3`` (28 of them the uniform
fine grid).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import groksweep as gs
from groksweep import engine, refine
from groksweep import theory_grid as tg

MLP_PARAMS = {
    "d_in": 40,
    "d_h": 40,
    "d_out": 2,
    "activation": "tanh",
    "lr": 0.05,
    "init": "levi",
    "predictor": "plain",
    "n_test": 1000,
}
GAMMA = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
LAM = [0.2, 0.4, 0.6, 0.8, 1.0]


def mlp_sweep(rounds: int) -> gs.Sweep:
    return gs.Sweep(
        "mlp_teacher_student",
        params=MLP_PARAMS,
        axes={"gamma": GAMMA, "lam": LAM, "seed": [0, 1]},
        steps=10_000,
        log_points=80,
        eps=[1e-3],
        refine={"rounds": rounds, "on": "boundary"},
    )


def verdict(phase, dims=("gamma", "lam")) -> np.ndarray:
    """Groks (finite seed-median Δt, first threshold) at every point, as an array over dims."""
    phase = phase.isel(eps=0) if "eps" in phase.dims else phase
    return refine.verdict(phase, dims)[0]


def boundary_cells(groks: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """Cells of the fine grid whose four computed corners disagree."""
    return refine.flag_cells(groks, np.zeros(groks.shape), computed, 1, "boundary", 2.0)


def compare(fine: np.ndarray, refined: np.ndarray, computed: np.ndarray) -> dict:
    """How the refined verdicts (at ``computed`` points) reproduce the fine grid's."""
    expected = boundary_cells(fine, np.ones_like(fine))
    found = boundary_cells(refined, computed)
    drawn = refine.fill_from_computed(refined, computed)
    corners = np.zeros_like(fine)
    for d0 in (0, 1):
        for d1 in (0, 1):
            corners[d0 : d0 + expected.shape[0], d1 : d1 + expected.shape[1]] |= expected
    return {
        "fine points": int(fine.size),
        "points computed": int(computed.sum()),
        "boundary cells (fine grid)": int(expected.sum()),
        "found by refinement": int((found & expected).sum()),
        "drawn verdict right, all points": float((drawn == fine).mean()),
        "drawn verdict right, boundary corners": float((drawn == fine)[corners].mean()),
        "computed verdicts agreeing": float((refined == fine)[computed].mean()),
    }


def mlp(rounds: int) -> dict:
    sweep = mlp_sweep(rounds)
    start = time.perf_counter()
    rounds_done = []
    refined = refine.run(sweep, progress=False, report=rounds_done.append)
    refined_seconds = time.perf_counter() - start
    for done in rounds_done:
        print(refine.round_line(done))
    start = time.perf_counter()
    uniform = engine.run(refine.fine_sweep(sweep), progress=False)
    uniform_seconds = time.perf_counter() - start
    computed = refined["computed"].transpose("gamma", "lam").values
    result = compare(
        verdict(gs.grokking_time(uniform)), verdict(gs.grokking_time(refined)), computed
    )
    seeds = len(sweep.axes["seed"])
    return result | {
        "runs, uniform": int(uniform["diverged"].size),
        "runs, refined": int(computed.sum()) * seeds,
        "seconds, uniform": round(uniform_seconds, 1),
        "seconds, refined": round(refined_seconds, 1),
        "rounds": [done.points for done in rounds_done],
    }


def theory(rounds: int) -> dict:
    coarse = {"gamma": np.geomspace(1e-5, 1e-1, 6).tolist(), "lam": np.linspace(0.05, 1.5, 6)}
    start = time.perf_counter()
    refined = refine.theory_map(coarse, rounds=rounds, d_out=1)
    refined_seconds = time.perf_counter() - start
    start = time.perf_counter()
    dense = tg.theory_times(gamma=refined["gamma"].values, lam=refined["lam"].values, d_out=1)
    dense_seconds = time.perf_counter() - start
    computed = refined["computed"].values
    result = compare(verdict(dense), np.isfinite(refined["delta_t"].values), computed)
    return result | {
        "seconds, uniform": round(dense_seconds, 2),
        "seconds, refined": round(refined_seconds, 2),
    }


def table(rows: dict[str, dict]) -> str:
    names = [
        "fine points",
        "points computed",
        "boundary cells (fine grid)",
        "found by refinement",
        "drawn verdict right, all points",
        "drawn verdict right, boundary corners",
        "seconds, uniform",
        "seconds, refined",
    ]
    lines = ["| map | " + " | ".join(names) + " | fewer points |", "|---" * (len(names) + 2) + "|"]
    for label, row in rows.items():
        cells = [_number(row[n]) for n in names]
        ratio = row["fine points"] / row["points computed"]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio:.1f}x |")
    return "\n".join(lines)


def _number(value: float) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
    return f"{value}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="refinement rounds of the MLP map")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    rows = {f"Fig. 7 γ × λ theory, 6 x 6, {r} rounds": theory(r) for r in (3, 5)}
    rows[f"MLP γ × λ trained, 5 x 5, {args.rounds} rounds"] = mlp(args.rounds)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
