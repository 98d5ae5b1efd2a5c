"""groksweep.theory_grid: the exact theory on a trained sweep's grid, with each run's own
parameters, and the numbers of its agreement with the trained runs.

The expected values are written out here independently: N_tr = round(d_in / lam) by hand,
then direct calls of groksweep.theory; the agreement functions on data whose answer is known.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import groksweep as gs
from groksweep import theory
from groksweep import theory_grid as tg

# lam -> N_tr = round(40 / lam): 40 / 1.5 = 26.7 trains on 27 inputs, an effective lam of 1.48
N_TRAIN = {0.5: 80, 1.5: 27}
GAMMAS = (0.0, 0.01)
EPS = 1e-2


@pytest.fixture(scope="module")
def small():
    sweep = gs.Sweep(
        "linear",
        params={"d_in": 40, "n_test": 500},
        axes={"lam": list(N_TRAIN), "gamma": list(GAMMAS), "seed": [0, 1, 2]},
        steps=2000,
        log_points=30,
        eps=[EPS],
    )
    return gs.run(sweep, progress=False)


# --- the theory on a sweep's grid --------------------------------------------------------------
def test_theory_on_grid_is_the_theory_at_each_runs_effective_lam(small):
    curves, times = tg.theory_on_grid(small, n_times=50)
    assert curves["train_loss"].dims == ("lam", "gamma", "time")
    assert curves["test_acc"].dims == ("lam", "gamma", "eps", "time")
    assert times["delta_t"].dims == ("lam", "gamma", "eps")
    t = curves["time"].values
    assert t[0] == 0 and t[-1] == 2000
    for lam, n_train in N_TRAIN.items():
        for gamma in GAMMAS:
            train, test = theory.losses(t, 40 / n_train, gamma=gamma)
            t_train, t_test = theory.grokking_time(40 / n_train, gamma=gamma, eps=EPS, level=0.95)
            at = curves.sel(lam=lam, gamma=gamma, eps=EPS)
            np.testing.assert_allclose(at["train_loss"], train, rtol=1e-12)
            np.testing.assert_allclose(at["test_loss"], test, rtol=1e-12)
            np.testing.assert_allclose(at["train_acc"], theory.accuracy(train, EPS), rtol=1e-12)
            np.testing.assert_allclose(at["test_acc"], theory.accuracy(test, EPS), rtol=1e-12)
            at = times.sel(lam=lam, gamma=gamma, eps=EPS)
            np.testing.assert_allclose(at["t_train"], t_train, rtol=1e-12)
            np.testing.assert_allclose(at["t_test"], t_test, rtol=1e-12)  # NaN at lam 1.5


def test_the_effective_lam_is_visible_at_this_size():
    """The test above could tell a theory at the nominal lam 1.5 from one at 40 / 27."""
    effective, nominal = theory.losses(2000, [40 / 27, 1.5])[1]
    assert abs(effective / nominal - 1) > 0.01


def test_parameters_come_from_the_runs():
    sweep = gs.Sweep(
        "linear",
        params={"d_in": 24, "d_out": 3, "alpha": 0.5, "noise": 0.1, "lr": 0.02, "n_test": 200},
        axes={"n_train": [30, 60]},
        steps=300,
        log_points=12,
        eps=[1e-2],
    )
    params = tg.grid_parameters(sweep)
    assert params["lam"].dims == ("n_train",)
    np.testing.assert_array_equal(params["lam"], [24 / 30, 24 / 60])
    fixed = {name: float(params[name]) for name in ("lr", "gamma", "d_out", "alpha", "noise")}
    assert fixed == {"lr": 0.02, "gamma": 0.0, "d_out": 3, "alpha": 0.5, "noise": 0.1}

    curves, _ = tg.theory_on_grid(gs.run(sweep, progress=False), n_times=20)
    for n_train in (30, 60):
        train, test = theory.losses(
            curves["time"].values, 24 / n_train, lr=0.02, d_out=3, alpha=0.5, noise=0.1
        )
        at = curves.sel(n_train=n_train, eps=1e-2)
        np.testing.assert_allclose(at["train_loss"], train, rtol=1e-12)
        np.testing.assert_allclose(at["test_acc"], theory.accuracy(test, 1e-2, 3), rtol=1e-12)


def test_lam_follows_every_axis_that_sets_it():
    """N_tr = round(d_in / lam) per run: with d_in an axis, the effective lam varies with it."""
    params = tg.grid_parameters(gs.Sweep("linear", params={"lam": 0.7}, axes={"d_in": [20, 30]}))
    assert params["lam"].dims == ("d_in",)
    np.testing.assert_array_equal(params["lam"], [20 / 29, 30 / 43])
    # and where the ratio comes out the same for every d_in, lam is one number
    params = tg.grid_parameters(gs.Sweep("linear", params={"lam": 0.5}, axes={"d_in": [20, 30]}))
    assert params["lam"].dims == () and float(params["lam"]) == 0.5


@pytest.mark.parametrize(
    "sweep",
    [
        gs.Sweep("mlp_teacher_student"),
        gs.Sweep("linear", params={"optimizer": "adam"}),
        gs.Sweep("linear", axes={"input_spectrum": ["identity", "power_law"]}),
    ],
    ids=["task", "optimizer", "inputs"],
)
def test_sweeps_the_theory_does_not_describe_are_refused(sweep):
    with pytest.raises(ValueError, match="the theory covers"):
        tg.grid_parameters(sweep)


def test_theory_times_labels_its_arguments():
    out = tg.theory_times(lam=[0.3, 0.5], gamma=[0.0, 1e-3, 1e-2], eps=1e-3)
    assert out["delta_t"].dims == ("lam", "gamma")
    t_train, t_test = theory.grokking_time(0.5, gamma=1e-3, eps=1e-3)
    np.testing.assert_allclose(out["delta_t"].sel(lam=0.5, gamma=1e-3), t_test - t_train)
    with pytest.raises(ValueError, match="no parameter 'd_in'"):
        tg.theory_times(lam=0.5, d_in=200)
    with pytest.raises(ValueError, match="needs lam"):
        tg.theory_losses([1.0, 10.0], gamma=0.0)


# --- agreement ---------------------------------------------------------------------------------
def synthetic_phase() -> xr.Dataset:
    """Three seeds at two lam: all grok at lam 0.5; two of three never grok on test at 0.9."""
    t_train = [[100.0, 200.0, 300.0], [1000.0, 1100.0, 1200.0]]
    t_test = [[300.0, 500.0, 700.0], [np.nan, np.nan, 5000.0]]
    dims, coords = ("lam", "seed"), {"lam": [0.5, 0.9], "seed": [0, 1, 2]}
    phase = xr.Dataset({"t_train": (dims, t_train), "t_test": (dims, t_test)}, coords=coords)
    phase = phase.expand_dims(eps=[1e-3], axis=-1)
    phase["delta_t"] = phase["t_test"] - phase["t_train"]
    phase["train_censored"] = phase["t_train"].isnull()
    phase["test_censored"] = phase["t_test"].isnull()
    return phase


def test_grokking_agreement_on_a_known_case():
    phase = synthetic_phase()
    expected = xr.Dataset(
        {
            name: (("lam", "eps"), [[v], [np.nan]])
            for name, v in (("t_train", 250.0), ("t_test", 500.0), ("delta_t", 250.0))
        },
        coords={"lam": [0.5, 0.9], "eps": [1e-3]},
    )
    out = tg.grokking_agreement(phase, expected).sel(eps=1e-3)
    np.testing.assert_allclose(out["t_train"], [200.0, 1100.0])
    np.testing.assert_allclose(out["t_test"], [500.0, np.nan])  # 2 of 3 censored: no median
    np.testing.assert_allclose(out["delta_t"], [300.0, np.nan])
    np.testing.assert_allclose(out["delta_t_theory"], [250.0, np.nan])
    np.testing.assert_allclose(out["delta_t_ratio"], [1.2, np.nan])
    np.testing.assert_allclose(out["test_censored_fraction"], [0.0, 2 / 3])


def test_grokking_agreement_refuses_another_grid():
    other = tg.theory_times(lam=[0.5, 0.8], eps=[1e-3])
    with pytest.raises(ValueError):
        tg.grokking_agreement(synthetic_phase(), other)


def scaled_losses(ds: xr.Dataset, factors: tuple[float, ...]) -> xr.Dataset:
    """``ds`` with the trained losses of seed i replaced by ``factors[i]`` times the theory's,
    computed by hand."""
    out = ds.copy(deep=True)
    t = ds["time"].values
    for lam, n_train in N_TRAIN.items():
        for gamma in GAMMAS:
            for role, loss in zip(("train", "test"), theory.losses(t, 40 / n_train, gamma=gamma)):
                for seed, factor in enumerate(factors):
                    where = {"lam": lam, "gamma": gamma, "seed": seed}
                    out[f"{role}_loss"].loc[where] = factor * loss
    return out


def test_loss_agreement_on_a_known_deviation(small):
    ds = scaled_losses(small, (1.0, 1.0, 1.3))  # seed mean 1.1 times the theory (median: 1.0)
    every_time = tg.loss_agreement(ds, min_modes=0.0, floor=1e-12)
    for role in ("train", "test"):
        np.testing.assert_allclose(every_time[f"{role}_deviation_all"], 0.1, rtol=1e-6)
        np.testing.assert_allclose(every_time[f"{role}_deviation"], 0.1, rtol=1e-6)
        np.testing.assert_array_equal(every_time[f"{role}_self_averaging_until"], 2000)
    never = tg.loss_agreement(ds, min_modes=1e9)
    assert never["test_deviation"].isnull().all()
    np.testing.assert_array_equal(never["test_self_averaging_until"], 0)
    np.testing.assert_allclose(never["test_deviation_all"], 0.1, rtol=1e-6)


def test_loss_agreement_of_the_trained_runs_is_small_early(small):
    """Before the loss has fallen a decade the trained runs sit on the theory (d_in 40: ~20%)."""
    early = small.isel(time=slice(0, 8))
    assert int(early["time"][-1]) < 40
    out = tg.loss_agreement(early, min_modes=0.0)
    assert float(out["test_deviation_all"].max()) < 0.3


def test_loss_agreement_window_follows_the_modes(small):
    """Only steps with at least min_modes modes count: at t = 0 the test loss has d_in modes."""
    ds = scaled_losses(small, (1.0, 1.0, 1.0))
    ds["test_loss"][{"time": -1}] = 1.5 * ds["test_loss"].isel(time=-1)  # the last step off
    ds["test_loss"][{"time": 0}] = 2.0 * ds["test_loss"].isel(time=0)  # step 0 never counts
    out = tg.loss_agreement(ds, min_modes=0.0, floor=1e-12)
    np.testing.assert_allclose(out["test_deviation_all"], 0.5, rtol=1e-6)
    modes_at_end = tg.effective_modes(2000, 0.5, role="test", d_in=40)
    out = tg.loss_agreement(ds, min_modes=modes_at_end * 1.01, floor=1e-12).sel(lam=0.5, gamma=0)
    assert float(out["test_deviation"]) < 1e-6  # the last step is outside the window
    assert 0 < int(out["test_self_averaging_until"]) < 2000


def test_effective_modes_at_initialisation():
    """At t = 0 every mode weighs q (alpha^2 + 1): the test loss is carried by all d_in d_out
    modes; the train loss (q = nu) by d_in d_out E[nu]^2 / E[nu^2] = d_in d_out / (1 + lam)."""
    lam = np.array([0.3, 0.9, 2.0])
    test = tg.effective_modes(0.0, lam, role="test", d_in=100, d_out=2, alpha=0.7)
    train = tg.effective_modes(0.0, lam, role="train", d_in=100, d_out=2, alpha=0.7)
    np.testing.assert_allclose(test, 200.0, rtol=1e-9)
    np.testing.assert_allclose(train, 200.0 / (1 + lam), rtol=1e-9)
    later = tg.effective_modes(np.array([1e2, 1e4]), 0.5, role="test", d_in=100)
    assert later[1] < later[0] < 100  # the loss concentrates on the slowest modes


def test_finite_size_times_limits():
    """d_out = 1: eq. 12 is exact (k = 1) at any d_in; d_out > 1: a finite d_in delays the
    test accuracy, and the correction vanishes as d_in grows."""
    for got, exact in zip(
        tg.finite_size_times(200, lam=0.5, eps=1e-2), theory.grokking_time(0.5, eps=1e-2)
    ):
        assert got == pytest.approx(float(exact), rel=1e-3)
    exact_test = float(theory.grokking_time(0.5, d_out=10)[1])
    assert tg.finite_size_times(200, lam=0.5, d_out=10)[1] > 1.03 * exact_test
    assert tg.finite_size_times(10**9, lam=0.5, d_out=10)[1] == pytest.approx(exact_test, rel=1e-3)


def test_select_matches_floats_and_refuses_values_off_the_grid(small):
    at = tg.select(small["train_loss"], gamma=0.01 * (1 + 1e-12), lam=[1.5, 0.5])
    assert list(at["lam"].values) == [1.5, 0.5] and float(at["gamma"]) == 0.01
    with pytest.raises(ValueError, match="lam=0.7 is not on the grid"):
        tg.select(small, lam=0.7)
