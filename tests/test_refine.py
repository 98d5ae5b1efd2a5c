"""Adaptive grids (groksweep.refine): the midpoint rule, the flagging rule against a brute-force
reading of it, the theory map against a dense theory grid, and refined sweeps: their spec,
their results on the fine grid, resumption round by round, plan, plot and the command line."""

import math
import tomllib

import numpy as np
import pytest
import xarray as xr

import groksweep as gs
from groksweep import engine, plot, refine, results
from groksweep import theory_grid as tg
from groksweep.cli import main
from groksweep.store import ChunkStore


def linear_map(rounds=2, on="boundary", **refine_options):
    """A small spectral linear map whose boundary (test accuracy never reached) crosses it."""
    return gs.Sweep(
        "linear",
        params={"d_in": 40, "lr": 0.01, "n_test": 200},
        axes={"gamma": [1e-5, 1e-3, 1e-1], "lam": [0.2, 0.7, 1.2], "seed": [0, 1]},
        steps=1_000_000,
        log_points=40,
        refine={"rounds": rounds, "on": on, **refine_options},
    )


# --- the grid ----------------------------------------------------------------------------------
def test_midpoints_are_arithmetic_or_geometric_as_the_values_are_spaced():
    assert refine.midpoint_rule([0.2, 0.5, 0.8]) == "linear"
    assert refine.midpoint_rule([0.0, 1e-3, 1e-2]) == "linear"  # not all positive
    assert refine.midpoint_rule([1e-5, 1e-3, 1e-1]) == "log"
    assert refine.midpoint_rule([1.0, 3.0]) == "linear" and refine.midpoint_rule([1, 10]) == "log"
    assert refine.midpoint_rule([0.3, 0.5, 0.9]) == "log"  # steps of x5/3 and x9/5: closer
    assert refine.refined_axis([0.3, 0.5, 0.7], 1) == [0.3, 0.4, 0.5, 0.6, 0.7]
    log_axis = refine.refined_axis([1e-5, 1e-3, 1e-1], 2)
    assert log_axis[::4] == [1e-5, 1e-3, 1e-1]  # the given values, exactly
    np.testing.assert_allclose(log_axis[2], math.sqrt(1e-5 * 1e-3), rtol=1e-11)
    np.testing.assert_allclose(log_axis[1], math.sqrt(1e-5 * log_axis[2]), rtol=1e-11)
    assert len(log_axis) == 9 and log_axis == sorted(log_axis)


def test_flagged_cells_are_those_whose_corners_disagree():
    groks = np.array([[1, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    delta_t = np.where(groks, [[10.0, 10, 0], [10, 15, 10], [10, 40, 10]], np.nan)
    everywhere = np.ones((3, 3), bool)
    boundary = refine.flag_cells(groks, delta_t, everywhere, 1, "boundary", 2.0)
    np.testing.assert_array_equal(boundary, [[False, True], [False, False]])
    by_time = refine.flag_cells(groks, delta_t, everywhere, 1, "delta_t", 3.0)
    np.testing.assert_array_equal(by_time, [[False, True], [True, True]])  # 40 > 3 x 10
    partly = everywhere.copy()
    partly[0, 2] = False  # a cell with a corner not computed is never flagged
    assert not refine.flag_cells(groks, delta_t, partly, 1, "boundary", 2.0).any()
    # a leading dim (eps): a cell disagreeing at any threshold is flagged
    stacked = np.stack([np.ones_like(groks), groks])
    flags = refine.flag_cells(stacked, np.stack([delta_t, delta_t]), everywhere, 1, "boundary", 2)
    np.testing.assert_array_equal(flags, boundary)
    # on the coarse grid of every second point of a 5 x 5 fine grid
    fine = np.zeros((5, 5), bool)
    fine[::2, ::2] = groks
    coarse = refine.flag_cells(fine, np.zeros((5, 5)), fine | True, 2, "boundary", 2.0)
    np.testing.assert_array_equal(coarse, boundary)


def test_a_flagged_cell_gets_its_corners_edge_midpoints_and_centre():
    cells = np.zeros((2, 2), bool)
    cells[1, 0] = True  # the cell from fine point (4, 0) to (8, 4), on the stride-4 grid
    points = refine.children(cells, 4, (9, 9))
    assert sorted(zip(*np.nonzero(points))) == [(r, c) for r in (4, 6, 8) for c in (0, 2, 4)]


def test_nearest_fill_draws_each_point_over_its_own_cells():
    computed = np.zeros((5, 5), bool)
    computed[::4, ::4] = True
    computed[2, 2] = True
    values = np.where(computed, np.arange(25.0).reshape(5, 5), np.nan)
    filled = refine.fill_from_computed(values, computed)
    assert filled[0, 1] == values[0, 0] and filled[4, 3] == values[4, 4]
    assert filled[1, 2] == filled[2, 1] == values[2, 2]


# --- theory maps -------------------------------------------------------------------------------
def test_refined_theory_map_finds_the_dense_grid_s_boundary_with_4x_fewer_points():
    """Fig. 7's gamma x lam map (d_out = 1): refined from 6 x 6 to 41 x 41 by the rule, the cells
    where grokking starts or stops are those of the theory on every point of the 41 x 41 grid."""
    coarse = {"gamma": np.geomspace(1e-5, 1e-1, 6).tolist(), "lam": np.linspace(0.05, 1.5, 6)}
    refined = refine.theory_map(coarse, rounds=3, d_out=1)
    gamma, lam = refined["gamma"].values, refined["lam"].values
    dense = tg.theory_times(gamma=gamma, lam=lam, d_out=1)
    dense_groks = np.isfinite(dense["delta_t"].transpose("gamma", "lam").values)
    computed = refined["computed"].values
    assert computed.size / computed.sum() >= 4
    groks = np.isfinite(refined["delta_t"].values)
    np.testing.assert_array_equal(groks[computed], dense_groks[computed])

    def boundary(g, known):
        corners = [g[:-1, :-1], g[1:, :-1], g[:-1, 1:], g[1:, 1:]]
        known = known[:-1, :-1] & known[1:, :-1] & known[:-1, 1:] & known[1:, 1:]
        return known & np.any(corners, 0) & ~np.all(corners, 0)

    expected = boundary(dense_groks, np.ones_like(computed))
    assert expected.sum() > 30
    np.testing.assert_array_equal(boundary(groks, computed), expected)
    # drawn: the filled map has the dense grid's verdict at every point but those on the boundary
    filled = refine.fill_from_computed(groks, computed)
    near = np.zeros_like(computed)
    for di in (0, 1):
        for dj in (0, 1):
            near[di : di + expected.shape[0], dj : dj + expected.shape[1]] |= expected
    np.testing.assert_array_equal(filled[~near], dense_groks[~near])


# --- refined sweeps ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "refine_table, message",
    [
        ({"rounds": 0}, "refine.rounds must be >= 1"),
        ({"rounds": 99}, "refine.rounds must be <= 8"),
        ({"rounds": 2, "on": "edges"}, "refine.on must be one of boundary, delta_t"),
        ({"rounds": 2, "factor": 1.0}, "refine.factor must be > 1"),
        ({"rounds": 2, "level": 1.5}, "refine.level must be < 1"),
        ({"on": "boundary"}, "refine needs rounds"),
        ({"rounds": 2, "step": 1}, "unknown refine option 'step'"),
        ([2], "refine must be a table"),
    ],
)
def test_bad_refine_tables_are_one_line_errors(refine_table, message):
    with pytest.raises(gs.SpecError, match=message):
        gs.Sweep("linear", axes={"gamma": [0.0, 0.1], "lam": [0.3, 0.5]}, refine=refine_table)


@pytest.mark.parametrize(
    "axes, message",
    [
        ({"lam": [0.3, 0.5]}, "exactly two axes besides seed.*; got 1"),
        ({"lam": [0.3, 0.5], "gamma": [0.0, 0.1], "lr": [0.01, 0.02]}, "got 3"),
        ({"lam": [0.3], "gamma": [0.0, 0.1]}, "axis lam to hold two or more increasing"),
        ({"lam": [0.5, 0.3], "gamma": [0.0, 0.1]}, "axis lam to hold two or more increasing"),
        ({"d_out": [1, 2], "gamma": [0.0, 0.1]}, "real-valued axes; d_out is int"),
        ({"lam": np.linspace(0.1, 1, 300), "gamma": [0.0, 0.1]}, "finest grid holds"),
    ],
)
def test_refine_needs_a_map_of_two_real_axes(axes, message):
    with pytest.raises(gs.SpecError, match=message):
        gs.Sweep("linear", axes=axes, refine={"rounds": 8 if "finest" in message else 1})


def test_refine_is_recorded_in_the_spec_and_settable_from_the_command_line(tmp_path):
    sweep = linear_map(rounds=3, on="delta_t", factor=1.5)
    assert sweep.refine == {"rounds": 3, "on": "delta_t", "factor": 1.5, "level": 0.95}
    assert gs.Sweep.from_dict(tomllib.loads(sweep.to_toml())) == sweep
    path = tmp_path / "map.toml"
    path.write_text(linear_map().to_toml())
    again = gs.Sweep.from_toml(path, ['refine={rounds = 1, on = "delta_t"}'])
    assert again.refine["rounds"] == 1 and again.refine["on"] == "delta_t"
    assert refine.fine_sweep(sweep).n_runs == 17 * 17 * 2 and sweep.n_runs == 3 * 3 * 2


def test_a_selection_of_runs_trains_those_and_leaves_the_rest_nan():
    sweep = gs.Sweep("linear", params={"d_in": 20}, axes={"lam": [0.3, 0.5, 0.7]}, steps=100)
    ds = engine.run(engine.prepare(sweep, select=[2, 0]), progress=False)
    loss = ds["train_loss"].isel(time=-1).values
    assert np.isfinite(loss[[0, 2]]).all() and np.isnan(loss[1])
    with pytest.raises(gs.SpecError, match="outside the sweep's 3 runs"):
        engine.prepare(sweep, select=[3])


@pytest.mark.slow  # about 20 s with a cold compilation cache
def test_refined_run_computes_the_midpoints_of_disagreeing_cells_and_resumes_by_round(tmp_path):
    sweep = linear_map(rounds=2)
    store = ChunkStore(tmp_path, sweep.to_toml())
    rounds = []

    def stop_after_round_1():
        return len(rounds) == 2

    with pytest.raises(engine.SweepInterrupted, match="before refinement round 2"):
        refine.run(sweep, False, store=store, report=rounds.append, should_stop=stop_after_round_1)
    saved = store.count()
    assert saved and [r.index for r in rounds] == [0, 1]

    log, again = [], []
    ds = refine.run(sweep, False, store=store, report=again.append, log=log.append)
    trained = sum(int(line.split(": ")[1].split()[0]) for line in log if "trained in" in line)
    assert "read back" in "".join(log)
    assert trained == again[2].runs  # rounds 0 and 1 were read back, none trained again
    assert [r.runs for r in again[:2]] == [r.runs for r in rounds]
    log.clear()  # gs.run refines a sweep with a refine table: every round is read back now
    xr.testing.assert_identical(gs.run(sweep, False, store=store, log=log.append), ds)
    assert "read back" in "".join(log) and "trained in" not in "".join(log)

    # the data: NaN exactly where not computed; round 0 is the coarse grid
    computed, round_of = ds["computed"], ds["refine_round"]
    computed_np = computed.transpose("gamma", "lam").values
    loss = ds["train_loss"].isel(time=-1).transpose("gamma", "lam", "seed").values
    assert np.isfinite(loss[computed_np]).all() and np.isnan(loss[~computed_np]).all()
    assert ((round_of == 0) == xr.zeros_like(computed).copy(data=_every(4, computed.shape))).all()
    assert computed.sum() == sum(r.points for r in again)

    # every point of round r + 1 is in a cell of round r's grid whose corners disagree, read
    # from the returned data by the rule written out here
    summary = gs.reduce_seeds(gs.grokking_time(ds, sweep.refine["level"])).isel(eps=0)
    groks = np.isfinite(summary["delta_t_median"].transpose("gamma", "lam").values)
    rounds_np = round_of.transpose("gamma", "lam").values
    assert (rounds_np == 2).any()
    for r, stride in ((1, 4), (2, 2)):  # the stride of the cells round r - 1 flagged
        for i, j in zip(*np.nonzero(rounds_np == r)):
            cells = [(a, b) for a in _lower(i, stride, 9) for b in _lower(j, stride, 9)]
            assert any(_disagree(groks, a, b, stride) for a, b in cells), (r, i, j)
    assert summary["test_censored_fraction"].where(~computed).isnull().all()
    fig = plot.phase_diagram(gs.grokking_time(ds), "lam", "gamma", theory=False)
    (dots,) = [line for line in fig.axes[0].lines if line.get_marker() == "."]
    assert len(dots.get_xdata()) == computed.sum()


def _every(stride, shape):
    mask = np.zeros(shape, bool)
    mask[::stride, ::stride] = True
    return mask


def _lower(i, stride, n):
    """Lower corners, along one axis, of the cells of ``stride`` that hold fine point ``i``."""
    lower = [i - i % stride] if i % stride else [i - stride, i]
    return [a for a in lower if 0 <= a <= n - 1 - stride]


def _disagree(groks, a, b, stride):
    corners = groks[[a, a, a + stride, a + stride], [b, b + stride, b, b + stride]]
    return corners.any() and not corners.all()


@pytest.mark.slow  # about 20 s with a cold compilation cache
def test_plan_and_run_on_the_command_line_show_the_rounds(tmp_path, capsys):
    spec = tmp_path / "map.toml"
    spec.write_text(linear_map(rounds=1).to_toml())
    assert main(["plan", str(spec), "--no-timing"]) == 0
    plan = capsys.readouterr().out
    assert "round 0's 18 runs" in plan and "at most 32 (" in plan
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--no-theory"]) == 0
    printed = capsys.readouterr().out
    assert "refinement round 0: 9 points (18 runs) computed" in printed
    assert "refinement round 1:" in printed
    phase = results.load(out / "phase.nc", kind="phase")
    assert "computed" in phase and "refine_round" in phase
    assert main(["plot", str(out), "--no-theory"]) == 0
