"""Sweeps survive kills and damaged files: resume from saved chunks, refuse foreign directories,
recompute corrupted chunks, report unwritable output directories."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from groksweep.cli import main
from groksweep.store import ChunkStore

SPEC = """
task = "linear"
steps = 4000
log_points = 40
eps = [1e-3]

[params]
d_in = 24
n_test = 400
method = "step"

[axes]
lam = [0.3, 0.6, 0.9, 1.2]
gamma = [0.0, 0.001]
seed = [0, 1, 2, 3, 4, 5]
"""
RUN = [sys.executable, "-m", "groksweep.cli", "run"]


def write_spec(tmp_path, text=SPEC):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def assert_same_results(a_path, b_path):
    with xr.open_dataset(a_path) as a, xr.open_dataset(b_path) as b:
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    spec = write_spec(tmp)
    assert main(["run", str(spec), "--out", str(tmp / "out"), "--quiet", "--chunk-size", "8"]) == 0
    return tmp / "out" / "results.nc"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_results(tmp_path, uninterrupted):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    command = RUN + [str(spec), "--out", str(out), "--quiet", "--chunk-size", "8"]
    rng = random.Random(0)
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 7.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_same_results(out / "results.nc", uninterrupted)
    assert not list((out / "chunks").glob(".*.tmp"))


def test_corrupted_and_truncated_chunks_are_recomputed(tmp_path, uninterrupted):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    args = ["run", str(spec), "--out", str(out), "--quiet", "--chunk-size", "8"]
    assert main(args) == 0
    chunks = sorted((out / "chunks").glob("*.npz"))
    assert len(chunks) >= 3
    data = bytearray(chunks[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks[0].write_bytes(bytes(data))
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])
    store = ChunkStore(out / "chunks", (out / "spec.toml").read_text())
    assert store.load(chunks[0].stem) is None and store.load(chunks[1].stem) is None
    assert store.load(chunks[2].stem) is not None
    (out / "results.nc").unlink()
    assert main(args) == 0
    assert_same_results(out / "results.nc", uninterrupted)
    log = (out / "log.txt").read_text()
    assert log.count("trained in") >= len(chunks) + 2  # the first run, then the two damaged


def test_directory_of_another_sweep_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    small = SPEC.replace("seed = [0, 1, 2, 3, 4, 5]", "seed = [0]").replace(
        "steps = 4000", "steps = 50"
    )
    assert main(["run", str(write_spec(tmp_path, small)), "--out", str(out), "--quiet"]) == 0
    other = small.replace("gamma = [0.0, 0.001]", "gamma = [0.0, 0.002]")
    assert main(["run", str(write_spec(tmp_path, other)), "--out", str(out), "--quiet"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err
    assert (
        main(["run", str(write_spec(tmp_path, other)), "--out", str(out), "--quiet", "--overwrite"])
        == 0
    )
    with xr.open_dataset(out / "results.nc") as ds:
        assert list(ds.gamma.values) == [0.0, 0.002]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_output_directory_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    assert main(["run", str(write_spec(tmp_path)), "--out", str(out / "sub"), "--quiet"]) == 1
    assert "Permission denied" in capsys.readouterr().err


def test_sigint_stops_after_a_saved_chunk_and_resume_finishes(tmp_path, uninterrupted):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    command = RUN + [str(spec), "--out", str(out), "--quiet", "--chunk-size", "8"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list((out / "chunks").glob("*.npz")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:  # the sweep finished before the signal landed
        return
    assert process.returncode == 130 and "run the same command again" in err.lower()
    assert not (out / "results.nc").exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_same_results(out / "results.nc", uninterrupted)


def test_a_disk_that_fills_up_mid_sweep_loses_nothing_and_resumes(tmp_path, uninterrupted, capsys,
                                                                  monkeypatch):
    """The third chunk's write fails with ENOSPC (a full disk): exit code 1 and one line naming
    it, the two chunks written before stay valid, nothing half-written is left or read back, no
    results.nc appears; with space again, the same command finishes identically."""
    import errno

    from groksweep import files, store

    real_save, saved = store.ChunkStore.save, []

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_until_full(self, key, arrays):
        if len(saved) == 2:  # the disk fills up during the third chunk's write
            monkeypatch.setattr(files.os, "fsync", full)
        real_save(self, key, arrays)
        saved.append(key)

    spec, out = write_spec(tmp_path), tmp_path / "out"
    args = ["run", str(spec), "--out", str(out), "--quiet", "--chunk-size", "8"]
    monkeypatch.setattr(store.ChunkStore, "save", save_until_full)
    assert main(args) == 1
    assert "No space left on device" in capsys.readouterr().err
    chunks = ChunkStore(out / "chunks", "")
    assert chunks.count() == 2 and not list((out / "chunks").glob(".*.tmp"))
    assert not (out / "results.nc").exists()
    monkeypatch.undo()  # space again
    assert main(args) == 0
    assert_same_results(out / "results.nc", uninterrupted)
