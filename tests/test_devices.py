"""The group axis is sharded over devices: results with 4 forced host devices equal one device."""

import os
import subprocess
import sys

import numpy as np

import groksweep as gs

SPEC = dict(
    task="linear", params={"d_in": 16, "n_test": 300}, steps=300, log_points=15, eps=[1e-3, 1e-1],
    axes={"lam": [0.3, 0.7, 1.2], "gamma": [0.0, 0.01], "seed": [0, 1, 2]},
)
SCRIPT = """
import sys, jax, groksweep as gs
from groksweep import results
assert jax.local_device_count() == 4, jax.devices()
results.save(gs.run(gs.Sweep.from_dict({spec!r}), progress=False), sys.argv[1])
"""


def test_four_host_devices_give_the_results_of_one(tmp_path):
    path = tmp_path / "results.nc"
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", SCRIPT.format(spec=SPEC), str(path)], env=env, check=True)
    sharded = gs.results.load(path)
    single = gs.run(gs.Sweep.from_dict(SPEC), progress=False)
    for name in single.data_vars:
        np.testing.assert_allclose(sharded[name].values, single[name].values, rtol=1e-6, atol=1e-12)
