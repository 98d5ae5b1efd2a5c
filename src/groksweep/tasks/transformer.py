"""A one-layer transformer on prime-field arithmetic (Nanda et al. 2023, the classic grokking
setting; Kumar, Bordelon, Gershman & Pehlevan §6 / Fig. 6(b); Gu et al., *Beyond Progress
Measures*).

Model
-----
The input of pair (a, b) is the token sequence [a, b, =], where token id p stands for "="
(vocabulary p + 1). With token embedding W_E ((p+1) x d_model), learned positional embedding
W_pos (3 x d_model), and rows as vectors (x W, not W x):

    x_i    = W_E[token_i] + W_pos[i]                                        (i = 0, 1, 2)
    r      = x_2 + concat_h(sum_i softmax_i(q_h . k_{h,i} / sqrt(d_head)) v_{h,i}) W_O
             with q_h = (N1(x_2) W_Q)_h,  k_{h,i} = (N1(x_i) W_K)_h,  v_{h,i} = (N1(x_i) W_V)_h
    r'     = r + ReLU(N2(r) W_in + b_in) W_out + b_out
    f(a, b; theta) = N3(r') W_U                                             (p logits)

``n_heads`` heads of size d_head = d_model / n_heads (W_Q, W_K, W_V, W_O: d_model x d_model,
head h the columns h d_head .. (h+1) d_head - 1 of W_Q, W_K, W_V and the same rows of W_O), a
ReLU MLP d_model -> d_mlp -> d_model with biases, residual connections, no attention biases,
and the unembedding W_U (d_model x p). The logits are read at the last ("=") position only.
Nanda's model is causal; with one layer the last position attends to all three, so the mask
changes nothing that is read out and the other positions are never computed. N1, N2, N3 are
the identity for ``layer_norm = "none"`` (default; Nanda's model has no LayerNorm) and, for
``"pre"``, pre-LayerNorms (before attention, before the MLP, before the unembedding) with a
learned gain (init 1) and bias (init 0) each: (x - mean) / sqrt(var + 1e-5) * g + c over the
d_model entries. (``layer_norm`` is a string because the engine's parameters take no booleans.)

The model is a flat dict of arrays: ``W_E``, ``W_pos``, ``W_Q``, ``W_K``, ``W_V``, ``W_O``,
``W_in``, ``b_in``, ``W_out``, ``b_out``, ``W_U`` and, with LayerNorm, ``ln1_g``, ``ln1_b``,
``ln2_g``, ``ln2_b``, ``ln3_g``, ``ln3_b``.

Differences from Nanda's code: W_U has p columns, not p + 1 (no logit for "="), and the
optimizer has no learning-rate warm-up (Nanda: linear over the first 10 steps).

Initialisation (Nanda's): every weight matrix N(0, 1/d_model) (standard deviation
1/sqrt(d_model): W_E, W_pos, W_Q, W_K, W_V, W_O, W_in *and* W_out), except W_U with standard
deviation 1/sqrt(p + 1) (1/sqrt(d_vocab) in his code); biases 0. The random matrices are
multiplied by ``init_scale`` (LayerNorm gains and biases are not).

Predictor and output scale (Kumar et al. eq. 7; Fig. 6(b) sweeps alpha on this model), as in
:mod:`groksweep.tasks.mlp`: ``predictor = "plain"`` (default) predicts alpha f(theta), and with
alpha = 1 is Nanda's model; ``"centred"`` (opt-in, Kumar et al.'s lazy/rich control) predicts
alpha (f(theta) - f(theta_0)), zero at t = 0, with f(theta_0) kept per run for all p^2 pairs
(``f0``, p^2 x p numbers).

Defaults: ``task = "transformer"`` with no parameters is Nanda et al.'s setting: p = 113,
(a + b) mod p, 30% of the pairs trained on, d_model 128, 4 heads, d_mlp 512, no LayerNorm,
the plain predictor, cross entropy, full-batch AdamW at lr 1e-3, weight decay 1, betas
(0.9, 0.98) (tests/test_defaults.py).

Parameters (besides the engine's seed, dtype, method and the optimizer's)
-------------------------------------------------------------------------
============  =======  ===============  ======================================================
name          role     default          meaning
============  =======  ===============  ======================================================
p             static   113              prime modulus: p^2 pairs, vocabulary p + 1, p logits
op            traced   "add"            (a op b) mod p: add, sub, mul, x2+xy+y2
frac          traced   0.3              fraction of the p^2 pairs trained on
split         static   "random"         held-out pairs: random, block or strips
loss          static   "cross_entropy"  cross_entropy, mse (one-hot targets) or stablemax
label_noise   traced   0                fraction of the training pairs given a wrong label
d_model       static   128              residual-stream width
n_heads       static   4                attention heads (must divide d_model)
d_mlp         static   512              MLP hidden width
layer_norm    static   "none"           "none" or "pre" (above)
predictor     static   "plain"          plain or centred (above)
alpha         traced   1                output scale of the predictor (lazy: large)
init_scale    traced   1                multiplier of the initial weight matrices
============  =======  ===============  ======================================================

The optimizer defaults to Nanda's: ``optimizer = "adamw"``, ``lr = 1e-3``, ``gamma = 1``
(decoupled weight decay), ``beta1 = 0.9``, ``beta2 = 0.98`` (the engine's defaults for the other
tasks are gd at lr 0.01 without weight decay). Training is full batch. Kumar et al. keep the
time scale fixed across alpha with lr = eta_0 / alpha^2 for gradient descent; Adam's steps do
not scale with the gradient, so with AdamW the predictor moves ~ alpha lr per step
(sweeps/transformer_alpha.py pairs lr = lr_0 / alpha).

Data, losses and splits come from :mod:`groksweep.tasks.arithmetic`. The split and the initial
weights depend only on the seed and the static shapes (the split also on frac, the weights on
init_scale): every value of op, alpha, lr, gamma ... at one seed trains on the same pairs from
the same weights.

Metrics: ``train_loss``, ``test_loss``, the argmax accuracies ``train_acc`` and ``test_acc``,
``weight_norm`` (the L2 norm of all trainable parameters together, biases and LayerNorm
parameters included, without alpha), and two measures of the number-token embedding
E = W_E[:p]: ``med``, Gu et al.'s main embedding difference (Definition 3.1, the mean of
|E[i+1] - E[i]|; :func:`arithmetic.main_embedding_difference`), and ``embedding_uniformity``,
std/mean of the token norms |E[i]| (:func:`arithmetic.embedding_uniformity`; 0 for the
uniform embeddings that weight decay favours, Gu et al. Theorem 3.5).

Measures (recorded where a sweep names them): ``fourier_concentration``, the fraction of E's
power in its ``arithmetic.FOURIER_K`` = 4 strongest nonzero frequencies along the token axis,
summed over the d_model dimensions (:func:`arithmetic.fourier_concentration`; all p // 2 of them
where p < 8); Nanda et al.'s generalising embedding uses a handful of key frequencies.
``ipr``: the inverse participation ratio (Doshi et al.; :func:`arithmetic.ipr`, one-sided FFT
along the token axis) of each of E's d_model columns, averaged over the columns.
``softmax_collapse``: the fraction of training pairs whose softmax of the predictor is exactly 1
in the run's dtype (Prieto et al.; :func:`arithmetic.softmax_collapse`).

``loss = "stablemax"`` is Prieto et al.'s StableMax cross-entropy and ``label_noise`` Doshi et
al.'s label corruption of a fraction of the training pairs (both :mod:`groksweep.tasks.arithmetic`).

:meth:`Transformer.probe` returns the predictor and the one-hot targets on the first n held-out
pairs in table order (pair i = a p + b), followed by training pairs if fewer than n are held
out.

Cost: the residual stream at positions 0 and 1 depends on one token, and at position 2 on none,
so embeddings, keys and values are computed for the 2p + 1 distinct (token, position) states
and gathered per pair, the query once; the attention mixture, the MLP and the unembedding are
computed per pair. Every step evaluates all p^2 pairs (the loss masks out the held-out ones),
because frac is traced and the number of training pairs is not a compile-time shape.

Measured behaviour (details in the sweep files): the classic p = 113 (sweeps/transformer_p113.toml,
AdamW lr 1e-3, betas 0.9/0.98, plain predictor) reaches train accuracy 0.95 at steps 116-152
and test accuracy 0.95 at 7300-8040 with gamma 1 (1950-3730 with gamma 3, not within 15000
steps with gamma 0.3), 0.7 ms per step and run on an H100; the CPU-sized
sweeps/transformer_quick.toml (p = 23, d_model 32) groks in 200-2500 steps depending on frac.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import Array, random

from groksweep.params import Param, SpecError
from groksweep.tasks import arithmetic
from groksweep.tasks.base import OUTPUT_SCALE_PARAMS, Shape, indexed_normal

LAYER_NORMS = ("none", "pre")
LAYER_NORM_NAMES = ("ln1", "ln2", "ln3")
LN_EPS = 1e-5


class Transformer(arithmetic.ArithmeticTask):
    """One-layer transformer on (a op b) mod p; defaults: Nanda et al.'s (p = 113, frac 0.3, AdamW).

    See the module docstring."""

    name = "transformer"
    params: ClassVar[dict[str, Param]] = {
        **arithmetic.ARITHMETIC_PARAMS,
        # Nanda et al.'s classic setting.
        "p": replace(arithmetic.ARITHMETIC_PARAMS["p"], default=113),
        "frac": replace(arithmetic.ARITHMETIC_PARAMS["frac"], default=0.3),
        "loss": replace(arithmetic.ARITHMETIC_PARAMS["loss"], default="cross_entropy"),
        "d_model": Param(int, 128, "static", "residual-stream width", ge=1),
        "n_heads": Param(int, 4, "static", "attention heads (divide d_model)", ge=1),
        "d_mlp": Param(int, 512, "static", "MLP hidden width", ge=1),
        "layer_norm": Param(
            str,
            "none",
            "static",
            "none, or pre: LayerNorm before attention, MLP and unembedding",
            choices=LAYER_NORMS,
        ),
        **OUTPUT_SCALE_PARAMS,
        # Nanda's model is plain; Kumar et al.'s centred predictor is opt-in.
        "predictor": replace(OUTPUT_SCALE_PARAMS["predictor"], default="plain"),
    }
    metrics = arithmetic.ArithmeticTask.metrics | {"med": (), "embedding_uniformity": ()}

    # Nanda et al.'s optimizer: full-batch AdamW, lr 1e-3, weight decay 1, betas (0.9, 0.98).
    optimizer_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "gamma": 1.0,
        "beta2": 0.98,
    }

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        if values["d_model"] % values["n_heads"]:
            raise SpecError(f"n_heads={values['n_heads']} must divide d_model={values['d_model']}")
        return values

    def sample(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        # One draw cut into the matrices: every draw adds ~0.3 s of compilation on a CPU, which
        # for nine separate draws would dominate the compile time of small runs.
        dims = [dims for dims, _ in matrices(shape).values()]
        sizes = [math.prod(d) for d in dims]
        flat = indexed_normal(random.fold_in(key, 1), (sum(sizes),), (), dtype)
        pieces = jnp.split(flat, list(itertools.accumulate(sizes))[:-1])
        draws = {name: x.reshape(d) for name, x, d in zip(matrices(shape), pieces, dims)}
        # Kept as raw key data so that the traced frac can cut the split in share.
        return draws | {"split_key": random.key_data(random.fold_in(key, 0))}

    def setup(self, data, hp, shape):
        model = {
            name: hp["init_scale"] * std * data[name] for name, (_, std) in matrices(shape).items()
        }
        dtype = data["W_E"].dtype
        d_model, d_mlp = shape["d_model"], shape["d_mlp"]
        model |= {"b_in": jnp.zeros(d_mlp, dtype), "b_out": jnp.zeros(d_model, dtype)}
        if shape["layer_norm"] == "pre":
            for name in LAYER_NORM_NAMES:
                model |= {
                    f"{name}_g": jnp.ones(d_model, dtype),
                    f"{name}_b": jnp.zeros(d_model, dtype),
                }
        run = {"f0": self.forward(model, hp, None)} if shape["predictor"] == "centred" else {}
        return model, run

    def forward(self, model, hp, pairs):
        """f(theta), (examples, p): the logits at "=" for the pairs ``i = a p + b`` listed in
        ``pairs``, by default all p^2 in table order."""
        p, heads = self.shape["p"], self.shape["n_heads"]
        d_model = self.shape["d_model"]
        if pairs is None:
            pairs = jnp.arange(p * p)
        norm = lambda name, x: self.layer_norm(model, name, x)
        # The 2p + 1 distinct inputs: a at position 0 (rows 0 .. p-1), b at position 1
        # (rows p .. 2p-1) and "=" at position 2 (row 2p).
        embed, pos = model["W_E"], model["W_pos"]
        states = jnp.concatenate(
            [embed[:p] + pos[0], embed[:p] + pos[1], (embed[p] + pos[2])[None]]
        )
        normed = norm("ln1", states)
        split_heads = lambda x: x.reshape(*x.shape[:-1], heads, d_model // heads)
        keys, values = (split_heads(normed @ model[w]) for w in ("W_K", "W_V"))
        query = split_heads(normed[2 * p] @ model["W_Q"])  # (heads, d_head)
        # Each pair's sequence [a, b, =] as rows of the state table: (examples, 3).
        rows = jnp.stack([pairs // p, p + pairs % p, jnp.full_like(pairs, 2 * p)], axis=1)
        scores = jnp.einsum("hd,ihd->ih", query, keys) / jnp.sqrt(d_model // heads)
        attention = jax.nn.softmax(scores[rows], axis=1)  # (examples, 3, heads)
        mixed = jnp.einsum("nih,nihd->nhd", attention, values[rows])
        residual = states[2 * p] + mixed.reshape(-1, d_model) @ model["W_O"]
        hidden = jax.nn.relu(norm("ln2", residual) @ model["W_in"] + model["b_in"])
        residual = residual + hidden @ model["W_out"] + model["b_out"]
        return norm("ln3", residual) @ model["W_U"]

    def layer_norm(self, model, name: str, x: Array) -> Array:
        """LayerNorm ``name`` over the last axis, or the identity for ``layer_norm = "none"``."""
        if self.shape["layer_norm"] == "none":
            return x
        centred = x - jnp.mean(x, axis=-1, keepdims=True)
        scaled = centred / jnp.sqrt(jnp.mean(centred**2, axis=-1, keepdims=True) + LN_EPS)
        return scaled * model[f"{name}_g"] + model[f"{name}_b"]

    def embedding(self, model):
        return model["W_E"][: self.shape["p"]]

    def evaluate(self, model, data, hp, eps):
        embedding = self.embedding(model)
        return super().evaluate(model, data, hp, eps) | {
            "med": arithmetic.main_embedding_difference(embedding),
            "embedding_uniformity": arithmetic.embedding_uniformity(embedding),
        }


def matrices(shape: Shape) -> dict[str, tuple[tuple[int, int], float]]:
    """The trainable matrices: name -> (dimensions, initial standard deviation), Nanda's init."""
    p, d_model, d_mlp = shape["p"], shape["d_model"], shape["d_mlp"]
    std = d_model**-0.5
    return {
        "W_E": ((p + 1, d_model), std),
        "W_pos": ((3, d_model), std),
        "W_Q": ((d_model, d_model), std),
        "W_K": ((d_model, d_model), std),
        "W_V": ((d_model, d_model), std),
        "W_O": ((d_model, d_model), std),
        "W_in": ((d_model, d_mlp), std),
        "W_out": ((d_mlp, d_model), std),
        "W_U": ((d_model, p), (p + 1) ** -0.5),
    }
