"""Optimizers, built inside the traced program so that lr, gamma and the betas are traced arrays.

Weight decay follows PyTorch: ``gd`` and ``adam`` add ``gamma * w`` to the gradient
(``torch.optim.SGD/Adam(weight_decay=gamma)``); ``adamw`` decays the weights decoupled from the
moments (``torch.optim.AdamW``). Gradient descent is full batch: S <- S - lr * (grad L + gamma S).
"""

from __future__ import annotations

from collections.abc import Mapping

import optax
from jax import Array

from groksweep.params import Param

OPTIMIZER_PARAMS: dict[str, Param] = {
    "optimizer": Param(
        str,
        "gd",
        "static",
        "gd (full-batch gradient descent), adam or adamw",
        choices=("gd", "adam", "adamw"),
    ),
    "lr": Param(float, 0.01, "traced", "learning rate", gt=0),
    "gamma": Param(float, 0.0, "traced", "weight decay (PyTorch convention)", ge=0),
    "beta1": Param(float, 0.9, "traced", "Adam first-moment decay", ge=0, lt=1),
    "beta2": Param(float, 0.999, "traced", "Adam second-moment decay", ge=0, lt=1),
}


def make_optimizer(name: str, hp: Mapping[str, Array]) -> optax.GradientTransformation:
    """The optax transformation for optimizer ``name`` with (traced) hyperparameters ``hp``."""
    lr, gamma = hp["lr"], hp["gamma"]
    if name == "gd":
        return optax.chain(optax.add_decayed_weights(gamma), optax.sgd(lr))
    if name == "adam":
        return optax.chain(
            optax.add_decayed_weights(gamma), optax.adam(lr, hp["beta1"], hp["beta2"])
        )
    if name == "adamw":
        return optax.adamw(lr, hp["beta1"], hp["beta2"], weight_decay=gamma)
    raise ValueError(f"unknown optimizer {name!r}")
