"""Exact random-matrix theory of the linear teacher-student model, in the trainer's conventions.

Reference: Levi, Beck & Bar-Sinai, "Grokking in linear estimators" (eq. numbers below are the
paper's). Everything broadcasts over its array arguments (numpy rules) and uses float64.

Trainer conventions (``groksweep.tasks.linear``)
------------------------------------------------
Teacher T and student S are d_in x d_out with entries N(0, 1/(2 d_in d_out)); S_0 is multiplied
by ``alpha``. N = round(d_in/lam) train inputs x ~ N(0, I), labels y = T^T x (+ N(0, noise^2) on
the train labels only). Loss L = 1/(N d_out) sum_i ||S^T x_i - y_i||^2 (PyTorch mean MSE);
full-batch GD with PyTorch weight decay, S <- S - lr (grad L + gamma S). With D = S - T and
Sigma = X^T X / N (noise-free labels)

    D <- D - lr (2/d_out) Sigma D - lr gamma (D + T).

Mapping to the paper
--------------------
Eq. 3 reads D <- (I - 2 eta/d_out Sigma) D - (eta gamma_p/d_out)(D + T): matching the Sigma term
gives eta = lr, matching the decay term gives eta gamma_p / d_out = lr gamma, i.e.
gamma_p = gamma d_out. Eq. 12 / App. D absorb the 1/d_out of eq. 3 into eta_0 -> eta/d_out, so the
d_out = 1 formulas (eqs. 8, 14, 32-38) apply with

    eta_0 -> lr / d_out,    gamma -> gamma d_out,    losses -> losses / d_out.

Check: per eigenmode nu of Sigma the gradient-flow amplitude decays as exp(-r t) with
r = 2 eta_0 (nu + gamma_p/2) = lr (2 nu/d_out + gamma), and the fixed point
-(gamma_p/2)/(nu + gamma_p/2) T = -gamma/(2 nu/d_out + gamma) T, both as in the trainer.
Internally the dimensionless time s = 4 eta_0 t = 4 lr t / d_out and g = gamma_p/2 = gamma d_out/2
are used, so that e^{-4 eta_0 (nu + gamma_p/2) t} = e^{-(nu + g) s}.

Time t counts GD steps; the theory is the gradient-flow limit (eq. 4), accurate when
lr * lambda_+ / d_out << 1 (per-step factor (1 - x) vs e^{-x}). Losses are the d_in -> infinity
(self-averaging) expectations over the teacher, the initialisation, the data and the noise;
the test loss is the population loss ||D||^2 / d_out (eq. 2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import special

__all__ = [
    "accuracy",
    "delta_t_asymptotic",
    "delta_t_subleading",
    "delta_t_weight_decay",
    "gen_loss_late_time",
    "grokking_time",
    "grokking_times_lambert",
    "loss_threshold",
    "losses",
    "losses_asymptotic",
    "losses_two_layer",
    "mp_atom",
    "mp_edges",
    "mp_expectation",
    "mp_pdf",
    "train_loss_closed_form",
    "weight_decay_plateaus",
]

ERF_SQRT2 = float(special.erf(np.sqrt(2.0)))
"""Accuracy level Erf(sqrt 2) ~ 0.9545 at which L = eps/4 for d_out = 1 (the paper's t*, App. B)."""


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur law (eq. 6) and its quadrature
# --------------------------------------------------------------------------------------------


def mp_edges(lam):
    """Support edges (lambda_-, lambda_+) = ((1 - sqrt lam)^2, (1 + sqrt lam)^2) of eq. 6."""
    root = np.sqrt(np.asarray(lam, dtype=float))
    return (1.0 - root) ** 2, (1.0 + root) ** 2


def mp_atom(lam):
    """Mass (1 - 1/lam)^+ of the atom at nu = 0 in eq. 6 (the null directions of Sigma)."""
    return np.clip(1.0 - 1.0 / np.asarray(lam, dtype=float), 0.0, None)


def mp_pdf(nu, lam):
    """Continuous part of the Marchenko-Pastur density, eq. 6.

    sqrt((lambda_+ - nu)(nu - lambda_-)) / (2 pi lam nu) on [lambda_-, lambda_+], 0 elsewhere.
    It integrates to min(1, 1/lam); the atom (1 - 1/lam)^+ at nu = 0 is *not* included here
    (see :func:`mp_atom`; :func:`mp_expectation` includes it).
    """
    nu, lam = np.broadcast_arrays(np.asarray(nu, dtype=float), np.asarray(lam, dtype=float))
    lo, hi = mp_edges(lam)
    inside = (nu > lo) & (nu < hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.sqrt(np.clip((hi - nu) * (nu - lo), 0.0, None)) / (2.0 * np.pi * lam * nu)
    return np.where(inside, density, 0.0)


def _theta_rule(n_panels=11, n_per_panel=12, theta_min=1e-4):
    """Composite Gauss-Legendre rule on [0, pi], panels graded geometrically toward theta = 0.

    With nu = lambda_- + (lambda_+ - lambda_-) sin^2(theta/2) the MP weight becomes smooth
    (no square-root endpoint singularities). The lower edge theta = 0 still carries structure
    at small scales: exp(-s nu) has width ~ (s (lambda_+ - lambda_-))^{-1/2} there, and 1/nu has a
    pole at distance ~ |1 - sqrt lam| from it. Geometric panels (ratio ~2.8 down to 1e-4, whose
    endpoint-clustered nodes reach ~1e-6) resolve both at every scale: ~1e-9 relative error for
    s (lambda_+ - lambda_-) up to ~4e13 and |1 - sqrt lam| down to ~1e-4 (132 nodes).
    """
    x, w = np.polynomial.legendre.leggauss(n_per_panel)
    edges = np.concatenate([[0.0], np.geomspace(theta_min, np.pi, n_panels)])
    lo, hi = edges[:-1, None], edges[1:, None]
    theta = (lo + (hi - lo) * (x + 1.0) / 2.0).ravel()
    return theta, ((hi - lo) / 2.0 * w).ravel()


_THETA, _THETA_W = _theta_rule()
_SIN2_HALF = np.sin(_THETA / 2.0) ** 2
_SIN2_W = np.sin(_THETA) ** 2 * _THETA_W
_CHUNK = 4096  # parameter points per block: bounds memory at (len(_THETA), _CHUNK) arrays


def _mp_nodes(lam):
    """Nodes nu (n, B) and weights (n, B) with sum w f(nu) = integral of mp_pdf * f, lam (B,)."""
    lo, hi = mp_edges(lam)
    width = hi - lo
    nu = lo + width * _SIN2_HALF[:, None]
    weights = width**2 / (8.0 * np.pi * lam) * _SIN2_W[:, None] / nu
    return nu, weights


def _blockwise(kernel, n_out, *arrays):
    """Broadcast ``arrays``, apply ``kernel`` to flat blocks, return ``n_out`` arrays."""
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in arrays))
    shape = arrays[0].shape
    flat = [a.ravel() for a in arrays]
    out = np.empty((n_out, flat[0].size))
    for start in range(0, flat[0].size, _CHUNK):
        block = slice(start, start + _CHUNK)
        out[:, block] = kernel(*(a[block] for a in flat))
    return tuple(o.reshape(shape) for o in out)


def mp_expectation(f: Callable, lam, *args):
    """E_{nu ~ MP(lam)}[f(nu, *args)], atom at nu = 0 included (eq. 6).

    ``f`` must be a numpy ufunc-like callable; it is called with nu of shape (n_nodes, B) and
    each of ``args`` of shape (B,) (the broadcast of ``lam`` and ``args``, in blocks), and once
    with nu = 0 for the atom where lam > 1. Returns an array of the broadcast shape.
    """

    def kernel(lam_b, *args_b):
        nu, weights = _mp_nodes(lam_b)
        total = np.sum(weights * f(nu, *args_b), axis=0)
        atom = mp_atom(lam_b)
        has_atom = atom > 0
        if np.any(has_atom):
            total = total + np.where(has_atom, atom * f(np.zeros_like(lam_b), *args_b), 0.0)
        return (total,)

    return _blockwise(kernel, 1, lam, *args)[0]


# --------------------------------------------------------------------------------------------
# Loss curves (eqs. 8, 12, 14, 37-38, App. C)
# --------------------------------------------------------------------------------------------


class _Spectrum(NamedTuple):
    """MP(lam) quadrature for B parameter points, with the time-independent factors of the
    loss integrands at shifted rate nu + g precomputed (see :func:`_loss_curves`)."""

    lam: np.ndarray  # (B,)
    g: np.ndarray  # (B,)
    atom: np.ndarray  # (B,) mass at nu = 0
    nu: np.ndarray  # (n, B) nodes of the continuous part
    weight: np.ndarray  # (n, B)
    weight_nu: np.ndarray  # (n, B) weight * nu
    rate: np.ndarray  # (n, B) nu + g
    nu_frac: np.ndarray  # (n, B) nu / (nu + g)
    g_frac: np.ndarray  # (n, B) g / (nu + g)

    @classmethod
    def of(cls, lam, g):
        nu, weight = _mp_nodes(lam)
        rate = nu + g
        return cls(lam, g, mp_atom(lam), nu, weight, weight * nu, rate, nu / rate, g / rate)

    def take(self, idx):
        return _Spectrum(*(a[..., idx] for a in self))


def _loss_curves(spec, s, alpha2, noise2, d_out):
    """(train, test) losses at dimensionless time s = 4 lr t / d_out, for g = gamma d_out / 2.

    All arguments are (B,) arrays matching ``spec``. Per eigenmode nu (App. E, eq. 35, in the
    mapped units) the student-init, teacher and label-noise parts of D-bar are independent:
      init    alpha S0-bar e,                      e = exp(-(nu + g) s / 2),
      teacher -T-bar (e nu + g)/(nu + g),
      noise   sqrt(nu) xi (1 - e)/(nu + g),      xi ~ N(0, noise^2 / N) per entry.
    """
    with np.errstate(invalid="ignore"):  # 0 * inf at s = inf
        decay = np.exp(spec.rate * (-0.5 * s))
        null_decay = np.exp(-0.5 * np.where(spec.g > 0, spec.g * s, 0.0))  # nu = 0: only g
    teacher = decay * spec.nu_frac + spec.g_frac
    clean = alpha2 * decay**2 + teacher**2  # eq. 37 bracket, in units of |T|^2 = 1/2
    clean_null = alpha2 * null_decay**2 + 1.0  # nu = 0: T is never learned
    scale = 0.5 / d_out  # E|D_ij|^2 = 1/(2 d_in d_out) per unit of clean, eq. 38
    train = scale * np.einsum("ij,ij->j", spec.weight_nu, clean)
    test = scale * (np.einsum("ij,ij->j", spec.weight, clean) + spec.atom * clean_null)
    if np.any(noise2 > 0):  # derived in losses(); App. C keeps only train's first term
        lam = spec.lam
        fitted = spec.nu * ((1.0 - decay) / spec.rate) ** 2
        train = train + noise2 * (np.clip(1.0 - lam, 0.0, None)
                                  + lam * np.einsum("ij,ij->j", spec.weight, teacher**2))
        test = test + noise2 * lam * np.einsum("ij,ij->j", spec.weight, fitted)
    return train, test


def _losses_s(s, lam, g, alpha2, noise2, d_out):
    """Broadcasting, blockwise :func:`_loss_curves`."""

    def kernel(s, lam, g, *rest):
        return _loss_curves(_Spectrum.of(lam, g), s, *rest)

    return _blockwise(kernel, 2, s, lam, g, alpha2, noise2, d_out)


def losses(t, lam, *, lr=0.01, gamma=0.0, d_out=1, alpha=1.0, noise=0.0):
    """Expected (train, test) loss after t GD steps (gradient-flow limit), eqs. 8, 12, 14, 37.

    Clean part (eq. 14 / eq. 37 with |S_0|^2 = alpha^2/2, |T|^2 = 1/2, mapped per the module
    docstring: eta_0 = lr/d_out, gamma_p = gamma d_out, g = gamma_p/2, s = 4 eta_0 t):

        L_q = 1/(2 d_out) E_MP[(alpha^2 e^{-(nu+g) s} + ((e^{-(nu+g)s/2} nu + g)/(nu + g))^2) q]

    with q = nu (train) and q = 1 (test). For gamma = 0 it is (1 + alpha^2)/(2 d_out) times
    eq. 8 at eta_0 = lr/d_out; at t = 0 both losses are (1 + alpha^2)/(2 d_out). For lam > 1
    the null modes (atom) keep the teacher: the test loss never drops below (1-1/lam)/(2 d_out).

    Label noise (std ``noise`` on the train labels). App. C claims the dynamics are unchanged
    and the train loss just gains noise^2; that holds only for lam -> 0: the gradient has the
    extra term -(2/d_out) X^T xi / N, so the student also fits the noise. Exactly (SVD of X):

        train += noise^2 [(1 - lam)^+ + lam E_MP'[((e^{-(nu+g)s/2} nu + g)/(nu + g))^2]]
        test  += noise^2 lam E_MP'[nu (1 - e^{-(nu+g)s/2})^2 / (nu + g)^2]

    (E_MP' = continuous part only). The train loss is the MSE against the noisy labels (what the
    trainer reports and what its train accuracy measures), the test loss is against clean
    labels. At t -> inf, gamma = 0, lam < 1 these give the least-squares values
    noise^2 (1 - lam) and noise^2 lam/(1 - lam).

    ``t`` may be ``np.inf`` (the t -> infinity plateaus).
    """
    lr, d_out, gamma = (np.asarray(a, dtype=float) for a in (lr, d_out, gamma))
    s = 4.0 * lr * np.asarray(t, dtype=float) / d_out
    return _losses_s(s, lam, gamma * d_out / 2.0, np.square(alpha), np.square(noise), d_out)


def losses_two_layer(t, lam, *, d_h, d_out=1, lr=0.01):
    """(train, test) losses of the 2-layer linear network S0 S1, eq. 18 (§4.1, App. F).

    Init S0, T0 ~ N(0, 1/(2 d_in d_h)), S1, T1 ~ N(0, 1/(2 d_out d_h)); teacher T = T0 T1.
    Frozen-kernel approximation of eq. 17 (h = (|S0|^2 + |S1|^2)/2 ~ 1/2, valid for
    d_h >> d_out and d_out << d_in): dD/dt = -(lr/d_out^2) Sigma D, so with
    E|D_0|^2 = |S0 S1|^2 + |T|^2 = 1/(2 d_h)

        L_q = (|D_0|^2 / d_out) E_MP[q exp(-2 lr nu t / d_out^2)]
            = (|D_0|^2 / d_out) L_eq8(eta_0 = lr/(2 d_out^2)).

    Eq. 18 writes |D_0|^2 L^{1-layer}(eta_0/(2 d_out^2)) without the 1/d_out; the losses are
    means over the d_out outputs (eq. 39), so the 1/d_out is required (it is the eq. 12 factor).
    """
    d_out = np.asarray(d_out, dtype=float)
    s = 2.0 * lr * np.asarray(t, dtype=float) / d_out**2
    train, test = _losses_s(s, lam, 0.0, 0.0, 0.0, d_out)  # alpha = 0: (1/(2 d_out)) E[q e^{-nu s}]
    scale = 1.0 / np.asarray(d_h, dtype=float)  # |D_0|^2 / (1/2)
    return scale * train, scale * test


# --------------------------------------------------------------------------------------------
# Accuracy (eqs. 9, 12)
# --------------------------------------------------------------------------------------------


def accuracy(loss, eps, d_out=1):
    """Fraction of samples with squared error (averaged over d_out outputs) below eps, eq. 12.

    Each output error z_j = (D^T x)_j is ~ N(0, L) (L the loss, the mean over outputs of
    E z_j^2), so ||z||^2 / L ~ chi^2_{d_out} and
    A = P(||z||^2 / d_out < eps) = P(d_out/2, d_out eps / (2 L)) (regularised lower incomplete
    gamma), = 1 - Gamma(d_out/2, d_out eps/(2L))/Gamma(d_out/2) as in eq. 12; for d_out = 1 it is
    Erf(sqrt(eps/(2L))), eq. 9.
    """
    d_out = np.asarray(d_out, dtype=float)
    with np.errstate(divide="ignore"):
        x = d_out * np.asarray(eps, dtype=float) / (2.0 * np.asarray(loss, dtype=float))
    return special.gammainc(d_out / 2.0, x)


def loss_threshold(eps, level=0.95, d_out=1):
    """The loss L* with accuracy(L*, eps, d_out) = level; accuracy >= level iff loss <= L*."""
    d_out = np.asarray(d_out, dtype=float)
    return d_out * np.asarray(eps, dtype=float) / (2.0 * special.gammaincinv(d_out / 2.0, level))


# --------------------------------------------------------------------------------------------
# Grokking time (numerical)
# --------------------------------------------------------------------------------------------

_GRID_POINTS = 20  # bracketing grid in s: 0, then log-spaced per point
_S_MIN, _S_MAX = 1e-12, 1e13  # _S_MAX: quadrature is resolved up to s (lambda_+ - lambda_-) ~ 1e13
_RELAX_MARGIN = 40.0  # e-folds beyond L0/L* of the slowest mode before a point is declared NaN
_TINY = 1e-300  # floor of the losses before taking logs (exp underflow)


def _time_grid(lam, g, log_ratio_min, log_ratio_max):
    """(K, B) grid in s: 0, then geometric over the only range where L can first cross L*.

    Every squared mode amplitude decays at most like e^{-(lambda_+ + g) s}, so
    L(s) >= L(0) e^{-(lambda_+ + g) s}: no crossing before log(L0/L*)/(lambda_+ + g) (the clean
    L0 is the smaller one). The slowest amplitude decays as e^{-(lambda_- + g) s/2}; at the grid
    end it is below e^{-log(L0/L*) - 40}, so a loss still above L* there stays above it.
    """
    lo, hi = mp_edges(lam)
    s_first = np.maximum(np.maximum(log_ratio_min, 0.0) / (hi + g), _S_MIN)
    with np.errstate(divide="ignore"):
        s_last = 2.0 * (np.maximum(log_ratio_max, 0.0) + _RELAX_MARGIN) / (lo + g)
    s_last = np.maximum(np.minimum(s_last, _S_MAX), 2.0 * s_first)
    steps = np.linspace(0.0, 1.0, _GRID_POINTS - 1)[:, None]
    grid = s_first * (s_last / s_first) ** steps
    return np.concatenate([np.zeros((1,) + np.shape(lam)), grid])


def _illinois(h, a, b, fa, fb, rtol=1e-12, max_iter=100):
    """Vectorised Illinois (modified regula falsi) root of h on [a, b], fa > 0 >= fb."""
    side = np.zeros(a.shape)
    root = b.copy()
    for _ in range(max_iter):
        root = b - fb * (b - a) / (fb - fa)
        f_root = h(root)
        keep_a = f_root * fb > 0  # root is on b's side: replace b
        fa = np.where(keep_a & (side < 0), fa / 2.0, fa)
        fb = np.where(~keep_a & (side > 0), fb / 2.0, fb)
        a, fa = np.where(keep_a, a, root), np.where(keep_a, fa, f_root)
        b, fb = np.where(keep_a, root, b), np.where(keep_a, f_root, fb)
        side = np.where(keep_a, -1.0, 1.0)
        if np.all((np.abs(f_root) < 1e-12) | (np.abs(b - a) <= rtol * np.abs(b))):
            break
    return root


def _first_root(grid, excess, refine):
    """First s with excess(s) <= 0, given excess (K, B) on ``grid``; 0 at s = 0, NaN if never.

    ``refine(idx)`` returns s -> excess(s) at the points ``idx``, whose first bracketing grid
    interval is then narrowed to the root.
    """
    below = excess <= 0
    first = np.where(below.any(axis=0), below.argmax(axis=0), -1)
    out = np.where(first == 0, 0.0, np.nan)
    idx = np.flatnonzero(first > 0)
    if idx.size:
        k = first[idx]
        out[idx] = _illinois(refine(idx), grid[k - 1, idx], grid[k, idx],
                             excess[k - 1, idx], excess[k, idx])
    return out


def _grokking_block(lam, lr, gamma, d_out, eps, level, alpha, noise):
    """:func:`grokking_time` for flat (B,) parameter arrays, in s = 4 lr t / d_out."""
    g = gamma * d_out / 2.0
    spec = _Spectrum.of(lam, g)
    args = (np.square(alpha), np.square(noise), d_out)
    log_star = np.log(loss_threshold(eps, level, d_out))
    clean0 = (1.0 + args[0]) / (2.0 * d_out)
    grid = _time_grid(lam, g, np.log(clean0) - log_star, np.log(clean0 + args[1]) - log_star)
    curves = np.stack([_loss_curves(spec, s_k, *args) for s_k in grid], axis=1)  # (2, K, B)
    excess = np.log(np.maximum(curves, _TINY)) - log_star

    def refine(which, idx):
        sub, sub_args, target = spec.take(idx), [a[idx] for a in args], log_star[idx]
        return lambda s: np.log(np.maximum(_loss_curves(sub, s, *sub_args)[which], _TINY)) - target

    to_steps = d_out / (4.0 * lr)
    return tuple(to_steps * _first_root(grid, excess[which], functools.partial(refine, which))
                 for which in (0, 1))


def grokking_time(lam, *, lr=0.01, gamma=0.0, d_out=1, eps=1e-3, level=0.95, alpha=1.0,
                  noise=0.0):
    """First GD step (continuous) at which the train / test accuracy reaches ``level``.

    Returns (t_train, t_test), arrays of the broadcast shape; NaN where the level is never
    reached (e.g. the test loss for lam > 1 at gamma = 0, or a weight-decay plateau above L*),
    0 where it already holds at t = 0. Since accuracy(L) >= level iff L <= L*
    (:func:`loss_threshold`), this is the first t with loss(t) <= L*: the losses of
    :func:`losses` are evaluated on a per-point log grid in t (bracketing the first crossing;
    the test loss need not be monotone with label noise), then log L(t) = log L* is solved by
    vectorised Illinois iterations to ~1e-12 relative. The grokking time difference is
    t_test - t_train. Gradient-flow time in units of GD steps (see module docstring).
    """
    return _blockwise(_grokking_block, 2, lam, lr, gamma, d_out, eps, level, alpha, noise)


# --------------------------------------------------------------------------------------------
# Closed forms and asymptotics (d_out = 1, gamma = 0, alpha = 1 unless stated; for d_out > 1
# use lr -> lr/d_out and divide losses by d_out, eq. 12)
# --------------------------------------------------------------------------------------------


def train_loss_closed_form(t, lam, lr=0.01):
    """Eq. 19 (below eq. 8): L_tr = e^{-4 eta_0 (1+lam) t} 0F1(; 2; 16 eta_0^2 t^2 lam), eta_0 = lr.

    The paper calls 0F~1(a; z) = 0F1(a; z) Gamma(a) "regularised"; the regularised function is
    0F1/Gamma(a), but for a = 2, Gamma(2) = 1 and both conventions coincide. Evaluated as
    e^{-s (1 - sqrt lam)^2} ive(1, 2 s sqrt lam) / (s sqrt lam), s = 4 eta_0 t, using
    0F1(; 2; z) = I_1(2 sqrt z)/sqrt z (no overflow at late times). Valid for all lam > 0.
    """
    s = 4.0 * lr * np.asarray(t, dtype=float)
    root = np.sqrt(np.asarray(lam, dtype=float))
    x = 2.0 * s * root
    with np.errstate(divide="ignore", invalid="ignore"):
        bessel_ratio = np.where(x > 0, 2.0 * special.ive(1, x) / x, 1.0)  # I_1(x)/(x/2) e^{-x}
    return np.exp(-s * (1.0 - root) ** 2) * bessel_ratio


def losses_asymptotic(t, lam, lr=0.01):
    """Late-time (eta_0 t >> sqrt lam) losses, eq. 10 (train = eq. 21).

    L_tr ~ exp(-4 eta_0 (1 - sqrt lam)^2 t) / (16 sqrt(pi) lam^{3/4} (eta_0 t)^{3/2}),
    L_gen ~ L_tr / (1 - sqrt lam)^2. Derived in App. B for lam < 1; for lam > 1 the same
    expansion of the continuous part holds and the test loss gains the atom (1 - 1/lam).
    """
    eta_t = lr * np.asarray(t, dtype=float)
    lam = np.asarray(lam, dtype=float)
    gap = (1.0 - np.sqrt(lam)) ** 2
    train = np.exp(-4.0 * gap * eta_t) / (16.0 * np.sqrt(np.pi) * lam**0.75 * eta_t**1.5)
    return train, train / gap + mp_atom(lam)


def gen_loss_late_time(t, lam, lr=0.01):
    """Eq. 22: the late-time test loss from integrating eq. 21 with dL_gen/dt = -4 eta_0 L_tr.

    L_gen ~ e^{-a t}/(2 sqrt(pi) lam^{3/4} sqrt(eta_0 t)) - |1 - sqrt lam| Gamma(1/2, a t)
    / (sqrt(pi) lam^{3/4}), a = 4 eta_0 (1 - sqrt lam)^2, with Gamma(1/2, x) = sqrt(pi)
    erfcx(sqrt x) e^{-x}. (The paper writes (1 - sqrt lam); |.| is what the integral gives and
    extends it to lam > 1, where the atom 1 - 1/lam is added.)
    """
    eta_t = lr * np.asarray(t, dtype=float)
    lam = np.asarray(lam, dtype=float)
    gap = np.abs(1.0 - np.sqrt(lam))
    at = 4.0 * gap**2 * eta_t
    bracket = 1.0 / (2.0 * np.sqrt(np.pi * eta_t)) - gap * special.erfcx(np.sqrt(at))
    return np.exp(-at) * bracket / lam**0.75 + mp_atom(lam)


def _lambert_arguments(lam, eps, level):
    """Arguments z_tr, z_gen of W in eqs. 23, 24, with eps/4 -> L* (eps/4 at level Erf(sqrt 2))."""
    root = np.sqrt(np.asarray(lam, dtype=float))
    four_lstar = 4.0 * loss_threshold(eps, level, 1)
    z_tr = 2.0 ** (5 / 3) * (1 - root) ** 2 / (3 * np.cbrt(np.pi) * root * four_lstar ** (2 / 3))
    with np.errstate(invalid="ignore"):  # NaN for lam > 1
        return z_tr, z_tr * (1 - root) ** (-4 / 3)


def grokking_times_lambert(lam, *, lr=0.01, eps=1e-3, level=ERF_SQRT2):
    """Late-time solutions (t_tr*, t_gen*) of L(t*) = L*, eqs. 23, 24 (lam < 1, else NaN).

    t* = 3/(8 eta_0 (1 - sqrt lam)^2) W(z), W the Lambert function, solving eq. 10 = L* exactly;
    the paper's (long) cube-root arguments simplify to
    z_tr = 2^{5/3} (1 - sqrt lam)^2 / (3 pi^{1/3} sqrt(lam) (4 L*)^{2/3}),
    z_gen = z_tr (1 - sqrt lam)^{-4/3}. The paper uses L* = eps/4, i.e. level = Erf(sqrt 2).
    """
    lam = np.asarray(lam, dtype=float)
    z_tr, z_gen = _lambert_arguments(lam, eps, level)
    prefactor = np.where(lam < 1, 3.0 / (8.0 * lr * (1.0 - np.sqrt(lam)) ** 2), np.nan)
    return prefactor * special.lambertw(z_tr).real, prefactor * special.lambertw(z_gen).real


def delta_t_asymptotic(lam, lr=0.01):
    """Grokking time difference for eps -> 0, eq. 11: -log(1 - sqrt lam)/(2 eta_0 (1-sqrt lam)^2).

    d_out = 1, gamma = 0, eta_0 = lr; NaN for lam >= 1 (the test accuracy never saturates).
    """
    lam = np.asarray(lam, dtype=float)
    gap = 1.0 - np.sqrt(np.where(lam < 1, lam, np.nan))
    return -np.log(gap) / (2.0 * lr * gap**2)


def delta_t_subleading(lam, *, lr=0.01, eps=1e-3, level=ERF_SQRT2):
    """Eq. 25: eq. 11 plus the next term of t_gen* - t_tr* (W(z) ~ log z - log log z).

    3/(8 eta_0 (1 - sqrt lam)^2) log(1 - log(z_gen/z_tr)/log z_gen) with z from eqs. 23, 24;
    the correction is negative and vanishes like 1/log(1/eps). NaN where the log is undefined.
    """
    lam = np.asarray(lam, dtype=float)
    z_tr, z_gen = _lambert_arguments(lam, eps, level)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = 1.0 - np.log(z_gen / z_tr) / np.log(z_gen)
        correction = 3.0 / (8.0 * lr * (1.0 - np.sqrt(lam)) ** 2) * np.log(ratio)
    return delta_t_asymptotic(lam, lr) + correction


def weight_decay_plateaus(lam, *, gamma, d_out=1):
    """Small-gamma t -> inf (train, test) losses with weight decay, eq. 15 (lam < 1, else NaN).

    From eq. 14 at t -> inf: L = (1/2) E[(g/(nu + g))^2 q] ~ (g^2/2) E[q/nu^2] with g = gamma_p/2,
    E_MP[1/nu] = 1/(1-lam), E_MP[1/nu^2] = 1/(1-lam)^3, so L_tr ~ gamma_p^2/(8 (1-lam)),
    L_gen ~ gamma_p^2/(8 (1-lam)^3). Eq. 15 prints gamma^2/4: that is inconsistent with eq. 14's
    prefactor 1/2 (|T|^2 = 1/2) by a factor 2; the /8 form is used. Trainer units
    (gamma_p = gamma d_out, losses / d_out): L_tr ~ gamma^2 d_out / (8 (1 - lam)).
    """
    lam = np.asarray(lam, dtype=float)
    base = np.square(gamma) * np.asarray(d_out, dtype=float) / 8.0
    one_minus = np.where(lam < 1, 1.0 - lam, np.nan)
    return base / one_minus, base / one_minus**3


def delta_t_weight_decay(lam, lr=0.01):
    """Eq. 15's grokking time with weight decay: log(1 + sqrt lam)/(2 eta_0 (1 - sqrt lam)^2).

    Quoted by the paper without derivation for the regime where L* lies above both plateaus
    of :func:`weight_decay_plateaus` (d_out = 1, eta_0 = lr); NaN for lam >= 1. The exact
    theory does not reproduce it: with weight decay the test loss creeps up to its plateau and
    :func:`grokking_time` gives a Delta t that *grows* with gamma from its gamma = 0 value,
    always above this formula (which is below eq. 11).
    """
    root = np.sqrt(np.where(np.asarray(lam, dtype=float) < 1, lam, np.nan))
    return np.log1p(root) / (2.0 * lr * (1.0 - root) ** 2)
