"""A task named with no parameters is the canonical setting its docstring names: every built-in
task's resolved defaults against the hyperparameters its paper states (values typed in from
the papers, not read from the tasks)."""

from __future__ import annotations

import pytest

import groksweep as gs
from groksweep.tasks import BUILT_IN

# The paper's stated setting for each task; where a paper leaves a value out, it is not listed.
SETTINGS = {
    # Nanda et al. 2023: one layer, p = 113, 30% of the pairs, d_model 128, 4 heads, d_mlp 512,
    # no LayerNorm, cross entropy, full-batch AdamW lr 1e-3, weight decay 1, betas (0.9, 0.98).
    "transformer": {
        "p": 113, "op": "add", "frac": 0.3, "split": "random", "loss": "cross_entropy",
        "label_noise": 0.0, "d_model": 128, "n_heads": 4, "d_mlp": 512, "layer_norm": "none",
        "predictor": "plain", "alpha": 1.0, "init_scale": 1.0,
        "optimizer": "adamw", "lr": 1e-3, "gamma": 1.0, "beta1": 0.9, "beta2": 0.98,
    },
    # Levi et al. Fig. 4 (right): the 1000-d_h-5 tanh network at d_h = 200, their init, plain
    # output, full-batch gd at eta = 0.01 without weight decay.
    "mlp_teacher_student": {
        "d_in": 1000, "d_h": 200, "depth": 1, "d_out": 5, "activation": "tanh", "init": "levi",
        "predictor": "plain", "alpha": 1.0, "init_scale": 1.0, "noise": 0.0,
        "input_spectrum": "identity", "optimizer": "gd", "lr": 0.01, "gamma": 0.0,
    },
    # Kumar et al. Fig. 1(b), 3(e): D = 100, N = 500, P = 550, the centred predictor at alpha =
    # sigma = 1, vanilla gd without regularisation at lr = eta_0 N / alpha^2 (eta_0 = 4, the
    # value of sweeps/committee_figs.py; the paper prints none), the quadratic target.
    "committee": {
        "d_in": 100, "width": 500, "n_train": 550, "alpha": 1.0, "sigma": 1.0,
        "labels": "quadratic", "align": 0.0, "optimizer": "gd", "lr": 2000.0, "gamma": 0.0,
    },
    # Omnigrok's MNIST setting carried to the 8x8 digits: width 200, three linear layers,
    # init x8, MSE, AdamW lr 1e-3, weight decay 0.01, 1000 training images.
    "digits": {
        "n_train": 1000, "width": 200, "depth": 2, "init_scale": 8.0, "predictor": "plain",
        "alpha": 1.0, "optimizer": "adamw", "lr": 1e-3, "gamma": 0.01,
    },
    # Levi et al. §3: gd at eta_0 = 0.01 (Fig. 7) without weight decay, d_out = 1, alpha = 1,
    # clean labels (the text prints no d_in for its §3 figures).
    "linear": {
        "d_out": 1, "alpha": 1.0, "noise": 0.0, "optimizer": "gd", "lr": 0.01, "gamma": 0.0,
    },
    # Kumar et al. App. 8.3 (after Gromov): (a + b) mod 23, N = 100, 90% of the pairs trained,
    # MSE, vanilla gd at lr 100, no weight decay, the mean-field square network.
    "modular_mlp": {
        "p": 23, "op": "add", "frac": 0.9, "d_h": 100, "loss": "mse", "activation": "square",
        "parametrisation": "mean_field", "optimizer": "gd", "lr": 100.0, "gamma": 0.0,
    },
}  # fmt: skip

def test_every_built_in_task_has_a_stated_setting():
    assert set(SETTINGS) == set(BUILT_IN)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_defaults_are_the_papers_setting(name):
    run = gs.Sweep(name).runs()[0]
    differ = {k: (run[k], v) for k, v in SETTINGS[name].items() if run[k] != v}
    assert not differ, f"{name}: (default, paper) {differ}"


def test_the_centred_transformer_is_opt_in():
    """Nanda's plain model by default; Kumar et al.'s centred predictor when asked for."""
    assert gs.Sweep("transformer").runs()[0]["predictor"] == "plain"
    run = gs.Sweep("transformer", params={"predictor": "centred"}).runs()[0]
    assert run["predictor"] == "centred"
