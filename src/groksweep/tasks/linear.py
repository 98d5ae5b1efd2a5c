"""The linear teacher-student model (Levi, Beck & Bar-Sinai, §3 and App. A).

Conventions (pinned by tests):

- Teacher T and student S are ``d_in x d_out`` with entries N(0, 1/(2 d_in d_out)); the
  student's initial weights are multiplied by ``alpha``.
- N_tr = round(d_in / lam) training inputs x ~ N(0, I) (or ``n_train`` directly), labels
  y = T^T x plus N(0, noise^2) on the training labels only.
- Loss L = 1/(N d_out) sum_i ||S^T x_i - y_i||^2 (PyTorch's mean MSE, eq. 1).
- ``n_test`` fresh test inputs per seed, clean labels.
- ``input_spectrum = "power_law"`` gives train and test inputs the covariance
  R diag(k^-decay) R^T (eigenvalues scaled to mean 1, R Haar-random per seed; ``decay`` is
  traced and, like n_train, fixes the data a family shares); the default ``"identity"`` is
  x ~ N(0, I). See :func:`groksweep.tasks.base.correlated_inputs`.
- Accuracy at threshold eps: the fraction of samples whose squared error, averaged over the
  d_out outputs, is below eps.

Gradient steps use the train Gram matrix Sigma = X^T X / N_tr (eq. 1): with D = S - T and the
noise term e = X^T xi / N_tr, grad L = (2/d_out) (Sigma D - e). Writing it in D rather than in
S avoids the cancellation of Sigma S - X^T y / N in float32 when the loss is small. Reported
losses and accuracies are computed from the per-sample residuals, not from Sigma.

With ``method = "spectral"`` (the default for gradient descent), Sigma is diagonalised once
per family and the model at each log point is computed in closed form from the initial one:
every eigen-direction follows an affine recursion, so a run costs O(d_in^2 d_out) per log point
whatever the step count, and no error accumulates from one log point to the next.

Metrics: ``train_loss``, ``test_loss``, ``train_acc`` and ``test_acc`` (per eps), and
``weight_norm`` = ||S||_F.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import Array

from groksweep.params import Param
from groksweep.tasks.base import (
    DEFAULT_LAM,
    INPUT_PARAMS,
    REGRESSION_METRICS,
    Shape,
    Stream,
    Task,
    correlated_inputs,
    indexed_normal,
    input_draws,
    resolve_n_train,
    row_mask,
    sample_metrics,
    stream,
)


class Linear(Task):
    name = "linear"
    params = {
        "d_in": Param(int, 200, "static", "input dimension", ge=1),
        "n_test": Param(int, 10_000, "static", "test inputs per seed", ge=1),
        "lam": Param(float, None, "alias", f"d_in / N_tr (default {DEFAULT_LAM})", gt=0),
        "n_train": Param(int, None, "padded", "training samples N_tr (instead of lam)", ge=1),
        "d_out": Param(int, 1, "padded", "output dimension", ge=1),
        "alpha": Param(float, 1.0, "traced", "student initial-weight scale", gt=0),
        "noise": Param(float, 0.0, "traced", "std of training-label noise", ge=0),
        **INPUT_PARAMS,
    }
    metrics = REGRESSION_METRICS
    # Steps cost d_in^2 d_out whatever N_tr (they use Sigma); an evaluation costs
    # (N_tr + n_test) d_in d_out, the whole cost of the spectral method (see padding_cost).
    max_padding = {"n_train": 2.0, "d_out": 4.0}
    shared_by = ("n_train", "decay")
    methods = ("step", "spectral")
    # Correlated inputs replace the draws' standard normal ones; the run's teacher, scaled to
    # its own d_out, replaces the seed's unscaled draw.
    overrides = ("x_train", "x_test", "teacher")

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        return resolve_n_train(values, given)

    def padding_cost(self, name, value, static):
        # Padded training rows are evaluated beside the n_test test rows at every log point.
        return value + static["n_test"] if name == "n_train" else value

    def sample(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        d_in, n_train, d_out = shape["d_in"], shape["n_train"], shape["d_out"]
        weights, train, noise, test = (
            stream(key, s)
            for s in (Stream.WEIGHTS, Stream.X_TRAIN, Stream.LABEL_NOISE, Stream.X_TEST)
        )
        # One draw for both matrices: (column, teacher/student, d_in), prefix-stable in d_out.
        teacher_student = indexed_normal(weights, (d_out,), (2, d_in), dtype)
        return {
            "teacher": teacher_student[:, 0].T,
            "student": teacher_student[:, 1].T,
            "x_train": indexed_normal(train, (n_train,), (d_in,), dtype),
            "label_noise": indexed_normal(noise, (n_train, d_out), (), dtype),
            "x_test": indexed_normal(test, (shape["n_test"],), (d_in,), dtype),
        } | input_draws(key, shape, dtype)

    def share(self, draws, hp, shape):
        inputs = correlated_inputs(draws, hp, shape)
        x = inputs.get("x_train", draws["x_train"])
        rows = row_mask(shape["n_train"], hp["n_train"], x.dtype)
        # Masking the transpose, which XLA computes once per seed, writes one masked copy per
        # family; masking x itself had XLA write three (mask, then both transposes).
        masked_t = x.T * (rows / hp["n_train"].astype(x.dtype))
        shared = inputs | {
            "rows": rows,
            "gram": masked_t @ x,
            "noise_gram": masked_t @ draws["label_noise"],
        }
        if shape["method"] == "spectral":
            shared["eigvals"], shared["eigvecs"] = jnp.linalg.eigh(shared["gram"])
        return shared

    def setup(self, data, hp, shape):
        x = data["x_train"]
        cols = row_mask(shape["d_out"], hp["d_out"], x.dtype)
        scale = cols / jnp.sqrt(2.0 * shape["d_in"] * hp["d_out"].astype(x.dtype))
        run = {
            "teacher": data["teacher"] * scale,
            "train_noise": hp["noise"] * data["label_noise"] * data["rows"][:, None] * cols,
            "noise_drive": hp["noise"] * data["noise_gram"] * cols,
        }
        return hp["alpha"] * data["student"] * scale, run

    def objective(self, model, data, hp):
        d = model - data["teacher"]
        quadratic = jnp.sum(d * (data["gram"] @ d)) - 2.0 * jnp.sum(d * data["noise_drive"])
        return quadratic / hp["d_out"].astype(d.dtype)

    def gradient(self, model, data, hp):
        # Autodiff of D.(Sigma D) would compute Sigma D + Sigma^T D: two products for one.
        d = model - data["teacher"]
        return 2.0 * (data["gram"] @ d - data["noise_drive"]) / hp["d_out"].astype(d.dtype)

    def jump(self, model, data, hp, n_steps):
        """Exact gradient descent in the eigenbasis of Sigma: each direction obeys
        D <- (1 - q) D + c with q = lr (2 nu / d_out + gamma), c = lr (2 e / d_out - gamma T).
        ``n_steps`` is an integer count, as the trainer passes it: in the model's float dtype."""
        v = data["eigvecs"]
        lr, gamma, d_out = hp["lr"], hp["gamma"], hp["d_out"].astype(model.dtype)
        q = (lr * (2.0 * data["eigvals"] / d_out + gamma))[:, None]
        c = lr * (v.T @ (2.0 * data["noise_drive"] / d_out - gamma * data["teacher"]))
        d = v.T @ (model - data["teacher"])
        decay, total = geometric_powers(q, n_steps)
        return data["teacher"] + v @ (decay * d + total * c)

    def evaluate(self, model, data, hp, eps):
        d = model - data["teacher"]
        d_out = hp["d_out"].astype(d.dtype)
        train_err = jnp.sum((data["x_train"] @ d - data["train_noise"]) ** 2, axis=1) / d_out
        test_err = jnp.sum((data["x_test"] @ d) ** 2, axis=1) / d_out
        return sample_metrics(train_err, test_err, data["rows"], eps) | {
            "weight_norm": jnp.sqrt(jnp.sum(model**2))
        }

    def probe(self, model, data, hp, n):
        x = data["x_test"][:n]
        return x @ model, x @ data["teacher"]


def geometric_powers(q: Array, n: Array) -> tuple[Array, Array]:
    """``(1 - q)**n`` and ``sum_{k<n} (1 - q)**k`` for an integer count ``n`` (an integer or
    integer-valued float array: the trainer passes it in q's dtype, exact up to 2**53 in
    float64), accurate for q near 0 (where 1 - q rounds to 1) and exact for oscillating
    1 < q < 2."""
    n_float = jnp.asarray(n).astype(q.dtype)
    small = q < 1
    log_r = jnp.log1p(-jnp.where(small, q, 0.0))
    # For q >= 1 the base 1 - q is <= 0: its power is |1 - q|**n with the parity sign of n,
    # written out rather than left to pow's handling of a negative base on each backend.
    parity = 1.0 - 2.0 * jnp.fmod(n_float, 2.0)
    oscillating = parity * jnp.power(jnp.abs(1.0 - q), n_float)
    decay = jnp.where(small, jnp.exp(n_float * log_r), oscillating)
    safe_q = jnp.where(q == 0, 1.0, q)
    total = jnp.where(small, -jnp.expm1(n_float * log_r) / safe_q, (1.0 - decay) / safe_q)
    return decay, jnp.where(q == 0, n_float, total)
