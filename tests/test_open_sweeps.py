"""Reading sweeps together: gs.open_sweeps aligns sweeps that extend one another (more seeds, a
new range of an axis, a fixed parameter made an axis) and refuses, in one line, sweeps that are
not parts of one grid."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import groksweep as gs
from groksweep import results

BASE = {
    "task": "linear",
    "steps": 300,
    "log_points": 12,
    "eps": [1e-3],
    "params": {"d_in": 12, "n_test": 50, "dtype": "float64", "lr": 0.05},
}


def spec_of(params=None, **axes):
    return gs.Sweep.from_dict(BASE | {"params": BASE["params"] | (params or {}), "axes": axes})


def fake_run(sweep):
    """Results of ``sweep`` as :func:`groksweep.run` labels them, with made-up trajectories
    (accuracies rising at a random time per run): the alignment does not depend on training,
    which the slow test below does for real."""
    rng = np.random.default_rng(0)
    times = sweep.times()
    outputs = {}
    for name, extra in sweep.metrics.items():
        shape = (sweep.n_runs, len(times), *[len(sweep.eps)] * len(extra))
        if name.endswith("_acc"):
            onset = rng.uniform(0.5, 3.0, (sweep.n_runs, 1, *[1] * len(extra)))
            log_t = np.log10(np.maximum(times, 1)).reshape(1, -1, *[1] * len(extra))
            outputs[name] = np.broadcast_to(np.clip(log_t - onset + 0.5, 0, 1), shape).copy()
        else:
            outputs[name] = rng.random(shape)
    return results.to_dataset(sweep, outputs, times, np.full(sweep.n_runs, -1))


def write(where, ds):
    """``ds`` and its grokking times as an output directory."""
    where.mkdir(parents=True, exist_ok=True)
    results.save(ds, where / "results.nc")
    results.save(gs.grokking_time(ds), where / "phase.nc")
    return where


def part(whole, params=None, **axes):
    """The runs of ``whole`` that the sweep of ``axes`` (and fixed ``params``) holds, labelled
    as that sweep: what running it writes, since draws depend only on the seed and shapes."""
    sweep = spec_of(params, **axes)
    ds = whole.sel({k: v for k, v in axes.items()})
    for name, value in (params or {}).items():
        if name in ds.dims:
            ds = ds.sel({name: value}, drop=True)
    ds = ds.transpose(*sweep.axes, ...)
    ds.attrs = whole.attrs | {"spec": sweep.to_toml()}
    return ds


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """One sweep's results, and the directories of sweeps that are parts of it."""
    root = tmp_path_factory.mktemp("sweeps")
    lam, seeds = [0.5, 0.8], [0, 1, 2, 3]
    whole = fake_run(spec_of(lam=lam, seed=seeds, gamma=[0.0, 0.01]))
    low = part(whole, {"gamma": 0.0}, lam=lam, seed=[0, 1])
    return {
        "all": write(root / "all", part(whole, {"gamma": 0.0}, lam=lam, seed=seeds)),
        "low": write(root / "low", low),
        "high": write(root / "high", part(whole, {"gamma": 0.0}, lam=lam, seed=[2, 3])),
        "gamma": write(root / "gamma", part(whole, lam=lam, seed=[0, 1], gamma=[0.01])),
        "overlap": write(root / "overlap", part(whole, lam=[0.5], seed=[1, 2], gamma=[0.01])),
        "lr": write(root / "lr", part(whole, {"gamma": 0.0, "lr": 0.02}, lam=lam, seed=[2, 3])),
        "more_lam": write(
            root / "more_lam",
            low.sel(lam=[0.5])
            .assign_coords(lam=[0.3])
            .assign_attrs(spec=spec_of(lam=[0.3], seed=[0, 1]).to_toml()),
        ),
    }


def test_seed_split_sweeps_combine_to_the_sweep_of_all_seeds(sweeps):
    whole_results = results.load(sweeps["all"] / "results.nc", kind="results")
    whole_phase = results.load(sweeps["all"] / "phase.nc", kind="phase")
    combined = gs.open_sweeps([sweeps["high"], sweeps["low"]])
    assert isinstance(combined, results.Sweeps)
    ds, phase = combined
    assert list(ds["seed"].values) == [0, 1, 2, 3]  # sorted, whatever the order given
    assert ds["train_loss"].dims == whole_results["train_loss"].dims
    assert bool(ds["covered"].all())
    for name in ("train_loss", "test_loss", "train_acc", "test_acc", "diverged", "diverged_at"):
        assert ds[name].dtype == whole_results[name].dtype
        np.testing.assert_allclose(ds[name].values, whole_results[name].values, rtol=1e-9)
    for name in ("t_train", "t_test", "delta_t", "train_censored", "test_censored", "diverged"):
        np.testing.assert_allclose(phase[name].values, whole_phase[name].values, rtol=1e-9)
    # the union's spec describes the grid: it loads and plots like one sweep's
    assert gs.Sweep.from_dict(__import__("tomllib").loads(ds.attrs["spec"])).axes == {
        "lam": [0.5, 0.8],
        "seed": [0, 1, 2, 3],
    }
    results.check_pair(ds, phase)


def test_a_new_axis_range_and_a_parameter_made_an_axis(sweeps):
    ds, phase = gs.open_sweeps([sweeps["low"], sweeps["more_lam"], sweeps["gamma"]])
    assert list(ds["lam"].values) == [0.3, 0.5, 0.8]
    assert list(ds["gamma"].values) == [0.0, 0.01]  # gamma: fixed 0 (default) in the first two
    assert ds["train_loss"].dims[:3] == ("lam", "seed", "gamma")
    covered = ds["covered"]
    assert not bool(covered.sel(lam=0.3, gamma=0.01).any())  # no sweep holds it
    assert bool(covered.sel(lam=0.3, gamma=0.0).all())
    assert np.isnan(ds["train_loss"].sel(lam=0.3, gamma=0.01)).all()
    assert int(ds["diverged_at"].sel(lam=0.3, gamma=0.01, seed=0)) == -1
    low = results.load(sweeps["low"] / "results.nc", kind="results")
    xr.testing.assert_allclose(
        ds["test_loss"].sel(lam=[0.5, 0.8], gamma=0.0, drop=True), low["test_loss"]
    )
    assert "delta_t" in phase and phase["delta_t"].dims[:3] == ("lam", "seed", "gamma")


def test_different_fixed_parameters_are_refused_in_one_line(sweeps):
    with pytest.raises(gs.SpecError) as err:
        gs.open_sweeps([sweeps["low"], sweeps["lr"]])
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"{sweeps['lr']} has lr = 0.02 where {sweeps['low']} has 0.05: sweeps read together must "
        "share everything but their axes"
    )


def test_a_point_held_twice_with_different_values_is_refused(sweeps, tmp_path):
    gs.open_sweeps([sweeps["gamma"], sweeps["overlap"]])  # same runs: they agree
    forged = tmp_path / "forged"
    forged.mkdir()
    ds = results.load(sweeps["overlap"] / "results.nc", kind="results")
    ds["test_loss"] = ds["test_loss"] * 1.5
    results.save(ds, forged / "results.nc")
    (forged / "phase.nc").write_bytes((sweeps["overlap"] / "phase.nc").read_bytes())
    point = r"\{'lam': 0.5, 'seed': 1, 'gamma': 0.01\}"
    expected = f"both hold the point {point} with different test_loss"
    with pytest.raises(gs.SpecError, match=expected) as err:
        gs.open_sweeps([sweeps["gamma"], forged])
    assert "\n" not in str(err.value)


def test_missing_files_and_other_levels_are_refused(sweeps, tmp_path):
    with pytest.raises(gs.SpecError, match="has no results.nc or phase.nc"):
        gs.open_sweeps([sweeps["low"], tmp_path])
    with pytest.raises(gs.SpecError, match="at least one"):
        gs.open_sweeps([])
    other = tmp_path / "other"
    other.mkdir()
    ds = results.load(sweeps["high"] / "results.nc", kind="results")
    results.save(ds, other / "results.nc")
    results.save(gs.grokking_time(ds, level=0.9), other / "phase.nc")
    with pytest.raises(gs.SpecError, match="different levels"):
        gs.open_sweeps([sweeps["low"], other])


@pytest.mark.slow
def test_separately_trained_seed_splits_equal_the_sweep_of_all_seeds(tmp_path):
    """The real thing: three sweeps trained on their own (different chunks and shapes)."""
    lam = [0.5, 0.8]
    whole = gs.run(spec_of(lam=lam, seed=[0, 1, 2, 3]), progress=False)
    dirs = [
        write(tmp_path / name, gs.run(spec_of(lam=lam, seed=seeds), progress=False))
        for name, seeds in (("b", [2, 3]), ("a", [0, 1]))
    ]
    ds, phase = gs.open_sweeps(dirs)
    for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose(ds[name].values, whole[name].values, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(
        phase["delta_t"].values, gs.grokking_time(whole)["delta_t"].values, rtol=1e-9
    )


def test_seeds_that_no_sweep_holds_are_missing_not_censored(sweeps):
    """lam = 0.5 and 0.8 exist for seeds 2 and 3 only, lam = 0.3 for seeds 0 and 1: a seed
    that holds no run at a point is neither censored nor counted, so each point's seed
    statistics are those of its own seeds (numpy on their phase file). Counted as censored,
    seeds 0 and 1 would make every median at lam = 0.5 NaN."""
    ds, phase = gs.open_sweeps([sweeps["high"], sweeps["more_lam"]])
    high = results.load(sweeps["high"] / "phase.nc", kind="phase")
    assert not bool(phase["covered"].sel(lam=[0.5, 0.8], seed=[0, 1]).any())
    for phase_of_union in (phase, gs.grokking_time(ds)):
        censored = phase_of_union["test_censored"]
        assert not bool(censored.sel(lam=[0.5, 0.8], seed=[0, 1]).any())
        reduced = gs.reduce_seeds(phase_of_union)
        for lam in (0.5, 0.8):
            times = high["t_test"].sel(lam=lam).squeeze().values
            assert np.isfinite(times).all()
            np.testing.assert_allclose(
                reduced["t_test_median"].sel(lam=lam).squeeze(), np.median(times)
            )
            np.testing.assert_allclose(reduced["test_censored_fraction"].sel(lam=lam), 0.0)
        # lam = 0.3: its two seeds never reach the level, so both of them are censored
        np.testing.assert_allclose(reduced["test_censored_fraction"].sel(lam=0.3), 1.0)


def test_a_refined_grid_holds_only_the_points_it_computed(sweeps, tmp_path):
    """A refined sweep's points that were not computed (NaN, ``computed`` False) are held by
    no sweep: another sweep's runs there are kept and are the only seeds counted."""
    low = results.load(sweeps["low"] / "results.nc", kind="results")  # seeds 0, 1
    computed = xr.DataArray([True, False], coords={"lam": low["lam"]}, dims="lam")
    refined = low.where(computed).assign(computed=computed)
    refined["diverged"] = low["diverged"] & computed
    refined["diverged_at"] = low["diverged_at"].where(computed, -1)
    refined = write(tmp_path / "refined", refined)
    ds, phase = gs.open_sweeps([refined, sweeps["high"]])  # high: seeds 2, 3
    assert phase["covered"].sel(lam=0.8).values.tolist() == [False, False, True, True]
    assert phase["computed"].values.tolist() == [True, True]  # some seed holds each lam
    high = results.load(sweeps["high"] / "phase.nc", kind="phase")
    reduced = gs.reduce_seeds(phase).sel(lam=0.8)
    np.testing.assert_allclose(
        reduced["t_test_median"].squeeze(), np.median(high["t_test"].sel(lam=0.8).squeeze())
    )
    np.testing.assert_allclose(reduced["test_censored_fraction"].squeeze(), 0.0)
