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
=========  =======  =========  ==========================================================
name       role     default    meaning
=========  =======  =========  ==========================================================
d_in       static   100        input dimension D
width      static   500        number of neurons N
n_test     static   1000       test inputs per seed
n_train    padded   550        training samples P
alpha      traced   1          output scale of the centred predictor (lazy: large)
eps_align  traced   0.1        quadratic coefficient of phi: the kernel-task alignment
sigma      traced   1          initial weight scale: w_i(0) ~ N(0, sigma^2 I_D)
labels     static   quadratic  quadratic (below), or eigenvector: K_0's j-th eigenvector
j          traced   1          eigenvector labels: the index, by descending eigenvalue
align      traced   0          fraction of the analytic solution W* added to W_0
=========  =======  =========  ==========================================================

Defaults: ``task = "committee"`` with no parameters is the authors' setting of Fig. 1(b) and
Fig. 3(e) (whose eps_align grid spans 0.02-0.28): D = 100, N = 500, P = 550, alpha = sigma = 1,
the quadratic target, full-batch gd without weight decay at lr = eta_0 N / alpha^2 = 2000
(eta_0 = 4; the paper prints no eta_0, the authors' notebooks use 0.5-20; tests/test_defaults.py).
D, N and n_test may be axes: each value is its own compiled shape bucket.

Kumar et al.'s alignment experiments (sweeps/kumar_eigenvector_labels.py,
sweeps/kumar_initial_alignment.py):

- ``labels = "eigenvector"`` (§6.1, Fig. 5; App. 17, Fig. 19): the labels are the j-th
  eigenvector of the initial NTK K_0 (:func:`initial_kernel`) on the training and test inputs
  together (the paper's K_0(X, X), X the whole dataset: an eigenvector of the training Gram
  matrix alone gives no test labels, and its Nystrom extension is what the initial kernel
  predicts, so it could not be misaligned), of unit norm with its largest-magnitude entry
  positive (:func:`eigenvector_labels`; computed per run in setup, an eigendecomposition of
  (P + n_test)^2). K_0's features are the linear and quadratic functions of x: its top D
  eigenvectors are linear, the next D (D + 1) / 2 quadratic. The eq. 6 terms, which describe
  the quadratic target, are NaN. j may not exceed P + n_test.
- ``align`` (App. 8.3.3, Fig. 10): W_0 = sigma V + align W*, with W* the analytic solution
  (:func:`analytic_solution`: alpha g(W*, x) = y(x) for every x). The predictor stays centred
  on the moved W_0, so the initial loss does not change; the initial kernel does.

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

from groksweep.params import Param, SpecError
from groksweep.tasks.base import REGRESSION_METRICS, Shape, Task, indexed_normal, sample_metrics

DECOMPOSITION = ("variance_error", "misalignment_error", "linear_power")
"""The three terms of eq. 6, in the paper's order."""
LABELS = ("quadratic", "eigenvector")


class Committee(Task):
    """Kumar et al.'s committee machine; defaults: their Fig. 1(b) (D = 100, N = 500, P = 550)."""

    name = "committee"
    params: ClassVar[dict[str, Param]] = {
        "d_in": Param(int, 100, "static", "input dimension D", ge=1),
        "width": Param(int, 500, "static", "number of neurons N", ge=1),
        "n_test": Param(int, 1_000, "static", "test inputs per seed", ge=1),
        "n_train": Param(int, 550, "padded", "training samples P", ge=1),
        "alpha": Param(float, 1.0, "traced", "output scale of the centred predictor", gt=0),
        "eps_align": Param(float, 0.1, "traced", "phi(h) = h + (eps_align/2) h^2", ge=0),
        "sigma": Param(float, 1.0, "traced", "initial weights w_i ~ N(0, sigma^2 I)", gt=0),
        "labels": Param(
            str,
            "quadratic",
            "static",
            "quadratic: y = (beta* . x)^2 / 2; eigenvector: the j-th eigenvector of K_0 (§6.1)",
            choices=LABELS,
        ),
        "j": Param(int, 1, "traced", "eigenvector labels: K_0's j-th eigenvector, 1 = top", ge=1),
        "align": Param(
            float,
            0.0,
            "traced",
            "fraction of the analytic solution W* added to W_0 (Fig. 10)",
            ge=0,
        ),
    }
    metrics: ClassVar[dict[str, tuple[str, ...]]] = (
        REGRESSION_METRICS | {"param_change": ()} | {name: () for name in DECOMPOSITION}
    )
    max_padding: ClassVar[dict[str, float]] = {"n_train": 2.0}
    shared_by = ("n_train",)
    # Kumar et al.'s lr = eta_0 N / alpha^2 at eta_0 = 4, N = 500, alpha = 1 (Fig. 1(b) setting).
    optimizer_defaults: ClassVar[dict[str, Any]] = {"lr": 2000.0}

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        if values["j"] > values["n_train"] + values["n_test"]:
            raise SpecError(
                f"j={values['j']} exceeds the {values['n_train'] + values['n_test']} "
                "train and test inputs whose kernel it indexes"
            )
        if values["align"] > 0 and (values["width"] < 2 or values["eps_align"] == 0):
            raise SpecError("align > 0 needs width >= 2 and eps_align > 0 (W* ~ 1/sqrt(eps_align))")
        return values

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
        if eigenvector_labelled(shape):  # labels of the run's own kernel, made in setup
            return {"rows": rows}
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
        if eigenvector_labelled(shape):
            run |= eigenvector_labels(w0, data, hp)
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
            | self.decomposition(model, w0, data, hp)
        )

    def decomposition(self, model, w0, data, hp) -> dict[str, Array]:
        """Eq. 6's terms; NaN for eigenvector labels, which are no quadratic target."""
        terms = loss_decomposition(model, w0, data["beta"], hp["alpha"], hp["eps_align"])
        if eigenvector_labelled(self.shape):
            return {name: jnp.full_like(value, jnp.nan) for name, value in terms.items()}
        return terms

    def probe(self, model, data, hp, n):
        test = {"x_test": data["x_test"][:n], "g0_test": data["g0_test"][:n]}
        return self.predict(model, test, hp, "test")[:, None], data["y_test"][:n, None]


def initial_weights(data: Mapping[str, Array], hp: Mapping[str, Array]) -> Array:
    """W_0 = sigma V + align W*: sigma times the seed's standard normal draw V, plus the
    fraction ``align`` of the analytic solution (:func:`analytic_solution`). Recomputed where
    needed rather than kept per run (it is as large as the model)."""
    w0 = hp["sigma"] * data["w"]
    if "align" not in hp:  # hyperparameters given by hand may leave it out: its default, 0
        return w0
    solution = analytic_solution(data["beta"], w0.shape[0], hp["alpha"], hp["eps_align"])
    # align = 0 adds exact zeros, and W* is never formed from eps_align = 0 (resolve refuses it
    # with align > 0; here the where keeps its 1/sqrt(0) out of the sum).
    return w0 + jnp.where(hp["align"] > 0, hp["align"] * solution, 0.0)


def eigenvector_labelled(shape: Shape) -> bool:
    """Whether the labels are the initial kernel's eigenvector; a shape given by hand may leave
    ``labels`` out (its default, the quadratic target)."""
    return shape.get("labels") == "eigenvector"


def analytic_solution(beta: Array, width: int, alpha: Array, eps_align: Array) -> Array:
    """W* (N x D), a minimiser of eq. 6 for the uncentred network: rows +-beta*/sqrt(alpha
    eps_align) in pairs, so that wbar = 0 and M = beta* beta*^T / (alpha eps_align), hence
    alpha g(W*, x) = (beta* . x)^2 / 2 = y(x) for every x. With N odd the last row is 0 and the
    pairs are scaled by sqrt(N / (N - 1)) to keep M."""
    pairs = width // 2
    signs = jnp.where(jnp.arange(width) < 2 * pairs, 1.0 - 2.0 * (jnp.arange(width) % 2), 0.0)
    scale = jnp.sqrt(width / (2.0 * pairs) / (alpha * eps_align))
    return (signs * scale)[:, None].astype(beta.dtype) * beta


def initial_kernel(w0: Array, x: Array, alpha: Array, eps_align: Array) -> Array:
    """K_0(X, X), the initial neural tangent kernel of the predictor alpha g(W, x) on the rows
    of ``x``: with the gradient (alpha/N) phi'(w_i . x) x of g in w_i and phi'(h) = 1 + eps h,

        K_0(x, x') = (alpha^2 / N) (x . x') (1 + eps (wbar . x + wbar . x') + eps^2 x^T M x'),

    through the moments (wbar, M) of W_0: O(n^2 D + N D^2)."""
    wbar, m = moments(w0)
    h = x @ wbar
    quadratic = 1.0 + eps_align * (h[:, None] + h[None, :]) + eps_align**2 * (x @ m) @ x.T
    return alpha**2 / w0.shape[0] * (x @ x.T) * quadratic


def eigenvector_labels(w0: Array, data: Mapping[str, Array], hp: Mapping[str, Array]) -> dict:
    """Kumar et al. §6.1's labels: the j-th eigenvector (by descending eigenvalue) of K_0 on
    the training and test inputs together, of unit norm (as the paper's, so the labels are
    ~ 1/sqrt(P + n_test)) with its largest-magnitude entry positive; ``y_train`` and ``y_test``
    are its two parts. Padded training
    rows are cut out of the kernel, which leaves them eigenvalue 0 and the rest unchanged."""
    x = jnp.concatenate([data["x_train"], data["x_test"]])
    n_pad = data["x_train"].shape[0]
    mask = jnp.concatenate([data["rows"], jnp.ones(data["x_test"].shape[0], x.dtype)])
    kernel = initial_kernel(w0, x, hp["alpha"], hp["eps_align"]) * mask[:, None] * mask[None, :]
    _, vectors = jnp.linalg.eigh(kernel)  # ascending eigenvalues
    v = jnp.take(vectors, x.shape[0] - hp["j"], axis=1)
    y = v * jnp.sign(v[jnp.argmax(jnp.abs(v))])
    return {"y_train": y[:n_pad], "y_test": y[n_pad:]}


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
