"""Grokking times from trajectories: interpolation, censoring and the reduction over seeds,
checked on synthetic trajectories with known crossings."""

import numpy as np
import pytest
import xarray as xr

from groksweep import grokking_time, reduce_seeds

TIMES = np.array([0, 1, 10, 100, 1000])


def dataset(train_acc, test_acc, train_loss=None, test_loss=None):
    """A results-shaped Dataset over (seed, eps, time) from (seed, time) accuracy rows."""
    acc = lambda rows: (("seed", "eps", "time"), np.asarray(rows, float)[:, None, :])  # noqa: E731
    loss = lambda rows: (("seed", "time"), np.asarray(rows, float))  # noqa: E731
    n = len(train_acc)
    data = {"train_acc": acc(train_acc), "test_acc": acc(test_acc)}
    data["train_loss"] = loss(train_loss if train_loss is not None else np.ones((n, len(TIMES))))
    data["test_loss"] = loss(test_loss if test_loss is not None else np.ones((n, len(TIMES))))
    return xr.Dataset(data, coords={"seed": np.arange(n), "eps": [1e-3], "time": TIMES})


def test_crossing_is_interpolated_linearly_in_log_time():
    # Train crosses 0.95 halfway between t=10 and t=100 in accuracy: log-midpoint sqrt(1000).
    ds = dataset([[0, 0, 0.9, 1.0, 1.0]], [[0, 0, 0, 0.85, 0.97]])
    phase = grokking_time(ds, level=0.95)
    t_train = float(phase.t_train.squeeze())
    t_test = float(phase.t_test.squeeze())
    assert t_train == pytest.approx(10**1.5)
    assert t_test == pytest.approx(10 ** (2 + (0.95 - 0.85) / (0.97 - 0.85)))
    assert float(phase.delta_t.squeeze()) == pytest.approx(t_test - t_train)
    assert list(phase.t_train.dims) == ["seed", "eps"]


def test_first_segment_is_linear_in_time_and_level_met_at_start_is_zero():
    ds = dataset([[0.5, 1.0, 1.0, 1.0, 1.0]], [[0.96, 0.97, 1, 1, 1]])
    phase = grokking_time(ds, level=0.95)
    assert float(phase.t_train.squeeze()) == pytest.approx(0.9)
    assert float(phase.t_test.squeeze()) == 0.0


def test_never_reached_is_censored_not_last_step():
    ds = dataset([[0, 0.5, 1, 1, 1]], [[0, 0.1, 0.5, 0.9, 0.94]])
    phase = grokking_time(ds, level=0.95)
    assert bool(phase.test_censored.squeeze()) and not bool(phase.train_censored.squeeze())
    assert np.isnan(phase.t_test).all() and np.isnan(phase.delta_t).all()


def test_first_crossing_wins_over_later_ones():
    ds = dataset([[0, 1.0, 0.5, 1.0, 1.0]], [[0, 0, 0, 1, 1]])
    assert float(grokking_time(ds).t_train.squeeze()) == pytest.approx(0.95)


def test_grokking_on_loss_uses_fraction_of_initial_loss():
    loss = [[2.0, 2.0, 0.2, 0.002, 0.0002]]
    ds = dataset([[0] * 5], [[0] * 5], train_loss=loss, test_loss=[[1, 1, 1, 0.5, 0.5]])
    phase = grokking_time(ds, on="loss", loss_level=0.01)  # below 0.02: between t=10 and t=100
    expected = 10 ** (1 + (-0.01 + 0.1) / (-0.001 + 0.1))
    assert float(phase.t_train.squeeze()) == pytest.approx(expected)
    assert bool(phase.test_censored.squeeze())
    assert "eps" not in phase.t_train.dims


def test_reduce_seeds_treats_censored_runs_as_later_than_all():
    train = [[0, 1, 1, 1, 1]] * 4
    ok = [0, 0, 0.95, 1, 1]  # t_test = 10 exactly
    late = [0, 0, 0, 0.95, 1]  # t_test = 100
    never = [0, 0, 0, 0, 0]
    phase = grokking_time(dataset(train, [ok, late, never, never]))
    reduced = reduce_seeds(phase)
    assert float(reduced.test_censored_fraction.squeeze()) == 0.5
    assert float(reduced.t_test_q25.squeeze()) == pytest.approx(10 + 0.75 * 90)
    assert np.isnan(reduced.t_test_median).all()  # half censored: the median is not known
    phase3 = grokking_time(dataset(train[:3], [ok, late, never]))
    assert float(reduce_seeds(phase3).t_test_median.squeeze()) == pytest.approx(100)


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match="level"):
        grokking_time(dataset([[0] * 5], [[0] * 5]), level=1.5)
