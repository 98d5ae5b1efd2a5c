"""Step counts beyond int32, divergence of any loss, and compiled programs keyed by task identity.

Evaluation steps are int64 on the host; the spectral program receives them in the run's float
dtype (exact to 2**53 in float64), the step program as int32 behind a guard. The reference for
the long spectral runs is the numpy closed form of tests/linear_reference.py, fed the engine's
draws.
"""

from __future__ import annotations

import importlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from linear_reference import ExactLinearGD

import groksweep as gs
import groksweep.tasks
from groksweep import trainer
from groksweep.plan import plan
from groksweep.tasks import get_task
from groksweep.tasks.linear import Linear, geometric_powers

TASK = get_task("linear")

# --- 1. spectral runs past 2**31 steps, float64, against the numpy closed form ------------------
D_IN, N_TEST, D_OUT = 8, 50, 2
# N_tr > d_in: for lam > 1 the null directions of Sigma carry rounding-level eigenvalues (~1e-17),
# whose effect on the model grows like steps * lr * 1e-17 in any float64 computation, the
# reference's included (1e-5 relative at 1e12 steps), and the train loss falls to rounding noise.
AXES = {
    "lam": [0.5, 0.8],
    "gamma": [0.0, 1e-3],
    # lr = 1e-9 moves its runs around 1e9 steps (and, with gamma, around 1e12): the counts
    # past 2**31 land inside the dynamics, not only on the fixed point.
    "lr": [0.05, 1e-9],
    "seed": [0, 3],
}
NOISE = 0.1
LONG_STEPS = [2**31 - 1, 2**31, 2**31 + 1, 10**12]
LOG_POINTS = 7


def engine_draws(seeds, n_train):
    """The engine's float64 draws of ``seeds`` (leading axis), as numpy."""
    shape = {"d_in": D_IN, "n_train": n_train, "d_out": D_OUT, "n_test": N_TEST}
    with jax.enable_x64(True):
        sample = jax.jit(jax.vmap(lambda s: TASK.sample(jax.random.key(s), shape, jnp.float64)))
        out = sample(jnp.asarray(seeds, dtype=jnp.uint32))
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def long_sweep(steps, method="spectral"):
    params = {"d_in": D_IN, "n_test": N_TEST, "d_out": D_OUT, "noise": NOISE, "dtype": "float64"}
    return gs.Sweep(
        "linear",
        params=params | {"method": method},
        axes=AXES,
        steps=steps,
        log_points=LOG_POINTS,
        eps=[1e-3],
    )


@pytest.mark.parametrize("steps", LONG_STEPS)
def test_spectral_losses_past_int32_equal_the_numpy_closed_form(steps):
    ds = gs.run(long_sweep(steps), progress=False)
    times = ds.time.values
    # Labels: the exact int64 schedule, ending on the exact step count.
    assert times.dtype == np.int64 and times[-1] == steps
    np.testing.assert_array_equal(times, long_sweep(steps).times())
    assert np.all(np.diff(times) > 0)
    assert not ds.diverged.any() and (ds.diverged_at == -1).all()

    n_max = max(round(D_IN / lam) for lam in AXES["lam"])
    d = engine_draws(AXES["seed"], n_max)
    scale = 1.0 / np.sqrt(2.0 * D_IN * D_OUT)
    worst = 0.0
    for lam in AXES["lam"]:
        n_train = round(D_IN / lam)
        for gamma in AXES["gamma"]:
            for lr in AXES["lr"]:
                for i, seed in enumerate(AXES["seed"]):
                    exact = ExactLinearGD(
                        x_train=d["x_train"][i, :n_train],
                        teacher=d["teacher"][i] * scale,
                        student0=d["student"][i] * scale,
                        lr=lr,
                        gamma=gamma,
                        xi=NOISE * d["label_noise"][i, :n_train],
                        x_test=d["x_test"][i],
                    ).metrics(times, [1e-3])
                    run = ds.sel(lam=lam, gamma=gamma, lr=lr, seed=seed)
                    for name in ("train_loss", "test_loss"):
                        got = run[name].values
                        err = np.max(np.abs(got - exact[name]) / np.abs(exact[name]))
                        assert err < 1e-8, f"{name} lam={lam} gamma={gamma} lr={lr}: {err:.2e}"
                        worst = max(worst, err)
    print(f"steps={steps}: max relative loss error {worst:.2e}")


def test_geometric_powers_take_float_counts_past_int32_with_the_parity_sign():
    """(1 - q)**n for oscillating q in (1, 2) needs the sign (-1)**n; against longdouble."""
    q = np.array([1e-12, 0.3, 1.0, 1.5, 2.0 - 1e-12, 2.0])
    n = np.array([0, 1, 2, 3, 2**31 - 1, 2**31, 2**31 + 1, 10**12, 10**12 + 1], dtype=np.float64)
    with jax.enable_x64(True):
        decay, total = map(np.asarray, geometric_powers(jnp.asarray(q)[:, None], jnp.asarray(n)))
    # In longdouble, from exact |1 - q| where rounding 1 - q would cost n * 5e-20 relative:
    # log1p(-q) below 1, q - 1 (exact in float64) above.
    ql, nl = q.astype(np.longdouble)[:, None], n.astype(np.longdouble)
    parity = np.where(nl % 2 == 1, -1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(ql < 1, np.exp(nl * np.log1p(-ql)), parity * np.power(ql - 1, nl))
        sums = (1 - expected) / ql
    np.testing.assert_allclose(decay, expected.astype(np.float64), rtol=1e-12, atol=0)
    assert np.all(np.sign(decay[q > 1]) == np.sign(expected[q > 1]))
    assert decay[-2, -1] < 0 < decay[-2, -2]  # q = 2 - 1e-12 still near 1 in size at 1e12 steps
    # 1 - decay cancels for q near 0; the engine computes it as -expm1, the error is this one's.
    np.testing.assert_allclose(total, sums.astype(np.float64), rtol=1e-6, atol=0)


def test_step_method_refuses_counts_beyond_int32():
    """A loop of gradient steps gets int32 steps; the guard refuses what would wrap (the spec
    refuses such sweeps first)."""
    spec = long_sweep(2**31 - 1, method="step")
    bucket = plan(TASK, spec.runs())[0]
    for steps in LONG_STEPS[1:]:
        with pytest.raises(ValueError, match="evaluation steps"):
            trainer.train(TASK, bucket, np.array([0, 1, steps]), np.array([1e-3]))


@pytest.mark.parametrize("method, steps", [("step", 300), ("spectral", 10**12)])
def test_progress_reports_every_step_exactly(method, steps):
    spec = long_sweep(steps, method=method)
    bucket = plan(TASK, spec.runs())[0]
    reported = []
    trainer.train(TASK, bucket, spec.times(), np.array([1e-3]), reported.append, block=2)
    assert all(type(n) is int for n in reported) and sum(reported) == steps


# --- 2. a non-finite test loss flags the run -----------------------------------------------------
class NaNTestLossLinear(Linear):
    """Linear whose test loss is NaN for runs with alpha > 1 once their train loss falls below
    ``CUTOFF``; the train loss and the weights stay finite."""

    name = "linear_nan_test_loss"
    CUTOFF = 0.0

    def evaluate(self, model, data, hp, eps):
        metrics = super().evaluate(model, data, hp, eps)
        gone = (metrics["train_loss"] < self.CUTOFF) & (hp["alpha"] > 1)
        return metrics | {"test_loss": jnp.where(gone, jnp.nan, metrics["test_loss"])}


def test_non_finite_test_loss_alone_flags_the_run(monkeypatch):
    params = {"d_in": D_IN, "n_test": N_TEST, "dtype": "float64", "lr": 0.05}
    spec = {"params": params, "axes": {"alpha": [1.0, 2.0]}, "steps": 1000, "log_points": 10}
    clean = gs.run(gs.Sweep("linear", **spec), progress=False).sel(seed=0)
    k = 5  # the alpha = 2 run's test loss becomes NaN at log point k
    train = clean.train_loss.sel(alpha=2.0).values
    monkeypatch.setattr(NaNTestLossLinear, "CUTOFF", float(np.sqrt(train[k - 1] * train[k])))
    monkeypatch.setitem(groksweep.tasks.TASKS, NaNTestLossLinear.name, NaNTestLossLinear())
    ds = gs.run(gs.Sweep(NaNTestLossLinear.name, **spec), progress=False).sel(seed=0)
    assert ds.diverged.sel(alpha=2.0) and int(ds.diverged_at.sel(alpha=2.0)) == ds.time[k]
    assert not ds.diverged.sel(alpha=1.0) and int(ds.diverged_at.sel(alpha=1.0)) == -1
    for name in ("train_loss", "test_loss", "weight_norm"):
        # The flagged run: as the clean one before step k, NaN from it on; the other untouched.
        run, reference = ds[name].sel(alpha=2.0).values, clean[name].sel(alpha=2.0).values
        np.testing.assert_array_equal(run[:k], reference[:k])
        assert np.isnan(run[k:]).all()
        np.testing.assert_array_equal(ds[name].sel(alpha=1.0), clean[name].sel(alpha=1.0))


# --- 3. compiled programs follow the task's code, not its name -----------------------------------
ALTERED = """
import jax.numpy as jnp
from groksweep.tasks.linear import Linear


class Altered(Linear):
    name = "altered_linear"

    def evaluate(self, model, data, hp, eps):
        metrics = super().evaluate(model, data, hp, eps)
        return metrics | {{"weight_norm": jnp.full_like(metrics["weight_norm"], {value})}}
"""
MODULE = "groksweep_test_altered_task"


def define_from_file(tmp_path, monkeypatch, value):
    """The class of a module file, edited on disk and reloaded as a user fixing it would."""
    (tmp_path / f"{MODULE}.py").write_text(ALTERED.format(value=value))
    if MODULE in sys.modules:
        return importlib.reload(sys.modules[MODULE]).Altered
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setitem(sys.modules, MODULE, importlib.import_module(MODULE))
    return sys.modules[MODULE].Altered


def define_without_source(tmp_path, monkeypatch, value):
    """The class of code with no source file (a notebook cell, exec)."""
    module = types.ModuleType(MODULE)
    monkeypatch.setitem(sys.modules, MODULE, module)
    exec(compile(ALTERED.format(value=value), "<cell>", "exec"), module.__dict__)
    return module.Altered


@pytest.mark.parametrize("define", [define_from_file, define_without_source])
def test_a_task_registered_anew_under_its_name_gets_its_own_program(define, tmp_path, monkeypatch):
    def weight_norms(task_class):
        """Register an instance of ``task_class`` under its name and run a tiny sweep of it."""
        monkeypatch.setitem(groksweep.tasks.TASKS, task_class.name, task_class())
        spec = gs.Sweep(
            task_class.name,
            params={"d_in": 4, "n_test": 5},
            axes={"seed": [0, 1]},
            steps=10,
            log_points=3,
        )
        return gs.run(spec, progress=False).weight_norm.values

    first = define(tmp_path, monkeypatch, 1.0)
    assert (weight_norms(first) == 1.0).all()
    fixed = define(tmp_path, monkeypatch, 22.0)
    assert fixed is not first
    assert (fixed.__qualname__, fixed.name) == (first.__qualname__, first.name)
    assert (weight_norms(fixed) == 22.0).all()
    # The same code registered again (a new instance) reuses its program.
    traces = trainer.trace_count()
    assert (weight_norms(fixed) == 22.0).all()
    assert trainer.trace_count() == traces
