"""The knobs of recent grokking papers, each against an independent numpy reference or the
paper's formula: Grokfast's EMA and MA gradient filters (Lee et al. 2024, reference
``gradfilter_ema`` / ``gradfilter_ma``) before gd and adamw, ⊥Grad (Prieto et al. 2025,
reference ``OrthoGrad``), the StableMax cross-entropy and the softmax-collapse measure (Prieto et
al.), label noise of the arithmetic tasks (Doshi et al.'s label corruption) and the inverse
participation ratio (Doshi et al., eqs. 3-4, as their released code computes it).

The numpy references re-implement the PyTorch reference code step by step (a filter state per
tensor, ``p.grad`` modified in place before ``optimizer.step()``), sharing nothing with
groksweep but the hyperparameter values.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import groksweep as gs
from groksweep.optim import make_optimizer
from groksweep.tasks import arithmetic, get_task

# --- a tiny model: two tensors and a nonlinear loss, gradients in closed form ------------------
SHAPES = {"a": (3, 2), "b": (4,)}
C = {name: np.random.default_rng(i).normal(size=s) for i, (name, s) in enumerate(SHAPES.items())}


def _loss(params, xp):
    """sum(c sin(w)) + sum(w^4)/4 over both tensors, in numpy (xp = np) or JAX (xp = jnp)."""
    return sum(xp.sum(C[n] * xp.sin(w)) + xp.sum(w**4) / 4 for n, w in params.items())


def _grad(params):
    """The closed-form gradient of :func:`_loss` (numpy)."""
    return {n: C[n] * np.cos(w) + w**3 for n, w in params.items()}


def _initial():
    rng = np.random.default_rng(7)
    return {n: rng.normal(size=s) for n, s in SHAPES.items()}


HP = {"lr": 0.05, "gamma": 0.1, "beta1": 0.9, "beta2": 0.98, "grokfast_alpha": 0.8,
      "grokfast_lamb": 2.0}  # fmt: skip
STEPS = 8


def _groksweep_steps(optimizer, options, steps=STEPS):
    """The parameters after each of ``steps`` steps of groksweep's optimizer, float64."""
    with jax.enable_x64(True):
        hp = {k: jnp.asarray(v, jnp.float64) for k, v in HP.items()}
        opt = make_optimizer(optimizer, hp, options)
        params = {n: jnp.asarray(w) for n, w in _initial().items()}
        state = opt.init(params)

        @jax.jit
        def step(params, state):
            grads = jax.grad(lambda p: _loss(p, jnp))(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        history = []
        for _ in range(steps):
            params, state = step(params, state)
            history.append({n: np.asarray(w) for n, w in params.items()})
    return history


class TorchLikeSGD:
    """torch.optim.SGD(lr, weight_decay=gamma): g += gamma w; w -= lr g."""

    def __call__(self, params, grads):
        return {n: w - HP["lr"] * (grads[n] + HP["gamma"] * w) for n, w in params.items()}


class TorchLikeAdamW:
    """torch.optim.AdamW(lr, betas, eps=1e-8, weight_decay=gamma)."""

    def __init__(self):
        self.t, self.m, self.v = 0, {}, {}

    def __call__(self, params, grads):
        self.t += 1
        b1, b2, lr = HP["beta1"], HP["beta2"], HP["lr"]
        out = {}
        for n, w in params.items():
            g = grads[n]
            self.m[n] = b1 * self.m.get(n, 0) + (1 - b1) * g
            self.v[n] = b2 * self.v.get(n, 0) + (1 - b2) * g * g
            m_hat, v_hat = self.m[n] / (1 - b1**self.t), self.v[n] / (1 - b2**self.t)
            w = w * (1 - lr * HP["gamma"])
            out[n] = w - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        return out


def gradfilter_ema(grads, state):
    """The reference ``gradfilter_ema`` on a dict of gradients: the state starts as the first
    gradient; ema = ema alpha + g (1 - alpha); g + ema lamb."""
    alpha, lamb = HP["grokfast_alpha"], HP["grokfast_lamb"]
    if state is None:
        state = {n: g.copy() for n, g in grads.items()}
    out = {}
    for n, g in grads.items():
        state[n] = state[n] * alpha + g * (1 - alpha)
        out[n] = g + state[n] * lamb
    return out, state


def gradfilter_ma(grads, state, window):
    """The reference ``gradfilter_ma`` (mean filter, warm-up): deques of the last ``window``
    gradients; once full, g + lamb mean(deque)."""
    if state is None:
        state = {n: deque(maxlen=window) for n in grads}
    out = {}
    for n, g in grads.items():
        state[n].append(g.copy())
        if len(state[n]) == window:
            out[n] = g + sum(state[n]) / len(state[n]) * HP["grokfast_lamb"]
        else:
            out[n] = g
    return out, state


def orthogonalize(params, grads):
    """The reference ``OrthoGrad._orthogonalize_gradients``, per tensor."""
    out = {}
    for n, g in grads.items():
        w, gf = params[n].ravel(), g.ravel()
        proj = np.dot(w, gf) / (np.dot(w, w) + 1e-30)
        g_orth = gf - proj * w
        out[n] = (g_orth * (np.linalg.norm(gf) / (np.linalg.norm(g_orth) + 1e-30))).reshape(g.shape)
    return out


def _reference_steps(optimizer, options, steps=STEPS):
    step = TorchLikeSGD() if optimizer == "gd" else TorchLikeAdamW()
    params, state, history = _initial(), None, []
    for _ in range(steps):
        grads = _grad(params)
        if options.get("orthograd") == "on":
            grads = orthogonalize(params, grads)
        if options.get("grokfast") == "ema":
            grads, state = gradfilter_ema(grads, state)
        elif options.get("grokfast") == "ma":
            grads, state = gradfilter_ma(grads, state, options["grokfast_window"])
        params = step(params, grads)
        history.append(params)
    return history


OPTION_CASES = [
    {"grokfast": "ema"},
    {"grokfast": "ma", "grokfast_window": 3},
    {"orthograd": "on"},
    {"orthograd": "on", "grokfast": "ema"},
]


@pytest.mark.parametrize("optimizer", ["gd", "adamw"])
@pytest.mark.parametrize("options", OPTION_CASES, ids=lambda o: "+".join(map(str, o.values())))
def test_gradient_transformations_match_the_reference_code(optimizer, options):
    ours, reference = _groksweep_steps(optimizer, options), _reference_steps(optimizer, options)
    plain = _reference_steps(optimizer, {})
    for t, (a, b) in enumerate(zip(ours, reference)):
        for n in SHAPES:
            np.testing.assert_allclose(a[n], b[n], rtol=1e-10, atol=1e-14, err_msg=f"{n} @ {t}")
    # The transformation acted: the trajectory left the plain optimizer's.
    assert max(np.abs(ours[-1][n] - plain[-1][n]).max() for n in SHAPES) > 1e-3


def test_without_options_the_optimizer_is_the_plain_one():
    with jax.enable_x64(True):
        hp = {k: jnp.asarray(v) for k, v in HP.items()}
        for name in ("gd", "adam", "adamw"):
            plain = make_optimizer(name, hp)
            off = make_optimizer(name, hp, {"grokfast": "none", "orthograd": "off"})
            params = {n: jnp.asarray(w) for n, w in _initial().items()}
            assert jax.tree.structure(plain.init(params)) == jax.tree.structure(off.init(params))


def test_orthograd_update_is_orthogonal_and_keeps_the_norm():
    with jax.enable_x64(True):
        params = {n: jnp.asarray(w, jnp.float64) for n, w in _initial().items()}
        grads = {n: jnp.asarray(g) for n, g in _grad(_initial()).items()}
        opt = make_optimizer("gd", {"lr": jnp.asarray(1.0), "gamma": jnp.asarray(0.0)},
                             {"orthograd": "on"})  # fmt: skip
        updates, _ = opt.update(grads, opt.init(params), params)
    for n in SHAPES:  # per tensor, not over the whole model
        u, w, g = (np.asarray(x[n]).ravel() for x in (updates, params, grads))
        assert abs(u @ w) < 1e-12 * np.linalg.norm(u) * np.linalg.norm(w)
        np.testing.assert_allclose(np.linalg.norm(u), np.linalg.norm(g), rtol=1e-12)


# --- StableMax and softmax collapse ------------------------------------------------------------
def _np_stablemax_loss(out, label):
    s = np.where(out < 0, 1 / (1 - np.minimum(out, 0)), out + 1)
    return -np.log(s[np.arange(len(label)), label] / s.sum(-1))


def test_stablemax_cross_entropy_matches_the_formula_and_has_finite_gradients():
    rng = np.random.default_rng(0)
    out = rng.normal(scale=3, size=(20, 7))
    out[0, :3] = [0.0, 1.0, -1.0]  # the branch points, where a naive where() gives NaN gradients
    label = rng.integers(0, 7, size=20)
    with jax.enable_x64(True):
        ours = arithmetic.per_example_loss("stablemax", jnp.asarray(out), jnp.asarray(label))
        grad = jax.grad(lambda o: arithmetic.per_example_loss("stablemax", o, label).sum())(
            jnp.asarray(out)
        )
    np.testing.assert_allclose(ours, _np_stablemax_loss(out, label), rtol=1e-13)
    assert np.all(np.isfinite(grad))
    # d/dx of -log(s_y / sum s) by central differences.
    h, (i, j) = 1e-6, (0, 1)
    bump = np.zeros_like(out)
    bump[i, j] = h
    fd = (_np_stablemax_loss(out + bump, label)[i] - _np_stablemax_loss(out - bump, label)[i]) / (
        2 * h
    )
    np.testing.assert_allclose(grad[i, j], fd, rtol=1e-6)


def test_softmax_collapse_matches_the_reference_definition():
    rng = np.random.default_rng(1)
    # Rows at several logit scales: small ones never collapse, huge gaps always do (float32).
    scales = np.repeat([1.0, 10.0, 30.0, 1000.0], 10)[:, None]
    out = (rng.normal(size=(40, 5)) * scales).astype(np.float32)
    train = (rng.random(40) < 0.7).astype(np.float32)
    shifted = out - out.max(1, keepdims=True)
    collapsed = np.array([np.exp(row).sum(dtype=np.float32) == 1 for row in shifted])
    expected = collapsed[train == 1].mean()
    ours = arithmetic.softmax_collapse(jnp.asarray(out), jnp.asarray(train))
    assert ours == pytest.approx(expected, abs=1e-7)
    assert 0 < expected < 1  # both kinds present
    assert not collapsed[:10].any() and collapsed[30:].all()


# --- label noise ---------------------------------------------------------------------------------
NOISES = (0.0, 0.1, 0.25, 0.6, 1.0)
P_NOISE = 13


@functools.cache
def _families(task_name):
    """(seed, frac, noise, op) -> (labels, train mask, clean labels), through the task's own
    sample and share, compiled once per task."""
    task = get_task(task_name)
    shape = {n: prm.default for n, prm in task.params.items() if prm.role == "static"}
    shape |= {"p": P_NOISE, "d_h": 4, "d_model": 4, "n_heads": 1, "d_mlp": 4}
    task = task.bind(shape)

    @jax.jit
    def family(key, frac, noise, op):
        hp = {"frac": frac, "op": op, "label_noise": noise}
        shared = task.share(task.sample(key, shape, jnp.float32), hp, shape)
        label = shared["y"] if "y" in shared else shared["label"]
        return label, shared["train"], arithmetic.labels(op, P_NOISE)

    def call(seed, frac, noise, op="add"):
        args = jnp.float32(frac), jnp.float32(noise), jnp.int32(arithmetic.OPS.index(op))
        return tuple(np.asarray(a) for a in family(jax.random.key(seed), *args))

    return call


@pytest.mark.parametrize("task_name", ["modular_mlp", "transformer"])
def test_label_noise_corrupts_a_nested_fraction_of_the_training_labels(task_name):
    family = _families(task_name)
    seed, frac = 3, 0.5
    families = [family(seed, frac, noise) for noise in NOISES]
    corrupted = []
    for noise, (label, train, clean) in zip(NOISES, families):
        wrong = label != clean
        assert not np.any(wrong & (train == 0))  # test labels clean
        assert wrong.sum() == round(noise * train.sum())
        assert np.all((label >= 0) & (label < P_NOISE))
        corrupted.append(wrong)
    np.testing.assert_array_equal(families[0][0], families[0][2])  # noise 0: clean labels
    for smaller, larger in itertools.pairwise(corrupted):
        assert np.all(larger >= smaller)  # nested
    # Which pairs are corrupted is fixed per seed whatever the op, and differs between seeds.
    label, _, clean = family(seed, frac, 0.25, op="mul")
    np.testing.assert_array_equal(label != clean, corrupted[2])
    label, _, clean = family(seed + 1, frac, 0.25)
    assert np.any((label != clean) != corrupted[2])
    # The split does not move with the noise.
    for _, train, _ in families:
        np.testing.assert_array_equal(train, families[0][1])


def _np_ipr(vector):
    """Doshi et al.'s released ``calculate_ipr(np.absolute(np.fft.rfft(v)), r=2)``."""
    array = np.absolute(np.fft.rfft(vector))
    return np.power(array / np.sqrt((array**2).sum()), 4).sum()


def _initial_model(task_name, **static):
    task = get_task(task_name)
    shape = {n: prm.default for n, prm in task.params.items() if prm.role == "static"} | static
    with jax.enable_x64(True):
        return jax.jit(lambda k: task.sample(k, shape, jnp.float64))(jax.random.key(0))


def test_modular_mlp_sweep_with_stablemax_label_noise_ipr_and_collapse():
    """One compiled program: label noise is a traced axis. At t = 0 the centred predictor is
    0, so every s(0) = 1 and the StableMax loss is log p, nothing has collapsed, and the IPR is
    that of the initial weights (numpy, Doshi et al.'s eq. 4)."""
    p, d_h = 11, 8
    sweep = gs.Sweep("modular_mlp", params={"p": p, "d_h": d_h, "dtype": "float64",
                                            "loss": "stablemax", "optimizer": "adamw",
                                            "lr": 0.01, "frac": 0.5},
                     axes={"label_noise": [0.0, 0.3]}, steps=5, log_points=5,
                     measures=["ipr", "softmax_collapse"])  # fmt: skip
    assert len(gs.prepare(sweep).buckets) == 1
    ds = gs.run(sweep, progress=False).squeeze("seed")
    np.testing.assert_allclose(ds.train_loss.isel(time=0), np.log(p), rtol=1e-13)
    final = ds.train_loss.isel(time=-1).values
    assert np.all(final < np.log(p)) and abs(final[1] - final[0]) > 1e-6
    np.testing.assert_array_equal(ds.softmax_collapse.isel(time=0), 0)
    model = _initial_model("modular_mlp", p=p, d_h=d_h)["model"]
    w1, w2 = np.asarray(model.w1), np.asarray(model.w2)
    per_neuron = [
        (_np_ipr(w1[:p, k]) + _np_ipr(w1[p:, k]) + _np_ipr(w2[k])) / 3 for k in range(d_h)
    ]
    np.testing.assert_allclose(ds.ipr.isel(time=0), np.mean(per_neuron), rtol=1e-10)


# --- IPR -----------------------------------------------------------------------------------------
def test_ipr_matches_the_released_code_and_its_limits():
    p = 13
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(p, 6))
    ours = np.asarray(arithmetic.ipr(jnp.asarray(vectors), 0))
    np.testing.assert_allclose(ours, [_np_ipr(v) for v in vectors.T], rtol=1e-5)
    cosine = np.cos(2 * np.pi * 3 * np.arange(p) / p + 0.4)
    assert float(arithmetic.ipr(jnp.asarray(cosine), 0)) == pytest.approx(1, abs=1e-5)
    spike = np.eye(p)[0]
    assert float(arithmetic.ipr(jnp.asarray(spike), 0)) == pytest.approx(1 / (p // 2 + 1), rel=1e-5)


def test_transformer_ipr_measure():
    shape = {"p": 7, "d_model": 8, "n_heads": 2, "d_mlp": 8}
    task = get_task("transformer")
    task = task.bind({n: prm.default for n, prm in task.params.items() if prm.role == "static"}
                     | shape)  # fmt: skip
    model = {"W_E": jnp.asarray(np.random.default_rng(3).normal(size=(8, 8)), jnp.float32)}
    expected = np.mean([_np_ipr(np.asarray(model["W_E"])[:7, j]) for j in range(8)])
    np.testing.assert_allclose(task.measure("ipr", model, {}, {}), expected, rtol=1e-5)


@pytest.mark.slow
def test_transformer_ipr_at_initialisation():
    shape = {"p": 7, "d_model": 8, "n_heads": 2, "d_mlp": 8}
    sweep = gs.Sweep("transformer", params=shape | {"dtype": "float64"}, steps=1,
                     log_points=1, measures=["ipr", "softmax_collapse"])  # fmt: skip
    tf = gs.run(sweep, progress=False)
    embed = np.asarray(_initial_model("transformer", **shape)["W_E"])[:7]
    expected = np.mean([_np_ipr(embed[:, j]) for j in range(8)])  # IPR is scale-free
    np.testing.assert_allclose(tf.ipr.isel(time=0), expected, rtol=1e-10)


# --- through the engine ---------------------------------------------------------------------------
PARAMS = {"p": 11, "d_h": 8, "dtype": "float64", "optimizer": "adamw", "lr": 0.01}


def _final_loss(**params):
    sweep = gs.Sweep("modular_mlp", params=PARAMS | params, steps=6, log_points=3)
    return gs.run(sweep, progress=False).train_loss.isel(time=-1).values.ravel()


def test_grokfast_reaches_the_trained_runs_as_traced_axes():
    """Through the engine: lamb = 0 is the plain optimizer, lamb > 0 changes the runs, and the
    traced lamb and alpha share one compiled program."""
    sweep = gs.Sweep("modular_mlp", params=PARAMS | {"grokfast": "ema"},
                     axes={"grokfast_lamb": [0.0, 2.0], "grokfast_alpha": [0.5, 0.9]},
                     steps=6, log_points=3)  # fmt: skip
    assert len(gs.prepare(sweep).buckets) == 1
    loss = gs.run(sweep, progress=False).train_loss.isel(time=-1).squeeze("seed")
    plain = _final_loss()
    np.testing.assert_allclose(loss.sel(grokfast_lamb=0.0), np.repeat(plain, 2), rtol=1e-12)
    # AdamW normalises the amplified gradient: a small but real change.
    assert np.all(np.abs(loss.sel(grokfast_lamb=2.0) - loss.sel(grokfast_lamb=0.0)) > 1e-8)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"orthograd": "on"}, {"grokfast": "ma", "grokfast_window": 2}])
def test_orthograd_and_the_ma_filter_reach_the_trained_runs(options):
    assert np.all(np.abs(_final_loss(**options) - _final_loss()) > 1e-8)


def test_gradient_filters_turn_the_linear_task_to_gradient_steps():
    """The spectral jump is plain gradient descent: with a filter, "auto" steps, and an explicit
    spectral method is refused in one line rather than silently ignoring the filter."""
    filtered = gs.Sweep("linear", params={"grokfast": "ema", "d_in": 8}, steps=10)
    assert {run["method"] for run in filtered.runs()} == {"step"}
    assert {run["method"] for run in gs.Sweep("linear", steps=10).runs()} == {"spectral"}
    with pytest.raises(gs.SpecError, match="no grokfast or orthograd"):
        gs.Sweep("linear", params={"orthograd": "on", "method": "spectral"}, steps=10).runs()
