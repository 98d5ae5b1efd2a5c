"""The task contract suite (groksweep.testing.check_task): every built-in task keeps it, a
plugin-style ModelTask keeps it, and each check fails, naming itself, on a task broken the way
plugin authors break tasks.

These checks replace the per-task invariance tests that each task file used to repeat (padded
equals unpadded, vmapped equals single, prefix-stable draws, no recompile for new
hyperparameters); the task files keep their physics (numpy references, theory, grokking)."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.tasks import BUILT_IN, TASKS, draws
from groksweep.tasks.linear import Linear
from groksweep.testing import CHECKS, ContractError, check_task

# Small sizes per built-in task, from the task's own tests, chosen so that each run trains in a
# few steps (lr) and compiles quickly. The transformer uses gd (its default AdamW doubles the
# compile time of each of its two programs); the modular MLP runs AdamW instead, so that the
# optimizer state of Adam is checked vmapped against the run alone too.
# fmt: off
PARAMS = {
    "linear": {"d_in": 8, "n_test": 24, "n_train": 12, "d_out": 2, "noise": 0.1, "lr": 0.05},
    "mlp_teacher_student": {
        "d_in": 6, "d_h": 8, "depth": 1, "n_test": 20, "n_train": 10, "d_out": 2,
        "lr": 0.5, "noise": 0.01,
    },
    "committee": {
        "d_in": 6, "width": 10, "n_test": 30, "n_train": 18, "sigma": 0.8, "gamma": 1e-3,
        "lr": 2.0,
    },
    "modular_mlp": {"p": 7, "d_h": 8, "optimizer": "adamw", "lr": 0.05, "gamma": 0.1},
    "transformer": {
        "p": 5, "d_model": 8, "n_heads": 2, "d_mlp": 8, "layer_norm": "none",
        "optimizer": "gd", "lr": 1.0,
    },
}
# fmt: on


def expected_checks(task) -> set[str]:
    padded = any(p.role == "padded" for p in task.params.values())
    return set(CHECKS) - (set() if padded else {"draws", "padding"})


# The transformer's contract (its slowest compile) runs in the slow tier.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=SLOW) if n == "transformer" else n for n in sorted(BUILT_IN)]
)
def test_built_in_task_keeps_the_contract(name):
    task = BUILT_IN[name]
    params = PARAMS.get(name, getattr(task, "example_params", None))
    assert params is not None, f"give the built-in task {name!r} small sizes in PARAMS"
    report = check_task(task, params)
    assert set(report.ran) == expected_checks(task), report
    assert report.params["dtype"] == "float64"
    assert TASKS[name] is task  # the registry is as it was


@pytest.mark.slow
def test_the_transformer_with_layer_norm_and_adamw_keeps_the_contract():
    """Nanda et al.'s own setting (pre-LayerNorm, AdamW): the combination the default tier's
    transformer check leaves out for its compile time (about 40 s)."""
    params = PARAMS["transformer"] | {"layer_norm": "pre", "optimizer": "adamw", "lr": 0.01}
    report = check_task(BUILT_IN["transformer"], params)
    assert set(report.ran) == expected_checks(BUILT_IN["transformer"])


# --- a plugin's task: the high-level API ----------------------------------------------------------
class Affine(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return jnp.tanh(x @ self.w)


class Teacher(gs.ModelTask):
    """A tanh unit learning a tanh teacher: a plugin as a user writes it."""

    name = "contract_teacher"
    params: ClassVar = {
        "d": gs.Param(int, 5, "static", "inputs", ge=1),
        "n_train": gs.Param(int, 8, "padded", "training samples", ge=1),
        "n_test": gs.Param(int, 16, "static", "test samples", ge=1),
    }
    loss, accuracy = "mse", "threshold"
    example_params: ClassVar = {"lr": 0.5}

    def init(self, key, shape):
        return Affine(draws.normal(key, (shape["d"],)) / shape["d"])

    def data(self, key, shape, dtype):
        teacher = draws.normal(draws.stream(key, 0), (shape["d"],), (), dtype)
        x = {
            r: draws.normal(draws.stream(key, i + 1), (shape[f"n_{r}"],), (shape["d"],), dtype)
            for i, r in enumerate(("train", "test"))
        }
        return {f"{z}_{r}": v for r in x for z, v in (("x", x[r]), ("y", jnp.tanh(x[r] @ teacher)))}


def test_a_model_task_keeps_the_contract_with_its_example_params():
    report = check_task(Teacher())  # sizes from Teacher.example_params and the defaults
    assert set(report.ran) == set(CHECKS)
    assert report.params["lr"] == 0.5 and report.params["n_train"] == 8
    assert "contract_teacher" not in TASKS  # registered by the checks' sweeps, then removed


# --- broken tasks: each check fails, naming itself ----------------------------------------------
SMALL = {
    "d_in": 4,
    "n_test": 8,
    "n_train": 6,
    "d_out": 1,
    "noise": 0.1,
    "lr": 0.1,
    "method": "step",
}


def broken(task, check):
    with pytest.raises(ContractError) as caught:
        check_task(task, SMALL)
    assert caught.value.check == check, caught.value
    assert isinstance(caught.value, AssertionError)
    assert f"breaks the {check!r} contract" in str(caught.value)
    return str(caught.value)


class NoTestAccuracy(Linear):
    name = "contract_no_test_acc"
    metrics: ClassVar = {k: v for k, v in Linear.metrics.items() if k != "test_acc"}


def test_a_missing_required_metric_breaks_the_declaration():
    assert "does not record 'test_acc'" in broken(NoTestAccuracy(), "declaration")


class ForgetsWeightNorm(Linear):
    """Declares weight_norm (Linear.metrics) but does not return it."""

    name = "contract_forgets_weight_norm"

    def evaluate(self, model, data, hp, eps):
        metrics = super().evaluate(model, data, hp, eps)
        return {k: v for k, v in metrics.items() if k != "weight_norm"}


def test_a_declared_metric_that_evaluate_does_not_return_breaks_the_metrics_check():
    assert "'weight_norm' is declared, but evaluate does not return it" in broken(
        ForgetsWeightNorm(), "metrics"
    )


class NumpyJitter(Linear):
    """Jitters the initial student with numpy's global generator instead of the key: the jitter
    is a constant of each compilation, another one every time the program is compiled."""

    name = "contract_numpy_jitter"

    def setup(self, data, hp, shape):
        model, run = super().setup(data, hp, shape)
        return model + 1e-3 * np.random.default_rng().normal(size=model.shape), run


def test_host_randomness_at_trace_time_breaks_time_0():
    assert "host randomness at trace time" in broken(NumpyJitter(), "time0")


class AlphaKeptFromResolve(Linear):
    """Keeps alpha, which resolve sees as a Python float, and uses it in setup: the program
    compiled for the first run is reused for every alpha, with the first one's value."""

    name = "contract_alpha_kept"

    def resolve(self, values, given):
        self.alpha = values["alpha"]
        return super().resolve(values, given)

    def setup(self, data, hp, shape):
        return super().setup(data, hp | {"alpha": self.alpha}, shape)


def test_a_traced_value_read_as_a_python_number_breaks_the_traced_check():
    message = broken(AlphaKeptFromResolve(), "traced")
    assert "reads a traced value as a Python number" in message


class GrowingTestSet(Linear):
    """Derives a static size (n_test) from the traced alpha: every alpha compiles anew."""

    name = "contract_n_test_from_alpha"

    def resolve(self, values, given):
        values = super().resolve(values, given)
        return values | {"n_test": round(values["n_test"] * (1 + values["alpha"]))}


def test_a_static_size_derived_from_a_traced_value_breaks_the_traced_check():
    assert "compiled 1 program(s) anew" in broken(GrowingTestSet(), "traced")


class DirectNoise(Linear):
    """Draws the label noise straight with jax.random.normal: prefix-stable in n_train (its
    leading axis) but not in d_out."""

    name = "contract_direct_noise"

    def sample(self, key, shape, dtype):
        noise = jax.random.normal(jax.random.fold_in(key, 99), (shape["n_train"], shape["d_out"]))
        return super().sample(key, shape, dtype) | {"label_noise": noise.astype(dtype)}


def test_draws_that_are_not_prefix_stable_break_the_draws_check():
    assert "draw 'label_noise' of shapes (6, 1) and (9, 2)" in broken(DirectNoise(), "draws")


class MeanOverPaddedRows(Linear):
    """Averages the training loss over the bucket's padded n_train (``self.shape``), not over
    the run's own: right alone, wrong when padded."""

    name = "contract_padded_mean"

    def evaluate(self, model, data, hp, eps):
        metrics = super().evaluate(model, data, hp, eps)
        scale = hp["n_train"].astype(model.dtype) / self.shape["n_train"]
        return metrics | {"train_loss": metrics["train_loss"] * scale}


def test_a_metric_over_the_padded_size_breaks_the_padding_check():
    message = broken(MeanOverPaddedRows(), "padding")
    assert "train_loss" in message and "n_train 6 padded to 9" in message


@jax.custom_batching.custom_vmap
def norm_of(w):
    return jnp.sqrt(jnp.sum(w**2))


@norm_of.def_vmap
def _norm_of_batched(axis_size, in_batched, w):
    # The bug: the norm of the whole batch, not of each member (right for a batch of one).
    return jnp.full((axis_size,), jnp.sqrt(jnp.sum(w**2) / axis_size)), True


class BatchNorm(Linear):
    """A weight norm with a hand-written batching rule that mixes the runs of a batch."""

    name = "contract_batch_norm"

    def evaluate(self, model, data, hp, eps):
        return super().evaluate(model, data, hp, eps) | {"weight_norm": norm_of(model)}


def test_runs_that_leak_into_each_other_under_vmap_break_the_vmap_check():
    message = broken(BatchNorm(), "vmap")
    assert "weight_norm" in message


# --- the API ------------------------------------------------------------------------------------
class WithExampleParams(Linear):
    name = "contract_example_params"
    example_params: ClassVar = {"d_in": 3, "n_test": 5}


def test_params_default_to_example_params_and_skipped_checks_are_reported():
    report = check_task(WithExampleParams(), skip=list(CHECKS))
    assert report.ran == () and set(report.skipped) == set(CHECKS)
    assert report.params["d_in"] == 3 and report.params["n_train"] == 6  # lam 0.5
    assert report.params["dtype"] == "float64"
    with pytest.raises(ValueError, match="unknown check 'vmapped'"):
        check_task(WithExampleParams(), skip=["vmapped"])
    with pytest.raises(ValueError, match="seeds"):
        check_task(WithExampleParams(), seeds=[0])
    with pytest.raises(gs.SpecError, match="d_in"):
        check_task(WithExampleParams(), {"d_in": 0}, skip=list(CHECKS))
