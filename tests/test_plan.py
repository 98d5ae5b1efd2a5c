"""Seeing a sweep before it runs: ``groksweep plan`` / ``run --dry-run`` (groksweep.estimate),
``--set`` overrides (groksweep.spec.override), and eps on a task that records none."""

import math
import os
import subprocess
import sys
import warnings

import pytest

import groksweep as gs
from groksweep import engine, estimate, trainer
from groksweep.cli import main
from groksweep.errors import SpecWarning
from groksweep.params import human_bytes
from groksweep.spec import override

# Two input dimensions: two shape buckets; one run per group (one lam, one gamma) and at most
# two runs per chunk: each bucket's three seeds in two chunks.
SPEC = """
task = "linear"
steps = 40
log_points = 4
eps = [1e-3, 1e-1]

[params]
n_test = 50
method = "step"

[axes]
d_in = [8, 16]
seed = [0, 1, 2]
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def one_line(text: str) -> str:
    assert text.strip() and "\n" not in text.strip(), text
    return text.strip()


def test_plan_counts_runs_buckets_chunks_and_memory_as_the_engine_plans_them(spec, capsys):
    assert main(["plan", str(spec), "--no-timing", "--chunk-size", "2"]) == 0
    out = capsys.readouterr().out
    sweep = gs.Sweep.from_toml(spec)
    assert sweep.n_runs == math.prod(len(v) for v in sweep.axes.values()) == 6
    assert "6 runs (d_in 2 x seed 3)" in out
    prepared = engine.prepare(sweep, chunk_size=2)
    plan = estimate.estimate(prepared, calibrate=False)
    assert len(plan.buckets) == 2 and plan.chunks == 4
    assert "2 buckets (2 compiles), 4 chunks" in out
    for i, (b, d_in) in enumerate(zip(plan.buckets, (8, 16))):
        bucket, groups, block = b.chunking
        assert b.shape["d_in"] == d_in and bucket.n_runs == 3
        assert (groups, b.chunks, b.runs_per_chunk) == (2, 2, 2)
        assert f"bucket {i}: 3 runs; static" in out and f"d_in={d_in}" in out
        # An independent count of a chunk's bytes: draws once per group, shared data once per
        # family, and each run's state and evaluation block.
        sizes = trainer.state_bytes(sweep.task_def, bucket, 5, 2)
        per_run = sizes.per_run + block * sizes.per_evaluation
        expected = groups * (sizes.per_group + sizes.per_family + per_run)
        assert b.chunk_bytes == expected <= prepared.budget
        assert f"memory per chunk: {human_bytes(expected)} of the" in out
    assert "calibration" not in out and "estimated" not in out


def test_dry_run_prints_the_calibrated_plan_and_writes_nothing(spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    out_dir = tmp_path / "never"
    args = ["--set", "axes.d_in=[8]", "--set", "steps=4"]  # no steps to time: quick
    assert main(["run", str(spec), "--out", str(out_dir), "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    assert "3 runs (d_in 1 x seed 3)" in out and "1 bucket (1 compile)" in out
    assert "calibration: compiled in" in out and "scaled to the sweep" in out
    assert "segments: about 1 per chunk (--checkpoint-every 180 s)" in out
    assert "estimated" in out and "warning" not in out
    assert not out_dir.exists() and sorted(os.listdir(tmp_path)) == before
    assert main(["run", str(spec), "--dry-run", "--set", "steps=x y"]) == 2


def test_set_overrides_fields_and_table_entries_as_toml_values():
    spec = {"task": "linear", "params": {"lr": 0.1}, "axes": {"lam": [0.5, 1.0]}}
    got = override(
        spec,
        [
            "steps=500",
            "eps=[1e-2, 1e-1]",
            "axes.seed=[0,1,2,3]",
            'params.optimizer="adamw"',
            "params.dtype=float64",  # a bare word, as the shell leaves dtype="float64"
            "params.lam=0.3",  # fixed now: it leaves the axes
            "axes.lr=[0.01, 0.02]",  # an axis now: it leaves the params
        ],
    )
    assert got == {
        "task": "linear",
        "steps": 500,
        "eps": [1e-2, 1e-1],
        "params": {"optimizer": "adamw", "dtype": "float64", "lam": 0.3},
        "axes": {"seed": [0, 1, 2, 3], "lr": [0.01, 0.02]},
    }
    assert spec["params"] == {"lr": 0.1}  # the given spec is left alone
    sweep = gs.Sweep.from_dict(got)
    assert sweep.axes == {"seed": [0, 1, 2, 3], "lr": [0.01, 0.02]} and sweep.steps == 500


@pytest.mark.parametrize(
    "setting, message",
    [
        ("step=3", "--set step: unknown sweep field 'step'; did you mean 'steps'?"),
        ("params=3", "--set params: expected params.NAME=VALUE"),
        ("steps.x=3", "--set steps.x: expected steps=VALUE"),
        ("steps", "--set 'steps': expected KEY=VALUE, e.g. params.lr=0.02"),
        ("axes.seed=[0,", "--set axes.seed=[0,: not a TOML value"),
        ("params.lr=1e", "--set params.lr=1e: not a TOML value"),
        ('params.lr="fast"', "lr must be a number, got 'fast'"),
        ("params.lrr=0.1", "unknown parameter 'lrr'; did you mean 'lr'?"),
        ("steps=0", "steps must be >= 1, got 0"),
        ("axes.seed=[1, 1]", "axis seed has duplicate values"),
    ],
)
def test_a_bad_set_is_one_line_and_exit_2(spec, setting, message, capsys):
    assert main(["plan", str(spec), "--no-timing", "--set", setting]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"groksweep: error: {message}")


def test_set_is_recorded_in_the_directory_and_a_different_set_is_another_sweep(
    spec, tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["run", str(spec), "--out", str(out), "--quiet", "--set", "axes.d_in=[8]"]
    assert main([*args, "--set", "params.lr=0.02"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("plan: 3 runs, 1 bucket (1 compile), 1 chunk, up to ")
    assert "lr = 0.02" in (out / "spec.toml").read_text()
    assert "d_in = [\n    8,\n]" in (out / "spec.toml").read_text()
    assert first in (out / "log.txt").read_text()
    assert main([*args, "--set", "params.lr=0.03"]) == 2
    assert "holds a different sweep" in one_line(capsys.readouterr().err)


def test_eps_on_a_task_without_thresholds_is_a_warning_and_is_dropped(tmp_path, capsys):
    with pytest.warns(SpecWarning, match="task transformer records no accuracy thresholds"):
        sweep = gs.Sweep("transformer", params={"p": 7}, eps=[1e-2])
    assert sweep.eps == () and "eps" not in sweep.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gs.Sweep("transformer", params={"p": 7}).eps == ()
        assert gs.Sweep("linear").eps == (1e-3,)
    path = tmp_path / "t.toml"
    path.write_text('task = "transformer"\nsteps = 10\nlog_points = 2\n[params]\np = 7\n')
    assert main(["plan", str(path), "--no-timing", "--set", "eps=0.1"]) == 0
    err = one_line(capsys.readouterr().err)
    assert err == (
        "groksweep: warning: task transformer records no accuracy thresholds: eps is ignored"
    )


def test_tasks_linear_prints_every_declared_parameter_and_what_the_task_records(capsys):
    assert main(["tasks", "linear"]) == 0
    out = capsys.readouterr().out
    assert "name" in out and "role" in out and "allowed" in out and "meaning" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:] if line.startswith("  ")}
    assert rows["optimizer"][:4] == ["optimizer", "static", "str", "'gd'"]
    assert "gd | adam | adamw" in " ".join(rows["optimizer"])
    assert rows["lr"][:5] == ["lr", "traced", "float", "0.01", ">"]
    assert rows["n_train"][:4] == ["n_train", "padded", "int", "-"]
    for name in gs.Sweep("linear").task_def.params:
        assert name in rows, name
    assert "metrics: train_loss, test_loss, train_acc (eps), test_acc (eps)" in out
    assert "measures (optional): weight_norm, param_change, ntk_alignment" in out
    assert "methods: step, spectral" in out


def slow_calibration(plan, chunking, should_stop):
    """A bucket whose steps take a second each: 10^4 steps are hours."""
    return estimate.Calibration(1.0, (4, 4), 0.1, 0.01, 1.0, 100, 100.0)


def test_a_sweep_over_an_hour_is_warned_about_with_what_helps(spec, monkeypatch, capsys):
    monkeypatch.setattr(estimate, "_calibrate", slow_calibration)
    assert main(["plan", str(spec), "--set", "steps=10000"]) == 0
    out = capsys.readouterr().out
    # 2 buckets of 1 chunk: each 1 s compile + 0.1 s + 10^4 steps x 1 s + 4 points x 0.01 s.
    assert "estimated 5.6 h on this machine" in out
    assert "warning: this sweep would take about 5.6 h here. What helps:" in out
    assert "an accelerator" in out and "fewer steps" in out
    assert 'method = "spectral"' in out  # the linear task has the closed form
    assert "a smaller --chunk-size: a chunk takes 2.8 h" in out
    assert main(["plan", str(spec), "--set", "steps=100"]) == 0
    assert "warning" not in capsys.readouterr().out


SMALL_SWEEP = """
import groksweep as gs
sweep = gs.Sweep(
    "linear",
    params={"d_in": 100, "n_test": 2000, "method": "step"},
    axes={"lam": [0.3, 0.6, 0.9], "gamma": [0.0, 1e-3], "seed": [0, 1]},
    steps=20000,
    log_points=100,
)
"""


@pytest.mark.slow
def test_the_estimate_is_within_a_factor_2_of_the_measured_time():
    """Each in a fresh process without the compilation cache, as a first `groksweep plan` and
    a first `groksweep run` would be: both pay the compile and the process's warm-up."""
    env = os.environ | {"GROKSWEEP_COMPILATION_CACHE": "0"}

    def seconds(code: str) -> float:
        result = subprocess.run(
            [sys.executable, "-c", SMALL_SWEEP + code], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        return float(result.stdout.split()[-1])

    predicted = seconds("from groksweep import estimate\nprint(estimate.estimate(sweep).seconds)")
    measured = seconds(
        "import time\nstart = time.perf_counter()\ngs.run(sweep, progress=False)\n"
        "print(time.perf_counter() - start)"
    )
    assert 0.5 < predicted / measured < 2, (predicted, measured)
