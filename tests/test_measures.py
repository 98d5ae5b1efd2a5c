"""Progress measures (groksweep.measures) through a sweep, against numpy: the relative
parameter change from the numpy MLP's own gradient steps, and the NTK alignment from a
finite-difference Jacobian (MLP) and from the linear model's closed-form kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mlp import REF_BASE, NumpyMLP, _draws

import groksweep as gs
from groksweep.params import SpecError

CASE = REF_BASE | {"activation": "tanh", "init": "levi", "predictor": "centred", "depth": 1,
                   "gamma": 0.0, "d_out": 2, "seed": 1}
STEPS, NTK_POINTS = 3, 5


def _numpy_ntk_alignment(ref: NumpyMLP, n: int, delta: float = 1e-6) -> float:
    """Kernel-target alignment of J J^T, J by central differences of the centred predictor on
    the first n test inputs (independent of autodiff)."""
    x, f0 = ref.x_test[:n], ref.f0_test[:n] if np.ndim(ref.f0_test) else 0.0

    def outputs(weights):
        return (ref.p["alpha"] * (ref.forward(weights, x)[0] - f0)).ravel()

    columns = []
    for layer, w in enumerate(ref.w):
        for index in np.ndindex(w.shape):
            up = [v.copy() for v in ref.w]
            down = [v.copy() for v in ref.w]
            up[layer][index] += delta
            down[layer][index] -= delta
            columns.append((outputs(up) - outputs(down)) / (2 * delta))
    jacobian = np.stack(columns, axis=1)
    kernel = jacobian @ jacobian.T
    y = ref.y_test[:n].ravel()
    return y @ kernel @ y / (np.linalg.norm(kernel) * y @ y)


@pytest.fixture(scope="module")
def mlp_run():
    params = {k: v for k, v in CASE.items() if k != "seed"}
    sweep = gs.Sweep("mlp_teacher_student", params=params | {"dtype": "float64",
                     "ntk_points": NTK_POINTS}, axes={"seed": [CASE["seed"]]}, steps=STEPS,
                     log_points=STEPS, measures=["param_change", "ntk_alignment"])
    return gs.run(sweep, progress=False).isel(seed=0)


def test_param_change_and_ntk_alignment_equal_numpy(mlp_run):
    ref = NumpyMLP(_draws(CASE["seed"], CASE), CASE)
    w0 = [w.copy() for w in ref.w]
    for t in range(STEPS + 1):
        change = np.sqrt(sum(np.sum((w - v) ** 2) for w, v in zip(ref.w, w0)))
        change /= np.sqrt(sum(np.sum(v**2) for v in w0))
        measured = mlp_run.sel(time=t)
        np.testing.assert_allclose(float(measured.param_change), change, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(float(measured.ntk_alignment),
                                   _numpy_ntk_alignment(ref, NTK_POINTS), rtol=1e-6)
        ref.step()
    assert float(mlp_run.param_change.isel(time=-1)) > 0  # the steps moved the weights


def test_linear_ntk_alignment_is_the_closed_form_kernel_alignment():
    """For S^T x the tangent kernel is (X X^T) kron I and constant in time; y = X T."""
    sweep = gs.Sweep("linear", params={"d_in": 6, "n_test": 40, "d_out": 2, "lr": 0.1,
                     "dtype": "float64", "ntk_points": 7}, axes={"seed": [3]}, steps=20,
                     log_points=4, measures=["ntk_alignment", "weight_norm"])
    ds = gs.run(sweep, progress=False).isel(seed=0)
    task = sweep.task_def
    with jax.enable_x64(True):
        shape = {"d_in": 6, "n_train": 12, "d_out": 2, "n_test": 40}
        d = jax.jit(lambda k: task.sample(k, shape, jnp.float64))(jax.random.key(3))
    x = np.asarray(d["x_test"])[:7]
    teacher = np.asarray(d["teacher"]) / np.sqrt(2.0 * 6 * 2)
    kernel = np.kron(x @ x.T, np.eye(2))
    y = (x @ teacher).ravel()
    expected = y @ kernel @ y / (np.linalg.norm(kernel) * y @ y)
    np.testing.assert_allclose(ds.ntk_alignment.values, expected, rtol=1e-10)
    # weight_norm is one of the linear task's own metrics: naming it records it once.
    assert list(ds.data_vars).count("weight_norm") == 1


def test_unknown_and_duplicate_measures_are_refused():
    with pytest.raises(SpecError, match="did you mean 'param_change'"):
        gs.Sweep("linear", measures=["param_chnge"])
    with pytest.raises(SpecError, match="duplicate"):
        gs.Sweep("linear", measures=["param_change", "param_change"])
    with pytest.raises(SpecError, match="list of names"):
        gs.Sweep("linear", measures="param_change")
