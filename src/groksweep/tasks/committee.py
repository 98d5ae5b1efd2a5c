"""The committee machine on a quadratic single-index target (Kumar, Bordelon, Gershman &
Pehlevan, §5, eqs. 3-6, App. 8.1-8.2, 11).

Model
-----
A two-layer network with its N readouts fixed to 1 (a committee machine, eq. 3): with rows
w_i of W (N x D) and the activation phi(h) = h + (eps_align/2) h^2,

    g(W, x) = 1/N sum_i phi(w_i . x) = wbar . x + (eps_align/2) x^T M x,
    wbar = 1/N sum_i w_i,   M = 1/N sum_i w_i w_i^T                  (eq. 4).

``eps_align`` is the paper's epsilon, renamed so as not to clash with the accuracy threshold
eps: the initial kernel-task alignment (the initial NTK's eigenvalue on quadratic functions is
~ eps_align^2 sigma^2 / D^2 against 1/D on linear ones, App. 11). The predictor is the centred
one of App. 8.1, eq. 7, with the output scale ``alpha``:

    f(x) = alpha (g(W, x) - g(W_0, x)),

zero at t = 0; large alpha is the lazy (kernel) regime, small alpha the rich one. g(W_0, x) is
kept per run on the train and test inputs (``g0_train``, ``g0_test``). The network is evaluated
through its moments (wbar, M) when ``width > d_in`` and neuron by neuron otherwise, whichever
costs less; autodiff then gives the gradient at the same cost.

Parameters (besides the engine's seed, dtype, method and the optimizer's lr, gamma, betas)
-----------------------------------------------------------------------------------------
=========  =======  =======  ==============================================================
name       role     default  meaning
=========  =======  =======  ==============================================================
d_in       static   100      input dimension D
width      static   500      number of neurons N
n_test     static   1000     test inputs per seed
n_train    padded   550      training samples P
alpha      traced   1        output scale of the centred predictor (lazy: large)
eps_align  traced   0.1      quadratic coefficient of phi: the kernel-task alignment
sigma      traced   1        initial weight scale: w_i(0) ~ N(0, sigma^2 I_D)
=========  =======  =======  ==============================================================

D = 100, N = 500, P = 550 are the authors' settings of Fig. 1 and Fig. 3(e) (whose eps_align
grid spans 0.02-0.28). D, N and n_test may be axes: each value is its own compiled shape
bucket.

Data and loss
-------------
Inputs x ~ N(0, I_D / D) (train and test alike); the target is y(x) = (1/2) (beta* . x)^2 with
beta* ~ N(0, I_D) drawn per seed, so |beta*|^2 ~ D and y = O(1) (E y = |beta*|^2 / (2D),
E y^2 = 3 |beta*|^4 / (4 D^2)). The paper does not print the distributions of beta* and W_0;
these are the authors' (their notebook draws beta*, W_0 and x as above with sigma = 1, which is
M(0) ~ I, the paper's wide-network initialisation). The loss is the plain mean squared error of
eq. 6, without a factor 1/2:

    L = 1/P sum_mu (f(x_mu) - y_mu)^2,   test loss: the same mean over the n_test inputs.

Learning rate: the engine does not rescale lr. Kumar et al. keep the initial time scale fixed
across alpha with eta = eta_0 / alpha^2; in this parametrisation (1/N outside the sum) the
initial NTK is ~ (alpha^2 / N) x . x', so the step that makes eta_0 independent of alpha *and*
of N is ``lr = eta_0 N / alpha^2`` (:func:`lazy_lr`; the authors' notebooks use eta_0 from 0.5
to 20). Gradient descent then relaxes linear modes at the rate ~ 2 eta_0 / D per step and, for
eps_align sigma << 1, is stable while eta_0 < D / (1 + sqrt(D/P))^2 (about D/2 at P = 5.5 D).
Set lr per alpha yourself: one sweep per alpha (alpha and lr are traced, so the compiled
program is reused; sweeps/committee_figs.py), or, since in the gradient-flow limit lr only
rescales time, an alpha grid at one lr whose curves are the paired ones with time divided by
alpha^2 (ratios t_test / t_train unchanged; sweeps/committee_quick.toml).

Initial scale: with W = sigma V, a run (alpha, sigma, eps_align, lr) is exactly the run
(alpha sigma, 1, eps_align sigma, lr / sigma^2) in V, so sigma changes both the laziness of the
linear part (alpha sigma) and the alignment (eps_align sigma); the quadratic part that must
learn the target scales as alpha eps_align sigma^2, hence App. 8.2's pairing alpha ~ sigma^-2
(at lr = eta_0 N / alpha^2 the time scale does not depend on sigma).

Metrics (every log point)
-------------------------
- ``train_loss``, ``test_loss``: L above on the train and test inputs.
- ``train_acc``, ``test_acc`` per eps: the fraction of samples with squared error below eps
  (as in the other regression tasks; Kumar et al. App. 19 warn that such accuracies can be
  gamed by the threshold: grokking here is read on the loss, ``grokking_time(on="loss")``).
- ``weight_norm``: |W|_F; ``param_change``: |W - W_0|_F / |W_0|_F (App. 8.2, Fig. 7(d-f)).
- The loss decomposition of eq. 6, the population test loss (x ~ N(0, I/D)) of the trained
  predictor in terms of its moments:

      variance_error     = 1/4 (|beta*|^2 / D - alpha eps_align Tr dM / D)^2
      misalignment_error = 1/(2 D^2) |alpha eps_align dM - beta* beta*^T|_F^2
      linear_power       = alpha^2 |dwbar|^2 / D

  They sum to E_x (y - f)^2 exactly (the test loss is its n_test-sample estimate). Because
  the predictor is centred, f = alpha dwbar . x + (alpha eps_align / 2) x^T dM x with
  dwbar = wbar - wbar(0) and dM = M - M(0): these are eq. 6's (wbar, M) for the predictor
  that is trained (the paper's eq. 6 is written for the uncentred f, whose moments they are).
  At t = 0 the first two terms hold all of E y^2 and linear_power is 0; it rises while the
  network fits the initial kernel's linear modes and falls as it learns features (Fig. 4).

:meth:`Committee.probe` returns the predictor and the targets on the first n test inputs, for
the generic ``ntk_alignment`` measure.

Random draws and padding
------------------------
Draws come from :func:`indexed_normal`, training inputs prefix-stable in n_train; the inputs use
the linear task's keys (scaled by 1/sqrt(D)). A bucket is padded to its largest n_train;
padded rows are masked out of the loss and metrics and normalisations use the run's own P, so
a padded run equals the unpadded one. A step costs O(P D min(N, D) + N D^2); buckets split
where n_train would be padded by more than 2x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax.numpy as jnp
from jax import Array, random

from groksweep.params import Param
from groksweep.tasks.base import REGRESSION_METRICS, Shape, Task, indexed_normal, sample_metrics

DECOMPOSITION = ("variance_error", "misalignment_error", "linear_power")
"""The three terms of eq. 6, in the paper's order."""


class Committee(Task):
    name = "committee"
    params: ClassVar[dict[str, Param]] = {
        "d_in": Param(int, 100, "static", "input dimension D", ge=1),
        "width": Param(int, 500, "static", "number of neurons N", ge=1),
        "n_test": Param(int, 1_000, "static", "test inputs per seed", ge=1),
        "n_train": Param(int, 550, "padded", "training samples P", ge=1),
        "alpha": Param(float, 1.0, "traced", "output scale of the centred predictor", gt=0),
        "eps_align": Param(float, 0.1, "traced", "phi(h) = h + (eps_align/2) h^2", ge=0),
        "sigma": Param(float, 1.0, "traced", "initial weights w_i ~ N(0, sigma^2 I)", gt=0),
    }
    metrics: ClassVar[dict[str, tuple[str, ...]]] = (
        REGRESSION_METRICS | {"param_change": ()} | {name: () for name in DECOMPOSITION}
    )
    max_padding: ClassVar[dict[str, float]] = {"n_train": 2.0}
    shared_by = ("n_train",)

    def sample(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        d_in, scale = shape["d_in"], 1.0 / math.sqrt(shape["d_in"])
        train, test, beta, weights = (random.fold_in(key, i) for i in (1, 3, 4, 5))
        return {
            "x_train": scale * indexed_normal(train, (shape["n_train"],), (d_in,), dtype),
            "x_test": scale * indexed_normal(test, (shape["n_test"],), (d_in,), dtype),
            "beta": indexed_normal(beta, (d_in,), (), dtype),
            "w": indexed_normal(weights, (shape["width"],), (d_in,), dtype),
        }

    def share(self, draws, hp, shape):
        rows = (jnp.arange(shape["n_train"]) < hp["n_train"]).astype(draws["x_train"].dtype)
        return {
            "rows": rows,
            "y_train": target(draws["beta"], draws["x_train"]),
            "y_test": target(draws["beta"], draws["x_test"]),
        }

    def setup(self, data, hp, shape):
        w0 = initial_weights(data, hp)
        run = {
            f"g0_{role}": committee(w0, data[f"x_{role}"], hp["eps_align"])
            for role in ("train", "test")
        }
        return w0, run

    def predict(self, model: Array, data: Mapping[str, Array], hp, role: str) -> Array:
        """The centred predictor alpha (g(W, x) - g(W_0, x)) on the train or test inputs."""
        g = committee(model, data[f"x_{role}"], hp["eps_align"])
        return hp["alpha"] * (g - data[f"g0_{role}"])

    def objective(self, model, data, hp):
        residual = self.predict(model, data, hp, "train") - data["y_train"]
        return jnp.sum(data["rows"] * residual**2) / hp["n_train"].astype(residual.dtype)

    def evaluate(self, model, data, hp, eps):
        rows = data["rows"]
        train_err, test_err = (
            (self.predict(model, data, hp, role) - data[f"y_{role}"]) ** 2
            for role in ("train", "test")
        )
        w0 = initial_weights(data, hp)
        norm0 = jnp.sqrt(jnp.sum(w0**2))
        return (
            sample_metrics(train_err, test_err, rows, eps)
            | {
                "weight_norm": jnp.sqrt(jnp.sum(model**2)),
                "param_change": jnp.sqrt(jnp.sum((model - w0) ** 2)) / norm0,
            }
            | loss_decomposition(model, w0, data["beta"], hp["alpha"], hp["eps_align"])
        )

    def probe(self, model, data, hp, n):
        test = {"x_test": data["x_test"][:n], "g0_test": data["g0_test"][:n]}
        return self.predict(model, test, hp, "test")[:, None], data["y_test"][:n, None]


def initial_weights(data: Mapping[str, Array], hp: Mapping[str, Array]) -> Array:
    """W_0 = sigma times the seed's standard normal draw: recomputed where needed rather than
    kept per run (it is as large as the model)."""
    return hp["sigma"] * data["w"]


def target(beta: Array, x: Array) -> Array:
    """y = (1/2) (beta* . x)^2 for each row of ``x``."""
    return 0.5 * (x @ beta) ** 2


def moments(w: Array) -> tuple[Array, Array]:
    """(wbar, M) of eq. 4: the mean of the rows of ``w`` and their mean outer product."""
    return jnp.mean(w, axis=0), w.T @ w / w.shape[0]


def committee(w: Array, x: Array, eps_align: Array) -> Array:
    """g(W, x) = 1/N sum_i phi(w_i . x) for each row of ``x``, without alpha.

    Through the moments, g = wbar . x + (eps_align/2) x^T M x, when N > D: O(P D^2 + N D^2)
    instead of O(P N D)."""
    n, d = w.shape
    if n > d:
        wbar, m = moments(w)
        return x @ wbar + 0.5 * eps_align * jnp.sum((x @ m) * x, axis=1)
    h = x @ w.T
    return jnp.mean(h + 0.5 * eps_align * h**2, axis=1)


def loss_decomposition(
    w: Array, w0: Array, beta: Array, alpha: Array, eps_align: Array
) -> dict[str, Array]:
    """The three terms of eq. 6 for the centred predictor, whose moments are
    (wbar - wbar_0, M - M_0)."""
    (wbar, m), (wbar0, m0) = moments(w), moments(w0)
    d = beta.shape[0]
    dm = alpha * eps_align * (m - m0)
    dwbar = wbar - wbar0
    return {
        "variance_error": 0.25 * ((jnp.sum(beta**2) - jnp.trace(dm)) / d) ** 2,
        "misalignment_error": jnp.sum((dm - jnp.outer(beta, beta)) ** 2) / (2 * d**2),
        "linear_power": alpha**2 * jnp.sum(dwbar**2) / d,
    }


def lazy_lr(eta0: float, alpha: float, width: int) -> float:
    """The learning rate eta_0 N / alpha^2 that keeps the initial time scale independent of the
    output scale alpha and the width N (Kumar et al. App. 8.1)."""
    return eta0 * width / alpha**2
