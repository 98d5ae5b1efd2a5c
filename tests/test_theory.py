"""Physics checks of groksweep.theory against independent computations.

References used here never call the theory's formulas: exact discrete GD of the trainer's
update rule (closed form per eigenmode of the sampled train Gram matrix), literal GD of a
two-layer network, chi-square sampling, scipy's adaptive quadrature and hypergeometric
functions, and textbook Marchenko-Pastur / least-squares results.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import integrate, special

from groksweep import theory

D_IN = 400


# --------------------------------------------------------------------------------------------
# Exact GD reference (trainer conventions, discrete time, sampled data)
# --------------------------------------------------------------------------------------------


def gd_closed_form(xu, nu, teacher, student, labels, steps, *, d_out, lr, gamma):
    """Train/test loss of S <- S - lr (grad L + gamma S) at integer ``steps``, exactly.

    ``xu`` are the train inputs in the eigenbasis of Sigma = X^T X / N (eigenvalues ``nu``),
    ``teacher``/``student`` the weights in that basis (columns = outputs), L the PyTorch mean
    MSE. grad L = 2/(N d_out) X^T (X S - y) is diagonal there: S_{t+1} = rho S_t + b with
    rho = 1 - lr (2 nu/d_out + gamma), b = lr (2/d_out) X^T y / N, so
    S_t = rho^t S_0 + b (1 - rho^t)/(1 - rho).
    """
    n, cols = labels.shape
    shrink = lr * (2.0 * nu / d_out + gamma)
    drive = lr * (2.0 / d_out) * (xu.T @ labels) / n
    out = []
    for t in steps:
        rho_t = (1.0 - shrink) ** t
        geometric = np.divide(1.0 - rho_t, shrink, out=np.full_like(shrink, float(t)),
                              where=shrink > 0)
        s_t = rho_t[:, None] * student + geometric[:, None] * drive
        out.append([np.sum((xu @ s_t - labels) ** 2) / (n * cols),
                    np.sum((s_t - teacher) ** 2) / cols])
    return np.array(out).T


@functools.lru_cache(maxsize=None)
def train_inputs(lam, seed):
    """N = round(D_IN/lam) Gaussian inputs, rotated into the eigenbasis of their Gram matrix."""
    rng = np.random.default_rng([seed, 0])
    n = round(D_IN / lam)
    x = rng.standard_normal((n, D_IN))
    nu, u = np.linalg.eigh(x.T @ x / n)
    return x @ u, np.clip(nu, 0.0, None)


def sampled_gd_losses(lam, steps, *, d_out=1, lr=0.01, gamma=0.0, alpha=1.0, noise=0.0,
                      seeds=3, replicas=16):
    """Mean over seeds of exact GD losses with sampled teacher, student, data and label noise.

    ``replicas`` independent (teacher, student, noise) draws share each X (extra columns; the
    columns of D evolve independently), which averages out the teacher/init randomness. Gaussian
    weight matrices are rotation invariant, so they are drawn directly in Sigma's eigenbasis.
    """
    runs = []
    for seed in range(seeds):
        xu, nu = train_inputs(lam, seed)
        rng = np.random.default_rng([seed, 1])
        cols = d_out * replicas
        std = 1.0 / np.sqrt(2.0 * D_IN * d_out)
        teacher = std * rng.standard_normal((D_IN, cols))
        student = alpha * std * rng.standard_normal((D_IN, cols))
        labels = xu @ teacher + noise * rng.standard_normal((xu.shape[0], cols))
        runs.append(gd_closed_form(xu, nu, teacher, student, labels, steps,
                                   d_out=d_out, lr=lr, gamma=gamma))
    return np.mean(runs, axis=0)


def test_gd_closed_form_matches_literal_pytorch_steps():
    rng = np.random.default_rng(0)
    n, d_in, d_out, lr, gamma = 40, 25, 3, 0.05, 0.1
    x = rng.standard_normal((n, d_in))
    teacher, student = rng.standard_normal((2, d_in, d_out)) * 0.1
    labels = x @ teacher + 0.2 * rng.standard_normal((n, d_out))
    literal = []
    s = student.copy()
    for t in range(31):
        if t in (0, 7, 30):
            literal.append([np.mean((x @ s - labels) ** 2), np.mean((s - teacher) ** 2) * d_in])
        grad = 2.0 / (n * d_out) * x.T @ (x @ s - labels)
        s = s - lr * (grad + gamma * s)
    nu, u = np.linalg.eigh(x.T @ x / n)
    closed = gd_closed_form(x @ u, nu, u.T @ teacher, u.T @ student, labels, (0, 7, 30),
                            d_out=d_out, lr=lr, gamma=gamma)
    np.testing.assert_allclose(closed, np.array(literal).T, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Marchenko-Pastur law
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.25, 0.8, 2.0, 4.0])
def test_mp_pdf_mass_and_mean(lam):
    lo, hi = theory.mp_edges(lam)
    mass = integrate.quad(theory.mp_pdf, lo, hi, args=(lam,), epsabs=0, epsrel=1e-11)[0]
    mean = integrate.quad(lambda nu: nu * theory.mp_pdf(nu, lam), lo, hi, epsabs=0,
                          epsrel=1e-11)[0]
    assert mass == pytest.approx(min(1.0, 1.0 / lam), rel=1e-8)
    assert mean == pytest.approx(1.0, rel=1e-8)  # the atom at 0 adds nothing to the mean
    assert theory.mp_pdf(np.array([lo - 1e-3, hi + 1e-3]), lam).tolist() == [0.0, 0.0]


def test_mp_expectation_moments():
    lam = np.array([0.05, 0.3, 0.9, 0.99, 1.0, 1.3, 3.0])
    moment = [theory.mp_expectation(lambda nu, k=k: nu**k, lam) for k in range(4)]
    np.testing.assert_allclose(moment[0], 1.0, rtol=1e-12)  # atom included
    np.testing.assert_allclose(moment[1], 1.0, rtol=1e-12)
    np.testing.assert_allclose(moment[2], 1.0 + lam, rtol=1e-12)
    np.testing.assert_allclose(moment[3], 1.0 + 3.0 * lam + lam**2, rtol=1e-12)
    under = lam[lam < 1]
    np.testing.assert_allclose(theory.mp_expectation(lambda nu: 1 / nu, under),
                               1.0 / (1.0 - under), rtol=1e-9)
    np.testing.assert_allclose(theory.mp_expectation(lambda nu: nu**-2, under),
                               (1.0 - under) ** -3, rtol=1e-9)


def test_mp_expectation_broadcasts_extra_arguments():
    lam = np.array([0.5, 2.0])[:, None]
    s = np.array([0.0, 1.0, 10.0])
    values = theory.mp_expectation(lambda nu, s: np.exp(-s * nu), lam, s)
    assert values.shape == (2, 3)
    np.testing.assert_allclose(values[:, 0], 1.0)
    np.testing.assert_array_less(0.5, values[1])  # the atom (1 - 1/2) never decays


# --------------------------------------------------------------------------------------------
# Loss curves against exact GD
# --------------------------------------------------------------------------------------------


def test_losses_at_t0_are_the_initial_expected_losses():
    lam = np.array([0.3, 1.7])[:, None, None]
    d_out = np.array([1, 7])[None, :, None]
    alpha = np.array([0.5, 1.0, 3.0])
    train, test = theory.losses(0.0, lam, d_out=d_out, alpha=alpha, noise=0.2, gamma=0.01)
    expected = (1.0 + alpha**2) / (2.0 * d_out) + 0 * lam
    np.testing.assert_allclose(test, expected, rtol=1e-12)
    np.testing.assert_allclose(train, expected + 0.2**2, rtol=1e-12)


def _assert_matches_gd(lam, s_values, rtol, **kw):
    """Compare theory and exact GD at steps t = d_out s / (4 lr) (s = 4 eta_0 t)."""
    d_out = kw.get("d_out", 1)
    steps = np.round(np.asarray(s_values) * d_out / (4 * kw.get("lr", 0.01)))
    reference = sampled_gd_losses(lam, steps, replicas=16 // d_out + 1, **kw)
    predicted = np.array(theory.losses(steps, lam, **kw))
    np.testing.assert_allclose(predicted, reference, rtol=rtol)


@pytest.mark.parametrize("lam", [0.5, 1.5])
@pytest.mark.parametrize("d_out", [1, 10])
def test_losses_match_gd_without_weight_decay(lam, d_out):
    _assert_matches_gd(lam, [0, 1, 4, 16], rtol=0.06, d_out=d_out)


@pytest.mark.parametrize(("lam", "gamma", "d_out", "alpha"), [
    (0.5, 0.05, 1, 2.0), (1.5, 0.05, 1, 1.0), (0.5, 0.01, 10, 1.0), (1.5, 0.01, 10, 0.5)])
def test_losses_match_gd_with_weight_decay(lam, gamma, d_out, alpha):
    # s = 400 is on the t -> inf plateau set by the teacher term; with gamma mapped wrongly
    # (gamma instead of gamma * d_out at d_out = 10) it would be ~70x off.
    _assert_matches_gd(lam, [1, 4, 16, 400], rtol=0.06, gamma=gamma, d_out=d_out, alpha=alpha)


@pytest.mark.parametrize(("lam", "noise", "gamma", "d_out"), [
    (0.5, 0.3, 0.0, 1), (1.5, 0.3, 0.02, 1), (0.9, 0.1, 0.0, 10)])
def test_losses_match_gd_with_label_noise(lam, noise, gamma, d_out):
    # Late times: the student has fitted the noise; the paper's App. C (test loss unchanged)
    # would be off by noise^2 lam/(1 - lam) = 0.09 at lam = 0.5.
    _assert_matches_gd(lam, [1, 4, 16, 400], rtol=0.06, noise=noise, gamma=gamma, d_out=d_out)


def test_label_noise_reaches_least_squares_limits():
    noise = 0.3
    under = np.array([0.2, 0.5, 0.8])  # ordinary least squares: residual and variance
    train, test = theory.losses(np.inf, under, noise=noise)
    np.testing.assert_allclose(train, noise**2 * (1 - under), rtol=1e-8)
    np.testing.assert_allclose(test - theory.losses(np.inf, under)[1],
                               noise**2 * under / (1 - under), rtol=1e-8)
    over = np.array([1.5, 3.0])  # minimum-norm interpolation: variance noise^2 / (lam - 1)
    train, test = theory.losses(np.inf, over, noise=noise)
    np.testing.assert_allclose(train, 0.0, atol=1e-12)
    np.testing.assert_allclose(test - theory.losses(np.inf, over)[1],
                               noise**2 / (over - 1), rtol=1e-8)


def test_gen_loss_derivative_is_minus_four_eta_train_loss():
    """Eq. 20: dL_gen/dt = -4 eta_0 L_tr (gamma = 0, any d_out with eta_0 = lr / d_out)."""
    t, h, lr, d_out = np.array([10.0, 300.0, 5000.0]), 1e-2, 0.01, 4
    lam = np.array([0.4, 0.95, 2.0])[:, None]
    slope = (theory.losses(t + h, lam, lr=lr, d_out=d_out)[1]
             - theory.losses(t - h, lam, lr=lr, d_out=d_out)[1]) / (2 * h)
    train = theory.losses(t, lam, lr=lr, d_out=d_out)[0]
    np.testing.assert_allclose(slope, -4 * lr / d_out * train, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Two-layer linear network (eq. 18)
# --------------------------------------------------------------------------------------------


def two_layer_gd_losses(lam, steps, *, d_in, d_h, d_out, lr, seed):
    """Literal full-batch GD of x -> S1^T S0^T x against a two-layer linear teacher."""
    rng = np.random.default_rng(seed)
    n = round(d_in / lam)
    x = rng.standard_normal((n, d_in))
    gram = x.T @ x / n
    first = rng.standard_normal((2, d_in, d_h)) / np.sqrt(2 * d_in * d_h)
    second = rng.standard_normal((2, d_h, d_out)) / np.sqrt(2 * d_out * d_h)
    teacher = first[0] @ second[0]
    s0, s1 = first[1], second[1]
    out = []
    for t in range(max(steps) + 1):
        d = s0 @ s1 - teacher
        if t in steps:
            out.append([np.sum(d * (gram @ d)) / d_out, np.sum(d * d) / d_out])
        grad_d = 2.0 / d_out * gram @ d  # dL/d(S0 S1)
        s0, s1 = s0 - lr * grad_d @ s1.T, s1 - lr * s0.T @ grad_d
    return np.array(out).T


def test_two_layer_initial_loss():
    d_in, d_h, d_out = 100, 300, 3
    rng = np.random.default_rng(1)
    first = rng.standard_normal((200, 2, d_in, d_h)) / np.sqrt(2 * d_in * d_h)
    second = rng.standard_normal((200, 2, d_h, d_out)) / np.sqrt(2 * d_out * d_h)
    d0 = first[:, 1] @ second[:, 1] - first[:, 0] @ second[:, 0]
    sampled = np.mean(np.sum(d0**2, axis=(1, 2))) / d_out  # test loss ||D_0||^2 / d_out
    train, test = theory.losses_two_layer(0.0, 0.5, d_h=d_h, d_out=d_out)
    assert train == pytest.approx(test, rel=1e-12)
    assert test == pytest.approx(sampled, rel=0.03)  # eq. 18 without the 1/d_out: 3x off


def test_two_layer_decay_matches_gd():
    lam, d_h, d_out, lr = 0.5, 800, 2, 0.05
    steps = [0, 40, 160]  # 2 lr t / d_out^2 = 0, 1, 4
    runs = [two_layer_gd_losses(lam, steps, d_in=200, d_h=d_h, d_out=d_out, lr=lr, seed=seed)
            for seed in range(3)]
    reference = np.mean([run / run[:, :1] for run in runs], axis=0)  # L(t) / L(0) per run
    predicted = np.array(theory.losses_two_layer(np.array(steps), lam, d_h=d_h, d_out=d_out,
                                                 lr=lr))
    # rate lr/d_out^2 (eq. 17 with h = 1/2); twice or half that rate would be off by ~2-10x
    np.testing.assert_allclose(predicted / predicted[:, :1], reference, rtol=0.1)


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_out", [1, 3, 10, 50])
def test_accuracy_matches_chi_square_sampling(d_out):
    rng = np.random.default_rng(d_out)
    loss = np.array([2e-4, 1e-3, 5e-3])
    eps = 1e-3
    z = rng.standard_normal((20_000, d_out, 1)) * np.sqrt(loss)  # errors, variance L each
    sampled = np.mean(np.mean(z**2, axis=1) < eps, axis=0)
    np.testing.assert_allclose(theory.accuracy(loss, eps, d_out), sampled, atol=0.01)


def test_accuracy_d_out_1_is_erf_and_threshold_inverts_it():
    loss = np.geomspace(1e-6, 1.0, 13)
    np.testing.assert_allclose(theory.accuracy(loss, 1e-3), special.erf(np.sqrt(1e-3 / (2 * loss))),
                               rtol=1e-12)
    assert theory.accuracy(0.0, 1e-3) == 1.0
    assert theory.loss_threshold(1e-3, theory.ERF_SQRT2) == pytest.approx(1e-3 / 4, rel=1e-12)
    d_out = np.array([1, 2, 10, 100])
    threshold = theory.loss_threshold(1e-3, 0.95, d_out)
    np.testing.assert_allclose(theory.accuracy(threshold, 1e-3, d_out), 0.95, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Closed forms and asymptotics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.3, 0.9, 0.9999, 1.5])
def test_train_loss_closed_form_eq19(lam):
    t = np.geomspace(1.0, 1e10, 21)
    exact = theory.losses(t, lam)[0]
    keep = exact > 1e-250
    np.testing.assert_allclose(theory.train_loss_closed_form(t, lam)[keep], exact[keep],
                               rtol=1e-8)
    s = 4 * 0.01 * t[:8]  # scipy's 0F1 before it overflows; Gamma(2) = 1 in either convention
    np.testing.assert_allclose(np.exp(-s * (1 + lam)) * special.hyp0f1(2, s**2 * lam),
                               exact[:8], rtol=1e-8)


def test_late_time_asymptotics_eq10_eq22():
    lam, t = 0.5, np.array([1e3, 1e4, 1e5])
    train, test = theory.losses(t, lam)
    asym_train, asym_test = theory.losses_asymptotic(t, lam)
    train_error = np.abs(train / asym_train - 1)
    test_error = np.abs(test / asym_test - 1)
    eq22_error = np.abs(test / theory.gen_loss_late_time(t, lam) - 1)
    for error in (train_error, test_error, eq22_error):
        assert np.all(np.diff(error) < 0)  # -> 0 as t -> inf
    assert train_error[-1] < 1e-3 and test_error[-1] < 1e-2 and eq22_error[-1] < 1e-3
    assert np.all(eq22_error < test_error)  # eq. 22 is the better late-time test loss


def test_weight_decay_plateaus_eq15():
    lam, d_out = np.array([0.3, 0.7]), np.array([1, 10])[:, None]
    errors = []
    for gamma in (1e-3, 1e-4, 1e-5):
        plateaus = np.array(theory.weight_decay_plateaus(lam, gamma=gamma, d_out=d_out))
        exact = np.array(theory.losses(np.inf, lam, gamma=gamma, d_out=d_out))
        errors.append(np.max(np.abs(exact / plateaus - 1)))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 3e-3  # eq. 15's gamma^2/4: 50%


def test_weight_decay_lengthens_grokking_unlike_eq15():
    """In the exact theory the test loss creeps to its plateau: Delta t grows with gamma,
    while eq. 15 predicts a shorter, gamma-independent Delta t than without weight decay."""
    gamma = np.array([0.0, 1e-3, 3e-3, 1e-2])
    t_train, t_test = theory.grokking_time(0.5, gamma=gamma, level=theory.ERF_SQRT2)
    delta = t_test - t_train
    assert np.all(np.diff(delta) > 0)
    assert np.all(delta > theory.delta_t_weight_decay(0.5))


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8])
def test_lambert_grokking_times_eqs23_24(lam):
    level = theory.ERF_SQRT2  # L* = eps/4, as in App. B
    for eps, rtol_train, rtol_test in ((1e-3, 1e-2, 1e-1), (1e-30, 1e-4, 1e-3)):
        exact_train, exact_test = theory.grokking_time(lam, eps=eps, level=level)
        lambert_train, lambert_test = theory.grokking_times_lambert(lam, eps=eps, level=level)
        assert lambert_train == pytest.approx(exact_train, rel=rtol_train)
        assert lambert_test == pytest.approx(exact_test, rel=rtol_test)


def test_delta_t_asymptotic_eq11_is_the_small_eps_limit():
    lam = np.array([0.2, 0.5, 0.8])
    eps = np.array([1e-3, 1e-10, 1e-30, 1e-100])[:, None]
    t_train, t_test = theory.grokking_time(lam, eps=eps, level=theory.ERF_SQRT2)
    ratio = theory.delta_t_asymptotic(lam) / (t_test - t_train)
    assert np.all(np.diff(ratio, axis=0) < 0)  # converges from above, like 1/log(1/eps)
    assert np.all(ratio[0] > 1.5)  # eq. 11 overestimates by 60-110% at eps = 1e-3
    np.testing.assert_allclose(ratio[-1], 1.0, atol=0.015)
    subleading = theory.delta_t_subleading(lam, eps=eps[1:]) / (t_test - t_train)[1:]
    assert np.all(np.abs(subleading - 1) < np.abs(ratio[1:] - 1))  # eq. 25 improves on eq. 11
    assert np.isnan(theory.delta_t_asymptotic(1.5))


# --------------------------------------------------------------------------------------------
# Grokking time
# --------------------------------------------------------------------------------------------


def test_grokking_time_reaches_the_level_first_at_t_star():
    lam = np.array([0.3, 0.9, 1.5])
    kw = dict(gamma=1e-4, d_out=3, eps=1e-3, level=0.9, alpha=1.5, noise=0.01, lr=0.02)
    times = theory.grokking_time(lam, **kw)
    for which, t_star in enumerate(times):
        finite = np.isfinite(t_star)
        assert which == 1 or finite.all()
        loss_kw = {k: kw[k] for k in ("gamma", "d_out", "alpha", "noise", "lr")}
        at = theory.losses(t_star[finite], lam[finite], **loss_kw)[which]
        before = theory.losses(0.999 * t_star[finite], lam[finite], **loss_kw)[which]
        np.testing.assert_allclose(theory.accuracy(at, 1e-3, 3), 0.9, rtol=1e-9)
        assert np.all(theory.accuracy(before, 1e-3, 3) < 0.9)
    assert np.isnan(times[1][2])  # lam > 1: the null directions keep the teacher


def test_grokking_time_nan_and_zero_cases():
    t_train, t_test = theory.grokking_time([0.5, 1.5])
    assert np.all(np.isfinite(t_train)) and np.isfinite(t_test[0]) and np.isnan(t_test[1])
    assert t_test[0] > t_train[0] > 0
    t_train, t_test = theory.grokking_time(0.5, eps=10.0)  # already accurate at t = 0
    assert t_train == 0.0 and t_test == 0.0


def test_grokking_time_phase_diagram_grid():
    lam = np.linspace(0.05, 1.5, 40)[:, None]
    gamma = np.geomspace(1e-5, 1e-1, 40)
    t_train, t_test = theory.grokking_time(lam, gamma=gamma)
    assert t_train.shape == t_test.shape == (40, 40)
    # NaN exactly where the t -> inf loss stays above L* (the losses are monotone here)
    threshold = theory.loss_threshold(1e-3, 0.95)
    final_train, final_test = theory.losses(np.inf, lam, gamma=gamma)
    np.testing.assert_array_equal(np.isnan(t_train), final_train > threshold)
    np.testing.assert_array_equal(np.isnan(t_test), final_test > threshold)
    assert np.all(np.isnan(t_test[lam[:, 0] > 1]))
    grokked = np.isfinite(t_test)
    assert np.all(t_test[grokked] >= t_train[grokked])
