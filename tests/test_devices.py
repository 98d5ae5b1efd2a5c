"""The group axis is sharded over devices: results with 4 forced host devices, or 2 processes,
are bitwise those of one device when every device computes chunks of the same shape (here one
seed per chunk and device, or one run per device in reproducible mode). Chunks of other shapes
agree to float32 rounding only: XLA's CPU matrix products round differently for different batch
shapes (docs/RELIABILITY.md)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import groksweep as gs

pytestmark = pytest.mark.slow  # subprocesses with 4 host devices, or 2 processes: ~30 s

SPEC = dict(
    task="linear",
    params={"d_in": 16, "n_test": 300},
    steps=300,
    log_points=15,
    eps=[1e-3, 1e-1],
    axes={"lam": [0.3, 0.7, 1.2], "gamma": [0.0, 0.01], "seed": [0, 1, 2]},
)
SCRIPT = """
import sys, jax, groksweep as gs
from groksweep import results
assert jax.local_device_count() == 4, jax.devices()
sweep = gs.Sweep.from_dict({spec!r})
results.save(gs.run(sweep, progress=False, chunk_size=6), sys.argv[1])
results.save(gs.run(sweep, progress=False, reproducible=True), sys.argv[2])
"""


def test_four_host_devices_give_the_results_of_one(tmp_path):
    """With matched per-device chunks, and in reproducible mode (one run per device)."""
    paths = [tmp_path / "results.nc", tmp_path / "reproducible.nc"]
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    command = [sys.executable, "-c", SCRIPT.format(spec=SPEC), *map(str, paths)]
    subprocess.run(command, env=env, check=True)
    sweep = gs.Sweep.from_dict(SPEC)
    singles = [
        gs.run(sweep, progress=False, chunk_size=6),
        gs.run(sweep, progress=False, reproducible=True),
    ]
    for path, single in zip(paths, singles):
        sharded = gs.results.load(path)
        for name in single.data_vars:
            np.testing.assert_array_equal(sharded[name].values, single[name].values, err_msg=name)


def test_two_processes_share_the_chunks_and_give_the_results_of_one(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(gs.Sweep.from_dict(SPEC).to_toml())
    out = tmp_path / "out"
    port = 20000 + os.getpid() % 20000
    common = [
        sys.executable,
        "-m",
        "groksweep.cli",
        "run",
        str(spec),
        "--out",
        str(out),
        "--quiet",
        "--chunk-size",
        "6",
        "--distributed",
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--process-id",
    ]
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    processes = [
        subprocess.Popen(
            common + [str(i)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    log0, log1 = (out / "log.txt").read_text(), (out / "log.1.txt").read_text()
    assert "trained in" in log0 and "trained in" in log1  # both processes did work
    single = gs.run(gs.Sweep.from_dict(SPEC), progress=False, chunk_size=6)
    merged = gs.results.load(out / "results.nc")
    for name in single.data_vars:
        np.testing.assert_array_equal(merged[name].values, single[name].values, err_msg=name)
