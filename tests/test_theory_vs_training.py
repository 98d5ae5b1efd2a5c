"""The engine's trained runs against the exact random-matrix theory (groksweep.theory).

One sweep at d_in = 400 (lam in {0.3, 0.7, 1.5}, gamma in {0, 1e-2}, d_out in {1, 10}, 12
seeds, lr = 0.01, eps = 1e-3) is trained by the engine (gradient descent, exact per step) and
compared with the theory's d_in -> infinity expectations, with no fitted parameter.

Losses. The theory is the expectation over teacher, initialisation and data; one seed's loss
is a sum of squared Gaussian mode amplitudes, whose relative standard deviation is
sqrt(2 / n(t)), n(t) = d_in d_out E[w]^2 / E[w^2] the number of effective modes carrying the
loss at step t (w the per-eigenmode weight of the theory's integrand). The theory is exact as
d_in -> infinity where n(t) is large; at late times n(t) drops to a few modes at the
Marchenko-Pastur edge and single runs scatter by O(1) (the late-time tail of the loss is not
self-averaging at finite d_in). So the seed-mean loss is compared where n(t) >= 100 and the
theory loss is above 1e-6 of its initial value, with the tolerance

    |mean_seeds(L_trained) / L_theory - 1| <= 2% + 3 sigma(t),
    sigma(t) = sqrt((2 / n(t) + [test] 2 / (d_out n_test)) / n_seeds),

i.e. 2% for the gradient-flow approximation and other systematics plus three standard errors
of the seed mean: about 4-6% at d_out = 10 and 8-15% at d_out = 1 (where one seed's loss
fluctuates by sqrt(2/400) = 7% already at t = 0).

Grokking times (lam in {0.3, 0.7}): the seed median of the engine's first crossing of 95%
accuracy against theory.grokking_time, within 12% for t_train and t_test and 15% for Δt. The
medians scatter by up to 5% (d_out = 1, lam = 0.7: single seeds by 13%), and at d_out = 10 the
accuracy crosses 95% up to ~8% late, because eq. 12's chi-square law with d_out degrees of
freedom assumes an isotropic D^T D, which holds only as d_in -> infinity (docs/REPRODUCTION.md,
Fig. 2). A negative control shows the comparison fails for physics that is slightly off.
"""

from __future__ import annotations

import numpy as np
import pytest

import groksweep as gs
from groksweep import theory

# Trains the paper's grids at d_in = 200 (about a minute on a 2-core CPU): the slow tier.
pytestmark = pytest.mark.slow

D_IN, LR, EPS, N_TEST = 400, 0.01, 1e-3, 2000
LAMS, GAMMAS, D_OUTS, SEEDS = (0.3, 0.7, 1.5), (0.0, 1e-2), (1, 10), tuple(range(12))
MIN_MODES, LOSS_FLOOR, SYSTEMATIC, SIGMAS = 100.0, 1e-6, 0.02, 3.0


@pytest.fixture(scope="module")
def trained():
    sweep = gs.Sweep(
        "linear",
        params={"d_in": D_IN, "lr": LR, "n_test": N_TEST},
        axes={"lam": list(LAMS), "gamma": list(GAMMAS), "d_out": list(D_OUTS), "seed": list(SEEDS)},
        steps=100_000,
        log_points=120,
        eps=[EPS],
    )
    ds = gs.run(sweep, progress=False)
    assert not ds["diverged"].any()
    return ds, gs.grokking_time(ds, level=0.95)


def effective_lam(lam):
    """The trainer's N_tr = round(d_in / lam), as the lam the theory sees."""
    return D_IN / round(D_IN / lam)


def effective_modes(t, lam, gamma, d_out, role):
    """n(t) = d_in d_out E[w]^2 / E[w^2] over MP(lam), w = q (e^2 + ((e nu + g)/(nu + g))^2),
    e = exp(-(nu + g) s / 2), s = 4 lr t / d_out, g = gamma d_out / 2, q = nu (train) or 1."""
    s, g = 4.0 * LR * np.asarray(t, dtype=float) / d_out, gamma * d_out / 2.0

    def weight(nu, s, power):
        decay, rate = np.exp(-(nu + g) * s / 2.0), nu + g
        teacher = np.where(rate > 0, (decay * nu + g) / np.where(rate > 0, rate, 1.0), 1.0)
        return ((nu if role == "train" else 1.0) * (decay**2 + teacher**2)) ** power

    with np.errstate(invalid="ignore", divide="ignore"):
        first = theory.mp_expectation(weight, lam, s, 1.0)
        return D_IN * d_out * first**2 / theory.mp_expectation(weight, lam, s, 2.0)


def loss_excess(ds, lam, gamma, d_out, role, *, lr_factor=1.0, gamma_factor=1.0):
    """max over compared times of |deviation| / tolerance (<= 1 passes), and how many times
    were compared. ``*_factor`` distort the theory (negative control)."""
    times = ds["time"].values
    trained = ds[f"{role}_loss"].sel(lam=lam, gamma=gamma, d_out=d_out).mean("seed").values
    expected = theory.losses(
        times, effective_lam(lam), lr=LR * lr_factor, gamma=gamma * gamma_factor, d_out=d_out
    )[role == "test"]
    modes = effective_modes(times, effective_lam(lam), gamma, d_out, role)
    compared = (modes >= MIN_MODES) & (expected >= LOSS_FLOOR * expected[0])
    variance = 2.0 / modes + (2.0 / (d_out * N_TEST) if role == "test" else 0.0)
    tolerance = SYSTEMATIC + SIGMAS * np.sqrt(variance / len(SEEDS))
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 far below the compared range
        deviation = np.abs(trained / expected - 1.0)
    return np.max(deviation[compared] / tolerance[compared]), compared.sum(), times[compared]


@pytest.mark.parametrize("role", ["train", "test"])
@pytest.mark.parametrize("d_out", D_OUTS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("lam", LAMS)
def test_loss_curves_match_theory(trained, lam, gamma, d_out, role):
    ds, _ = trained
    excess, count, times = loss_excess(ds, lam, gamma, d_out, role)
    assert count >= 40, f"only {count} self-averaging times to compare"
    assert times.max() >= 120  # beyond the first e-folds: the dynamics, not just the init
    assert excess <= 1.0, f"trained/theory deviates by {excess:.2f} tolerances"


def test_weight_decay_plateaus_match_theory(trained):
    """At d_out = 10 the t -> infinity plateau of weight decay (set by gamma_p = gamma d_out,
    the teacher's shrinkage) is self-averaging and compared at the last steps."""
    ds, _ = trained
    for lam in LAMS:
        for role in ("train", "test"):
            _, _, times = loss_excess(ds, lam, 1e-2, 10, role)
            assert times.max() == ds["time"].values[-1]


@pytest.mark.parametrize(("lr_factor", "gamma_factor"), [(1.1, 1.0), (1.0, 0.1), (0.9, 1.0)])
def test_negative_control_slightly_wrong_physics_fails(trained, lr_factor, gamma_factor):
    """Theory with lr off by 10%, or weight decay unmapped (gamma_p = gamma instead of
    gamma d_out, i.e. gamma / 10 at d_out = 10), fails the same comparison somewhere."""
    ds, _ = trained
    worst = max(
        loss_excess(ds, lam, gamma, 10, role, lr_factor=lr_factor, gamma_factor=gamma_factor)[0]
        for lam in LAMS
        for gamma in GAMMAS
        for role in ("train", "test")
        if gamma > 0 or gamma_factor == 1.0
    )
    assert worst > 1.5


@pytest.mark.parametrize("d_out", D_OUTS)
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("lam", [0.3, 0.7])
def test_grokking_times_match_theory(trained, lam, gamma, d_out):
    _, phase = trained
    at = phase.sel(lam=lam, gamma=gamma, d_out=d_out, eps=EPS)
    t_train, t_test = theory.grokking_time(
        effective_lam(lam), lr=LR, gamma=gamma, d_out=d_out, eps=EPS, level=0.95
    )
    assert not at["train_censored"].any()
    assert np.median(at["t_train"]) == pytest.approx(t_train, rel=0.12)
    if np.isnan(t_test):  # the weight-decay plateau stays above the threshold
        assert at["test_censored"].mean() >= 0.5
        return
    assert not at["test_censored"].any()
    assert np.median(at["t_test"]) == pytest.approx(t_test, rel=0.12)
    assert np.median(at["delta_t"]) == pytest.approx(t_test - t_train, rel=0.15)


def test_overparametrized_and_saturated_runs_never_grok_like_the_theory(trained):
    """lam > 1 keeps the teacher in the null space of Sigma: test accuracy never reaches the
    level (theory NaN), at any weight decay; the train accuracy does, at the theory's time."""
    _, phase = trained
    summary = gs.reduce_seeds(phase).sel(eps=EPS)
    t_train, t_test = theory.grokking_time(
        np.array([effective_lam(v) for v in LAMS])[:, None, None],
        lr=LR,
        gamma=np.array(GAMMAS)[None, :, None],
        d_out=np.array(D_OUTS)[None, None, :],
        eps=EPS,
        level=0.95,
    )
    censored = summary["test_censored_fraction"].transpose("lam", "gamma", "d_out").values
    np.testing.assert_array_equal(censored >= 0.5, np.isnan(t_test))
    over = LAMS.index(1.5)
    assert np.isnan(t_test[over]).all()
    trained_train = summary["t_train_median"].sel(lam=1.5).transpose("gamma", "d_out").values
    np.testing.assert_allclose(trained_train, t_train[over], rtol=0.12)
