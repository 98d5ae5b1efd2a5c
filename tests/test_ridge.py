"""Stage times of overparameterised ridge regression (groksweep.stage_times): the settling
time on closed-form series, and the predicted scalings of the trained linear task, t ~ 1/gamma
and d t / d ln(alpha^2) = 1 / (-2 ln(1 - lr gamma))."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import groksweep as gs
from groksweep.phase import settling_time


def test_settling_time_of_a_geometric_decay_with_an_early_dip():
    times = np.unique(np.round(np.geomspace(1, 10**5, 400))).astype(float)
    times = np.concatenate([[0.0], times])
    q, amplitude, level = 0.999, 50.0, 1e-3
    distance = amplitude * q**times
    distance[3] = 0.0  # a transient pass through the final value is not settling
    exact = np.log(amplitude / level) / -np.log(q)
    measured = settling_time(distance, times, level)
    assert measured == pytest.approx(exact, rel=2e-3)  # log-time interpolation, 1.5% grid
    assert np.isnan(settling_time(np.full(5, 1.0), np.arange(5.0), level))
    assert settling_time(np.zeros(5), np.arange(5.0), level) == 0.0


def test_unconverged_runs_are_flagged_and_get_no_times():
    time = np.arange(4)
    ds = xr.Dataset({"train_loss": ("time", [1.0, 0.5, 0.2, 0.1]),
                     "test_loss": ("time", [1.0, 1.0, 1.0, 1.0])}, coords={"time": time})
    stages = gs.stage_times(ds, level=1e-3)
    assert not bool(stages["converged"])
    assert np.isnan(float(stages["t_fit"]))


@pytest.fixture(scope="module")
def ridge():
    sweep = gs.Sweep("linear", params={"d_in": 40, "lam": 2.0, "lr": 0.1, "n_test": 400,
                     "dtype": "float64"},
                     axes={"gamma": [0.01, 0.03], "alpha": [10.0, 30.0, 100.0], "seed": [0, 1]},
                     steps=10**6, log_points=300, eps=[1e-3])
    return gs.stage_times(gs.run(sweep, progress=False), level=1e-3)


def test_generalisation_time_scales_as_one_over_gamma_and_log_alpha_squared(ridge):
    assert bool(ridge["converged"].all())
    t = ridge["t_generalise"]
    # 1/gamma: tripling gamma divides t_generalise by three (the excess ~ (1 - lr gamma)^(2t)).
    ratio = t.sel(gamma=0.01) / t.sel(gamma=0.03)
    expected = np.log1p(-0.1 * 0.03) / np.log1p(-0.1 * 0.01)
    np.testing.assert_allclose(ratio, expected, rtol=0.02)
    # ln(alpha^2): equal steps in ln(alpha^2) add 1/(-2 ln(1 - lr gamma)) per unit.
    for gamma in (0.01, 0.03):
        slope = (t.sel(gamma=gamma, alpha=100.0) - t.sel(gamma=gamma, alpha=10.0)) / np.log(100.0)
        np.testing.assert_allclose(slope, 1 / (-2 * np.log1p(-0.1 * gamma)), rtol=0.02)
    # Overfitting comes first: a plateau separates the stages.
    assert bool((ridge["plateau"] > 0).all())
