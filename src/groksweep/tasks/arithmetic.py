"""Prime-field arithmetic datasets and the losses of the algorithmic tasks (``modular_mlp`` and
``transformer``).

Data
----
The examples are all p^2 pairs (a, b) with a, b in 0 .. p-1, in the order ``i = a p + b``; the
label of pair i is ``(a op b) mod p`` for ``op`` in :data:`OPS`. The train/test split is a mask
over the p^2 examples, so the train fraction ``frac`` is a traced hyperparameter: runs with
different fractions share one compiled program. Split kinds (Gu et al.'s structured splits
besides the random one):

- ``random``: a seed-dependent random order of the p^2 pairs; the first
  ``round(frac p^2)`` are trained on. Splits are nested: at one seed, the training set at a
  smaller frac is a subset of the one at a larger frac.
- ``block``: a square block of ``round(sqrt(1 - frac) p)`` consecutive values of a and of b
  (cyclically, at a seed-dependent corner) is held out; everything else is trained on.
- ``strips``: ``round((1 - frac) p)`` seed-dependent values of a (rows of the table) are held
  out entirely.

The achieved fraction differs from ``frac`` by rounding; every normalisation uses the mask's
own count. The split depends only on the seed (and frac), never on the other hyperparameters.

Label noise (``label_noise``, traced): ``round(label_noise n_train)`` of the training pairs
(n_train: the mask's count) get a wrong label, (label + k) mod p with k drawn uniformly from
1 .. p-1 per pair, so a corrupted label is never the true one (Doshi et al.'s random labels may
coincide with it, with probability 1/p). Which pairs: the training pairs ranked by a
seed-random priority, lowest first, so at one seed and frac a larger noise corrupts a superset.
The held-out (test) labels are never corrupted. The draws come from the seed's split key (a
stream of its own: the split does not change), in fixed dtypes, and depend on nothing else;
``label_noise = 0`` leaves the labels exactly as they were (:func:`noisy_labels`).

Losses
------
``cross_entropy``: mean over training examples of -log softmax(logits)[label].
``mse``: mean over training examples of ||out - onehot(label)||^2 / p, i.e. PyTorch's
``MSELoss`` on one-hot targets (mean over all N p entries).
``stablemax``: StableMax cross-entropy (Prieto et al. 2025, *Grokking at the edge of numerical
stability*, as their reference ``stablemax_cross_entropy``): with s(x) = x + 1 for x >= 0 and
1/(1 - x) for x < 0, the mean over training examples of
-log(s(out[label]) / sum_j s(out[j])). It is computed in the run's dtype: the reference casts
the logits to float64 for its StableMax runs (``--cross_entropy_dtype float64``), which here is
``dtype = "float64"`` (:func:`stablemax_cross_entropy`).

Measures (:class:`ArithmeticTask`)
----------------------------------
``softmax_collapse`` (Prieto et al.'s softmax collapse, as their reference logger computes it):
the fraction of training pairs whose sum_j exp(out[j] - max out) is exactly 1 in the run's
dtype, i.e. every other class's term is absorbed, the softmax of the top class is exactly 1 and
the cross-entropy gradient of the pair is exactly 0 when the top class is the label. ``out`` is
the predictor the loss sees (alpha (f - f0) or alpha f). :func:`softmax_collapse`.

``ipr``: the inverse participation ratio of Fourier features (Doshi, Das, He & Gromov, *To grok
or not to grok*, ICLR 2024, eq. 3 with r = 2): for a vector v over the p tokens with discrete
Fourier transform v~, IPR(v) = sum_k |v~_k|^4 / (sum_k |v~_k|^2)^2, taken, as in their released
code, over the one-sided real FFT (``rfft``: frequencies 0 .. p // 2, the constant included), so
a pure cosine gives 1, i.i.d. Gaussian weights about 2 / (p // 2 + 1) (:func:`ipr`). The task
averages it over its neurons (the modular MLP: Doshi et al.'s eq. 4) or embedding dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import Array, random

from groksweep.params import Param
from groksweep.tasks.base import PyTree, Shape, Task, masked_mean

OPS = ("add", "sub", "mul", "x2+xy+y2")
SPLITS = ("random", "block", "strips")
LOSSES = ("cross_entropy", "mse", "stablemax")

ARITHMETIC_PARAMS: dict[str, Param] = {
    "p": Param(int, 23, "static", "the prime modulus: p^2 examples, p classes", ge=2),
    "op": Param(str, "add", "traced", "the operation (a op b) mod p", choices=OPS),
    "frac": Param(float, 0.5, "traced", "fraction of the p^2 pairs trained on", gt=0, lt=1),
    "split": Param(str, "random", "static", "which pairs are held out", choices=SPLITS),
    "loss": Param(str, "cross_entropy", "static", "training loss", choices=LOSSES),
    "label_noise": Param(
        float, 0.0, "traced", "fraction of the training pairs given a wrong label", ge=0, le=1
    ),
}
"""Parameters every arithmetic task declares."""

CLASSIFICATION_METRICS: dict[str, tuple[str, ...]] = {
    "train_loss": (),
    "test_loss": (),
    "train_acc": (),
    "test_acc": (),
}
"""Losses and argmax accuracies on the train and test pairs."""


def operands(p: int) -> tuple[Array, Array]:
    """The (a, b) of all p^2 examples, example ``i = a p + b``."""
    i = jnp.arange(p * p, dtype=jnp.int32)
    return i // p, i % p


def labels(op: Array, p: int) -> Array:
    """``(a op b) mod p`` of every example; ``op`` is a (traced) index into :data:`OPS`."""
    a, b = operands(p)
    table = jnp.stack([(a + b) % p, (a - b) % p, (a * b) % p, (a * a + a * b + b * b) % p])
    return table[op]


def train_mask(key: Array, split: str, frac: Array, p: int, dtype: Any) -> Array:
    """1 on the training examples and 0 on the test ones, for a (traced) ``frac``."""
    a, b = operands(p)
    # Fixed draw dtypes: a seed's split is the same in float32 and float64 sweeps.
    if split == "random":
        rank = jnp.argsort(jnp.argsort(random.uniform(key, (p * p,), jnp.float32)))
        train = rank < jnp.round(frac * p * p)
    elif split == "block":
        side = jnp.round(jnp.sqrt(1 - frac) * p)
        corner = random.randint(key, (2,), 0, p, jnp.int32)
        train = ~(((a - corner[0]) % p < side) & ((b - corner[1]) % p < side))
    elif split == "strips":
        row_rank = jnp.argsort(jnp.argsort(random.uniform(key, (p,), jnp.float32)))
        train = row_rank[a] >= jnp.round((1 - frac) * p)
    else:
        raise ValueError(f"unknown split {split!r}")
    return train.astype(dtype)


def noisy_labels(key: Array, label: Array, train: Array, noise: Array, p: int) -> Array:
    """``label`` with ``round(noise n_train)`` training pairs (``train`` = 1) relabelled wrongly:
    (label + k) mod p, k uniform in 1 .. p-1, the pairs chosen by a random priority from ``key``
    among the training pairs (nested in ``noise``). ``noise`` = 0 returns ``label`` unchanged."""
    priority_key, offset_key = random.split(key)
    # Fixed draw dtypes: a seed's noise is the same in float32 and float64 sweeps.
    priority = random.uniform(priority_key, label.shape, jnp.float32)
    is_train = train > 0
    rank = jnp.argsort(jnp.argsort(jnp.where(is_train, priority, 2.0)))
    corrupt = is_train & (rank < jnp.round(noise * jnp.sum(train)))
    offset = random.randint(offset_key, label.shape, 1, max(p, 2), jnp.int32)
    return jnp.where(corrupt, (label + offset) % p, label)


def family_split(split_key: Array, hp: Mapping[str, Array], shape: Shape) -> tuple[Array, Array]:
    """``(train, label)`` of a family: the train mask of the traced ``frac`` and the labels of
    the traced ``op``, with ``label_noise`` where the task declares it, from the seed's raw
    ``split_key`` data."""
    split_key = random.wrap_key_data(split_key)
    p, dtype = shape["p"], hp["frac"].dtype
    train = train_mask(split_key, shape["split"], hp["frac"], p, dtype)
    label = labels(hp["op"], p)
    if "label_noise" in hp:
        label = noisy_labels(noise_key(split_key), label, train, hp["label_noise"], p)
    return train, label


def noise_key(split_key: Array) -> Array:
    """The label-noise stream, derived from a seed's split key."""
    return random.fold_in(split_key, 1)


def stablemax(x: Array) -> Array:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (Prieto et al.), with finite gradients on
    both branches of the ``where``."""
    return jnp.where(x >= 0, x + 1, 1 / (1 - jnp.minimum(x, 0)))


def stablemax_cross_entropy(out: Array, label: Array) -> Array:
    """-log(s(out[label]) / sum_j s(out[j])) of each example: ``out`` (examples, p)."""
    s = stablemax(out)
    chosen = jnp.take_along_axis(s, label[:, None], -1)[:, 0]
    return -jnp.log(chosen / jnp.sum(s, axis=-1))


def per_example_loss(loss: str, out: Array, label: Array) -> Array:
    """The loss of each example: ``out`` (examples, p), ``label`` (examples,)."""
    if loss == "stablemax":
        return stablemax_cross_entropy(out, label)
    if loss == "cross_entropy":
        return jax.nn.logsumexp(out, axis=-1) - jnp.take_along_axis(out, label[:, None], -1)[:, 0]
    if loss == "mse":
        onehot = jax.nn.one_hot(label, out.shape[-1], dtype=out.dtype)
        return jnp.mean((out - onehot) ** 2, axis=-1)
    raise ValueError(f"unknown loss {loss!r}")


def classification_metrics(loss: str, out: Array, label: Array, train: Array) -> dict[str, Array]:
    """Loss and argmax accuracy on the train (``train`` = 1) and test (0) examples."""
    per_example = per_example_loss(loss, out, label)
    correct = (jnp.argmax(out, axis=-1) == label).astype(train.dtype)
    test = 1 - train
    return {
        "train_loss": masked_mean(per_example, train),
        "test_loss": masked_mean(per_example, test),
        "train_acc": masked_mean(correct, train),
        "test_acc": masked_mean(correct, test),
    }


def training_loss(loss: str, out: Array, label: Array, train: Array) -> Array:
    """The mean loss over the training examples (the objective the optimizer follows)."""
    return jnp.sum(per_example_loss(loss, out, label) * train) / jnp.sum(train)


def softmax_collapse(out: Array, train: Array) -> Array:
    """The fraction of training examples (``train`` = 1) whose sum_j exp(out[j] - max out) is
    exactly 1 in ``out``'s dtype: the softmax of the top class rounds to 1 (Prieto et al.'s
    softmax collapse, computed as their reference logger does)."""
    shifted = out - jnp.max(out, axis=-1, keepdims=True)
    collapsed = jnp.sum(jnp.exp(shifted), axis=-1) == 1
    return masked_mean(collapsed.astype(train.dtype), train)


# --- embedding measures (Gu et al.; Nanda et al.; Doshi et al.) --------------------------------
def ipr(vectors: Array, axis: int = 0) -> Array:
    """The inverse participation ratio of Fourier features (Doshi et al. 2024, eq. 3, r = 2) of
    each vector along ``axis`` (the p tokens): sum_k P_k^2 / (sum_k P_k)^2 with P_k = |v~_k|^2
    the power of the one-sided real FFT (frequencies 0 .. p // 2, as their released code).
    Between 1 / (p // 2 + 1) and 1; 1 for a single frequency."""
    power = jnp.abs(jnp.fft.rfft(vectors, axis=axis)) ** 2
    return jnp.sum(power**2, axis=axis) / jnp.sum(power, axis=axis) ** 2


def main_embedding_difference(embedding: Array) -> Array:
    """MED (Gu et al., Definition 3.1): the mean norm of the differences between the embeddings
    of consecutive tokens, (1/(p-1)) sum_{i<p-1} ||E[i+1] - E[i]||, for ``embedding`` (p, d)
    holding the embeddings of tokens 0 .. p-1 as rows."""
    return jnp.mean(jnp.linalg.norm(jnp.diff(embedding, axis=0), axis=1))


def embedding_uniformity(embedding: Array) -> Array:
    """The spread of the tokens' embedding norms, std/mean of ||E[i]|| over the p tokens: 0 for
    the uniform embeddings that minimise the weight-decay term (Gu et al., Theorem 3.5)."""
    norms = jnp.linalg.norm(embedding, axis=1)
    return jnp.std(norms) / jnp.mean(norms)


def fourier_concentration(embedding: Array, k: int) -> Array:
    """The fraction of the embedding's power in its ``k`` strongest nonzero frequencies.

    ``embedding`` (p, d) is Fourier-transformed along the token axis; the power of frequency
    w in 1 .. p//2 is summed over the d dimensions and over +-w (a real signal's conjugate
    pair). The fraction is taken of the total power, the constant (w = 0) component included.
    Generalising embeddings of modular addition concentrate on a few key frequencies (Nanda et
    al.; Gromov)."""
    p = embedding.shape[0]
    power = jnp.sum(jnp.abs(jnp.fft.fft(embedding, axis=0)) ** 2, axis=1)
    w = jnp.arange(1, p // 2 + 1)
    paired = power[w] + jnp.where(p - w != w, power[p - w], 0)
    return jnp.sum(jax.lax.top_k(paired, k)[0]) / jnp.sum(power)


# --- the common part of the arithmetic tasks -------------------------------------------------
FOURIER_K = 4
"""Frequencies counted by the ``fourier_concentration`` measure (all of them where p < 8)."""


class ArithmeticTask(Task):
    """What the arithmetic tasks share: the split and labels of a family (runs of one seed with
    equal frac and op), the centred predictor, the training loss, the classification metrics,
    the probe and the Fourier concentration of the number-token embedding.

    Subclasses draw ``split_key`` (raw key data) in :meth:`sample` and implement
    :meth:`forward`, :meth:`embedding` and :meth:`setup` (putting f(theta_0) of all pairs in
    the run's ``f0`` for the centred predictor).
    """

    shared_by = ("frac", "op", "label_noise")
    metrics = CLASSIFICATION_METRICS | {"weight_norm": ()}
    measures: ClassVar[dict[str, tuple[str, ...]]] = {
        "fourier_concentration": (),
        "softmax_collapse": (),
        "ipr": (),
    }

    def forward(self, model: PyTree, hp: Mapping[str, Array], pairs: Array | None) -> Array:
        """f(theta) on ``pairs`` (indices a p + b; None: all p^2 in table order), (pairs, p)."""
        raise NotImplementedError

    def embedding(self, model: PyTree) -> Array:
        """The number-token embedding (p, d): one row per token 0 .. p-1."""
        raise NotImplementedError

    def share(self, draws, hp, shape):
        # The split is cut here, not in sample, because frac is traced.
        train, label = family_split(draws["split_key"], hp, shape)
        return {"train": train, "label": label}

    def predict(self, model, data, hp, pairs: Array | None = None) -> Array:
        """The predictor alpha (f - f0) or alpha f on ``pairs`` (default: all p^2 pairs)."""
        f = self.forward(model, hp, pairs)
        if "f0" in data:
            f = f - (data["f0"] if pairs is None else data["f0"][pairs])
        return hp["alpha"] * f

    def objective(self, model, data, hp):
        out = self.predict(model, data, hp)
        return training_loss(self.shape["loss"], out, data["label"], data["train"])

    def evaluate(self, model, data, hp, eps):
        out = self.predict(model, data, hp)
        metrics = classification_metrics(self.shape["loss"], out, data["label"], data["train"])
        norm = jnp.sqrt(sum(jnp.sum(w**2) for w in jax.tree.leaves(model)))
        return metrics | {"weight_norm": norm}

    def measure(self, name, model, data, hp):
        if name == "fourier_concentration":
            k = min(FOURIER_K, self.shape["p"] // 2)
            return fourier_concentration(self.embedding(model), k)
        if name == "softmax_collapse":
            return softmax_collapse(self.predict(model, data, hp), data["train"])
        if name == "ipr":
            return jnp.mean(ipr(self.embedding(model), axis=0))
        raise ValueError(f"unknown measure {name!r}")

    def probe(self, model, data, hp, n):
        # A stable sort puts the held-out pairs (mask 0) first, each part in table order.
        pairs = jnp.argsort(data["train"], stable=True)[:n]
        outputs = self.predict(model, data, hp, pairs)
        return outputs, jax.nn.one_hot(data["label"][pairs], self.shape["p"], dtype=outputs.dtype)
