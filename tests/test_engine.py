"""The engine: batching, padding, buckets, recompiles, common random numbers, optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep import trainer
from groksweep.engine import chunked
from groksweep.plan import plan
from groksweep.tasks import get_task

SMALL = {"d_in": 16, "n_test": 300}
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"]


def sweep(axes, steps=300, log_points=15, eps=(1e-3, 1e-1), **params):
    params = {k: v for k, v in (SMALL | params).items() if k not in axes}
    return gs.Sweep("linear", params=params, axes=axes, steps=steps, log_points=log_points, eps=eps)


def test_one_compile_per_shape_bucket():
    axes = {"d_out": [1, 2, 40], "lam": [0.5, 2.0], "d_in": [8, 16]}
    buckets = plan(get_task("linear"), sweep(axes).runs())
    # d_out 1..2 share a bucket (padding <= 4x); 40 gets its own; each d_in is static.
    assert len(buckets) == 4
    before = trainer.trace_count()
    gs.run(sweep(axes, steps=20, log_points=5, n_test=50), progress=False)
    assert trainer.trace_count() - before == 4


def test_linear_buckets_bound_the_padded_rows_of_an_evaluation():
    # An evaluation computes N_tr + n_test rows, so N_tr is padded within 2x of that sum.
    def bucket_n_train(n_test):
        runs = sweep({"n_train": [100, 400, 1000]}, n_test=n_test).runs()
        return [dict(b.shape)["n_train"] for b in plan(get_task("linear"), runs)]

    assert bucket_n_train(500) == [400, 1000]  # 600, 900 | 1500 rows
    assert bucket_n_train(2000) == [1000]  # 2100 .. 3000 rows
    assert bucket_n_train(100) == [100, 400, 1000]


def test_runs_differing_only_in_optimizer_hyperparameters_share_draws():
    ds = gs.run(sweep({"gamma": [0.0, 0.1], "lr": [0.01, 0.05], "seed": [0, 1]}), progress=False)
    start = ds.isel(time=0)
    for name in METRICS:
        values = start[name].stack(config=["gamma", "lr"])
        assert (values == values.isel(config=0)).all(), name
    assert not np.allclose(start["test_loss"].sel(seed=0), start["test_loss"].sel(seed=1))


def test_results_independent_of_axis_order_and_grid_neighbours():
    forward = gs.run(sweep({"lam": [0.3, 0.7, 1.2], "gamma": [0.0, 0.01]}), progress=False)
    backward = gs.run(sweep({"gamma": [0.01, 0.0], "lam": [1.2, 0.7, 0.3]}), progress=False)
    alone = gs.run(sweep({"seed": [0]}, lam=0.7, gamma=0.01), progress=False)
    for name in METRICS:
        a = forward[name].transpose("lam", "gamma", ...)
        b = backward[name].transpose("lam", "gamma", ...).sel(lam=a.lam, gamma=a.gamma)
        np.testing.assert_array_equal(a.values, b.values)  # same shapes: bit for bit
        np.testing.assert_allclose(
            a.sel(lam=0.7, gamma=0.01).values, alone[name].values, rtol=1e-5, atol=1e-9
        )


def test_results_schema():
    ds = gs.run(sweep({"lam": [0.5, 1.5], "seed": [0, 1, 2]}), progress=False)
    assert list(ds["train_loss"].dims) == ["lam", "seed", "time"]
    assert list(ds["test_acc"].dims) == ["lam", "seed", "eps", "time"]
    assert list(ds.lam.values) == [0.5, 1.5] and list(ds.eps.values) == [1e-3, 1e-1]
    assert ds.time.values[0] == 0 and ds.time.values[-1] == 300 and len(ds.time) == 16
    assert np.issubdtype(ds.time.dtype, np.integer)
    assert gs.Sweep.from_dict(__import__("tomllib").loads(ds.attrs["spec"])) == sweep(
        {"lam": [0.5, 1.5], "seed": [0, 1, 2]}
    )
    assert ds.attrs["jax_version"] == jax.__version__ and ds.attrs["device"]


def test_float64_option_changes_precision():
    low = gs.run(sweep({"seed": [0]}, lam=0.5), progress=False)
    high = gs.run(sweep({"seed": [0]}, lam=0.5, dtype="float64"), progress=False)
    np.testing.assert_allclose(low.test_loss.values, high.test_loss.values, rtol=1e-3)
    assert not np.array_equal(low.test_loss.values, high.test_loss.values)


def numpy_adam(s, grad, steps, lr, gamma, b1, b2, decoupled, eps=1e-8):
    """torch.optim.Adam / AdamW on one weight matrix, in numpy."""
    m, v = np.zeros_like(s), np.zeros_like(s)
    trajectory = [s.copy()]
    for t in range(1, steps + 1):
        g = grad(s)
        if decoupled:
            s = s * (1 - lr * gamma)
        else:
            g = g + gamma * s
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        s = s - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        trajectory.append(s.copy())
    return trajectory


@pytest.mark.parametrize("optimizer", ["gd", "adam", "adamw"])
def test_optimizers_follow_pytorch_conventions(optimizer):
    d_in, d_out, n, lr, gamma = 12, 2, 8, 0.02, 0.3
    spec = sweep(
        {"seed": [4]},
        steps=40,
        log_points=40,
        dtype="float64",
        optimizer=optimizer,
        method="step",
        n_train=n,
        d_out=d_out,
        lr=lr,
        gamma=gamma,
        d_in=d_in,
    )
    ds = gs.run(spec, progress=False)
    with jax.enable_x64(True):
        draws = get_task("linear").sample(
            jax.random.key(4),
            {"d_in": d_in, "n_train": n, "d_out": d_out, "n_test": 300},
            jnp.float64,
        )
    draws = {k: np.asarray(v) for k, v in draws.items()}
    scale = 1 / np.sqrt(2 * d_in * d_out)
    teacher, x = draws["teacher"] * scale, draws["x_train"]
    grad = lambda s: 2 / (n * d_out) * x.T @ (x @ (s - teacher))  # noqa: E731
    s0 = draws["student"] * scale
    if optimizer == "gd":
        trajectory = [s0]
        for _ in range(40):
            trajectory.append(trajectory[-1] - lr * (grad(trajectory[-1]) + gamma * trajectory[-1]))
    else:
        trajectory = numpy_adam(s0, grad, 40, lr, gamma, 0.9, 0.999, optimizer == "adamw")
    expected_norm = [np.linalg.norm(trajectory[t]) for t in ds.time.values]
    expected_loss = [np.mean((x @ (trajectory[t] - teacher)) ** 2) for t in ds.time.values]
    np.testing.assert_allclose(ds.weight_norm.values[0], expected_norm, rtol=1e-10)
    np.testing.assert_allclose(ds.train_loss.values[0], expected_loss, rtol=1e-9)


GRID = {
    "lam": [0.4, 1.6],
    "gamma": [0.0, 0.02],
    "noise": [0.0, 0.2],
    "d_out": [1, 3],
    "seed": [0, 1],
}


@pytest.fixture(scope="module")
def stepped():
    return gs.run(
        sweep(GRID, steps=3000, log_points=20, dtype="float64", method="step"), progress=False
    )


def assert_same_trajectories(a, b, rtol):
    for name in METRICS:
        # Below ~1e-20 a loss is float64 rounding of S = T + D itself, not dynamics.
        scale = np.maximum(np.abs(b[name].values), 1e-20 if "loss" in name else 0)
        err = np.max(np.abs(a[name].values - b[name].values) / np.where(scale > 0, scale, 1))
        assert err < rtol, f"{name}: relative difference {err:.2e}"


def test_spectral_jump_equals_gradient_steps(stepped):
    spectral = gs.run(
        sweep(GRID, steps=3000, log_points=20, dtype="float64", method="spectral"), progress=False
    )
    assert_same_trajectories(spectral, stepped, 1e-6)


def test_shared_data_families_equal_the_per_run_path_whatever_the_chunking(stepped):
    spec = sweep(GRID, steps=3000, log_points=20, dtype="float64", method="step")
    buckets = plan(get_task("linear"), spec.runs())
    assert buckets[0].run_index.shape == (2, 2, 8)  # seeds x N_tr x (gamma, noise, d_out)
    assert plan(get_task("linear"), spec.runs(), share_data=False)[0].run_index.shape[2] == 1
    assert_same_trajectories(gs.run(spec, progress=False, share_data=False), stepped, 1e-12)
    assert_same_trajectories(gs.run(spec, progress=False, chunk_size=3), stepped, 1e-12)


def test_memory_budget_splits_groups_and_refuses_what_cannot_fit():
    spec = sweep(GRID, steps=30, log_points=5)
    whole = gs.run(spec, progress=False)
    task = get_task("linear")
    split, groups_per_chunk, _ = chunked(task, plan(task, spec.runs())[0], 6, 2, 1.5e5, None)
    assert split.run_index.shape == (8, 1, 4) and groups_per_chunk == 1  # was (2, 2, 8)
    small = gs.run(spec, progress=False, memory_budget=1.5e5)
    for name in METRICS:
        np.testing.assert_allclose(small[name].values, whole[name].values, rtol=1e-5, atol=1e-9)
    with pytest.raises(gs.SpecError, match="over the memory budget"):
        gs.run(spec, progress=False, memory_budget=3e4)


def test_divergent_runs_are_flagged_and_isolated():
    # lr = 2 makes gradient descent on this Gram matrix blow up; the other runs must not notice:
    # they equal, bit for bit, the runs of the same batch with a stable lr in its place.
    axes = {"lr": [0.01, 2.0, 0.05], "seed": [0, 1]}
    both = gs.run(sweep(axes, method="step", steps=2000, log_points=20), progress=False)
    stable = gs.run(
        sweep({"lr": [0.01, 0.02, 0.05], "seed": [0, 1]}, method="step", steps=2000, log_points=20),
        progress=False,
    )
    assert both.diverged.sel(lr=2.0).all() and not both.diverged.sel(lr=[0.01, 0.05]).any()
    at = both.diverged_at.sel(lr=2.0)
    assert (at > 0).all() and (both.diverged_at.sel(lr=[0.01, 0.05]) == -1).all()
    loss = both.train_loss.sel(lr=2.0)
    assert loss.where(both.time >= at).isnull().all()  # NaN from the divergence on...
    assert np.isfinite(loss.where(both.time < at, 0.0)).all()  # ...finite before it
    for name in METRICS:
        np.testing.assert_array_equal(
            both[name].sel(lr=[0.01, 0.05]).values, stable[name].sel(lr=[0.01, 0.05]).values
        )
    phase = gs.grokking_time(both)
    assert phase.diverged.sel(lr=2.0).all()
    assert not phase.test_censored.sel(lr=2.0).any() and not phase.train_censored.sel(lr=2.0).any()
