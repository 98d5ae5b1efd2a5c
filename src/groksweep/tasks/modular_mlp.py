"""A two-layer perceptron on prime-field arithmetic (Gromov 2023, as used by Levi, Beck &
Bar-Sinai App. G, eq. 43; Kumar, Bordelon, Gershman & Pehlevan §3 and App. 8.3).

Model
-----
The input of pair (a, b) is x = onehot(a) ++ onehot(b), of dimension d_in = 2p; the output is
p logits. With W1 (d_in x d_h), W2 (d_h x p), no biases, an entry-wise ``activation`` phi and
prefactors c1, c2 fixed by the ``parametrisation``,

    h = c1 x W1,    f(x; theta) = c2 phi(h) W2,    theta = (W1, W2).

(eq. 43 writes W^(1)_{kj} with the hidden index first; W1 here is its transpose.) Because x is
one-hot, x W1 = W1[a] + W1[p + b]: the rows W1[:p] are the *embedding of the a-tokens*.

``parametrisation``:

- ``"mean_field"`` (default; eq. 43, Mei et al.): c1 = 1/sqrt(d_in), c2 = 1/d_h, every weight
  N(0, 1).
- ``"standard"``: c1 = c2 = 1, weights N(0, 1/fan_in) (W1: 1/d_in, W2: 1/d_h), i.e. LeCun
  normal. At initialisation the pre-activations are the same as in mean field, but the output
  is sqrt(d_h) times larger and gradient steps of equal lr move the function differently.
  Mean field needs large learning rates (Gromov and Kumar et al. use 100, Levi et al. 500):
  with GD and the MSE below, p = 23, d_h = 100 and 90% of the pairs grok at lr 100 in ~2.5e4
  steps, at lr 2000 in ~1.3e3 (times ~ 1/lr); lr 1e4 diverges at p = 17, d_h = 50.

Initial weights are multiplied by ``init_scale``.

``activation``: ``"square"`` phi(h) = h^2 (Gromov; App. G), ``"relu"``, and ``"quadratic"``
phi(h) = h + (eps_align/2) h^2, the activation of Kumar et al.'s eq. 3 (their epsilon, the
initial kernel-task alignment; renamed so as not to clash with the accuracy threshold eps).

Predictor and output scale (Kumar et al. eq. 7, App. 8.1), as in
:mod:`groksweep.tasks.mlp`: ``predictor = "centred"`` (default) predicts
alpha (f(x; theta) - f(x; theta_0)), zero at t = 0; ``"plain"`` predicts alpha f(x; theta)
(alpha = 1 is Gromov's and Levi et al.'s model). f(x; theta_0) is kept per run for all p^2
pairs (``f0``). Large alpha is the lazy regime; the engine does not rescale lr, Kumar et al.
use lr = eta_0 / alpha^2 (set it yourself, e.g. one sweep per alpha).

Defaults: Kumar et al.'s App. 8.3 setting (after Gromov): (a + b) mod 23, 90% of the pairs
trained, the mean-field square network of width 100, MSE, plain gradient descent at lr 100
without weight decay.

Parameters (besides the engine's seed, dtype, method and the optimizer's: optimizer gd (lr 100
by default), adam or adamw, with traced lr, gamma and betas; PyTorch weight-decay conventions,
full batch)
--------------------------------------------------------------------------------------------
================  =======  ============  =====================================================
name              role     default       meaning
================  =======  ============  =====================================================
p                 static   23            prime modulus: p^2 pairs, d_in = 2p, p outputs
op                traced   "add"         (a op b) mod p: add, sub, mul, x2+xy+y2
frac              traced   0.9           fraction of the p^2 pairs trained on
split             static   "random"      held-out pairs: random, block or strips
loss              static   "mse"         mse (one-hot targets), cross_entropy or stablemax
label_noise       traced   0             fraction of the training pairs given a wrong label
d_h               static   100           hidden width
activation        static   "square"      square, relu or quadratic
parametrisation   static   "mean_field"  mean_field or standard (above)
predictor         static   "centred"     centred or plain (above)
alpha             traced   1             output scale of the predictor (lazy: large)
init_scale        traced   1             multiplier of the initial weights
eps_align         traced   1             quadratic coefficient of the "quadratic" activation
================  =======  ============  =====================================================

Data, splits and labels come from :mod:`groksweep.tasks.arithmetic`, the losses and metrics
from :class:`~groksweep.tasks.model.ModelTask`, on which this task is written (the table form:
the p^2 pairs are ``x``, the labels of the traced ``op`` and the mask of the traced ``frac`` are
family data). ``mse`` is the mean over training pairs of ||prediction - onehot(label)||^2 / p
(PyTorch's ``MSELoss``; the three papers train with MSE, hence the default, without stating its
normalisation), ``cross_entropy`` the mean of -log softmax, ``stablemax`` Prieto et al.'s
StableMax cross-entropy (:mod:`groksweep.tasks.arithmetic`). ``label_noise`` relabels that
fraction of the training pairs wrongly (nested in the fraction, fixed per seed, test labels
clean; :func:`arithmetic.noisy_labels`), Doshi et al.'s label corruption. The split and the
initial weights
depend only on the seed (and p, d_h, split, frac): every value of op, alpha, lr, ... at one seed
trains on the same pairs from the same weights, in float32 and float64 sweeps alike (both are
drawn in float32). The model is :class:`PairMLP`, an equinox module.

Metrics: ``train_loss``, ``test_loss``, the argmax accuracies ``train_acc`` and ``test_acc``
(no eps dimension), and ``weight_norm`` sqrt(|W1|_F^2 + |W2|_F^2) of the trainable weights
(without alpha or the prefactors): Kumar et al.'s point (Fig. 2a) is that it *increases* while
the network groks without weight decay.

Measures (recorded where a sweep names them), of the a-token embedding E = W1[:p] (p x d_h,
the trainable weights, without c1), Fourier-transformed along the token axis:

- ``fourier_concentration``: the fraction of E's power in its ``arithmetic.FOURIER_K`` = 4 strongest
  nonzero frequencies, summed over the d_h neurons (:func:`arithmetic.fourier_concentration`;
  all p // 2 of them where p < 8). Gromov's solution gives every neuron one frequency but
  spreads the neurons over all of them, so in this MLP the value stays near its random-weights
  level while the network groks (about 0.5 at p = 17, 0.38 at p = 23, before and after).
- ``neuron_fourier_concentration``: the same with k = 1 for each neuron's column of E alone,
  averaged over the neurons: the fraction of a neuron's power in its strongest frequency. It
  rises as the network groks (0.32 -> 0.8 at p = 17, 0.27 -> 0.69 at p = 23; see
  sweeps/modular_mlp_quick.toml).
- ``embedding_difference``: MED, the mean norm of E[i+1] - E[i]
  (:func:`arithmetic.main_embedding_difference`, Gu et al. Definition 3.1).
- ``ipr``: Doshi et al.'s mean inverse participation ratio (*To grok or not to grok*, eqs. 3-4):
  for each neuron k, the mean of the IPRs (:func:`arithmetic.ipr`, one-sided FFT over the p
  tokens, r = 2) of its a-embedding W1[:p, k] (their U), its b-embedding W1[p:, k] (V) and its
  output weights W2[k, :] (W), averaged over the d_h neurons. 1 for Gromov's periodic solution,
  about 2 / (p // 2 + 1) for random weights.
- ``softmax_collapse``: the fraction of training pairs whose softmax of the predictor is exactly
  1 in the run's dtype (Prieto et al.; :func:`arithmetic.softmax_collapse`).

The probe (:meth:`ModelTask.probe <groksweep.tasks.model.ModelTask.probe>`) returns the
predictor and the one-hot targets on the first n held-out pairs in table order (pair
i = a p + b), followed by training pairs if fewer than n are held out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, random

from groksweep.params import Param
from groksweep.tasks import arithmetic
from groksweep.tasks.base import OUTPUT_SCALE_PARAMS, Shape
from groksweep.tasks.draws import normal
from groksweep.tasks.model import ModelTask

ACTIVATIONS = ("square", "relu", "quadratic")
PARAMETRISATIONS = ("mean_field", "standard")


class PairMLP(eqx.Module):
    """The two-layer perceptron on a batch of pairs, ``pair = a p + b`` (its one-hot input is
    implied: x W1 = W1[a] + W1[p + b], so no d_in-wide product is formed)."""

    w1: Array
    w2: Array
    p: int = eqx.field(static=True)
    c1: float = eqx.field(static=True)
    c2: float = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __call__(self, pairs: Array, eps_align: Array) -> Array:
        p = self.p
        # All p^2 pairs by broadcasting, then the rows asked for: cheaper to differentiate than
        # gathering W1's rows per pair.
        h = (self.w1[:p, None, :] + self.w1[None, p:, :]).reshape(p * p, -1)
        table = self.c2 * activation(self.activation, self.c1 * h, eps_align) @ self.w2
        return table[pairs]


class ModularMLP(ModelTask):
    """Kumar et al.'s App. 8.3 modular MLP by default: (a + b) mod 23, 90% trained, gd at lr 100."""

    name = "modular_mlp"
    params: ClassVar[dict[str, Param]] = {
        **arithmetic.ARITHMETIC_PARAMS,
        # The MLP papers (Gromov; Levi et al. App. G; Kumar et al.) train with MSE, Kumar et
        # al.'s App. 8.3 on 90% of the pairs.
        "loss": replace(arithmetic.ARITHMETIC_PARAMS["loss"], default="mse"),
        "frac": replace(arithmetic.ARITHMETIC_PARAMS["frac"], default=0.9),
        "d_h": Param(int, 100, "static", "hidden width", ge=1),
        "activation": Param(
            str,
            "square",
            "static",
            "square h^2, relu, or quadratic h + (eps_align/2) h^2",
            choices=ACTIVATIONS,
        ),
        "parametrisation": Param(
            str,
            "mean_field",
            "static",
            "mean_field: N(0,1) weights, W1/sqrt(d_in), W2/d_h; standard: N(0, 1/fan_in)",
            choices=PARAMETRISATIONS,
        ),
        **OUTPUT_SCALE_PARAMS,
        "eps_align": Param(
            float, 1.0, "traced", "quadratic coefficient of the quadratic activation", ge=0
        ),
    }
    metrics = arithmetic.CLASSIFICATION_METRICS | {"weight_norm": ()}
    measures: ClassVar[dict[str, tuple[str, ...]]] = {
        "fourier_concentration": (),
        "neuron_fourier_concentration": (),
        "embedding_difference": (),
        "ipr": (),
        "softmax_collapse": (),
    }
    shared_by = ("frac", "op", "label_noise")
    accuracy = "argmax"
    # Kumar et al. App. 8.3 (after Gromov): plain gradient descent at lr 100, no weight decay.
    optimizer_defaults: ClassVar[dict[str, Any]] = {"optimizer": "gd", "lr": 100.0, "gamma": 0.0}

    @property
    def loss(self) -> Any:
        """The spec's static ``loss``: "mse", "cross_entropy", or the StableMax cross-entropy
        of one example (a function) for "stablemax"."""
        name = self.shape.get("loss", self.params["loss"].default)
        return _stablemax_loss if name == "stablemax" else name

    def init(self, key: Array, shape: Shape) -> PairMLP:
        p, d_h = shape["p"], shape["d_h"]
        (std1, std2), (c1, c2) = scales(shape)
        return PairMLP(
            w1=std1 * normal(random.fold_in(key, 1), (2 * p,), (d_h,)),
            w2=std2 * normal(random.fold_in(key, 2), (d_h,), (p,)),
            p=p, c1=c1, c2=c2, activation=shape["activation"],
        )  # fmt: skip

    def data(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        return {"x": jnp.arange(shape["p"] ** 2, dtype=jnp.int32)}

    def family_data(self, data, hp, shape):
        # From the engine's split key: arithmetic's splits (random, block, strips), not its own.
        train, label = arithmetic.family_split(data["split_key"], hp, shape)
        return {"y": label, "train": train}

    def apply_batch(self, model: PairMLP, x: Array, hp) -> Array:
        return model(x, hp["eps_align"])

    def measure(self, name, model, data, hp):
        embedding = model.w1[: self.shape["p"]]  # the a-tokens' rows
        if name == "fourier_concentration":
            k = min(arithmetic.FOURIER_K, self.shape["p"] // 2)
            return arithmetic.fourier_concentration(embedding, k)
        if name == "neuron_fourier_concentration":
            per_neuron = jax.vmap(lambda e: arithmetic.fourier_concentration(e[:, None], 1), 1)
            return jnp.mean(per_neuron(embedding))
        if name == "embedding_difference":
            return arithmetic.main_embedding_difference(embedding)
        if name == "ipr":
            u, v = arithmetic.ipr(embedding, 0), arithmetic.ipr(model.w1[self.shape["p"] :], 0)
            return jnp.mean((u + v + arithmetic.ipr(model.w2, 1)) / 3)
        if name == "softmax_collapse":
            prediction = self._predict(model, data["x"], data.get("f0_x"), hp)
            return arithmetic.softmax_collapse(prediction, data["train"])
        raise ValueError(f"unknown measure {name!r}")


def _stablemax_loss(prediction: Array, label: Array) -> Array:
    """The StableMax cross-entropy of one example (``prediction`` (p,), an integer label)."""
    return arithmetic.stablemax_cross_entropy(prediction[None], label[None])[0]


def scales(shape: Shape) -> tuple[tuple[float, float], tuple[float, float]]:
    """((std1, std2), (c1, c2)): the initial weights' standard deviations and the layers'
    prefactors in the ``parametrisation``."""
    d_in, d_h = 2 * shape["p"], shape["d_h"]
    if shape["parametrisation"] == "mean_field":
        return (1.0, 1.0), (d_in**-0.5, 1.0 / d_h)
    return (d_in**-0.5, d_h**-0.5), (1.0, 1.0)


def activation(name: str, h: Array, eps_align: Array) -> Array:
    """phi(h): ``square`` h^2, ``relu``, ``quadratic`` h + (eps_align/2) h^2."""
    if name == "square":
        return h**2
    if name == "relu":
        return jax.nn.relu(h)
    if name == "quadratic":
        return h + 0.5 * eps_align * h**2
    raise ValueError(f"unknown activation {name!r}")
