"""Models kept at chosen log points (``save_models``): the spec field, the memory they take,
and their files, which give back, bit for bit, the models a run trains to (checked against a
plain training loop of the task's own functions and against a sweep that ends at the step)."""

import tomllib

import jax
import jax.numpy as jnp
import netCDF4
import numpy as np
import pytest

import groksweep as gs
from groksweep import engine, trainer
from groksweep.cli import main
from groksweep.plan import plan
from groksweep.spec import override
from groksweep.store import ChunkStore
from groksweep.tasks.base import merge_data, task_identity
from groksweep.tasks.modular_mlp import PairMLP


def mlp_sweep(steps=60, log_points=6, save_models="log", **params):
    return gs.Sweep(
        "modular_mlp",
        params={"p": 7, "d_h": 16, "lr": 0.5, "gamma": 0.01, "dtype": "float64"} | params,
        axes={"frac": [0.5, 0.8], "seed": [0, 1]},
        steps=steps,
        log_points=log_points,
        save_models=save_models,
    )


def linear_sweep(method="step", save_models="log"):
    # step: pieces of 64 steps, about 60 units; spectral: 4 blocks of 25 log points
    return gs.Sweep(
        "linear",
        params={"d_in": 8, "n_test": 64, "lam": 0.5, "method": method},
        axes={"gamma": [0.0, 0.01], "seed": [0, 1]},
        steps=3000,
        log_points=12 if method == "step" else 100,
        save_models=save_models,
    )


# --- the spec field --------------------------------------------------------------------------
def test_save_models_reads_back_from_its_toml_and_from_set():
    for value, normal in [("log", "log"), ([3000, 0, 40, 40], (0, 40, 3000)), (False, ())]:
        sweep = linear_sweep(save_models=value)
        assert sweep.save_models == normal
        again = gs.Sweep.from_dict(tomllib.loads(sweep.to_toml()))
        assert again.save_models == normal and again.to_toml() == sweep.to_toml()
    assert "save_models" not in linear_sweep(save_models=False).to_toml()
    spec = tomllib.loads(linear_sweep(save_models=False).to_toml())
    assert gs.Sweep.from_dict(override(spec, ["save_models=log"])).save_models == "log"
    assert gs.Sweep.from_dict(override(spec, ["save_models=[5, 3000]"])).save_models == (5, 3000)


def test_listed_steps_keep_the_nearest_log_point_the_earlier_of_two():
    sweep = gs.Sweep("linear", params={"d_in": 8}, steps=100, log_points=5, save_models="log")
    times = sweep.times()
    assert list(times) == [0, 1, 3, 10, 32, 100]
    assert list(sweep.saved_points()) == list(range(6))
    listed = gs.Sweep(
        "linear", params={"d_in": 8}, steps=100, log_points=5, save_models=[2, 7, 21, 99]
    )
    # 2 is as near 1 as 3 (the earlier), 7 nearest 10, 21 halfway between 10 and 32 -> 10
    assert list(times[listed.saved_points()]) == [1, 10, 100]


@pytest.mark.parametrize(
    "value, message",
    [
        ("all", 'save_models must be "log", a list of steps or false'),
        (True, 'save_models must be "log", a list of steps or false'),
        ([3001], r"save_models: step 3,001 is outside \[0, 3,000\] \(steps\)"),
        ([-1], r"save_models: step -1 is outside \[0, 3,000\]"),
        ([1.5], "save_models must be an integer"),
        (7, "save_models must be a list of values"),
    ],
)
def test_bad_save_models_is_one_line(value, message):
    with pytest.raises(gs.SpecError, match=message) as err:
        linear_sweep(save_models=value)
    assert "\n" not in str(err.value)


def test_a_sweep_saving_models_needs_a_directory_and_a_directory_needs_one():
    with pytest.raises(gs.SpecError, match="give run a models_dir"):
        gs.run(linear_sweep(), progress=False)
    with pytest.raises(gs.SpecError, match="keeps no models"):
        gs.run(linear_sweep(save_models=False), progress=False, models_dir="unused")


def test_kept_models_count_in_the_memory_estimate_and_make_more_chunks():
    """A budget that holds the whole bucket without kept models is cut into more chunks with
    them: every kept log point holds one more model per run."""
    plain, saving = mlp_sweep(save_models=False), mlp_sweep(save_models="log")
    task = plain.task_def
    (bucket,) = plan(task, plain.runs())
    n_times = len(plain.times())
    without = trainer.state_bytes(task, bucket, n_times, 0)
    model = trainer.state_bytes(task, bucket, n_times, 0, n_kept=1).per_run - without.per_run
    assert model == (2 * 7 * 16 + 16 * 7) * 8  # w1 and w2 in float64
    assert bucket.run_index.shape == (2, 2, 1)  # seeds, fracs, one run each
    budget = 1.01 * 2 * engine.memory_of_group(without, 2, 1)  # both seeds' groups, just
    chunks = {}
    for sweep in (plain, saving):
        prepared = engine.prepare(sweep, memory_budget=budget, chunk_size=4)
        chunks[sweep.save_models] = sum(-(-c.bucket.n_groups // c.groups) for c in prepared.buckets)
    assert chunks == {(): 1, "log": 2}


# --- the models, bit for bit ----------------------------------------------------------------
def plain_training(sweep: gs.Sweep, run: int, steps: set[int]) -> dict[int, PairMLP]:
    """One run trained in a Python loop of gradient-descent steps (weight decay gamma), from
    the task's own draws, set-up and objective: nothing of the engine's batching or stepping."""
    task = sweep.task_def
    (bucket,) = plan(task, [sweep.runs()[run]], exact=True)
    shape = dict(bucket.shape)
    task = task.bind(shape)
    with jax.enable_x64(True):
        hp = {
            name: jnp.asarray(trainer._hparam_array(task, name, values, jnp.float64).reshape(-1)[0])
            for name, values in bucket.hparams.items()
        }
        draws = task.sample(jax.random.key(int(bucket.seeds[0])), shape, jnp.float64)
        data = merge_data(task, draws, task.share(draws, hp, shape))
        model, constants = task.setup(data, hp, shape)
        data = merge_data(task, data, constants)
        gradient = jax.jit(jax.grad(lambda m: task.objective(m, data, hp)))
        update = jax.jit(
            lambda m, g: jax.tree.map(lambda w, d: w - hp["lr"] * (d + hp["gamma"] * w), m, g)
        )
        kept = {0: jax.device_get(model)}
        for step in range(1, max(steps) + 1):
            model = update(model, gradient(model))
            if step in steps:
                kept[step] = jax.device_get(model)
    return kept


@pytest.mark.slow
def test_saved_models_are_the_trained_models_bit_for_bit(tmp_path):
    """Every kept model of a modular MLP sweep (an equinox module, float64) follows a plain
    training loop to float64 rounding, and the one kept at step 26 midway is bit for bit the
    final model of a sweep of 26 steps; each reads back by index or by grid labels."""
    whole, short = tmp_path / "whole", tmp_path / "short"
    sweep = mlp_sweep(steps=60, log_points=6, save_models="log")
    gs.run(sweep, progress=False, models_dir=whole)
    gs.run(mlp_sweep(steps=26, log_points=4, save_models=[26]), progress=False, models_dir=short)
    steps = [int(s) for s in sweep.times()]
    assert steps == [0, 1, 2, 5, 12, 26, 60]
    for run in range(sweep.n_runs):
        models = gs.load_models(whole, run=run)
        assert sorted(models) == steps
        reference = plain_training(sweep, run, set(steps))
        for step, model in models.items():
            assert isinstance(model, PairMLP) and (model.p, model.activation) == (7, "square")
            for got, want in ((model.w1, reference[step].w1), (model.w2, reference[step].w2)):
                assert got.dtype == np.float64
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
        ended = gs.load_models(short, run=run, step=26)
        np.testing.assert_array_equal(models[26].w1, ended.w1)
        np.testing.assert_array_equal(models[26].w2, ended.w2)
    frac, seed = np.unravel_index(3, sweep.shape)
    by_labels = gs.load_models(whole, run={"frac": [0.5, 0.8][frac], "seed": int(seed)}, step=60)
    np.testing.assert_array_equal(by_labels.w1, gs.load_models(whole, run=3, step=60).w1)
    with pytest.raises(gs.SpecError, match="step 30 is not a kept step of run 3; kept: 0, 1, 2"):
        gs.load_models(whole, run=3, step=30)
    with pytest.raises(gs.SpecError, match="frac = 0.6 is not on the grid"):
        gs.load_models(whole, run={"frac": 0.6, "seed": 0})
    with pytest.raises(gs.SpecError, match="names no seed"):
        gs.load_models(whole, run={"frac": 0.5})
    with pytest.raises(gs.SpecError, match="holds no saved models"):
        gs.load_models(tmp_path, run=0)


@pytest.mark.parametrize("method", ["step", pytest.param("spectral", marks=pytest.mark.slow)])
def test_kept_models_survive_a_stop_mid_chunk(tmp_path, method):
    """Stopped after two one-unit segments (kept models in the saved state), then resumed: the
    models are bitwise those of an uninterrupted run, and only finished chunks have files."""
    sweep = linear_sweep(method)
    gs.run(sweep, progress=False, reproducible=True, models_dir=tmp_path / "whole")
    store = ChunkStore(tmp_path / "chunks", sweep.to_toml(), task_identity(sweep.task_def))
    asked = iter(range(2, -(10**9), -1))
    options = {"progress": False, "reproducible": True, "store": store}
    with pytest.raises(engine.SweepInterrupted):
        gs.run(
            sweep,
            **options,
            models_dir=tmp_path / "models",
            checkpoint_every=1e-9,
            should_stop=lambda: next(asked) <= 1,
        )
    assert len(list((tmp_path / "models").glob("*.nc"))) == store.count()
    log = []
    gs.run(sweep, **options, models_dir=tmp_path / "models", log=log.append)
    assert any("resumed after" in line for line in log), log
    for run in range(sweep.n_runs):
        resumed = gs.load_models(tmp_path / "models", run=run)
        whole = gs.load_models(tmp_path / "whole", run=run)
        assert sorted(resumed) == [int(s) for s in sweep.times()]
        for step, model in whole.items():
            np.testing.assert_array_equal(resumed[step], model)


@pytest.mark.slow
def test_the_command_line_writes_models_and_retrains_a_chunk_whose_models_file_is_damaged(
    tmp_path,
):
    spec = tmp_path / "spec.toml"
    spec.write_text(linear_sweep(save_models=False).to_toml())
    out = tmp_path / "out"
    command = ["run", str(spec), "--out", str(out), "--quiet", "--set", "save_models=[300, 3000]"]
    assert main(command) == 0
    files = sorted((out / "models").glob("*.nc"))
    assert files and (out / "results.nc").is_file()
    assert "save_models = [\n    300,\n    3000,\n]" in (out / "spec.toml").read_text()
    before = gs.load_models(out, run=2)
    assert sorted(before) == [338, 3000]  # the log points nearest 300 and 3000
    with netCDF4.Dataset(files[0], "a") as nc:  # one weight changed in a well-formed file
        nc["model"]["model"][0, 0, 0, 0] += 1
    with pytest.raises(gs.SpecError, match="fail their checksum"):
        [gs.load_models(out, run=run) for run in range(4)]
    assert main(command) == 0
    assert "models file not used" in (out / "log.txt").read_text()
    for step, model in gs.load_models(out, run=2).items():
        np.testing.assert_array_equal(model, before[step])
    # A file named like a models file but not one is refused in one line, and a rerun removes
    # it; a file of another name in the folder is neither read nor removed.
    planted, other = out / "models" / f"{'0' * 24}.nc", out / "models" / "notes.nc"
    planted.write_bytes(b"not a models file")
    other.write_bytes(b"kept")
    with pytest.raises(gs.SpecError, match="not a groksweep models file"):
        gs.load_models(out, run=0)
    assert main(command) == 0
    assert not planted.exists() and other.read_bytes() == b"kept"
