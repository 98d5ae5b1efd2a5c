"""Command line: ``groksweep run SPEC.toml --out DIR`` and ``groksweep plot DIR``.

``run`` writes ``DIR/spec.toml`` (the normalised spec), ``DIR/chunks/`` (each finished chunk,
written atomically), ``DIR/log.txt``, ``DIR/results.nc`` (trajectories), ``DIR/phase.nc``
(grokking times) and the default figures as ``DIR/*.png``. Running the same command again
resumes from the saved chunks; a DIR holding a different sweep is refused unless
``--overwrite``. Ctrl-C stops after the current chunk is saved (exit code 130). ``plot`` redraws
the figures from the saved files. Errors in the input are printed as one line, exit code 2;
errors of the file system, exit code 1.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from groksweep.params import SpecError

RESULTS, PHASE, SPEC, LOG, CHUNKS = "results.nc", "phase.nc", "spec.toml", "log.txt", "chunks"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except SpecError as err:
        print(f"groksweep: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"groksweep: error: {err.strerror or err}: {err.filename or ''}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from groksweep.spec import Sweep

    sweep = Sweep.from_toml(args.spec)  # validate before importing the heavy machinery
    out = Path(args.out)
    import jax

    if args.distributed:
        _initialize_distributed(args)
    first = jax.process_index() == 0
    if first:
        _claim(out, sweep.to_toml(), args.overwrite)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("groksweep: output directory ready")

    from groksweep import engine, phase, plot, results
    from groksweep.store import ChunkStore

    # Ctrl-C is caught for the whole command: during training it stops after the current chunk;
    # afterwards the results are written out regardless.
    log_name = LOG if first else f"log.{jax.process_index()}.txt"
    with _StopOnInterrupt() as stop, open(out / log_name, "a") as log_file:

        def log(line: str) -> None:
            log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            log_file.flush()

        log(
            f"groksweep {results.groksweep_version()}, jax {jax.__version__}, "
            f"devices {jax.devices()}\n{sweep.to_toml()}"
        )
        store = ChunkStore(out / CHUNKS, sweep.to_toml())
        start = time.perf_counter()
        try:
            ds = engine.run(
                sweep,
                progress=not args.quiet,
                memory_budget=args.memory_budget,
                chunk_size=args.chunk_size,
                reproducible=args.reproducible,
                store=store,
                should_stop=stop.requested,
                log=log,
            )
        except engine.SweepInterrupted as err:
            log(f"interrupted: {err}")
            print(
                f"groksweep: interrupted, {err}. Run the same command again to resume.",
                file=sys.stderr,
            )
            return 130
        diverged = ds["diverged"].values.sum()
        log(f"trained in {time.perf_counter() - start:.2f} s; {diverged} diverged runs")
        for index in zip(*ds["diverged"].values.nonzero()):
            point = {d: ds[d].values[i].item() for d, i in zip(ds["diverged"].dims, index)}
            log(f"diverged: {point} at step {ds['diverged_at'].values[index]}")
        if not first:
            return 0  # process 0 writes the results of all processes
        ph = phase.grokking_time(ds, level=args.level)
        results.save(ds, out / RESULTS)
        results.save(ph, out / PHASE)
        for path in plot.figures_for(ds, ph, out):
            print(f"wrote {path}")
    print(f"wrote {out / RESULTS} and {out / PHASE}")
    return 0


def _initialize_distributed(args: argparse.Namespace) -> None:
    """Join a multi-process run. Under SLURM every argument is found from the environment."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # barriers between CPU hosts
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def _claim(out: Path, spec_text: str, overwrite: bool) -> None:
    """Make ``out`` this sweep's directory: new, resumed (same spec), or overwritten on request."""
    spec_file = out / SPEC
    if spec_file.is_file() and spec_file.read_text() != spec_text:
        if not overwrite:
            raise SpecError(f"{out} holds a different sweep; use another --out or pass --overwrite")
        shutil.rmtree(out / CHUNKS, ignore_errors=True)
        for name in (RESULTS, PHASE, LOG):
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(spec_text)
    except OSError as err:
        raise SpecError(f"cannot write to {out}: {err.strerror}") from None


class _StopOnInterrupt:
    """Within the block, a first Ctrl-C asks the sweep to stop after the current chunk is
    saved; a second one interrupts at once."""

    def __init__(self) -> None:
        self._requested = False

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum, frame) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        print(
            "\ngroksweep: stopping after the current chunk is saved (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _plot(args: argparse.Namespace) -> int:
    from groksweep import plot, results

    out = Path(args.dir)
    missing = [name for name in (RESULTS, PHASE) if not (out / name).is_file()]
    if missing:
        raise SpecError(
            f"{out} has no {' or '.join(missing)}; run `groksweep run SPEC --out {out}` first"
        )
    for path in plot.figures_for(results.load(out / RESULTS), results.load(out / PHASE), out):
        print(f"wrote {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groksweep", description="Train a grid of models at once and map grokking times."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run a sweep spec (TOML) and write results and figures")
    run.add_argument("spec", help="sweep specification, a TOML file")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument(
        "--level", type=_level, default=0.95, help="accuracy level of the grokking time"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--memory-budget",
        type=_bytes,
        default=None,
        metavar="SIZE",
        help="memory a chunk of runs may use, e.g. 4GB or 500MB (default: half the free host "
        "memory, or 80%% of an accelerator's)",
    )
    run.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N runs per compiled call",
    )
    run.add_argument(
        "--reproducible",
        action="store_true",
        help="train every run alone at its own shape: bitwise the same results whatever else "
        "the sweep holds, in any order, chunk size or device count (slower)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace the results of a different sweep in --out"
    )
    run.add_argument(
        "--distributed",
        action="store_true",
        help="one of several processes (jax.distributed; under SLURM, one per task)",
    )
    run.add_argument("--coordinator", help="host:port of process 0 (outside SLURM)")
    run.add_argument("--num-processes", type=_positive_int, help="process count (outside SLURM)")
    run.add_argument("--process-id", type=int, help="this process's id (outside SLURM)")
    run.set_defaults(command=_run)
    plot = commands.add_parser("plot", help="redraw the figures of a finished run")
    plot.add_argument("dir", help="output directory of `groksweep run`")
    plot.set_defaults(command=_plot)
    return parser


def _bytes(text: str) -> float:
    units = {"KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40, "B": 1}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit):
            number = upper[: -len(unit)]
            break
    else:
        number, factor = upper, 1
    try:
        value = float(number) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4GB or 500MB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _level(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"level must be in (0, 1), got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
