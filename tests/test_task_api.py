"""Tasks from outside the package: the high-level ModelTask against an independent numpy
computation, prefix-stable draws of every kind, and the three ways to name a task (registered,
module:attribute, entry point), each refusing a broken task in one line."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import groksweep as gs
from groksweep.tasks import TASKS, draws
from groksweep.tasks.base import OUTPUT_SCALE_PARAMS
from groksweep.tasks.linear import Linear


class Affine(eqx.Module):
    w: jax.Array

    def __call__(self, x):
        return x @ self.w


class Regression(gs.ModelTask):
    """Linear regression y = x . w* on d inputs, as a user would write it."""

    name = "test_regression"
    params = {
        "d": gs.Param(int, 6, "static", "inputs", ge=1),
        "n_train": gs.Param(int, 10, "padded", "training samples", ge=1),
        "n_test": gs.Param(int, 40, "static", "test samples", ge=1),
    }
    loss, accuracy = "mse", "threshold"

    def init(self, key, shape):
        return Affine(0.1 * draws.normal(key, (shape["d"],)))

    def data(self, key, shape, dtype):
        teacher = draws.normal(draws.stream(key, 0), (shape["d"],), (), dtype)
        x = {
            r: draws.normal(draws.stream(key, i + 1), (shape[f"n_{r}"],), (shape["d"],), dtype)
            for i, r in enumerate(("train", "test"))
        }
        return {
            "x_train": x["train"],
            "y_train": x["train"] @ teacher,
            "x_test": x["test"],
            "y_test": x["test"] @ teacher,
            "teacher": teacher,
        }


def numpy_gd(x, y, w0, lr, gamma, times):
    """Full-batch gradient descent on the mean squared error with PyTorch weight decay."""
    w, losses, step = w0.copy(), [], 0
    for t in times:
        while step < t:
            w -= lr * (2 * x.T @ (x @ w - y) / len(y) + gamma * w)
            step += 1
        losses.append(np.mean((x @ w - y) ** 2))
    return np.array(losses), w


def test_a_model_task_trains_as_numpy_gradient_descent_padded_or_not():
    task = Regression()
    sweep = gs.Sweep(
        task,
        params={"dtype": "float64", "lr": 0.05},
        axes={"n_train": [7, 10], "gamma": [0.0, 0.1]},
        steps=60,
        log_points=8,
        eps=[1e-3, 1e-1],
    )
    ds = gs.run(sweep, progress=False)  # n_train 7 is padded to 10 in one bucket
    sample = jax.jit(lambda k: task.sample(k, {"d": 6, "n_train": 10, "n_test": 40}, jnp.float64))
    with jax.enable_x64(True):
        d = jax.tree.map(np.asarray, sample(jax.random.key(0)))
    for n in (7, 10):
        for gamma in (0.0, 0.1):
            x, y = d["x_train"][:n], d["y_train"][:n]
            expected, w = numpy_gd(x, y, d["model"].w, 0.05, gamma, ds.time.values)
            run = ds.sel(n_train=n, gamma=gamma, seed=0)
            np.testing.assert_allclose(run.train_loss.values, expected, rtol=1e-10)
            test_err = (d["x_test"] @ w - d["y_test"]) ** 2
            np.testing.assert_allclose(run.test_loss.values[-1], test_err.mean(), rtol=1e-10)
            for eps in (1e-3, 1e-1):
                acc = run.test_acc.sel(eps=eps).values[-1]
                np.testing.assert_allclose(acc, np.mean(test_err < eps), rtol=1e-12)


class Classes(gs.ModelTask):
    """Three classes of 4 inputs, integer labels from a linear teacher: argmax accuracy and
    cross-entropy."""

    name = "test_classes"
    params = {"n_train": gs.Param(int, 12, "padded", "samples", ge=1)}
    loss, accuracy = "cross_entropy", "argmax"

    def init(self, key, shape):
        return Affine(draws.normal(key, (4,), (3,)))

    def data(self, key, shape, dtype):
        x = draws.normal(key, (shape["n_train"],), (4,), dtype)
        teacher = draws.normal(draws.stream(key, 1), (4,), (3,), dtype)
        labels = jnp.argmax(x @ teacher, axis=1)  # linearly separable
        return {"x_train": x, "y_train": labels, "x_test": x[:5], "y_test": labels[:5]}


def test_accuracies_and_losses_at_time_zero_equal_numpy_and_reach_exactly_one():
    task = Classes()
    ds = gs.run(gs.Sweep(task, steps=2000, log_points=4, params={"lr": 1.0}), progress=False)
    d = jax.tree.map(np.asarray, task.sample(jax.random.key(0), {"n_train": 12}, jnp.float32))
    logits = d["x_train"] @ d["model"].w
    shifted = logits - logits.max(1, keepdims=True)
    nll = -(shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))[np.arange(12), d["y_train"]]
    start = ds.isel(seed=0, time=0)
    np.testing.assert_allclose(start.train_loss, nll.mean(), rtol=1e-5)
    assert start.train_acc == np.float32(np.mean(logits.argmax(1) == d["y_train"]))
    # Twelve separable points are all learnt: an accuracy of all rows is exactly 1 in float32.
    assert ds.train_acc.isel(seed=0, time=-1).item() == 1.0


@pytest.mark.parametrize(
    "draw",
    [
        lambda k, c: draws.normal(k, c, (3,)),
        lambda k, c: draws.uniform(k, c, (2,)),
        lambda k, c: draws.bits(k, c, (5,)),
        lambda k, c: draws.signs(k, c),
        lambda k, c: draws.integers(k, c, (2,), 7),
    ],
    ids=["normal", "uniform", "bits", "signs", "integers"],
)
def test_every_kind_of_draw_is_prefix_stable_in_every_count(draw):
    key = jax.random.key(3)
    small, large = np.asarray(draw(key, (4, 2))), np.asarray(draw(key, (9, 5)))
    np.testing.assert_array_equal(small, large[:4, :2])
    assert not np.array_equal(large[:4, :2], large[4:8, :2])  # not one value repeated


def test_discrete_draws_have_their_distribution():
    key = jax.random.key(0)
    bits = np.asarray(draws.bits(key, (20000,)))
    assert set(np.unique(bits)) == {0, 1} and abs(bits.mean() - 0.5) < 0.02
    assert set(np.unique(np.asarray(draws.signs(key, (100,))))) == {-1.0, 1.0}
    ints = np.asarray(draws.integers(key, (30000,), (), 7))
    assert (
        set(np.unique(ints)) == set(range(7))
        and np.abs(np.bincount(ints) / 30000 - 1 / 7).max() < 0.01
    )
    order = np.asarray(draws.order(key, 10))
    assert sorted(order) == list(range(10))
    grown = np.asarray(draws.order(key, 15))
    assert list(grown[grown < 10]) == list(order)  # old items keep their order among themselves
    subsets = [np.asarray(draws.subset(key, 12, m)) for m in range(13)]
    assert [s.sum() for s in subsets] == list(range(13))
    assert all((a <= b).all() for a, b in zip(subsets, subsets[1:]))  # growing m only adds


def test_a_task_object_is_registered_and_its_spec_reads_back():
    sweep = gs.Sweep(Regression(), steps=5, log_points=2)
    assert sweep.task == "test_regression" and TASKS["test_regression"] is sweep.task_def
    assert gs.Sweep.from_dict(__import__("tomllib").loads(sweep.to_toml())) == sweep


def test_module_attribute_and_entry_point_name_a_task_outside_the_package(tmp_path, monkeypatch):
    (tmp_path / "outside_tasks.py").write_text(
        "from groksweep.tasks.linear import Linear\n\n"
        "class Outside(Linear):\n    name = 'outside'\n\n"
        "def broken():\n    raise RuntimeError('boom')\n"
    )
    info = tmp_path / "outside_tasks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside-tasks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[groksweep.tasks]\noutside = outside_tasks:Outside\nbroken = outside_tasks:nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "outside_tasks", raising=False)
    by_path = gs.Sweep("outside_tasks:Outside", params={"d_in": 4, "n_test": 8}, steps=3)
    assert type(by_path.task_def).__name__ == "Outside"
    by_plugin = gs.Sweep("outside", params={"d_in": 4, "n_test": 8}, steps=3)
    assert by_plugin.task_def.name == "outside"
    assert gs.run(by_plugin, progress=False).train_loss.notnull().all()
    for name, message in (
        ("broken", "cannot load task 'broken' from its entry point"),
        ("outside_tasks:broken", "is a function, not a groksweep Task"),
        ("no_such_module:Task", "cannot load task 'no_such_module:Task': ModuleNotFoundError"),
        ("outsid", "did you mean 'outside'?"),
    ):
        with pytest.raises(gs.SpecError, match=message) as err:
            gs.Sweep(name)
        assert "\n" not in str(err.value)


def _variant(**attributes):
    return type("Variant", (Linear,), {"name": "variant", **attributes})()


class NoInit(gs.ModelTask):
    name = "no_init"
    params = {}


@pytest.mark.parametrize(
    "task, message",
    [
        (_variant(metrics={"train_loss": (), "train_acc": ("eps",)}), "does not record 'test_acc'"),
        (_variant(metrics=Linear.metrics | {"odd": ("batch",)}), "metric 'odd' has dims"),
        (_variant(params=Linear.params | {"w": gs.Param(int, 1, "dynamic", "")}), "role 'dynamic'"),
        (
            _variant(params=Linear.params | {"w": gs.Param(int, -1, "static", "", ge=0)}),
            "the default of 'w' is invalid",
        ),
        (
            _variant(params=Linear.params | {"lr": gs.Param(float, 1.0, "traced", "")}),
            "parameter 'lr' is the engine's",
        ),
        (_variant(params=Linear.params | {"w": 3}), "not a Param"),
        (_variant(shared_by=("n_trian",)), "did you mean 'n_train'?"),
        (_variant(max_padding={"d_in": 2.0}), "max_padding"),
        (_variant(methods=("step", "exact")), "unknown method 'exact'"),
        (_variant(name=" spaced"), "needs a name"),
        (
            type("Jumpless", (Regression,), {"name": "j", "methods": ("step", "spectral")})(),
            "does not implement jump",
        ),
        (NoInit(), "does not implement init"),
        (_variant(overrides="x_train"), "overrides must be a tuple"),
        (type("Lossy", (Regression,), {"name": "l", "loss": "hinge"})(), "loss must be one of"),
    ],
)
def test_a_broken_task_declaration_is_one_line_before_anything_compiles(task, message):
    with pytest.raises(gs.SpecError, match=message) as err:
        gs.Sweep(task)
    assert "\n" not in str(err.value)


class Shadowing(Regression):
    """Its setup gives the run a ``y_train`` of its own, shadowing the draws' undeclared."""

    name = "test_shadowing"

    def setup(self, data, hp, shape):
        return data["model"], {"y_train": 0 * data["y_train"]}


def test_a_data_level_shadowing_another_is_refused_unless_declared():
    with pytest.raises(gs.SpecError, match=r"data \['y_train'\] given by two levels"):
        gs.prepare(gs.Sweep(Shadowing(), steps=3), memory_budget=2**30)
    declared = type("Declared", (Shadowing,), {"name": "test_declared", "overrides": ("y_train",)})
    ds = gs.run(gs.Sweep(declared(), steps=3, log_points=2), progress=False)
    assert (ds.train_loss.isel(time=0) > 0).all()  # the zero targets are the run's


class Counted(eqx.Module):
    w: jax.Array
    calls: jax.Array

    def __call__(self, x):
        return x @ self.w


class IntegerModel(Regression):
    name = "test_integer_model"

    def init(self, key, shape):
        return Counted(draws.normal(key, (shape["d"],)), jnp.zeros((), jnp.int32))


def test_a_model_with_integer_arrays_is_refused_in_one_line():
    with pytest.raises(gs.SpecError, match="holds integer arrays"):
        gs.prepare(gs.Sweep(IntegerModel(), steps=3), memory_budget=2**30)


def test_built_in_names_are_not_replaced_and_others_only_on_request():
    with pytest.raises(gs.SpecError, match="built-in"):
        gs.register_task(_variant(name="linear"))
    first, second = _variant(name="mine"), _variant(name="mine")
    try:
        gs.register_task(first)
        with pytest.raises(gs.SpecError, match="replace=True"):
            gs.register_task(second)
        assert gs.register_task(second, replace=True) is TASKS["mine"]
    finally:
        TASKS.pop("mine", None)


# --- the table form: a finite dataset split by a traced frac, with the output scale -----------
class Table(gs.ModelTask):
    """Regression on a fixed table of 30 examples, trained on a fraction ``frac`` of them, with
    Kumar et al.'s output scale (centred or plain predictor, alpha, init_scale)."""

    name = "test_table"
    params = {
        "frac": gs.Param(float, 0.5, "traced", "fraction of the examples trained on", gt=0, lt=1),
        **OUTPUT_SCALE_PARAMS,
    }
    loss, accuracy = "mse", "threshold"

    def init(self, key, shape):
        return Affine(draws.normal(key, (4,)))

    def data(self, key, shape, dtype):
        x = draws.normal(key, (30,), (4,), dtype)
        return {"x": x, "y": x @ jnp.arange(1.0, 5.0, dtype=dtype)}


def test_a_table_task_trains_on_a_nested_random_fraction_as_numpy_gradient_descent():
    task, fracs = Table(), [0.3, 0.6]
    sweep = gs.Sweep(
        task,
        params={"dtype": "float64", "lr": 0.1, "alpha": 1.5, "init_scale": 0.7},
        axes={"frac": fracs, "predictor": ["centred", "plain"], "seed": [0, 1]},
        steps=20,
        log_points=5,
        eps=[0.1],
    )
    ds = gs.run(sweep, progress=False)
    shape = {"predictor": "centred"}
    for seed in (0, 1):
        with jax.enable_x64(True):
            d = jax.tree.map(np.asarray, task.sample(jax.random.key(seed), shape, jnp.float64))
            masks = [np.asarray(task.share(d, {"frac": jnp.float64(f)}, shape)["train"])
                     for f in fracs]
        small, large = (m.astype(bool) for m in masks)
        assert [m.sum() for m in masks] == [9, 18]  # round(frac 30)
        assert np.all(large[small])  # nested: a larger frac adds examples
        x, y = d["x"], d["y"]
        for frac, train in zip(fracs, masks):
            tr = train.astype(bool)
            for predictor in ("centred", "plain"):
                w0 = 0.7 * d["model"].w
                f0 = x @ w0 if predictor == "centred" else 0.0
                w, losses = w0.copy(), []
                for t in range(21):
                    out = 1.5 * (x @ w - f0)
                    if t in ds.time.values:
                        losses.append((np.mean((out - y)[tr] ** 2), np.mean((out - y)[~tr] ** 2)))
                    w -= 0.1 * 1.5 * 2 * x[tr].T @ (out - y)[tr] / tr.sum()
                run = ds.sel(frac=frac, predictor=predictor, seed=seed)
                train_loss, test_loss = np.array(losses).T
                np.testing.assert_allclose(run.train_loss.values, train_loss, rtol=1e-10)
                np.testing.assert_allclose(run.test_loss.values, test_loss, rtol=1e-10)


def test_a_table_without_a_train_mask_or_frac_is_one_line():
    no_frac = type("NoFrac", (Table,), {"name": "test_no_frac", "params": {}})
    with pytest.raises(gs.SpecError, match="needs a train mask"):
        gs.run(gs.Sweep(no_frac(), steps=2, log_points=2), progress=False)
