"""The engine's physics against an independent exact computation (tests/linear_reference.py).

The reference is numpy only: the closed-form discrete-time GD trajectory in the eigenbasis of
the train Gram matrix. It shares nothing with the engine but the random draws, which it takes
from ``task.sample`` so that both compute the same trajectories.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.tasks import get_task
from linear_reference import ExactLinearGD, first_integer_crossing

TASK = get_task("linear")
SCALARS = ("train_loss", "test_loss", "weight_norm")


def draws(seeds, d_in, n_train, d_out, n_test, float64):
    """The engine's draws for ``seeds`` as float64 numpy arrays with a leading seed axis.

    One compiled, seed-batched call (the draws of a key do not depend on jit or vmap).
    ``float64=False`` gives the float32 draws that a default-dtype sweep uses.
    """
    shape = {"d_in": d_in, "n_train": n_train, "d_out": d_out, "n_test": n_test}
    dtype = jnp.float64 if float64 else jnp.float32
    with jax.enable_x64(float64):
        sample = jax.jit(jax.vmap(lambda s: TASK.sample(jax.random.key(s), shape, dtype)))
        out = sample(jnp.asarray(seeds, dtype=jnp.uint32))
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def reference(d, seed_index, d_in, n_train, d_out, lr, gamma=0.0, alpha=1.0, noise=0.0):
    """The exact trajectory of one run, from draws taken at (at least) its shape: prefixes of
    the sample axes are the run's draws (checked in test_common_random_numbers)."""
    scale = 1.0 / np.sqrt(2.0 * d_in * d_out)
    return ExactLinearGD(
        x_train=d["x_train"][seed_index, :n_train],
        teacher=d["teacher"][seed_index, :, :d_out] * scale,
        student0=alpha * d["student"][seed_index, :, :d_out] * scale,
        lr=lr,
        gamma=gamma,
        xi=noise * d["label_noise"][seed_index, :n_train, :d_out],
        x_test=d["x_test"][seed_index],
    )


def test_reference_equals_brute_force_gradient_descent():
    """The closed form against plain iteration of S <- S - lr (grad L + gamma S), written in S
    with the labels, not in D: a check of the reference's own derivation."""
    rng = np.random.default_rng(0)
    for n, d_out, lr, gamma, noise in [(40, 1, 0.05, 0.0, 0.0), (13, 3, 0.05, 0.02, 0.3), (30, 2, 0.3, 0.1, 0.1)]:
        d_in = 20
        x, t, s0 = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), rng.standard_normal((d_in, d_out))
        xi = noise * rng.standard_normal((n, d_out))
        y = x @ t + xi
        steps = [0, 1, 2, 7, 100, 500]
        exact = ExactLinearGD(x, t, s0, lr, gamma, xi).student(steps)
        s = s0.copy()
        for step in range(steps[-1] + 1):
            if step in steps:
                np.testing.assert_allclose(s, exact[steps.index(step)], rtol=0, atol=1e-12)
            s = s - lr * (2.0 / (n * d_out) * x.T @ (x @ s - y) + gamma * s)


def test_first_integer_crossing_is_exact_on_non_monotone_series():
    rng = np.random.default_rng(1)
    series = np.clip(np.linspace(0, 1.2, 5001) + 0.02 * rng.standard_normal(5001), 0, 1)
    value = lambda t: series[np.asarray(t)]  # noqa: E731
    assert first_integer_crossing(value, 0.9, 5000) == np.flatnonzero(series >= 0.9)[0]
    assert first_integer_crossing(value, 1.5, 5000) is None


# --- 1. every metric at every evaluation step, float64 ------------------------------------------
SMALL = {"d_in": 50, "n_test": 500}
SMALL_AXES = {
    "lam": [0.5, 1.5],
    "gamma": [0.0, 1e-2],
    "d_out": [1, 3],
    "alpha": [1.0, 2.0],
    "noise": [0.0, 0.1],
    "lr": [0.01, 0.03],
    "seed": [0, 7],
}
SMALL_EPS = (1e-3, 1e-2, 1e-1)


@pytest.fixture(scope="module")
def small_grid():
    sweep = gs.Sweep(
        "linear", params=SMALL | {"dtype": "float64"}, axes=SMALL_AXES,
        steps=2000, log_points=30, eps=SMALL_EPS,
    )
    ds = gs.run(sweep, progress=False)
    n_max = max(round(SMALL["d_in"] / lam) for lam in SMALL_AXES["lam"])
    d = draws(SMALL_AXES["seed"], SMALL["d_in"], n_max, max(SMALL_AXES["d_out"]), SMALL["n_test"], True)
    return ds, d


def test_float64_trajectories_equal_exact_closed_form(small_grid):
    ds, d = small_grid
    times = ds.time.values
    worst = dict.fromkeys(SCALARS, 0.0) | {"train_acc": 0.0, "test_acc": 0.0}
    for point in itertools.product(*SMALL_AXES.values()):
        run = dict(zip(SMALL_AXES, point))
        n_train = round(SMALL["d_in"] / run["lam"])
        ref = reference(
            d, SMALL_AXES["seed"].index(run["seed"]), SMALL["d_in"], n_train, run["d_out"],
            run["lr"], run["gamma"], run["alpha"], run["noise"],
        )
        exact = ref.metrics(times, SMALL_EPS)
        got = ds.sel(run)
        for name in SCALARS:
            err = np.max(np.abs(got[name].values - exact[name]) / np.abs(exact[name]))
            assert err < 1e-8, f"{name} {run}: relative error {err:.2e}"
            worst[name] = max(worst[name], err)
        for name, n in (("train_acc", n_train), ("test_acc", SMALL["n_test"])):
            # In samples: at most one sample may sit on the eps boundary within rounding.
            off = np.max(np.abs(got[name].transpose("time", "eps").values - exact[name])) * n
            assert off <= 1 + 1e-9, f"{name} {run}: off by {off:.3g} samples"
            worst[name] = max(worst[name], off)
    print("max relative error / max accuracy error in samples:", worst)


# --- 2-3. grokking times at d_in = 200, default float32 ----------------------------------------
D_IN, LR, EPS, LEVEL = 200, 0.01, 1e-3, 0.95
LAMS = [0.3, 0.5, 0.7, 1.5]
SEEDS = list(range(8))
STEPS, LOG_POINTS = 6000, 300
N_TEST = 10_000  # the pinned default
# Each crossing lies between two evaluation steps t_k < t_{k+1} = rho t_k (up to integer
# rounding), rho = STEPS ** (1 / (LOG_POINTS - 1)) = 1.0295, and the engine's log-time
# interpolation between them is second-order accurate in the log-step h = log(rho) = 0.029.
# With accuracy curves that turn over on a scale of ~0.2 in log(t) the interpolation error is a
# few 1e-4 of t, i.e. ~1 step at t ~ 500-3000; the exact time is an integer (<= 1 step); float32
# trajectories (<= a sample of 10^4 at the crossing) add a fraction of a step. So each seed's
# delta_t = t_test - t_train is within a few steps of the exact one; relative to the smallest
# median delta_t (~120 steps at lam = 0.3) that is a few percent:
DELTA_T_RTOL = 0.03
# and each time individually must lie within the evaluation bracket around the exact crossing
# (a rigorous bound: the interpolation never leaves its bracket), widened by one step.


@pytest.fixture(scope="module")
def grid200():
    sweep = gs.Sweep(
        "linear", params={"d_in": D_IN, "lr": LR, "n_test": N_TEST},
        axes={"lam": LAMS, "seed": SEEDS}, steps=STEPS, log_points=LOG_POINTS, eps=[EPS],
    )
    ds = gs.run(sweep, progress=False)
    assert ds.attrs["spec"] and "dtype" not in sweep.params  # default float32
    phase = gs.grokking_time(ds, level=LEVEL)
    return ds, phase


@pytest.fixture(scope="module")
def exact200():
    """Exact integer-step grokking times of the same 32 trajectories: {(lam, seed): (tr, te)}."""
    n_max = max(round(D_IN / lam) for lam in LAMS)
    d = draws(SEEDS, D_IN, n_max, 1, N_TEST, False)
    times = {}
    for lam, (i, seed) in itertools.product(LAMS, enumerate(SEEDS)):
        ref = reference(d, i, D_IN, round(D_IN / lam), 1, LR)
        times[lam, seed] = tuple(ref.grokking_step(role, EPS, LEVEL, STEPS) for role in ("train", "test"))
    return times


def bracket(times, t):
    """The evaluation steps (t_k, t_{k+1}] around an exact crossing step t."""
    k = np.searchsorted(times, t)
    return times[max(k - 1, 0)], times[k]


def test_grokking_times_equal_exact_integer_crossings(grid200, exact200):
    ds, phase = grid200
    times = ds.time.values
    for (lam, seed), exact in exact200.items():
        for role, t_exact in zip(("train", "test"), exact):
            t = float(phase[f"t_{role}"].sel(lam=lam, seed=seed, eps=EPS))
            if t_exact is None:
                assert np.isnan(t), f"{role} lam={lam} seed={seed}: exact never, engine {t}"
                continue
            lo, hi = bracket(times, t_exact)
            assert lo - 1 <= t <= hi + 1, f"{role} lam={lam} seed={seed}: engine {t}, exact {t_exact} in ({lo}, {hi}]"


def test_median_delta_t_equals_exact(grid200, exact200):
    _, phase = grid200
    median = gs.reduce_seeds(phase).delta_t_median.sel(eps=EPS)
    report = []
    for lam in (0.3, 0.5, 0.7):
        exact = np.median([exact200[lam, s][1] - exact200[lam, s][0] for s in SEEDS])
        engine = float(median.sel(lam=lam))
        report.append(f"lam={lam}: engine {engine:.1f}, exact {exact:.1f} ({engine / exact - 1:+.2%})")
        assert engine == pytest.approx(exact, rel=DELTA_T_RTOL), report[-1]
    print("median delta_t:", "; ".join(report))


def test_delta_t_grows_with_lam_and_overparametrized_test_never_groks(grid200, exact200):
    # Exact physics: the median delta_t grows with lam below 1 ...
    medians = [np.median([exact200[lam, s][1] - exact200[lam, s][0] for s in SEEDS]) for lam in (0.3, 0.5, 0.7)]
    assert medians[0] < medians[1] < medians[2], medians
    # ... and seed by seed.
    for s in SEEDS:
        per_seed = [exact200[lam, s][1] - exact200[lam, s][0] for lam in (0.3, 0.5, 0.7)]
        assert per_seed[0] < per_seed[1] < per_seed[2], (s, per_seed)
    # lam = 1.5 (N_tr < d_in): train accuracy reaches the level, test accuracy never does.
    for s in SEEDS:
        t_train, t_test = exact200[1.5, s]
        assert t_train is not None and t_test is None
    # The engine reports those runs as censored, never as the last step.
    _, phase = grid200
    over = phase.sel(lam=1.5, eps=EPS)
    assert bool(over.test_censored.all()) and bool(np.isnan(over.t_test).all())
    assert not bool(over.train_censored.any())
    assert bool(np.isnan(over.delta_t).all())
    summary = gs.reduce_seeds(phase).sel(lam=1.5, eps=EPS)
    assert np.isnan(float(summary.delta_t_median)) and float(summary.t_test_censored_fraction) == 1.0


def test_overparametrized_test_accuracy_stays_below_level_forever():
    """lam = 1.5, no weight decay: the component of D in the null space of X never moves, so
    the t -> infinity limit (and a dense scan before it) stays below the level."""
    d = draws([0, 1], D_IN, round(D_IN / 1.5), 1, 2000, False)
    for i in range(2):
        ref = reference(d, i, D_IN, round(D_IN / 1.5), 1, LR)
        t = np.concatenate([np.unique(np.round(np.geomspace(1, 1e6, 200))), [1e9, 1e12]])
        assert ref.accuracy("test", t, EPS).max() < LEVEL
        assert ref.accuracy("train", [1e12], EPS)[0] == 1.0


# --- 4. common random numbers --------------------------------------------------------------------
def test_common_random_numbers():
    small = {"d_in": 20, "n_test": 50}
    for float64 in (False, True):
        a = draws([3], n_train=200, d_out=1, float64=float64, **small)
        b = draws([3], n_train=400, d_out=3, float64=float64, **small)
        np.testing.assert_array_equal(a["x_train"], b["x_train"][:, :200])
        np.testing.assert_array_equal(a["label_noise"], b["label_noise"][:, :200, :1])
        for name in ("teacher", "student"):
            np.testing.assert_array_equal(a[name], b[name][:, :, :1])
        np.testing.assert_array_equal(a["x_test"], b["x_test"])
        assert not np.array_equal(a["teacher"], a["student"])

    # Runs differing only in gamma, lr and alpha start from the same draws: the initial weight
    # norm is ||alpha * S_raw / sqrt(2 d_in d_out)|| of the seed's draw, whatever gamma and lr.
    axes = {"gamma": [0.0, 0.1], "lr": [0.01, 0.05], "alpha": [0.5, 1.0, 3.0], "seed": [0, 1]}
    ds = gs.run(
        gs.Sweep("linear", params=small | {"dtype": "float64", "lam": 0.5}, axes=axes, steps=3, log_points=2),
        progress=False,
    )
    d = draws(axes["seed"], n_train=40, d_out=1, float64=True, **small)
    start = ds.isel(time=0)
    for i, seed in enumerate(axes["seed"]):
        s_raw = d["student"][i] / np.sqrt(2.0 * small["d_in"])
        for alpha in axes["alpha"]:
            norms = start.weight_norm.sel(seed=seed, alpha=alpha).values
            np.testing.assert_allclose(norms, np.linalg.norm(alpha * s_raw), rtol=1e-13)
            assert np.all(norms == norms.flat[0])
            losses = start.test_loss.sel(seed=seed, alpha=alpha).values
            assert np.all(losses == losses.flat[0])
        # ... so the norms scale exactly with alpha.
        np.testing.assert_allclose(
            start.weight_norm.sel(seed=seed, alpha=3.0), 3 * start.weight_norm.sel(seed=seed, alpha=1.0), rtol=1e-14
        )
