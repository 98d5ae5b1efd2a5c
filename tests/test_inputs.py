"""Correlated inputs (input_spectrum = "power_law"): the documented transform of the seed's
standard-normal draws, and trained trajectories of the linear and MLP tasks against numpy
references fed the same correlated inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from linear_reference import ExactLinearGD
from test_mlp import NumpyMLP

import groksweep as gs
from groksweep.tasks import get_task

D_IN, N_TRAIN, N_TEST, DECAY = 12, 20, 300, 1.5


def _numpy_spectrum(decay: float) -> np.ndarray:
    eigvals = np.arange(1, D_IN + 1, dtype=float) ** -decay
    return eigvals / eigvals.mean()


def _draws(task_name: str, shape: dict, seed: int) -> dict[str, np.ndarray]:
    task = get_task(task_name)
    shape = shape | {"input_spectrum": "power_law", "method": "step"}
    with jax.enable_x64(True):
        d = jax.jit(lambda k: task.sample(k, shape, jnp.float64))(jax.random.key(seed))
    return {k: np.asarray(v) for k, v in d.items()}


def _correlate(d: dict, decay: float) -> dict:
    """x = z diag(sqrt(eigvals)) R^T, in numpy."""
    mix = np.sqrt(_numpy_spectrum(decay))[:, None] * d["input_rotation"].T
    return d | {"x_train": d["x_train"] @ mix, "x_test": d["x_test"] @ mix}


def test_rotation_is_orthogonal_and_the_covariance_has_the_power_law_spectrum():
    shape = {"d_in": D_IN, "n_train": N_TRAIN, "d_out": 1, "n_test": 20_000}
    d = _draws("linear", shape, seed=4)
    rotation = d["input_rotation"]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(D_IN), atol=1e-12)
    x = _correlate(d, DECAY)["x_test"]
    sample = np.sort(np.linalg.eigvalsh(x.T @ x / len(x)))[::-1]
    # 20 000 samples: eigenvalues within a few percent (sampling error ~ sqrt(2/20000) ~ 1%).
    np.testing.assert_allclose(sample, _numpy_spectrum(DECAY), rtol=0.05)
    # The eigenvectors are the rotation's columns.
    top = rotation[:, 0]
    assert abs(top @ (x.T @ x / len(x)) @ top) > 0.95 * sample[0]


@pytest.mark.parametrize("method", ["step", "spectral"])
def test_linear_trajectory_equals_exact_gd_on_correlated_inputs(method):
    params = {"d_in": D_IN, "n_train": N_TRAIN, "n_test": N_TEST, "lr": 0.05, "gamma": 0.01,
              "input_spectrum": "power_law", "dtype": "float64", "method": method}
    sweep = gs.Sweep("linear", params=params, axes={"decay": [0.0, DECAY], "seed": [2]},
                     steps=300, log_points=8, eps=[1e-2])
    ds = gs.run(sweep, progress=False)
    d = _draws("linear", {"d_in": D_IN, "n_train": N_TRAIN, "d_out": 1, "n_test": N_TEST}, 2)
    scale = 1 / np.sqrt(2.0 * D_IN)
    for decay in (0.0, DECAY):
        c = _correlate(d, decay)
        ref = ExactLinearGD(c["x_train"], d["teacher"] * scale, d["student"] * scale, lr=0.05,
                            gamma=0.01, x_test=c["x_test"])
        exact = ref.metrics(ds.time.values, [1e-2])
        run = ds.sel(decay=decay, seed=2)
        for name in ("train_loss", "test_loss"):
            np.testing.assert_allclose(run[name].values, exact[name], rtol=1e-9, err_msg=name)


def test_mlp_gradient_step_equals_numpy_on_correlated_inputs():
    p = {"d_in": D_IN, "d_h": 16, "depth": 1, "n_test": 100, "n_train": N_TRAIN, "d_out": 1,
         "activation": "tanh", "init": "levi", "predictor": "centred", "lr": 0.5, "gamma": 0.0,
         "alpha": 1.0, "init_scale": 1.0, "noise": 0.0}
    sweep = gs.Sweep("mlp_teacher_student",
                     params=p | {"dtype": "float64", "input_spectrum": "power_law",
                                 "decay": DECAY},
                     axes={"seed": [5]}, steps=2, log_points=2, eps=[1e-2])
    ds = gs.run(sweep, progress=False).isel(seed=0)
    shape = {k: p[k] for k in ("d_in", "d_h", "depth", "n_test", "n_train", "d_out")}
    ref = NumpyMLP(_correlate(_draws("mlp_teacher_student", shape, 5), DECAY), p)
    for t in (0, 1, 2):
        exact = ref.metrics([1e-2])
        for name in ("train_loss", "test_loss"):
            np.testing.assert_allclose(float(ds[name].sel(time=t)), exact[name], rtol=1e-9)
        ref.step()
