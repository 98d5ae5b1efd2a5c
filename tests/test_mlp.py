"""The MLP teacher-student task (groksweep.tasks.mlp): padding, an independent numpy reference
for the forward pass and one gradient step, and the two-layer linear theory (eq. 18).

The numpy reference shares nothing with the task but the random draws (``task.sample``): it
rebuilds the weights from the documented init conventions, runs its own forward pass and
hand-written backpropagation, and applies PyTorch's SGD with weight decay.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep import theory
from groksweep.plan import plan
from groksweep.tasks import get_task

TASK = get_task("mlp_teacher_student")
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"]


def sweep(axes, steps=200, log_points=10, eps=(1e-3, 1e-1), **params):
    params = {k: v for k, v in params.items() if k not in axes}
    return gs.Sweep("mlp_teacher_student", params=params, axes=axes, steps=steps,
                    log_points=log_points, eps=eps)


# Draws are sampled once per seed at the largest shape used below and sliced (the slices are
# the draws of the smaller shapes: test_draws_are_prefix_stable...); compiling the threefry
# sampler costs seconds per shape on a small CPU.
BIG = {"d_in": 12, "d_h": 16, "depth": 3, "n_test": 100, "n_train": 30, "d_out": 3}


def _sample(seed, shape):
    with jax.enable_x64(True):
        d = jax.jit(lambda key: TASK.sample(key, shape, jnp.float64))(jax.random.key(seed))
        return {k: np.asarray(v) for k, v in d.items()}


@functools.cache
def _big_draws(seed):
    return _sample(seed, BIG)


def _draws(seed, p):
    """The float64 draws of a run with parameters ``p`` (a sub-shape of BIG)."""
    assert all(p[k] == BIG[k] for k in ("d_in", "d_h", "n_test"))
    n, d_out = p["n_train"], p["d_out"]
    d = _big_draws(seed)
    out = {"x_train": d["x_train"][:n], "label_noise": d["label_noise"][:n, :d_out],
           "x_test": d["x_test"], "teacher_out": d["teacher_out"][:, :d_out],
           "student_out": d["student_out"][:, :d_out]}
    for layer in range(p["depth"]):
        for who in ("teacher", "student"):
            out[f"{who}_{layer}"] = d[f"{who}_{layer}"]
    return out


# --- padding, and the public API against numpy -------------------------------------------------
PAD = {"d_in": BIG["d_in"], "d_h": BIG["d_h"], "depth": 2, "activation": "tanh", "init": "levi",
       "predictor": "centred", "n_test": BIG["n_test"], "lr": 0.5, "alpha": 1.5, "init_scale": 1.2,
       "noise": 0.01, "gamma": 0.01, "dtype": "float64"}
PAD_AXES = {"lam": [0.4, 0.6], "d_out": [1, 3], "seed": [0, 1]}  # n_train 30, 20
PAD_EPS = (1e-4, 1e-3, 1e-2)


@pytest.fixture(scope="module")
def padded_grid():
    grid = gs.run(sweep(PAD_AXES, eps=PAD_EPS, **PAD), progress=False)
    assert len(plan(TASK, sweep(PAD_AXES, **PAD).runs())) == 1  # one bucket: n_train, d_out padded
    return grid


def test_sweep_metrics_at_steps_0_and_1_equal_numpy(padded_grid):
    """Every run of the padded grid, through gs.run, against numpy on the run's own unpadded
    draws: the forward pass (step 0) and one step of gradient descent with weight decay."""
    assert list(padded_grid.time.values[:2]) == [0, 1]
    for lam in PAD_AXES["lam"]:
        for d_out in PAD_AXES["d_out"]:
            for seed in PAD_AXES["seed"]:
                p = PAD | {"n_train": round(PAD["d_in"] / lam), "d_out": d_out}
                ref = NumpyMLP(_draws(seed, p), p)
                before = ref.metrics(PAD_EPS)
                ref.step()
                after = ref.metrics(PAD_EPS)
                run = padded_grid.sel(lam=lam, d_out=d_out, seed=seed)
                for t, exact in ((0, before), (1, after)):
                    for name in METRICS:
                        np.testing.assert_allclose(
                            run[name].sel(time=t).values, exact[name], rtol=1e-10, atol=1e-14,
                            err_msg=f"{name} at step {t}, lam={lam} d_out={d_out} seed={seed}",
                        )


def test_draws_are_prefix_stable_and_shared_with_the_linear_task():
    small = BIG | {"depth": 1, "n_train": 4, "d_out": 2}
    a, b = _sample(0, small), _big_draws(0)
    np.testing.assert_array_equal(a["x_train"], b["x_train"][:4])
    np.testing.assert_array_equal(a["label_noise"], b["label_noise"][:4, :2])
    np.testing.assert_array_equal(a["student_out"], b["student_out"][:, :2])
    np.testing.assert_array_equal(a["teacher_out"], b["teacher_out"][:, :2])
    for name in ("x_test", "teacher_0", "student_0"):
        np.testing.assert_array_equal(a[name], b[name])
    assert "teacher_1" not in a and "teacher_2" in b
    with jax.enable_x64(True):
        lin = get_task("linear").sample(
            jax.random.key(0), {"d_in": BIG["d_in"], "n_train": 4, "d_out": 2,
                                "n_test": BIG["n_test"]}, jnp.float64,
        )
    np.testing.assert_array_equal(a["x_train"], lin["x_train"])
    np.testing.assert_array_equal(a["x_test"], lin["x_test"])
    np.testing.assert_array_equal(a["label_noise"], lin["label_noise"])
    assert np.all(a["student_0"] != a["teacher_0"])


# --- independent numpy reference ----------------------------------------------------------------
ACT = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
}


class NumpyMLP:
    """One run of the task in numpy, from the documented conventions alone."""

    def __init__(self, d, p):
        self.p, self.act, self.dact = p, *ACT[p["activation"]]
        widths = [p["d_in"]] + [p["d_h"]] * p["depth"] + [p["d_out"]]
        if p["init"] == "levi":
            std = [1 / np.sqrt(2.0 * a * b) for a, b in itertools.pairwise(widths)]
        else:
            std = [1 / np.sqrt(a) for a in widths[:-1]]
        layers = [f"{{}}_{i}" for i in range(p["depth"])] + ["{}_out"]
        self.teacher = [d[k.format("teacher")] * s for k, s in zip(layers, std)]
        self.w = [p["init_scale"] * d[k.format("student")] * s for k, s in zip(layers, std)]
        self.x, self.x_test = d["x_train"], d["x_test"]
        self.y = self.forward(self.teacher, self.x)[0] + p["noise"] * d["label_noise"]
        self.y_test = self.forward(self.teacher, self.x_test)[0]
        centred = p["predictor"] == "centred"
        self.f0 = self.forward(self.w, self.x)[0] if centred else 0.0
        self.f0_test = self.forward(self.w, self.x_test)[0] if centred else 0.0

    def forward(self, w, x):
        """Output and, per hidden layer, its (input, pre-activation)."""
        h, cache = x, []
        for layer in w[:-1]:
            z = h @ layer
            cache.append((h, z))
            h = self.act(z)
        return h @ w[-1], cache, h

    def gradient(self):
        out, cache, h = self.forward(self.w, self.x)
        a, (n, d_out) = self.p["alpha"], self.y.shape
        r = a * (out - self.f0) - self.y
        g_out = 2.0 * a * r / (n * d_out)  # dL/d(out)
        grads = [h.T @ g_out]
        g_h = g_out @ self.w[-1].T
        for layer in reversed(range(len(self.w) - 1)):
            h_in, z = cache[layer]
            g_z = g_h * self.dact(z)
            grads.insert(0, h_in.T @ g_z)
            g_h = g_z @ self.w[layer].T
        return grads

    def step(self):
        """torch.optim.SGD(lr, weight_decay=gamma): w <- w - lr (grad + gamma w)."""
        p = self.p
        self.w = [w - p["lr"] * (g + p["gamma"] * w) for w, g in zip(self.w, self.gradient())]

    def metrics(self, eps):
        out = {}
        sets = (("train", self.x, self.y, self.f0),
                ("test", self.x_test, self.y_test, self.f0_test))
        for role, x, y, f0 in sets:
            err = np.mean((self.p["alpha"] * (self.forward(self.w, x)[0] - f0) - y) ** 2, axis=1)
            out[f"{role}_loss"] = err.mean()
            out[f"{role}_acc"] = (err[:, None] < np.asarray(eps)).mean(axis=0)
        out["weight_norm"] = np.sqrt(sum(np.sum(w**2) for w in self.w))
        return out


REF_BASE = {"d_in": 12, "d_h": 16, "n_test": 100, "n_train": 25, "d_out": 2, "lr": 0.3,
            "gamma": 0.02, "alpha": 1.7, "init_scale": 1.3, "noise": 0.2}
REF_CASES = [
    {"activation": "tanh", "init": "levi", "predictor": "centred", "depth": 2},
    {"activation": "relu", "init": "standard", "predictor": "plain", "depth": 1},
    {"activation": "linear", "init": "levi", "predictor": "plain", "depth": 3},
]
REF_EPS = (1e-3, 1e-2, 1e-1)
SHAPE_KEYS = ("d_in", "d_h", "depth", "n_test", "n_train", "d_out")


def _shape(p):
    return {k: p[k] for k in SHAPE_KEYS}


@pytest.mark.parametrize("case", REF_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_init_gradient_and_metrics_equal_numpy(case):
    """The task's own functions (unbatched, float64) for each activation, init and predictor:
    initial weights, the autodiff gradient of the objective, and the metrics."""
    p = REF_BASE | case
    d = _draws(1, p)
    ref = NumpyMLP(d, p)
    with jax.enable_x64(True):
        shape = _shape(p) | {k: p[k] for k in ("activation", "init", "predictor")}
        traced = ("alpha", "init_scale", "noise", "lr", "gamma")
        hp = {k: jnp.asarray(p[k], jnp.float64) for k in traced}
        hp |= {"n_train": jnp.int32(p["n_train"]), "d_out": jnp.int32(p["d_out"])}
        data = {k: jnp.asarray(v) for k, v in d.items()}
        task = TASK.bind(shape)
        data |= task.share(data, hp, shape)
        model, run = task.setup(data, hp, shape)
        data |= run
        grads = task.gradient(model, data, hp)
        metrics = task.evaluate(model, data, hp, jnp.asarray(REF_EPS))
        objective = task.objective(model, data, hp)
    for i, (w, w_ref) in enumerate(zip(model, ref.w)):
        np.testing.assert_allclose(np.asarray(w), w_ref, rtol=1e-12, atol=1e-15,
                                   err_msg=f"init {i}")
    for i, (g, g_ref) in enumerate(zip(grads, ref.gradient())):
        np.testing.assert_allclose(np.asarray(g), g_ref, rtol=1e-10, atol=1e-14,
                                   err_msg=f"grad {i}")
    exact = ref.metrics(REF_EPS)
    for name in METRICS:
        np.testing.assert_allclose(np.asarray(metrics[name]), exact[name], rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(float(objective), exact["train_loss"], rtol=1e-12)


# --- physics: the two-layer linear network against eq. 18 ---------------------------------------
# d_in = 200, d_h = 200, d_out = 2: d_out << d_h and d_out << d_in, as eq. 18 assumes; d_out = 2
# makes the 1/d_out that the printed eq. 18 lacks a factor 2. lr = 0.1 is small enough: the
# fastest mode's factor per step is 1 - lr lambda_+ / d_out^2 = 1 - 0.08, and the discrete steps
# follow the gradient flow of eq. 18 to within 2.5% (train) and 0.8% (test) over the window
# (the MP average of (1 - lr nu/d_out^2)^(2t) against exp(-2 lr nu t/d_out^2)).
PHYS = {"d_in": 200, "d_h": 200, "d_out": 2, "activation": "linear", "n_test": 2000, "lr": 0.1}
PHYS_LAMS = [0.6, 1.2]  # n_train 333 and 167: one bucket
PHYS_SEEDS = [0, 1, 2]
# Compared while the flow is young: s = 2 lr alpha^2 t / d_out^2 <= S_MAX, i.e. while the train
# loss falls by up to ~2 decades. Tolerance on the seed-mean / theory ratio:
# (i) finite size: at d_in = 200 one seed's |D_0|^2 and MP spectrum scatter the losses by 6-12%
#     (measured seed spread), ~5% on a mean of 3 seeds;
# (ii) the frozen kernel: S_1^T S_1 has eigenvalues (1 +- sqrt(d_out/d_h))^2 / (2 d_out), i.e.
#     per-output rates spread by +-20% at d_h = 200, which raises the late loss by about
#     cosh(0.2 nu_min s): measured +15-19% at s = 15 (the window's end), +50% at s = 50 (t = 1000,
#     lam = 0.5), and +20% there at d_h = 800 (the linear task itself, exact, shows +5-15% at
#     d_in = 200 from finite-size MP edges); S_0 S_0^T adds a rate d_out/d_in = 1% and the kernel
#     drifts by O(1/d_h);
# (iii) discrete steps, above: <= 2.5%.
# Measured seed-mean/theory ratios in the window (float32, CPU): plain lam = 0.6 train 0.97-1.16,
# test 0.97-1.19; lam = 1.2 train 0.86-1.03, test 0.94-0.99; centred alpha = 2 0.96-1.10.
# RTOL = 0.25 passes these; it fails eq. 18 as printed (without 1/d_out: a factor 2 here) and any
# error in the lr / d_out^2 time scale that matters over a decade of decay.
S_MAX, RTOL = 15.0, 0.25


@pytest.fixture(scope="module")
def linear_two_layer():
    plain = gs.run(sweep({"lam": PHYS_LAMS, "seed": PHYS_SEEDS}, steps=300, log_points=12,
                         predictor="plain", **PHYS), progress=False)
    # Centred predictor: initial residual -T, half the loss; alpha = 2 with lr = eta_0 / alpha^2
    # follows the alpha = 1, lr = eta_0 curve (App. 8.1).
    lazier = PHYS | {"alpha": 2.0, "lr": PHYS["lr"] / 4}
    centred = gs.run(sweep({"seed": PHYS_SEEDS}, steps=300, log_points=12, predictor="centred",
                           lam=0.6, **lazier), progress=False)
    return plain, centred


def _compare(ds, lam, factor, lr_eff, label):
    t = ds.time.values
    window = 2.0 * lr_eff * t / PHYS["d_out"] ** 2 <= S_MAX
    train, test = theory.losses_two_layer(t, lam, d_h=PHYS["d_h"], d_out=PHYS["d_out"], lr=lr_eff)
    ratios = {}
    for name, expected in (("train_loss", train), ("test_loss", test)):
        measured = ds[name].mean("seed").values
        ratio = measured[window] / (factor * expected[window])
        ratios[name] = ratio
        assert np.all(np.abs(ratio - 1.0) < RTOL), f"{label} {name}: ratios {np.round(ratio, 3)}"
    print(label, {k: (float(v.min().round(3)), float(v.max().round(3))) for k, v in ratios.items()},
          "points", int(window.sum()))
    return ratios


def test_linear_two_layer_losses_follow_eq18(linear_two_layer):
    plain, _ = linear_two_layer
    for lam in PHYS_LAMS:
        ratios = _compare(plain.sel(lam=lam), lam, 1.0, PHYS["lr"], f"plain lam={lam}")
        # The initial loss is |D_0|^2 / d_out = 1/(2 d_h d_out): eq. 18 needs the 1/d_out.
        assert abs(ratios["test_loss"][0] - 1.0) < 0.1
    # The losses did fall over the window (and for lam = 1.2 the test loss plateaus, the
    # atom of null directions keeps (1 - 1/lam) of the teacher).
    assert float(plain.train_loss.sel(lam=0.6).mean("seed").isel(time=-1)) < 1e-2 * 1.25e-3
    late = plain.test_loss.sel(lam=1.2).mean("seed").isel(time=-1)
    assert float(late) > 0.9 * (1 - 1 / 1.2) / (2 * 200 * 2)


def test_centred_predictor_halves_eq18_and_lr_over_alpha_squared_keeps_the_time_scale(
    linear_two_layer,
):
    _, centred = linear_two_layer
    _compare(centred, 0.6, 0.5, PHYS["lr"], "centred alpha=2, lr=eta_0/4")
