"""Chunks train in segments, saved between them: a rerun resumes mid-chunk to the results of an
uninterrupted run; signals stop a sweep once its segment is saved; saved states that are not
the chunk's own are recomputed."""

import random
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

import groksweep as gs
from groksweep import engine
from groksweep.store import ChunkStore
from groksweep.tasks.base import task_identity


def small_sweep(method: str) -> gs.Sweep:
    # step: pieces of 64 steps, about 60 units; spectral: 4 blocks of 25 log points
    log_points = 12 if method == "step" else 100
    return gs.Sweep(
        "linear",
        params={"d_in": 8, "n_test": 64, "lam": 0.5, "method": method},
        axes={"gamma": [0.0, 0.01], "seed": [0, 1]},
        steps=3000,
        log_points=log_points,
    )


def stopped_after(segments: int):
    """A ``should_stop`` that asks to stop once ``segments`` segments have ended."""
    asked = iter(range(segments, -(10**9), -1))
    return lambda: next(asked) <= 1


def run_stored(sweep, directory, log, **options):
    store = ChunkStore(directory, sweep.to_toml(), task_identity(sweep.task_def))
    return gs.run(sweep, progress=False, store=store, log=log.append, **options)


def assert_equal(a, b, exact):
    for name in a.data_vars:
        if exact:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        else:
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    "method, reproducible",
    [
        ("step", True),
        ("spectral", False),
        pytest.param("step", False, marks=pytest.mark.slow),
        pytest.param("spectral", True, marks=pytest.mark.slow),
    ],
)
def test_a_sweep_stopped_mid_chunk_resumes_to_the_uninterrupted_results(
    tmp_path, method, reproducible
):
    """Stopped after a few one-unit segments (each saved), then resumed with the default
    segments: bitwise the uninterrupted results with reproducible=True, and to float rounding
    otherwise (in fact bitwise too here: the same program computes every unit alike)."""
    sweep = small_sweep(method)
    whole = gs.run(sweep, progress=False, reproducible=reproducible)
    log = []
    with pytest.raises(engine.SweepInterrupted, match="which is saved"):
        run_stored(
            sweep,
            tmp_path,
            log,
            reproducible=reproducible,
            checkpoint_every=1e-9,
            should_stop=stopped_after(2),
        )
    assert len(list(tmp_path.glob("*.partial.npz"))) == 1
    resumed = run_stored(sweep, tmp_path, log, reproducible=reproducible)
    assert any("resumed after" in line for line in log), log
    assert not list(tmp_path.glob("*.partial.npz"))
    assert_equal(resumed, whole, exact=reproducible)


def test_planted_and_corrupted_partial_states_are_recomputed_not_trusted(tmp_path):
    sweep = small_sweep("step")
    whole = gs.run(sweep, progress=False, reproducible=True)
    log = []
    stop = {"checkpoint_every": 1e-9, "should_stop": stopped_after(5)}
    with pytest.raises(engine.SweepInterrupted):
        run_stored(sweep, tmp_path, log, reproducible=True, **stop)
    (genuine,) = tmp_path.glob("*.partial.npz")
    key, block, done = genuine.name.removesuffix(".partial.npz").split(".")
    store = ChunkStore(tmp_path, "")
    with np.load(genuine) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("__")}
    # Further on, each newer than the genuine one: a copy under another progress (its stored
    # key says otherwise), a state with a valid checksum but other shapes, and damaged bytes.
    shutil.copy(genuine, tmp_path / f"{key}.{block}.{int(done) + 3}.partial.npz")
    first = sorted(arrays)[0]
    other_shapes = arrays | {first: arrays[first][..., :1]}
    store._write(f"{key}.{block}.{int(done) + 2}.partial", other_shapes)
    damaged = tmp_path / f"{key}.{block}.{int(done) + 1}.partial.npz"
    content = bytearray(genuine.read_bytes())
    content[len(content) // 2] ^= 0xFF
    damaged.write_bytes(bytes(content))
    log.clear()
    resumed = run_stored(sweep, tmp_path, log, reproducible=True)
    reasons = [line for line in log if "not used" in line]
    assert len(reasons) == 3, log
    assert "written for another chunk" in reasons[0] and "other names or shapes" in reasons[1]
    assert any(f"resumed after {int(done)} of" in line for line in log), log
    assert_equal(resumed, whole, exact=True)
    # A damaged state alone is recomputed from the start.
    stop["should_stop"] = stopped_after(5)
    with pytest.raises(engine.SweepInterrupted):
        run_stored(sweep, tmp_path / "again", log, reproducible=True, **stop)
    (partial,) = (tmp_path / "again").glob("*.partial.npz")
    partial.write_bytes(partial.read_bytes()[:-100])
    log.clear()
    assert_equal(run_stored(sweep, tmp_path / "again", log, reproducible=True), whole, exact=True)
    assert not any("resumed" in line for line in log) and "not used" in "".join(log)


def test_time_left_counts_chunks_and_leaves_out_what_was_read_back():
    # 4 runs of 3000 steps: a bucket of three one-run chunks, then a bucket of one.
    progress = engine._Progress(small_sweep("step"), [(3, 9000), (1, 3000)], False, n_runs=4)
    progress.begin_bucket()
    progress.read_back(3000)  # a chunk read back in no time
    progress.chunk_done(1, 3000, None)
    assert progress.status() == "1/4 runs done"
    progress.trained(300, 1.0, None)  # a first unit: no estimate yet
    assert progress.status() == "300 run-steps/s, estimating the time left, 1/4 runs done"
    # 3 s of segments so far and 6 s to go: this chunk 6 s, the next one 9 s, the last
    # bucket's 3000 run-steps at this chunk's 9 s per 3000.
    progress.trained(600, 2.0, 6.0)
    assert progress.status() == "300 run-steps/s, about 00:24 left, 1/4 runs done"
    # The chunk took 12 s of wall time (its data set-up too): the next chunk is costed so,
    # and the last bucket at 12 s per 3000 run-steps.
    progress.trained(2100, 7.0, 0.0)
    progress.chunk_done(1, 3000, 12.0)
    assert progress.status() == "300 run-steps/s, about 00:24 left, 2/4 runs done"
    progress.trained(3000, 10.0, 0.0)
    progress.chunk_done(1, 3000, 10.0)
    progress.begin_bucket()  # no chunk of it finished: the others' 11 s per 3000 run-steps
    assert progress.status() == "300 run-steps/s, about 00:11 left, 3/4 runs done"


def test_a_segment_costs_what_the_bucket_s_cost_model_says():
    """Spectral units cost their evaluations, whatever their steps: a chunk of ten units,
    three timed in 6 s, has 14 s to go; a bucket that has timed one unit gives no estimate."""
    chunk = SimpleNamespace(
        done=3, units=10, unit_evaluations=np.full(10, 5), unit_steps=np.logspace(0, 6, 10)
    )
    pace = engine._Pace(180.0, by_steps=False)
    pace.totals, pace.seconds = np.array([3.0, 15.0, 0.0]), 6.0
    assert pace.seconds_left(chunk) == pytest.approx(14.0)
    pace.totals = np.array([1.0, 5.0, 0.0])
    assert pace.seconds_left(chunk) is None
    assert pace.seconds_left(SimpleNamespace(**{**vars(chunk), "done": 10})) == 0.0


# --- real `groksweep run` processes ------------------------------------------------------------
SPEC = """
task = "linear"
steps = 10000000
log_points = 200
eps = [1e-3]

[params]
d_in = 24
n_test = 200
method = "step"

[axes]
lam = [0.3, 0.6]
seed = [0, 1]
"""
"""One chunk of about five seconds on a 2-core CPU, a thousand units of 10⁴ steps."""


def command(tmp_path, out, *extra):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    run = [sys.executable, "-m", "groksweep", "run", str(spec), "--out", str(out), "--quiet"]
    return run + ["--checkpoint-every", "0.2", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    out = {}
    for mode in ([], ["--reproducible"]):
        subprocess.run(command(tmp, tmp / f"out{mode}", *mode), check=True, capture_output=True)
        out[bool(mode)] = xr.load_dataset(tmp / f"out{mode}" / "results.nc")
    return out


def wait_for_a_saved_segment(out, process, seconds=60):
    """Until ``process`` saves a chunk's state (each save has a new name: its progress)."""
    before = set((out / "chunks").glob("*.partial.npz"))
    deadline = time.time() + seconds
    while not set((out / "chunks").glob("*.partial.npz")) - before:
        assert process.poll() is None and time.time() < deadline, "no segment was saved"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138), (signal.SIGINT, 130)]
)
def test_a_signal_stops_a_chunk_once_its_segment_is_saved_and_the_rerun_finishes(
    tmp_path, uninterrupted, signum, code
):
    out = tmp_path / "out"
    process = subprocess.Popen(command(tmp_path, out), stderr=subprocess.PIPE, text=True)
    wait_for_a_saved_segment(out, process)
    sent = time.time()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert time.time() - sent < 5  # a segment (0.2 s), a save and the interpreter's exit
    assert f"groksweep: {signal.Signals(signum).name}: stopping" in err
    assert "run the same command again" in err.lower()
    assert list((out / "chunks").glob("*.partial.npz"))
    assert not (out / "results.nc").exists()
    subprocess.run(command(tmp_path, out), check=True, capture_output=True)
    assert "resumed after" in (out / "log.txt").read_text()
    assert_equal(xr.load_dataset(out / "results.nc"), uninterrupted[False], exact=True)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_keeping_what_is_saved(tmp_path, uninterrupted):
    out = tmp_path / "out"
    long_segments = command(tmp_path, out)[:-2] + ["--checkpoint-every", "1000"]
    process = subprocess.Popen(long_segments, stderr=subprocess.PIPE, text=True)
    while "compiled" not in ((out / "log.txt").read_text() if (out / "log.txt").exists() else ""):
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.time()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.time() - sent < 3, err
    assert "groksweep: interrupted" in err and "Traceback" not in err
    subprocess.run(command(tmp_path, out), check=True, capture_output=True)
    assert_equal(xr.load_dataset(out / "results.nc"), uninterrupted[False], exact=True)


@pytest.mark.slow
@pytest.mark.parametrize("reproducible", [True, False], ids=["reproducible", "batched"])
def test_kill_9_at_random_moments_mid_chunk_then_resume_gives_the_same_results(
    tmp_path, uninterrupted, reproducible
):
    """Three SIGKILLs at random moments of a chunk's training (the single chunk of the batched
    sweep; one of the four one-run chunks with --reproducible), each resumed from its last saved
    segment; the end is the uninterrupted results: bitwise with --reproducible, to float
    rounding otherwise."""
    out = tmp_path / "out"
    run = command(tmp_path, out, *(["--reproducible"] if reproducible else []))
    rng = random.Random(1)
    resumes = 0
    for _ in range(3):
        process = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_a_saved_segment(out, process)
        time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # unless the chunk was saved whole in the meantime, the next run resumes mid-chunk
        resumes += bool(list((out / "chunks").glob("*.partial.npz")))
    subprocess.run(run, check=True, capture_output=True)
    log = (out / "log.txt").read_text()
    assert resumes and log.count("resumed after") == resumes, log
    results = xr.load_dataset(out / "results.nc")
    assert_equal(results, uninterrupted[reproducible], exact=reproducible)
    assert not list((out / "chunks").glob("*.partial.npz"))
    assert not list((out / "chunks").glob(".*.tmp"))
