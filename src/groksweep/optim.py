"""Optimizers, built inside the traced program so that lr, gamma and the betas are traced arrays.

Weight decay follows PyTorch: ``gd`` and ``adam`` add ``gamma * w`` to the gradient
(``torch.optim.SGD/Adam(weight_decay=gamma)``); ``adamw`` decays the weights decoupled from the
moments (``torch.optim.AdamW``). Gradient descent is full batch: S <- S - lr * (grad L + gamma S).

Gradient transformations before the optimizer (:data:`GRADIENT_PARAMS`, for every task), applied
to the loss gradient in this order, before the optimizer adds weight decay, as the reference
implementations modify ``p.grad`` before ``optimizer.step()``:

- ``orthograd = "on"``: ⊥Grad (Prieto et al. 2025, *Grokking at the edge of numerical
  stability*, reference ``OrthoGrad``): for each parameter tensor w with gradient g separately,
  g_perp = g - (w.g / (w.w + 1e-30)) w, rescaled to the norm of g:
  g_perp |g| / (|g_perp| + 1e-30) (:func:`orthograd`).
- ``grokfast = "ema"``: Grokfast's EMA filter (Lee et al. 2024, reference ``gradfilter_ema``):
  ema <- alpha ema + (1 - alpha) g, with ema = g before the first step, and g <- g + lamb ema
  (:func:`grokfast_ema`; ``grokfast_alpha``, ``grokfast_lamb``, traced).
- ``grokfast = "ma"``: Grokfast's moving-average filter (reference ``gradfilter_ma`` with its
  defaults ``filter_type="mean"``, ``warmup=True``): the last ``grokfast_window`` gradients are
  kept (the current one included); once the window is full, g <- g + lamb mean(window); before
  that g is unchanged (:func:`grokfast_ma`). The window is static (it sizes the state: w copies
  of the parameters per run).

With ``grokfast = "none"`` and ``orthograd = "off"`` (the defaults) the optimizer is exactly the
plain one. They act on gradient steps only: the linear task's spectral method is plain gradient
descent in closed form, so with either of them ``method = "auto"`` takes gradient steps and
``"spectral"`` is refused. The reference defaults are alpha 0.98, lamb 2 (``gradfilter_ema``)
and window 100, lamb 5 (``gradfilter_ma``); ``grokfast_lamb`` defaults to 2 for both filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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

GROKFAST_FILTERS = ("none", "ema", "ma")
ORTHOGRAD = ("off", "on")

GRADIENT_PARAMS: dict[str, Param] = {
    "grokfast": Param(
        str,
        "none",
        "static",
        "Grokfast gradient filter: none, ema or ma (Lee et al. 2024)",
        choices=GROKFAST_FILTERS,
    ),
    "grokfast_alpha": Param(float, 0.98, "traced", "decay of the Grokfast ema filter", ge=0, lt=1),
    "grokfast_lamb": Param(
        float, 2.0, "traced", "Grokfast amplification: g + lamb * filtered g", ge=0
    ),
    "grokfast_window": Param(
        int, 100, "static", "gradients averaged by the Grokfast ma filter", ge=1, le=10_000
    ),
    "orthograd": Param(
        str,
        "off",
        "static",
        "on: OrthoGrad, each tensor's gradient without its component along the weights, at "
        "the gradient's norm (Prieto et al. 2025)",
        choices=ORTHOGRAD,
    ),
}
"""Gradient transformations applied before the optimizer; engine parameters of every task."""

ORTHOGRAD_EPS = 1e-30
"""The reference ``OrthoGrad``'s guard in w.w and in |g_perp|."""


def make_optimizer(
    name: str, hp: Mapping[str, Array], options: Mapping[str, Any] | None = None
) -> optax.GradientTransformation:
    """The optax transformation for optimizer ``name`` with (traced) hyperparameters ``hp``.

    ``options`` holds the static values of :data:`GRADIENT_PARAMS` (the bucket's shape; missing
    entries take their defaults); the traced ones are read from ``hp``."""
    base = _optimizer(name, hp)
    options = options or {}
    before = []
    if options.get("orthograd", "off") == "on":
        before.append(orthograd())
    kind = options.get("grokfast", "none")
    if kind == "ema":
        before.append(grokfast_ema(hp["grokfast_alpha"], hp["grokfast_lamb"]))
    elif kind == "ma":
        window = options.get("grokfast_window", GRADIENT_PARAMS["grokfast_window"].default)
        before.append(grokfast_ma(window, hp["grokfast_lamb"]))
    elif kind != "none":
        raise ValueError(f"unknown grokfast filter {kind!r}")
    return optax.chain(*before, base) if before else base


def _optimizer(name: str, hp: Mapping[str, Array]) -> optax.GradientTransformation:
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


class GrokfastState(NamedTuple):
    """Steps taken, and the filter's memory: the EMA of the gradients (``ema``), or the last
    ``window`` gradients, stacked on a leading axis and written cyclically (``ma``)."""

    count: Array
    slow: Any


def grokfast_ema(alpha: Array, lamb: Array) -> optax.GradientTransformation:
    """Grokfast's EMA filter: ema <- alpha ema + (1 - alpha) g (ema = g before the first step,
    as the reference initialises it with the first gradient), g <- g + lamb ema."""

    def init(params):
        return GrokfastState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        first = state.count == 0

        def one(g, ema):
            ema = alpha * jnp.where(first, g, ema) + (1 - alpha) * g
            return g + ema * lamb, ema

        pairs = jax.tree.map(one, updates, state.slow)
        outer = jax.tree.structure(updates)
        filtered, ema = jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)
        return filtered, GrokfastState(optax.safe_int32_increment(state.count), ema)

    return optax.GradientTransformation(init, update)


def grokfast_ma(window: int, lamb: Array) -> optax.GradientTransformation:
    """Grokfast's moving-average filter over the last ``window`` gradients (the current one
    included): once ``window`` gradients have been seen, g <- g + lamb mean(window); before,
    g unchanged (the reference's warm-up)."""

    def init(params):
        buffers = jax.tree.map(lambda w: jnp.zeros((window, *w.shape), w.dtype), params)
        return GrokfastState(jnp.zeros((), jnp.int32), buffers)

    def update(updates, state, params=None):
        slot = state.count % window
        full = state.count + 1 >= window

        def one(g, buffer):
            buffer = jax.lax.dynamic_update_index_in_dim(buffer, g, slot, 0)
            mean = jnp.sum(buffer, axis=0) / window
            return jnp.where(full, g + mean * lamb, g), buffer

        pairs = jax.tree.map(one, updates, state.slow)
        outer = jax.tree.structure(updates)
        filtered, buffers = jax.tree.transpose(outer, jax.tree.structure((0, 0)), pairs)
        return filtered, GrokfastState(optax.safe_int32_increment(state.count), buffers)

    return optax.GradientTransformation(init, update)


def orthograd(eps: float = ORTHOGRAD_EPS) -> optax.GradientTransformation:
    """⊥Grad: each tensor's gradient g without its component along the tensor's weights w,
    g_perp = g - (w.g / (w.w + eps)) w, rescaled to the norm of g (reference ``OrthoGrad``:
    per tensor, not over the whole model). Needs the parameters."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("orthograd needs the parameters")

        def one(g, w):
            projection = jnp.sum(w * g) / (jnp.sum(w * w) + eps)
            perp = g - projection * w
            norm = lambda x: jnp.sqrt(jnp.sum(x * x))  # noqa: E731
            return perp * (norm(g) / (norm(perp) + eps))

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
