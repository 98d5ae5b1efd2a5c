"""The committee-machine task (groksweep.tasks.committee, Kumar et al. eqs. 3-7): sweeps and
padding, an independent numpy reference (per-neuron forward pass, hand-written gradient, GD
steps, eq. 6 written out), the lazy limit against linearised GD with the initial NTK, and the
loss decomposition against a Monte Carlo estimate of the population risk.

The numpy reference shares nothing with the task but the random draws (``task.sample``): it
evaluates the network neuron by neuron (the task uses the moments wbar, M when N > D) and
differentiates by hand.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.plan import plan
from groksweep.tasks import get_task
from groksweep.tasks.committee import lazy_lr

TASK = get_task("committee")
TERMS = ["variance_error", "misalignment_error", "linear_power"]
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "weight_norm", "param_change"]
METRICS += TERMS
EPS = (1e-2, 1e-1, 1.0)


def sweep(axes, steps, log_points, measures=(), **params):
    return gs.Sweep(
        "committee",
        params=params,
        axes=axes,
        steps=steps,
        log_points=log_points,
        eps=EPS,
        measures=measures,
    )


@functools.cache
def draws(seed, d_in, width, n_train, n_test):
    """The float64 draws of one seed, as numpy arrays."""
    shape = {"d_in": d_in, "width": width, "n_train": n_train, "n_test": n_test}
    with jax.enable_x64(True):
        d = jax.jit(lambda key: TASK.sample(key, shape, jnp.float64))(jax.random.key(seed))
        return {k: np.asarray(v) for k, v in d.items()}


# --- independent numpy reference ----------------------------------------------------------------
class NumpyCommittee:
    """One run in numpy from the documented conventions: w_i(0) = sigma * draw, y = (beta.x)^2/2,
    predictor alpha (g(W, x) - g(W_0, x)), loss mean (f - y)^2, torch-style SGD."""

    def __init__(self, d, p):
        self.p = p
        n = p["n_train"]
        self.x, self.x_test = d["x_train"][:n], d["x_test"]
        self.beta = d["beta"]
        self.y, self.y_test = 0.5 * (self.x @ self.beta) ** 2, 0.5 * (self.x_test @ self.beta) ** 2
        self.w0 = p["sigma"] * d["w"]
        self.w = self.w0.copy()

    def g(self, w, x):
        """1/N sum_i phi(w_i . x), one neuron at a time."""
        eps = self.p["eps_align"]
        return sum(h + 0.5 * eps * h**2 for h in (x @ wi for wi in w)) / len(w)

    def predict(self, x):
        return self.p["alpha"] * (self.g(self.w, x) - self.g(self.w0, x))

    def gradient(self):
        """dL/dw_i = (2/P) sum_mu r_mu (alpha/N) phi'(w_i . x_mu) x_mu."""
        p, (n_neurons, _) = self.p, self.w.shape
        r = self.predict(self.x) - self.y
        dphi = 1.0 + p["eps_align"] * (self.x @ self.w.T)  # (P, N)
        return (2.0 * p["alpha"] / (len(r) * n_neurons)) * (dphi * r[:, None]).T @ self.x

    def step(self):
        self.w = self.w - self.p["lr"] * (self.gradient() + self.p["gamma"] * self.w)

    def decomposition(self):
        """Eq. 6 with the centred predictor's moments wbar - wbar_0 and M - M_0."""
        p, d = self.p, len(self.beta)
        n = len(self.w)
        dwbar = (self.w - self.w0).mean(axis=0)
        dm = (self.w.T @ self.w - self.w0.T @ self.w0) / n
        a_eps = p["alpha"] * p["eps_align"]
        b2 = self.beta @ self.beta
        return {
            "variance_error": 0.25 * (b2 / d - a_eps * np.trace(dm) / d) ** 2,
            "misalignment_error": np.sum((a_eps * dm - np.outer(self.beta, self.beta)) ** 2)
            / (2 * d**2),
            "linear_power": p["alpha"] ** 2 * (dwbar @ dwbar) / d,
        }

    def metrics(self):
        out = {}
        for role, x, y in (("train", self.x, self.y), ("test", self.x_test, self.y_test)):
            err = (self.predict(x) - y) ** 2
            out[f"{role}_loss"] = err.mean()
            out[f"{role}_acc"] = (err[:, None] < np.asarray(EPS)).mean(axis=0)
        out["weight_norm"] = np.linalg.norm(self.w)
        out["param_change"] = np.linalg.norm(self.w - self.w0) / np.linalg.norm(self.w0)
        return out | self.decomposition()


# --- a sweep over alpha, eps_align, n_train and seed: one bucket, n_train padded ------------------
GRID = {
    "d_in": 6,
    "width": 10,
    "n_test": 30,
    "dtype": "float64",
    "sigma": 0.8,
    "gamma": 1e-3,
    "lr": 2.0,
}
GRID_AXES = {"alpha": [0.7, 1.5], "eps_align": [0.3, 1.0], "n_train": [18, 25], "seed": [0, 1]}
GRID_STEPS, GRID_LOG_POINTS = 30, 8


@pytest.fixture(scope="module")
def grid():
    spec = sweep(GRID_AXES, GRID_STEPS, GRID_LOG_POINTS, **GRID)
    assert len(plan(TASK, spec.runs())) == 1  # n_train 18 and 25 share one padded bucket
    return gs.run(spec, progress=False)


def test_sweep_records_every_metric_and_trains(grid):
    assert grid.train_loss.dims == ("alpha", "eps_align", "n_train", "seed", "time")
    assert grid.test_acc.dims == ("alpha", "eps_align", "n_train", "seed", "eps", "time")
    for name in METRICS:
        assert np.all(np.isfinite(grid[name].values)), name
    assert not grid.diverged.values.any()
    # At t = 0 the centred predictor is 0: no parameter change, no linear power.
    assert np.all(grid.param_change.isel(time=0) == 0)
    assert np.all(grid.linear_power.isel(time=0) == 0)
    assert np.all(grid.train_loss.isel(time=-1) < 0.85 * grid.train_loss.isel(time=0))
    assert np.all(grid.param_change.isel(time=-1) > 1e-3)


def test_sweep_equals_numpy_gradient_descent(grid):
    """Every run of the grid, at every log point (steps 0 .. 30), against the numpy reference
    stepping on the run's own unpadded draws: forward pass, loss, gradient, weight decay, and
    the three terms of eq. 6."""
    times = list(grid.time.values)
    assert times[:4] == [0, 1, 2, 3] and times[-1] == GRID_STEPS
    n_max = max(GRID_AXES["n_train"])
    for alpha, eps_align, n_train, seed in itertools.product(*GRID_AXES.values()):
        p = GRID | {"alpha": alpha, "eps_align": eps_align, "n_train": n_train}
        ref = NumpyCommittee(draws(seed, GRID["d_in"], GRID["width"], n_max, GRID["n_test"]), p)
        run = grid.sel(alpha=alpha, eps_align=eps_align, n_train=n_train, seed=seed)
        for t in range(GRID_STEPS + 1):
            if t in times:
                exact = ref.metrics()
                for name in METRICS:
                    np.testing.assert_allclose(
                        run[name].sel(time=t).values, exact[name], rtol=1e-9, atol=1e-13,
                        err_msg=f"{name} at step {t}, {p}, seed {seed}",
                    )  # fmt: skip
            ref.step()


@pytest.mark.parametrize("width", [4, 10])  # N < D: neuron by neuron; N > D: through (wbar, M)
def test_task_functions_equal_numpy(width):
    """Both ways the task evaluates the network, unbatched: the objective, its autodiff
    gradient, the metrics and the probe."""
    p = {
        "d_in": 6,
        "width": width,
        "n_test": 30,
        "n_train": 25,
        "alpha": 1.3,
        "eps_align": 0.7,
        "sigma": 1.2,
        "lr": 1.0,
        "gamma": 0.0,
    }
    d = draws(3, 6, width, 25, 30)
    ref = NumpyCommittee(d, p)
    ref.w = ref.w0 + 0.1 * np.sin(np.arange(ref.w.size)).reshape(ref.w.shape)  # off init
    with jax.enable_x64(True):
        shape = {k: p[k] for k in ("d_in", "width", "n_test", "n_train")}
        hp = {k: jnp.float64(p[k]) for k in ("alpha", "eps_align", "sigma")}
        hp["n_train"] = jnp.int32(p["n_train"])
        task = TASK.bind(shape)
        data = {k: jnp.asarray(v) for k, v in d.items()}
        data |= task.share(data, hp, shape)
        w0, run = task.setup(data, hp, shape)
        data |= run
        model = jnp.asarray(ref.w)
        objective = float(task.objective(model, data, hp))
        grad = np.asarray(task.gradient(model, data, hp))
        metrics = task.evaluate(model, data, hp, jnp.asarray(EPS))
        outputs, targets = task.probe(model, data, hp, 7)
    np.testing.assert_allclose(np.asarray(w0), ref.w0, rtol=1e-15)
    exact = ref.metrics()
    np.testing.assert_allclose(objective, exact["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(grad, ref.gradient(), rtol=1e-10, atol=1e-14)
    for name in METRICS:
        np.testing.assert_allclose(np.asarray(metrics[name]), exact[name], rtol=1e-10, err_msg=name)
    assert outputs.shape == targets.shape == (7, 1)
    np.testing.assert_allclose(np.asarray(outputs)[:, 0], ref.predict(ref.x_test[:7]), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(targets)[:, 0], ref.y_test[:7], rtol=1e-12)


def test_inputs_are_the_linear_tasks_scaled_by_one_over_sqrt_d_and_prefix_stable():
    small, big = draws(0, 6, 10, 18, 30), draws(0, 6, 10, 25, 30)
    np.testing.assert_array_equal(small["x_train"], big["x_train"][:18])
    for name in ("x_test", "beta", "w"):
        np.testing.assert_array_equal(small[name], big[name])
    with jax.enable_x64(True):
        lin = get_task("linear").sample(
            jax.random.key(0), {"d_in": 6, "n_train": 18, "d_out": 1, "n_test": 30}, jnp.float64
        )
    np.testing.assert_allclose(small["x_train"] * np.sqrt(6), lin["x_train"], rtol=1e-15)
    np.testing.assert_allclose(small["x_test"] * np.sqrt(6), lin["x_test"], rtol=1e-15)


# --- physics: eq. 6 is the population risk, term by term ------------------------------------------
def test_loss_decomposition_is_the_population_risk_term_by_term():
    """With e(x) = y(x) - f(x), x ~ N(0, I/D), split into its even and odd parts in x: eq. 6's
    linear_power is E[e_odd^2] (the odd part is -alpha dwbar . x), variance_error is
    (E e_even)^2 and misalignment_error is Var(e_even). Checked by Monte Carlo on weights the
    numpy reference has trained away from W_0."""
    p = GRID | {"alpha": 1.5, "eps_align": 1.0, "n_train": 25}
    ref = NumpyCommittee(draws(0, GRID["d_in"], GRID["width"], 25, GRID["n_test"]), p)
    for _ in range(GRID_STEPS):
        ref.step()
    assert ref.metrics()["param_change"] > 0.3
    x = np.random.default_rng(0).standard_normal((1_000_000, GRID["d_in"])) / np.sqrt(GRID["d_in"])
    error = lambda x: 0.5 * (x @ ref.beta) ** 2 - ref.predict(x)
    e_plus, e_minus = error(x), error(-x)
    even, odd = (e_plus + e_minus) / 2, (e_plus - e_minus) / 2
    monte_carlo = {
        "variance_error": even.mean() ** 2,
        "misalignment_error": even.var(),
        "linear_power": np.mean(odd**2),
    }
    terms = ref.decomposition()
    for name in TERMS:
        assert monte_carlo[name] > 1e-3, name  # every term matters at these weights
        np.testing.assert_allclose(terms[name], monte_carlo[name], rtol=0.02, err_msg=name)
    np.testing.assert_allclose(sum(terms.values()), np.mean(e_plus**2), rtol=0.02)


# --- physics: the lazy limit is linearised gradient descent with the initial NTK -----------------
LAZY = {
    "d_in": 10,
    "width": 40,
    "n_train": 30,
    "n_test": 40,
    "eps_align": 0.5,
    "sigma": 1.0,
    "dtype": "float64",
}
LAZY_ETA0, LAZY_STEPS, LAZY_ALPHAS = 1.0, 200, [1.0, 100.0, 1000.0]


def initial_ntk(w0, x1, x2, alpha, eps_align):
    """K_0(x, x') = (alpha/N)^2 sum_i phi'(w_i . x) phi'(w_i . x') x . x'."""
    d1, d2 = 1 + eps_align * (x1 @ w0.T), 1 + eps_align * (x2 @ w0.T)
    return (alpha / len(w0)) ** 2 * (d1 @ d2.T) * (x1 @ x2.T)


def linearised_predictions(k_train, k_test, y, eta, t):
    """Train and test predictions after t steps of GD on the linearised centred model (f_0 = 0):
    f_train = (I - (I - eta K)^t) y, f_test = K_test K^-1 (I - (I - eta K)^t) y, with
    eta = 2 lr / P for the loss mean (f - y)^2."""
    lam, u = np.linalg.eigh(k_train)
    grown = -np.expm1(t * np.log1p(-eta * lam))  # 1 - (1 - eta lam)^t
    coeff = u.T @ y
    return u @ (grown * coeff), k_test @ u @ (grown / lam * coeff)


@pytest.fixture(scope="module")
def lazy_runs():
    return {
        alpha: gs.run(
            sweep(
                {"seed": [0]},
                LAZY_STEPS,
                10,
                measures=["ntk_alignment"],
                **LAZY,
                alpha=alpha,
                lr=lazy_lr(LAZY_ETA0, alpha, LAZY["width"]),
            ),
            progress=False,
        )
        for alpha in LAZY_ALPHAS
    }


def test_lazy_limit_follows_gd_with_the_initial_ntk(lazy_runs):
    """Train and test losses at every log point against linearised GD with K_0 computed in
    numpy. lr = eta_0 N / alpha^2 makes the linearised curves the same for every alpha; the
    network's deviation from them is the feature learning, O(1/alpha)."""
    d = draws(0, LAZY["d_in"], LAZY["width"], LAZY["n_train"], LAZY["n_test"])
    x, x_test, beta, w0 = d["x_train"], d["x_test"], d["beta"], LAZY["sigma"] * d["w"]
    y, y_test = 0.5 * (x @ beta) ** 2, 0.5 * (x_test @ beta) ** 2
    deviation = {}
    for alpha, ds in lazy_runs.items():
        lr = lazy_lr(LAZY_ETA0, alpha, LAZY["width"])
        k = initial_ntk(w0, x, x, alpha, LAZY["eps_align"])
        k_test = initial_ntk(w0, x_test, x, alpha, LAZY["eps_align"])
        eta = 2 * lr / LAZY["n_train"]
        assert eta * np.linalg.eigvalsh(k).max() < 1  # a stable, monotone linearised descent
        rel = []
        for t in ds.time.values:
            f, f_test = linearised_predictions(k, k_test, y, eta, t)
            for name, lin in (
                ("train_loss", np.mean((f - y) ** 2)),
                ("test_loss", np.mean((f_test - y_test) ** 2)),
            ):
                rel.append(abs(float(ds[name].sel(seed=0, time=t)) / lin - 1))
        deviation[alpha] = max(rel)
        # The NTK alignment measure at t = 0 is the CKA of K_0 on the first ntk_points inputs.
        n = 32
        k0, y0 = initial_ntk(w0, x_test[:n], x_test[:n], alpha, LAZY["eps_align"]), y_test[:n]
        cka = y0 @ k0 @ y0 / (np.linalg.norm(k0) * (y0 @ y0))
        np.testing.assert_allclose(
            float(ds.ntk_alignment.sel(seed=0).isel(time=0)), cka, rtol=1e-10
        )
    print({a: round(v, 5) for a, v in deviation.items()})
    assert deviation[1000.0] < 0.01
    assert 5 < deviation[100.0] / deviation[1000.0] < 20  # O(1/alpha)
    assert deviation[1.0] > 0.3  # rich: far from the kernel predictor
    # The trained (lazy) test loss rises above its initial value while the train loss falls:
    # the kernel fits the quadratic target's linear modes first (the paper's grokking peak).
    lazy = lazy_runs[1000.0].sel(seed=0)
    assert lazy.test_loss.max() > 1.5 * lazy.test_loss.isel(time=0)


def test_lazy_test_predictions_equal_kernel_regression_after_t_steps():
    """The task's own gradient steps: the probe's test predictions after t steps against
    f_test = K_test K^-1 (I - (I - eta K)^t) y, to O(1/alpha)."""
    t = LAZY_STEPS
    d = draws(0, LAZY["d_in"], LAZY["width"], LAZY["n_train"], LAZY["n_test"])
    x, x_test, w0 = d["x_train"], d["x_test"], LAZY["sigma"] * d["w"]
    y = 0.5 * (x @ d["beta"]) ** 2
    shape = {k: LAZY[k] for k in ("d_in", "width", "n_train", "n_test")}
    task = TASK.bind(shape)

    @jax.jit
    def train(data, hp, lr):
        model, run = task.setup(data, hp, shape)
        data = data | run
        step = lambda _, m: m - lr * task.gradient(m, data, hp)
        return task.probe(jax.lax.fori_loop(0, t, step, model), data, hp, LAZY["n_test"])[0]

    error = {}
    with jax.enable_x64(True):
        for alpha in (1e3, 1e4):
            lr = lazy_lr(LAZY_ETA0, alpha, LAZY["width"])
            hp = {
                "alpha": jnp.float64(alpha),
                "eps_align": jnp.float64(LAZY["eps_align"]),
                "sigma": jnp.float64(LAZY["sigma"]),
                "n_train": jnp.int32(LAZY["n_train"]),
            }
            data = {k: jnp.asarray(v) for k, v in d.items()}
            data |= task.share(data, hp, shape)
            predictions = np.asarray(train(data, hp, jnp.float64(lr)))[:, 0]
            k = initial_ntk(w0, x, x, alpha, LAZY["eps_align"])
            k_test = initial_ntk(w0, x_test, x, alpha, LAZY["eps_align"])
            _, expected = linearised_predictions(k, k_test, y, 2 * lr / LAZY["n_train"], t)
            error[alpha] = np.linalg.norm(predictions - expected) / np.linalg.norm(expected)
    print({a: float(e) for a, e in error.items()})
    assert error[1e3] < 5e-3
    assert 5 < error[1e3] / error[1e4] < 20  # O(1/alpha): the feature-learning correction


def test_draws_have_the_documented_scales():
    """beta* ~ N(0, I), w_i(0) / sigma ~ N(0, I), x ~ N(0, I/D): checked on the sample moments
    at D = 400 (relative standard errors ~ 3.5%, 0.5% and 1.1%)."""
    d = draws(0, 400, 50, 40, 10)
    assert 0.8 < np.std(d["beta"]) < 1.2
    assert abs(np.std(d["w"]) - 1) < 0.03
    assert abs(np.mean(np.sum(d["x_train"] ** 2, axis=1)) - 1) < 0.05
