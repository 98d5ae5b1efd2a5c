"""``run(sweep)``: spec -> run table -> shape buckets -> compiled trainer -> labelled results."""

from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from groksweep.plan import plan
from groksweep.results import to_dataset
from groksweep.spec import Sweep
from groksweep.trainer import train


def run(sweep: Sweep, progress: bool = True) -> xr.Dataset:
    """Train every run of ``sweep`` and return its trajectories (see :mod:`groksweep.results`).

    Runs are planned into shape buckets; each bucket is one compiled program. ``progress``
    shows a bar counting run-steps.
    """
    task = sweep.task_def
    times = sweep.times()
    eps = np.asarray(sweep.eps)
    extra = {"eps": len(eps)}
    outputs = {
        name: np.full((sweep.n_runs, len(times), *(extra[d] for d in dims)), np.nan)
        for name, dims in task.metrics.items()
    }
    buckets = plan(task, sweep.runs())
    with tqdm(
        total=sweep.n_runs * sweep.steps, unit=" run-steps", unit_scale=True,
        disable=not progress, desc=f"{sweep.task}: {sweep.n_runs} runs, {len(buckets)} buckets",
    ) as bar:
        for bucket in buckets:
            on_segment = lambda steps, b=bucket: bar.update(steps * b.n_runs)  # noqa: E731
            metrics = train(task, bucket, times, eps, on_segment)
            for name, value in metrics.items():
                outputs[name][bucket.run_index[bucket.valid]] = value[bucket.valid]
    return to_dataset(sweep, outputs, times)
