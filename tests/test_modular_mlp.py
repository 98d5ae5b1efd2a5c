"""The modular-arithmetic MLP (groksweep.tasks.modular_mlp): sweeps over seed, frac and op
(vmapped runs against single runs: test_contract.py), an independent numpy reference (forward
pass, losses, backpropagation, gradient descent with weight decay, the embedding measures and
the probe), the split masks, and grokking on a CI-sized problem.

The numpy reference shares nothing with the task but the random draws (``task.sample``) and
the train mask (``task.share``, checked separately in the split tests): it builds one-hot
inputs, the weights from the documented parametrisations, the labels from the operations, and
backpropagates by hand.
"""

from __future__ import annotations

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.tasks import get_task

TASK = get_task("modular_mlp")
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc", "weight_norm"]
MEASURES = ["fourier_concentration", "neuron_fourier_concentration", "embedding_difference"]
STATIC = ("p", "d_h", "split", "loss", "activation", "parametrisation", "predictor")
DEFAULTS = {name: param.default for name, param in TASK.params.items()}


def sweep(axes, steps, log_points, measures=(), **params):
    return gs.Sweep(
        "modular_mlp",
        params=params,
        axes=axes,
        steps=steps,
        log_points=log_points,
        measures=list(measures),
    )


def _shape(p):
    return {name: (DEFAULTS | p)[name] for name in STATIC}


def _documented_stds(shape):
    """The initial weights' standard deviations in the documented parametrisations."""
    if shape["parametrisation"] == "mean_field":  # eq. 43: N(0, 1) weights
        return 1.0, 1.0
    return (2 * shape["p"]) ** -0.5, shape["d_h"] ** -0.5  # N(0, 1/fan_in)


@functools.cache
def _draws(seed, shape_items):
    """The seed's draws, with the model's weights also as the standard normals they were drawn
    from (``w1``, ``w2``), from which the reference builds its own."""
    shape = dict(shape_items)
    with jax.enable_x64(True):
        draws = jax.jit(lambda key: TASK.sample(key, shape, jnp.float64))(jax.random.key(seed))
    std1, std2 = _documented_stds(shape)
    model = draws["model"]
    normals = {"w1": np.asarray(model.w1) / std1, "w2": np.asarray(model.w2) / std2}
    return {k: v if k == "model" else np.asarray(v) for k, v in draws.items()} | normals


@pytest.mark.parametrize("parametrisation", ["mean_field", "standard"])
def test_initial_weights_have_the_documented_scale(parametrisation):
    """The reference rebuilds the weights from the task's own draws; this checks the draws
    behind them are standard normals, i.e. that the weights have the documented scale."""
    p = {"p": 23, "d_h": 100, "parametrisation": parametrisation}
    draws = _draws(0, tuple(_shape(p).items()))
    for name in ("w1", "w2"):
        normals = draws[name].ravel()  # 4600 and 2300 entries
        assert abs(normals.mean()) < 0.1 and abs(normals.std() - 1) < 0.05, name


def _draws_and_mask(seed, p):
    """The float64 draws of seed ``seed`` and the train mask of the run ``p``."""
    shape = _shape(p)
    draws = _draws(seed, tuple(shape.items()))
    with jax.enable_x64(True):
        hp = {"frac": jnp.asarray(p["frac"]), "op": TASK.params["op"].choices.index(p["op"])}
        return draws, np.asarray(TASK.share(draws, hp, shape)["train"])


# --- independent numpy reference ----------------------------------------------------------------
NUMPY_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "x2+xy+y2": lambda a, b: a * a + a * b + b * b,
}


class NumpyModularMLP:
    """One run of the task in numpy, from the documented conventions alone."""

    def __init__(self, draws, train, p):
        self.p, n = p, p["p"]
        a, b = np.divmod(np.arange(n * n), n)
        self.x = np.concatenate([np.eye(n)[a], np.eye(n)[b]], axis=1)  # (p^2, 2p) one-hot
        self.label = NUMPY_OPS[p["op"]](a, b) % n
        self.y = np.eye(n)[self.label]
        self.train = train.astype(bool)
        d_in, d_h = 2 * n, p["d_h"]
        if p["parametrisation"] == "mean_field":  # eq. 43: N(0, 1) weights, explicit prefactors
            self.c1, self.c2, std1, std2 = d_in**-0.5, 1.0 / d_h, 1.0, 1.0
        else:  # N(0, 1/fan_in) weights, no prefactors
            self.c1, self.c2, std1, std2 = 1.0, 1.0, d_in**-0.5, d_h**-0.5
        self.w1 = p["init_scale"] * std1 * draws["w1"]
        self.w2 = p["init_scale"] * std2 * draws["w2"]
        self.f0 = self.forward()[0] if p["predictor"] == "centred" else 0.0

    def phi(self, h):
        """phi(h) and phi'(h)."""
        kind, e = self.p["activation"], self.p["eps_align"]
        if kind == "square":
            return h**2, 2 * h
        if kind == "relu":
            return np.maximum(h, 0), (h > 0).astype(float)
        return h + e / 2 * h**2, 1 + e * h

    def forward(self, x=None):
        x = self.x if x is None else x
        h = self.c1 * x @ self.w1
        z, dz = self.phi(h)
        return self.c2 * z @ self.w2, (x, z, dz)

    def predict(self):
        f, cache = self.forward()
        return self.p["alpha"] * (f - self.f0), cache

    def per_example(self, out):
        """Each example's loss and its gradient with respect to ``out``."""
        if self.p["loss"] == "mse":
            return np.mean((out - self.y) ** 2, axis=1), 2 * (out - self.y) / self.p["p"]
        shifted = out - out.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1))
        softmax = np.exp(shifted - lse[:, None])
        return lse - shifted[np.arange(len(out)), self.label], softmax - self.y

    def metrics(self):
        out, _ = self.predict()
        loss, _ = self.per_example(out)
        correct = out.argmax(axis=1) == self.label
        tr, te = self.train, ~self.train
        norm = np.sqrt(np.sum(self.w1**2) + np.sum(self.w2**2))
        return {
            "train_loss": loss[tr].mean(),
            "test_loss": loss[te].mean(),
            "train_acc": correct[tr].mean(),
            "test_acc": correct[te].mean(),
            "weight_norm": norm,
            **self.measures(),
        }

    def step(self):
        """One step of gradient descent with PyTorch weight decay."""
        out, (x, z, dz) = self.predict()
        _, dout = self.per_example(out)
        dout = dout * self.train[:, None] / self.train.sum()
        df = self.p["alpha"] * dout
        g2 = self.c2 * z.T @ df
        dh = (self.c2 * df @ self.w2.T) * dz
        g1 = self.c1 * x.T @ dh
        lr, gamma = self.p["lr"], self.p["gamma"]
        self.w1, self.w2 = (
            self.w1 - lr * (g1 + gamma * self.w1),
            self.w2 - lr * (g2 + gamma * self.w2),
        )

    def measures(self):
        """Fourier concentration (by an explicit DFT) and MED of the a-token embedding."""
        n = self.p["p"]
        e = self.w1[:n]
        k = np.arange(n)
        dft = np.exp(-2j * np.pi * np.outer(k, k) / n) @ e
        power = np.sum(np.abs(dft) ** 2, axis=1)
        pairs = [power[w] + (power[n - w] if n - w != w else 0.0) for w in range(1, n // 2 + 1)]
        concentration = np.sum(sorted(pairs)[-4:]) / power.sum()
        # Each neuron alone: its strongest frequency's share of its power.
        neuron_power = np.abs(dft) ** 2
        neuron_pairs = [
            neuron_power[w] + (neuron_power[n - w] if n - w != w else 0.0)
            for w in range(1, n // 2 + 1)
        ]
        neuron = np.mean(np.max(neuron_pairs, axis=0) / neuron_power.sum(axis=0))
        med = np.mean(np.linalg.norm(e[1:] - e[:-1], axis=1))
        return {
            "fourier_concentration": concentration,
            "neuron_fourier_concentration": neuron,
            "embedding_difference": med,
        }

    def probe(self, n):
        order = np.concatenate([np.flatnonzero(~self.train), np.flatnonzero(self.train)])[:n]
        f, _ = self.forward(self.x[order])
        f0 = self.f0[order] if self.p["predictor"] == "centred" else 0.0
        return self.p["alpha"] * (f - f0), self.y[order]


BASE = {
    "p": 11,
    "d_h": 6,
    "frac": 0.6,
    "op": "x2+xy+y2",
    "split": "random",
    "alpha": 1.3,
    "init_scale": 0.9,
    "eps_align": 0.7,
    "gamma": 0.01,
    "dtype": "float64",
}
CASES = [
    {
        "activation": "square",
        "parametrisation": "mean_field",
        "predictor": "centred",
        "loss": "mse",
        "lr": 2.0,
    },
    {
        "activation": "relu",
        "parametrisation": "standard",
        "predictor": "plain",
        "loss": "cross_entropy",
        "lr": 0.5,
        "split": "strips",
        "op": "sub",
    },
    {
        "activation": "quadratic",
        "parametrisation": "mean_field",
        "predictor": "centred",
        "loss": "cross_entropy",
        "lr": 3.0,
        "split": "block",
        "op": "mul",
    },
]
REF_STEPS, SEEDS = 3, (0, 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["activation"])
def test_sweep_equals_numpy_reference(case):
    """Metrics and measures at steps 0 .. 3 of gradient descent with weight decay, and the
    probe at the initial weights, against numpy."""
    p = BASE | case
    grid = gs.run(sweep({"seed": list(SEEDS)}, REF_STEPS, REF_STEPS, MEASURES, **p), progress=False)
    assert list(grid.time.values) == list(range(REF_STEPS + 1))
    for seed in SEEDS:
        ref = NumpyModularMLP(*_draws_and_mask(seed, p), p)
        for t in range(REF_STEPS + 1):
            exact = ref.metrics()
            for name in METRICS + MEASURES:
                np.testing.assert_allclose(
                    grid[name].sel(seed=seed, time=t).values,
                    exact[name],
                    rtol=1e-10,
                    atol=1e-13,
                    err_msg=f"{name} at step {t}, seed {seed}, {case['activation']}",
                )
            ref.step()
    # The runs moved: the comparison above is not of a frozen model. (Not "fell": over three
    # steps the weight decay's shrinking of theta moves the centred predictor away from zero,
    # which raises or lowers the loss by chance, with the sign of f(theta_0)'s overlap with y.)
    moved = np.abs(grid.train_loss.isel(time=-1) / grid.train_loss.isel(time=0) - 1)
    assert np.all(moved > 1e-6), moved.values  # 10^4 times the tolerance above


@pytest.mark.parametrize("case", CASES[:2], ids=lambda c: c["activation"])
def test_probe_equals_numpy(case):
    p = BASE | case
    draws, train = _draws_and_mask(0, p)
    ref = NumpyModularMLP(draws, train, p)
    ref.step()  # away from theta_0, where the centred predictor is zero
    task = TASK.bind(_shape(p))
    with jax.enable_x64(True):
        hp = {name: jnp.asarray(p[name]) for name in ("alpha", "init_scale", "eps_align")}
        _, run = task.setup(draws, hp, task.shape)
        data = draws | run | {"train": jnp.asarray(train), "y": jnp.asarray(ref.label)}
        weights = (jnp.asarray(ref.w1), jnp.asarray(ref.w2))
        model = eqx.tree_at(lambda m: (m.w1, m.w2), draws["model"], weights)
        n = int((1 - train).sum()) + 3  # every held-out pair, then three training pairs
        outputs, targets = task.probe(model, data, hp, n)
    exact_outputs, exact_targets = ref.probe(n)
    np.testing.assert_allclose(outputs, exact_outputs, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(targets, exact_targets)


# --- the sweep: seed x frac x op ----------------------------------------------------------------
GRID = {"p": 11, "d_h": 12, "lr": 100.0, "dtype": "float64"}
GRID_AXES = {"frac": [0.4, 0.7], "op": ["add", "mul"], "seed": [0, 1]}


@pytest.fixture(scope="module")
def grid():
    return gs.run(sweep(GRID_AXES, 40, 8, **GRID), progress=False)


def test_sweep_over_seed_frac_and_op(grid):
    assert grid.train_acc.dims == ("frac", "op", "seed", "time")
    # The centred predictor is zero at t = 0: the MSE against one-hot targets is exactly 1/p.
    np.testing.assert_allclose(grid.train_loss.isel(time=0), 1 / GRID["p"], rtol=1e-12)
    np.testing.assert_allclose(grid.test_loss.isel(time=0), 1 / GRID["p"], rtol=1e-12)
    final = grid.train_loss.isel(time=-1)
    assert np.all(final < 1 / GRID["p"])
    # Every axis matters: runs along each axis train differently.
    for axis in GRID_AXES:
        spread = final.max(axis) - final.min(axis)
        assert np.all(spread > 1e-6), axis
    # The initial weights depend only on the seed, whatever the op and frac.
    np.testing.assert_allclose(grid.weight_norm.isel(time=0).std(["frac", "op"]), 0, atol=1e-12)


# --- split masks --------------------------------------------------------------------------------
def _table(seed, split, frac, p=13, op="add"):
    """The test pairs (mask 0) as a p x p boolean table [a, b]."""
    _, train = _draws_and_mask(seed, {"p": p, "d_h": 2, "split": split, "frac": frac, "op": op})
    return (train == 0).reshape(p, p)


def _is_cyclic_interval(members, p):
    """Whether the sorted indices ``members`` are {s, s+1, ..., s+len-1} mod p for some s."""
    return any(set((s + np.arange(len(members))) % p) == set(members) for s in range(p))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_split_holds_out_a_cyclic_square(seed):
    p, frac = 13, 0.7
    test = _table(seed, "block", frac)
    rows, cols = np.flatnonzero(test.any(1)), np.flatnonzero(test.any(0))
    side = round(np.sqrt(1 - frac) * p)
    assert len(rows) == len(cols) == side
    np.testing.assert_array_equal(test, np.outer(test.any(1), test.any(0)))
    assert _is_cyclic_interval(rows, p) and _is_cyclic_interval(cols, p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strips_split_holds_out_whole_rows(seed):
    p, frac = 13, 0.6
    test = _table(seed, "strips", frac)
    assert np.all(test.all(1) | ~test.any(1))  # every a row is held out entirely or not at all
    assert test.all(1).sum() == round((1 - frac) * p)


def test_random_split_counts_and_nesting():
    p, fracs = 13, [0.3, 0.5, 0.8]
    tables = [_table(0, "random", f) for f in fracs]
    for frac, test in zip(fracs, tables):
        assert (~test).sum() == round(frac * p * p)
    for smaller, larger in itertools.pairwise(tables):
        assert np.all(larger <= smaller)  # a larger frac trains on a superset
    assert np.any(_table(1, "random", 0.5) != tables[1])  # seeds differ
    assert np.array_equal(_table(0, "random", 0.5, op="mul"), tables[1])  # op does not matter


# --- grokking -----------------------------------------------------------------------------------
# Found by a scan over p, d_h, frac, optimizer, lr and weight decay: with AdamW (lr 0.03, decoupled
# weight decay 0.1) at frac 0.6, p = 17, d_h = 50, seeds 0-9 all reach train accuracy 0.99 at
# steps 71-93 and test accuracy 0.95 at steps 267-1057 (3.5-13x later); the weight norm grows
# from ~50 to ~146. GD without weight decay groks at this frac only for some seeds.
GROK = {"p": 17, "d_h": 50, "frac": 0.6, "optimizer": "adamw", "lr": 0.03, "gamma": 0.1}


def test_a_small_modular_task_groks():
    ds = gs.run(sweep({"seed": [0, 1, 2]}, 2000, 60, **GROK), progress=False)
    t_train = gs.grokking_time(ds, level=0.99).t_train
    t_test = gs.grokking_time(ds, level=0.95).t_test
    assert not np.any(np.isnan(t_train)) and not np.any(np.isnan(t_test)), (t_train, t_test)
    assert np.all(t_test > 2.5 * t_train), (t_train.values, t_test.values)
    assert np.all(ds.test_acc.isel(time=-1) >= 0.95)
    # At the train-accuracy time the test accuracy is still far from the level.
    assert np.all(ds.test_acc.interp(time=t_train) < 0.5)
