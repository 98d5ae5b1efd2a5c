"""Command line: ``groksweep run SPEC.toml --out DIR`` and ``groksweep plot DIR``.

``run`` writes ``DIR/spec.toml`` (the normalised spec), ``DIR/results.nc`` (trajectories),
``DIR/phase.nc`` (grokking times) and the default figures as ``DIR/*.png``. ``plot`` redraws
the figures from the saved files. Errors in the input are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from groksweep.params import SpecError

RESULTS, PHASE, SPEC = "results.nc", "phase.nc", "spec.toml"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except SpecError as err:
        print(f"groksweep: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from groksweep.spec import Sweep

    sweep = Sweep.from_toml(args.spec)  # validate before importing the heavy machinery
    from groksweep import engine, phase, plot, results

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot create output directory {out}: {err.strerror}") from None
    (out / SPEC).write_text(sweep.to_toml())
    ds = engine.run(
        sweep, progress=not args.quiet, memory_budget=args.memory_budget, chunk_size=args.chunk_size
    )
    ph = phase.grokking_time(ds, level=args.level)
    results.save(ds, out / RESULTS)
    results.save(ph, out / PHASE)
    for path in plot.figures_for(ds, ph, out):
        print(f"wrote {path}")
    print(f"wrote {out / RESULTS} and {out / PHASE}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from groksweep import plot, results

    out = Path(args.dir)
    missing = [name for name in (RESULTS, PHASE) if not (out / name).is_file()]
    if missing:
        raise SpecError(f"{out} has no {' or '.join(missing)}; run `groksweep run SPEC --out {out}` first")
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
    run.add_argument("--level", type=_level, default=0.95, help="accuracy level of the grokking time")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--memory-budget", type=_bytes, default=None, metavar="SIZE",
        help="memory a chunk of runs may use, e.g. 4GB or 500MB (default: half the free host "
        "memory, or 80%% of an accelerator's)",
    )
    run.add_argument("--chunk-size", type=_positive_int, default=None, metavar="N",
                     help="at most N runs per compiled call")
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
