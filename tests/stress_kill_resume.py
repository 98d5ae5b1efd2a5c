"""Kill -9 a long single-chunk sweep at random moments, resume it each time, compare the end.

The slow test `test_kill_9_at_random_moments_mid_chunk_then_resume_gives_the_same_results`
does this on a five-second chunk; this script does it at the size where it matters, a chunk of
minutes, and reports what each kill lost. Not collected by pytest (its name has no ``test_``):

    .venv/bin/python tests/stress_kill_resume.py --minutes 10 --checkpoint-every 60

For each mode (``--reproducible``: one run, so its one chunk is the whole sweep; batched: four
runs in one chunk) it

1. sizes ``steps`` with ``groksweep plan``'s calibration so that the chunk trains for about
   ``--minutes``;
2. runs the sweep uninterrupted;
3. runs it again, sending SIGKILL at ``--kills`` moments drawn uniformly over the uninterrupted
   training time, rerunning the same command after each kill, and lets the last run finish;
4. records per kill the training seconds since the last saved segment (what the kill lost: the
   age of the newest saved state, or the time since training began when none was saved yet);
5. compares ``results.nc``: bitwise with ``--reproducible``, to rtol 1e-6 batched
   (docs/RELIABILITY.md).

It exits 1 if a kill lost more than one segment (``--checkpoint-every`` plus 25% for the save
itself) or the results differ, and prints a table for docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

SPEC = """
task = "linear"
steps = {steps}
log_points = 200
eps = [1e-3]

[params]
d_in = {d_in}
n_test = 200
method = "step"
{fixed}
[axes]
{axes}
"""
MODES = {
    "reproducible": ("lam = 0.3\n", "seed = [0]\n", ["--reproducible"]),
    "batched": ("", "lam = [0.3, 0.6]\nseed = [0, 1]\n", []),
}
CALIBRATION_STEPS = 10**7


def write_spec(folder: Path, mode: str, steps: int, d_in: int) -> Path:
    fixed, axes, _ = MODES[mode]
    spec = folder / f"{mode}.toml"
    spec.write_text(SPEC.format(steps=steps, fixed=fixed, axes=axes, d_in=d_in))
    return spec


def sized(folder: Path, mode: str, seconds: float) -> Path:
    """The mode's spec that trains for about ``seconds``: steps from the calibration, and a
    wider model (a step costs about d_in^2) where the steps would pass what the step method
    takes."""
    from groksweep.params import MAX_STEPS

    d_in = 24
    while True:
        calibration = write_spec(folder, mode, CALIBRATION_STEPS, d_in)
        steps = steps_for(calibration, mode == "reproducible", seconds)
        if steps <= MAX_STEPS["step"]:
            return write_spec(folder, mode, steps, d_in)
        d_in *= 2


def steps_for(spec: Path, reproducible: bool, seconds: float) -> int:
    """Steps that make the sweep's one chunk train for about ``seconds`` on this machine, from
    the calibration ``groksweep plan`` prints (its time per step)."""
    from groksweep import Sweep
    from groksweep.estimate import estimate

    (bucket,) = estimate(Sweep.from_toml(spec), reproducible=reproducible).buckets
    assert bucket.chunks == 1, "the sweep must be a single chunk"
    calibration = bucket.calibration
    return int((seconds - calibration.seconds_per_chunk) / calibration.seconds_per_step)


def command(spec: Path, out: Path, flags: list[str], checkpoint_every: float) -> list[str]:
    return [
        sys.executable, "-m", "groksweep", "run", str(spec), "--out", str(out), "--quiet",
        "--checkpoint-every", str(checkpoint_every), *flags,
    ]


def compilations(out: Path) -> int:
    """How many times the sweep's log says a program was compiled (training begins after)."""
    log = out / "log.txt"
    return log.read_text().count("compiled") if log.exists() else 0


def kill_and_resume(run: list[str], out: Path, moments: list[float]) -> list[float]:
    """SIGKILL the sweep ``moments`` seconds into each process's training; the lost seconds."""
    lost = []
    for moment in moments:
        compiled = compilations(out)
        process = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while compilations(out) == compiled:
            if process.poll() is not None:
                raise SystemExit("the sweep ended before training began")
            time.sleep(0.05)
        began = time.time()
        time.sleep(moment)
        if process.poll() is not None:
            raise SystemExit(f"the sweep finished before the kill at {moment:.0f} s")
        process.kill()
        killed = time.time()
        process.wait()
        saved = [p.stat().st_mtime for p in (out / "chunks").glob("*.partial.npz")]
        lost.append(killed - max([began, *saved]))
    return lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--checkpoint-every", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    rng = random.Random(options.seed)
    failed = False
    rows = []
    for mode in MODES if options.mode == "both" else [options.mode]:
        flags = MODES[mode][2]
        folder = Path(tempfile.mkdtemp(prefix=f"kill-{mode}-"))
        spec = sized(folder, mode, options.minutes * 60)
        sweep = tomllib.loads(spec.read_text())
        steps = sweep["steps"]
        print(
            f"{mode}: {steps:.3g} steps at d_in = {sweep['params']['d_in']} for "
            f"{options.minutes:g} minutes",
            flush=True,
        )

        start = time.time()
        subprocess.run(command(spec, folder / "whole", flags, options.checkpoint_every), check=True)
        whole_seconds = time.time() - start
        whole = xr.load_dataset(folder / "whole" / "results.nc")

        # kills spread over the training a single process would do, each in a new process
        moments = sorted(rng.uniform(0.05, 0.9) * whole_seconds / options.kills
                         for _ in range(options.kills))
        run = command(spec, folder / "killed", flags, options.checkpoint_every)
        start = time.time()
        lost = kill_and_resume(run, folder / "killed", moments)
        subprocess.run(run, check=True)
        killed_seconds = time.time() - start
        log = (folder / "killed" / "log.txt").read_text()
        resumed = log.count("resumed after")
        killed = xr.load_dataset(folder / "killed" / "results.nc")
        worst = 0.0
        for name in whole.data_vars:
            a, b = whole[name].values, killed[name].values
            if mode == "reproducible":
                same = np.array_equal(a, b, equal_nan=True)
            else:
                same = np.allclose(a, b, rtol=1e-6, atol=0, equal_nan=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                a, b = a.astype(float), b.astype(float)
                worst = max(worst, float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))))
            failed |= not same
            if not same:
                print(f"{mode}: {name} differs", flush=True)
        over = [s for s in lost if s > 1.25 * options.checkpoint_every]
        failed |= bool(over)
        rows.append((mode, steps, whole_seconds, killed_seconds, lost, resumed, worst))
    print("\n| mode | steps | uninterrupted | killed 3× and resumed | lost per kill (s) "
          "| resumed mid-chunk | largest relative difference |")
    print("|---|---|---|---|---|---|---|")
    for mode, steps, whole_s, killed_s, lost, resumed, worst in rows:
        print(f"| {mode} | {steps:.3g} | {whole_s:.0f} s | {killed_s:.0f} s | "
              f"{', '.join(f'{s:.0f}' for s in lost)} | {resumed} | {worst:.1e} |")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
