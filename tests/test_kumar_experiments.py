"""Kumar et al.'s alignment experiments on the committee machine (groksweep.tasks.committee):
eigenvector labels (§6.1, Fig. 5, App. 17) and initial weights moved towards the analytic
solution (App. 8.3.3, Fig. 10).

The references share nothing with the task but its random draws (``task.sample``): the kernel
is J J^T with the Jacobian of the predictor written out neuron by neuron, its eigenvectors come
from numpy, and the analytic solution is checked by evaluating the network on fresh inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.tasks import get_task

TASK = get_task("committee")
SHAPE = {"d_in": 5, "width": 8, "n_train": 12, "n_test": 9}
HP = {"alpha": 1.7, "eps_align": 0.6, "sigma": 0.9, "align": 0.0}


def _draws(seed, shape):
    return _draws_of_shape(seed, tuple(shape.items()))


@functools.cache
def _draws_of_shape(seed, shape_items):
    """The float64 draws of one seed, as numpy arrays."""
    shape = dict(shape_items)
    with jax.enable_x64(True):
        d = jax.jit(lambda key: TASK.sample(key, shape, jnp.float64))(jax.random.key(seed))
        return {k: np.asarray(v) for k, v in d.items()}


@functools.cache
def _setup_program(shape_items):
    """The task's own share and setup for one run of this shape, compiled once (hp traced)."""
    bound = TASK.bind(dict(shape_items) | {"labels": "eigenvector"})

    def setup(draws, hp):
        data = draws | bound.share(draws, hp, bound.shape)
        return bound.setup(data, hp, bound.shape)

    return jax.jit(setup)


def _setup(seed, shape, hp, n_train):
    """The task's initial weights and run data for one run (float64), as numpy arrays."""
    with jax.enable_x64(True):
        hp = {k: jnp.asarray(v, jnp.float64) for k, v in hp.items()}
        hp |= {"j": jnp.int32(hp.pop("j")), "n_train": jnp.int32(n_train)}
        draws = {k: jnp.asarray(v) for k, v in _draws(seed, shape).items()}
        model, run = _setup_program(tuple(shape.items()))(draws, hp)
        return np.asarray(model), {k: np.asarray(v) for k, v in run.items()}


def numpy_kernel(w0, x, alpha, eps):
    """J J^T with J[mu, (i, d)] = (alpha / N) phi'(w_i . x_mu) x_mu,d, phi'(h) = 1 + eps h."""
    n_neurons = w0.shape[0]
    jac = np.stack(
        [alpha / n_neurons * (1 + eps * (x @ wi))[:, None] * x for wi in w0], axis=1
    ).reshape(len(x), -1)
    return jac @ jac.T


def numpy_eigenvector(kernel, j):
    """The j-th eigenvector by descending eigenvalue, of unit norm, largest-magnitude entry
    positive."""
    values, vectors = np.linalg.eigh(kernel)
    order = np.argsort(values)[::-1]
    v = vectors[:, order[j - 1]]
    return v * np.sign(v[np.argmax(np.abs(v))])


@pytest.mark.parametrize("j", [1, 3, 7, 18])
def test_eigenvector_labels_are_the_initial_kernels_eigenvectors(j):
    seed, n_train = 2, 10  # the bucket is padded to 12 training rows
    w0, run = _setup(seed, SHAPE, HP | {"j": j}, n_train)
    d = _draws(seed, SHAPE)
    x = np.concatenate([d["x_train"][:n_train], d["x_test"]])
    np.testing.assert_allclose(w0, HP["sigma"] * d["w"], rtol=1e-14)
    kernel = numpy_kernel(w0, x, HP["alpha"], HP["eps_align"])
    values = np.sort(np.linalg.eigvalsh(kernel))[::-1]
    gaps = np.abs(values[j - 1] - np.delete(values, j - 1))
    assert gaps.min() > 1e-6 * values[0]  # a simple eigenvalue: its eigenvector is unique
    expected = numpy_eigenvector(kernel, j)
    np.testing.assert_allclose(run["y_train"][:n_train], expected[:n_train], atol=1e-9)
    np.testing.assert_allclose(run["y_test"], expected[n_train:], atol=1e-9)
    assert np.sum(run["y_train"][n_train:] ** 2) < 1e-20  # padded rows: not in the eigenvector
    # The padded rows are outside the kernel: the labels are the unpadded run's.
    _, unpadded = _setup(seed, SHAPE | {"n_train": n_train}, HP | {"j": j}, n_train)
    np.testing.assert_allclose(run["y_test"], unpadded["y_test"], atol=1e-9)


def numpy_committee(w, x, eps):
    return np.mean([x @ wi + 0.5 * eps * (x @ wi) ** 2 for wi in w], axis=0)


@pytest.mark.parametrize("width", [8, 7])
def test_the_analytic_solution_fits_the_target_everywhere_and_align_adds_it(width):
    """alpha g(W*, x) = (beta* . x)^2 / 2 on fresh inputs (eq. 6's minimiser: wbar = 0,
    M = beta* beta*^T / (alpha eps)), and W_0 = sigma V + align W*."""
    shape = SHAPE | {"width": width}
    hp = HP | {"align": 0.3, "j": 1}
    w0, run = _setup(0, shape, hp, shape["n_train"])
    d = _draws(0, shape)
    solution = (w0 - hp["sigma"] * d["w"]) / hp["align"]
    beta = d["beta"]
    np.testing.assert_allclose(solution.mean(0), 0, atol=1e-13)
    np.testing.assert_allclose(
        solution.T @ solution / width,
        np.outer(beta, beta) / (hp["alpha"] * hp["eps_align"]),
        rtol=1e-12,
    )
    x = np.random.default_rng(1).normal(size=(50, shape["d_in"])) / np.sqrt(shape["d_in"])
    np.testing.assert_allclose(
        hp["alpha"] * numpy_committee(solution, x, hp["eps_align"]),
        0.5 * (x @ beta) ** 2,
        rtol=1e-11,
    )
    # The centred predictor starts at 0 from the moved initial weights.
    np.testing.assert_allclose(run["g0_test"], numpy_committee(w0, d["x_test"], hp["eps_align"]))


def test_a_sweep_starts_at_the_eigenvector_labels_mean_square():
    """Through the engine: at t = 0 the centred predictor is 0, so the train and test losses
    are the mean squares of the numpy eigenvector's two parts; every j trains."""
    js, n_train = [1, 4], 12
    spec = gs.Sweep(
        "committee",
        params=SHAPE | HP | {"labels": "eigenvector", "dtype": "float64", "lr": 5.0},
        axes={"j": js},
        steps=20,
        log_points=4,
    )
    ds = gs.run(spec, progress=False).isel(seed=0)
    d = _draws(0, SHAPE)
    x = np.concatenate([d["x_train"], d["x_test"]])
    kernel = numpy_kernel(HP["sigma"] * d["w"], x, HP["alpha"], HP["eps_align"])
    for j in js:
        y = numpy_eigenvector(kernel, j)
        run = ds.sel(j=j)
        np.testing.assert_allclose(run.train_loss[0], np.mean(y[:n_train] ** 2), rtol=1e-10)
        np.testing.assert_allclose(run.test_loss[0], np.mean(y[n_train:] ** 2), rtol=1e-10)
        assert run.train_loss[-1] < run.train_loss[0]
        assert np.isnan(run.linear_power[0])  # eq. 6 describes the quadratic target only


def test_bad_eigenvector_index_and_alignment_are_one_line_errors():
    with pytest.raises(gs.SpecError, match="j=30 exceeds the 21 train and test inputs"):
        gs.Sweep("committee", params=SHAPE | {"labels": "eigenvector", "j": 30}).runs()
    with pytest.raises(gs.SpecError, match="align > 0 needs width >= 2 and eps_align > 0"):
        gs.Sweep("committee", params=SHAPE | {"align": 0.1, "eps_align": 0.0}).runs()
