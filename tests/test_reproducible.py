"""``reproducible=True``: every run trained alone at its own shape, so that its result is bitwise
the same whatever else the sweep holds, in whatever order and chunk size. The default batched
mode agrees with it to float32 rounding (docs/RELIABILITY.md)."""

import numpy as np
import pytest

import groksweep as gs

AXES = {"lam": [0.5, 1.0], "gamma": [0.0, 0.01], "seed": [0, 1]}  # lam: two shapes
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"]


def sweep(axes=AXES, **params):
    params = {"d_in": 16, "n_test": 300, "lr": 0.05, "d_out": 2} | params
    return gs.Sweep("linear", params=params, axes=axes, steps=400, log_points=15, eps=[1e-3, 0.1])


@pytest.mark.parametrize("method", ["step", "spectral"])
def test_each_run_is_bitwise_the_run_alone_and_independent_of_axis_order(method):
    grid = gs.run(sweep(method=method), progress=False, reproducible=True)
    backward = {name: values[::-1] for name, values in reversed(AXES.items())}
    reordered = gs.run(sweep(backward, method=method), progress=False, reproducible=True)
    for name in METRICS + ["diverged_at"]:
        np.testing.assert_array_equal(
            reordered[name].transpose(*grid[name].dims).sel(grid[name].coords).values,
            grid[name].values,
            err_msg=name,
        )
    for point in [
        dict(lam=0.5, gamma=0.01, seed=1),
        dict(lam=1.0, gamma=0.0, seed=0),
    ]:
        fixed = {k: v for k, v in point.items() if k != "seed"}
        alone = gs.run(
            sweep({"seed": [point["seed"]]}, method=method, **fixed),
            progress=False,
            reproducible=True,
        )
        for name in METRICS:
            np.testing.assert_array_equal(
                grid[name].sel(point).values, alone[name].isel(seed=0).values, err_msg=name
            )


def test_batched_runs_agree_with_reproducible_ones_to_float32_rounding():
    batched = gs.run(sweep(method="step"), progress=False)
    alone = gs.run(sweep(method="step"), progress=False, reproducible=True)
    for name in METRICS:
        np.testing.assert_allclose(batched[name].values, alone[name].values, rtol=2e-5, atol=1e-9)


def test_chunk_sizes_and_memory_budgets_do_not_change_reproducible_runs():
    reference = gs.run(sweep(), progress=False, reproducible=True)
    for options in [dict(chunk_size=1), dict(chunk_size=3), dict(memory_budget=1e6)]:
        again = gs.run(sweep(), progress=False, reproducible=True, **options)
        for name in METRICS:
            np.testing.assert_array_equal(again[name].values, reference[name].values, err_msg=name)
