"""Command line: ``groksweep run SPEC.toml --out DIR``, ``groksweep plan SPEC.toml``,
``groksweep plot DIR`` and ``groksweep tasks [TASK]``.

``run`` validates and plans the sweep, then claims and locks DIR (one process owns it) and
writes ``DIR/spec.toml`` (the normalised spec), ``DIR/chunks/`` (each finished chunk),
``DIR/log.txt``, ``DIR/results.nc`` (trajectories), ``DIR/phase.nc`` (grokking times),
``DIR/models/`` (the models a spec's ``save_models`` keeps, :mod:`groksweep.saved_models`), the
default figures as ``DIR/*.png`` and ``DIR/report.html`` (:mod:`groksweep.report`), every file
atomically and never through a link. Running the same command again resumes from the saved
chunks; a DIR holding a different sweep is refused unless ``--overwrite``. Ctrl-C, SIGTERM or
SIGUSR1 stop before training, or once the current segment of a chunk is saved
(``--checkpoint-every``), with exit code 130, 143 or 138 (:data:`STOP_CODES`); a second one
stops at once. ``plot`` redraws the figures from the saved files; ``tasks`` lists the tasks a
spec can name, or one task's parameters. ``plan`` (or ``run --dry-run``) prints the runs,
buckets, chunks, memory and a calibrated time (:mod:`groksweep.estimate`), and writes nothing;
``--set KEY=VALUE`` overrides a field of the spec (:func:`groksweep.spec.override`). Errors in
the input are printed as one line, exit code 2; errors of the file system (or a DIR in use),
exit code 1.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from groksweep import groksweep_version
from groksweep.errors import SpecError, SpecWarning
from groksweep.files import DirectoryInUse, DirectoryLock, append_line, remove_tree, write_atomic

RESULTS, PHASE, SPEC, LOG, CHUNKS = "results.nc", "phase.nc", "spec.toml", "log.txt", "chunks"
MODELS = "models"  # groksweep.saved_models.MODELS, without importing JAX
REPORT = "report.html"  # groksweep.report.REPORT
INTERRUPTED = 130
STOP_CODES = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: 143, signal.SIGUSR1: 138}
"""Exit code of a sweep stopped by a signal: 128 + its number, the status a shell gives a
process that signal ended, which is what a scheduler (SLURM, Kubernetes) reads as "stopped by
my signal"; the sweep saved its progress first (docs/SCALING.md)."""


def console() -> int:
    """The ``groksweep`` command. Outside :func:`main`, Ctrl-C is ignored: once the command is
    done there is nothing left to stop, and a signal during the interpreter's exit (which resets
    Python-level handlers) would otherwise kill the process with no status of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = main()
    trainer = sys.modules.get("groksweep.trainer")
    if trainer is not None and trainer.computing():
        # A second Ctrl-C left XLA computing in a thread, which the interpreter's exit would
        # abort (status 134): leave without it; every file written is whole already.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C is caught from the first line: during start-up it stops before training, during
    # training once the current segment is saved; afterwards the results are written out.
    with warnings.catch_warnings(), _StopOnInterrupt() as stop:
        warnings.showwarning = _show_warning
        try:
            args = _parser().parse_args(argv)
            # A spec's task "module:attribute" may be a file here, as with `python -m`;
            # appended, so that it never shadows an installed module.
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            return args.command(args, stop)
        except SpecError as err:
            return _fail(err, 2)
        except BrokenPipeError:  # the reader of stdout left (`groksweep tasks | head`)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (OSError, DirectoryInUse) as err:
            return _fail(err, 1)
        except KeyboardInterrupt:
            print("\ngroksweep: interrupted", file=sys.stderr)
            return stop.code


_show_other_warning = warnings.showwarning


def _show_warning(message, category, *args, **kwargs) -> None:
    """A spec's warning as one line, like its errors; others as Python shows them."""
    if issubclass(category, SpecWarning):
        print(f"groksweep: warning: {message}", file=sys.stderr)
    else:
        _show_other_warning(message, category, *args, **kwargs)


def _fail(err: Exception, code: int) -> int:
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.strerror}: {err.filename}"
    else:
        message = str(err) or type(err).__name__
    print(f"groksweep: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace, stop: _StopOnInterrupt) -> int:
    from groksweep.spec import Sweep

    if args.dry_run:
        return _plan(args, stop)
    if args.out is None or not args.out.strip():
        raise SpecError("--out must name a directory (or pass --dry-run)")
    stop.watch(signal.SIGTERM, signal.SIGUSR1)  # a scheduler's notice: save and stop
    sweep = Sweep.from_toml(args.spec, args.set)  # validate before importing the heavy machinery
    out = Path(args.out)
    import jax

    if args.distributed:
        _initialize_distributed(args)
    from groksweep import engine, phase, results
    from groksweep.estimate import estimate
    from groksweep.store import ChunkStore
    from groksweep.tasks.base import task_identity

    # Every check that can refuse the sweep comes before the directory is claimed.
    prepared = engine.prepare(
        sweep,
        memory_budget=args.memory_budget,
        chunk_size=args.chunk_size,
        reproducible=args.reproducible,
    )
    # Not calibrated: that would compile every bucket twice more (`groksweep plan` does).
    plan_line = f"plan: {estimate(prepared, calibrate=False).summary()}"
    print(plan_line)
    if stop.requested():
        print(
            "groksweep: interrupted before training started; nothing was written", file=sys.stderr
        )
        return stop.code
    first = jax.process_index() == 0
    lock = _claim(out, sweep.to_toml(), args.overwrite) if first else None
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("groksweep: output directory ready")

    log_path = out / (LOG if first else f"log.{jax.process_index()}.txt")

    def log(line: str) -> None:
        append_line(log_path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    try:
        log(
            f"groksweep {groksweep_version()}, jax {jax.__version__}, "
            f"devices {jax.devices()}\n{plan_line}\n{sweep.to_toml()}"
        )
        store = ChunkStore(out / CHUNKS, sweep.to_toml(), task_identity(sweep.task_def))
        start = time.perf_counter()
        try:
            if sweep.refine:
                from groksweep import refine

                ds = refine.run(
                    sweep,
                    progress=not args.quiet,
                    store=store,
                    should_stop=stop.requested,
                    log=log,
                    report=lambda done: print(refine.round_line(done)),
                    checkpoint_every=args.checkpoint_every,
                    memory_budget=args.memory_budget,
                    chunk_size=args.chunk_size,
                    reproducible=args.reproducible,
                    models_dir=out / MODELS if sweep.save_models else None,
                )
            else:
                ds = engine.run(
                    prepared,
                    progress=not args.quiet,
                    store=store,
                    should_stop=stop.requested,
                    log=log,
                    checkpoint_every=args.checkpoint_every,
                    models_dir=out / MODELS if sweep.save_models else None,
                )
        except engine.SweepInterrupted as err:
            log(f"interrupted: {err}")
            print(
                f"groksweep: interrupted, {err}. Run the same command again to resume.",
                file=sys.stderr,
            )
            return stop.code
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
        _write_figures_and_report(ds, ph, out, args)
    finally:
        if lock:
            lock.release()
    print(f"wrote {out / RESULTS} and {out / PHASE}")
    return 0


def _plan(args: argparse.Namespace, stop: _StopOnInterrupt) -> int:
    """Print the sweep's plan and, calibrated, its time; write nothing, claim no directory."""
    from groksweep.spec import Sweep

    sweep = Sweep.from_toml(args.spec, args.set)
    from groksweep import engine
    from groksweep.estimate import estimate

    prepared = engine.prepare(
        sweep,
        memory_budget=args.memory_budget,
        chunk_size=args.chunk_size,
        reproducible=args.reproducible,
    )
    try:
        plan = estimate(
            prepared,
            calibrate=not args.no_timing,
            should_stop=stop.requested,
            checkpoint_every=args.checkpoint_every,
        )
    except engine.SweepInterrupted:
        print("groksweep: interrupted during calibration; nothing was written", file=sys.stderr)
        return stop.code
    print(plan.report())
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


def _claim(out: Path, spec_text: str, overwrite: bool) -> DirectoryLock:
    """Make ``out`` this sweep's directory (new, resumed with the same spec, or overwritten on
    request) and lock it for this process; the lock is returned, to be released at the end."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(out)
    try:
        spec_file, chunks = out / SPEC, out / CHUNKS
        held = _read_own(spec_file)
        if held is not None and held != spec_text:
            if not overwrite:
                raise SpecError(
                    f"{out} holds a different sweep; use another --out or pass --overwrite"
                )
            remove_tree(chunks)
            remove_tree(out / MODELS)
            from groksweep.plot import FIGURES

            for name in (RESULTS, PHASE, LOG, REPORT, *FIGURES):
                (out / name).unlink(missing_ok=True)
        for folder in (chunks, out / MODELS):
            if folder.is_symlink():
                raise FileExistsError(
                    f"{folder} is a symbolic link; groksweep never writes through links"
                )
        write_atomic(spec_file, spec_text.encode())
    except BaseException:
        lock.release()
        raise
    return lock


def _read_own(path: Path) -> str | None:
    """The text of a file groksweep wrote, or None if absent. A link planted in its place, or
    a file that is not groksweep's text, reads as a different sweep's."""
    if path.is_symlink():
        return f"(a link to {path.resolve()})"
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None


class _StopOnInterrupt:
    """Within the block, a first Ctrl-C (or a signal given to :meth:`watch`) asks the command to
    stop at the next safe point (before training, or once the current segment is saved); a
    second one interrupts at once. ``code`` is the exit code of the first one."""

    def __init__(self) -> None:
        self._requested = False
        self.code = INTERRUPTED
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self._requested

    def _handle(self, signum, frame) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        self.code = STOP_CODES[signum]
        print(
            f"\ngroksweep: {signal.Signals(signum).name}: stopping before training, or once the "
            "current segment is saved (Ctrl-C again to stop at once, keeping what is saved)",
            file=sys.stderr,
        )

    def watch(self, *signums: int) -> None:
        """Handle these signals too, until the block ends (a scheduler's SIGTERM, SIGUSR1)."""
        for signum in signums:
            self._previous.setdefault(signum, signal.signal(signum, self._handle))

    def __enter__(self):
        self.watch(signal.SIGINT)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _plot(args: argparse.Namespace, stop: _StopOnInterrupt) -> int:
    from groksweep import results

    out = Path(args.dir)
    missing = [name for name in (RESULTS, PHASE) if not (out / name).is_file()]
    if missing:
        raise SpecError(
            f"{out} has no {' or '.join(missing)}; run `groksweep run SPEC --out {out}` first"
        )
    ds = results.load(out / RESULTS, kind="results")
    ph = results.load(out / PHASE, kind="phase")
    results.check_pair(ds, ph)
    _write_figures_and_report(ds, ph, out, args)
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (a SpecError), not the whole usage text."""

    def error(self, message: str):
        raise SpecError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="groksweep", description="Train a grid of models at once and map grokking times."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run a sweep spec (TOML) and write results and figures")
    run.add_argument("spec", help="sweep specification, a TOML file")
    run.add_argument("--out", help="output directory")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and the estimated time, as `groksweep plan`; write nothing",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the spec: params.lr=0.02, 'axes.seed=[0,1,2]', steps=5000 "
        "(a TOML value; repeatable)",
    )
    run.add_argument(
        "--level",
        type=_level,
        default=None,
        help="accuracy level of the grokking time (default: the level crossings are solved "
        "at, or 0.95)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_figure_options(run)
    run.add_argument(
        "--checkpoint-every",
        type=_positive_seconds,
        default=180.0,
        metavar="SECONDS",
        help="save a chunk in training about this often, and stop at most this long after "
        "Ctrl-C, SIGTERM or SIGUSR1 (default: 180)",
    )
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
    run.set_defaults(command=_run, no_timing=False)
    plan = commands.add_parser(
        "plan", help="print a sweep's runs, buckets, chunks, memory and estimated time"
    )
    plan.add_argument("spec", help="sweep specification, a TOML file")
    plan.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="as for `run`"
    )
    plan.add_argument("--memory-budget", type=_bytes, metavar="SIZE", help="as for `run`")
    plan.add_argument("--chunk-size", type=_positive_int, metavar="N", help="as for `run`")
    plan.add_argument("--reproducible", action="store_true", help="as for `run`")
    plan.add_argument(
        "--checkpoint-every",
        type=_positive_seconds,
        default=180.0,
        metavar="SECONDS",
        help="as for `run`: the segments a chunk trains in",
    )
    plan.add_argument(
        "--no-timing",
        action="store_true",
        help="plan without compiling: no calibration, no estimated time",
    )
    plan.set_defaults(command=_plan)
    plot = commands.add_parser("plot", help="redraw the figures of a finished run")
    plot.add_argument("dir", help="output directory of `groksweep run`")
    _add_figure_options(plot)
    plot.set_defaults(command=_plot)
    tasks = commands.add_parser("tasks", help="list the tasks a spec can name, or one's parameters")
    tasks.add_argument("task", nargs="?", help="a task's name: list its parameters")
    tasks.set_defaults(command=_tasks)
    parser.add_argument("--version", action="version", version=f"groksweep {groksweep_version()}")
    return parser


def _tasks(args: argparse.Namespace, stop: _StopOnInterrupt) -> int:
    """Without a name: every task a spec can name, built in, registered or from a plugin's
    entry point. With one: its parameters (the engine's and its own), defaults and meanings."""
    from importlib.metadata import entry_points

    from groksweep.spec import declared_params
    from groksweep.tasks import TASKS, get_task
    from groksweep.tasks.registry import ENTRY_POINT_GROUP

    if args.task is None:
        plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        for name, task in sorted(TASKS.items()):
            print(f"{name:22} {type(task).__module__:30} {_first_line(task)}")
        for name, value in sorted(plugins.items()):
            if name not in TASKS:
                print(f"{name:22} {value} (plugin)")
        return 0
    from groksweep.measures import available

    task = get_task(args.task)
    print(f"{task.name}: {type(task).__module__}.{type(task).__qualname__}")
    print(f"  {_first_line(task)}")
    rows = [("name", "role", "type", "default", "allowed", "meaning")]
    for name, param in declared_params(task).items():
        default = "-" if param.default is None else repr(param.default)
        rows.append(
            (name, param.role, param.type.__name__, default, _allowed(param), param.doc)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5])
    dims = lambda names: ", ".join(  # noqa: E731
        f"{n} ({', '.join(d)})" if d else n for n, d in names.items()
    )
    print(f"  metrics: {dims(task.metrics)}")
    print(f"  measures (optional): {dims(available(task))}")
    print(f"  methods: {', '.join(task.methods)}")
    return 0


def _first_line(task) -> str:
    """The first paragraph of a task class's own docstring, or of its module's, cut to a line."""
    doc = type(task).__doc__ or sys.modules[type(task).__module__].__doc__ or ""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    return text if len(text) <= 100 else text[:97] + "..."


def _allowed(param) -> str:
    """A parameter's allowed values: its choices, or its range."""
    if param.choices:
        return " | ".join(param.choices)
    bounds = [
        f"{op} {bound:,}" if isinstance(bound, int) else f"{op} {bound:g}"
        for op, bound in ((">", param.gt), (">=", param.ge), ("<", param.lt), ("<=", param.le))
        if bound is not None
    ]
    return ", ".join(bounds) or "any"


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
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"size must be finite, got {text!r}")
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


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


FIGURE_FORMATS = ("png", "pdf", "svg")  # groksweep.plot.FORMATS, without importing matplotlib


def _add_figure_options(parser: argparse.ArgumentParser) -> None:
    """--no-theory and --format, on `run` and `plot`."""
    parser.add_argument(
        "--no-theory",
        action="store_true",
        help="draw no theory beside the trained runs (drawn by default where the task has one)",
    )
    parser.add_argument(
        "--format",
        type=_formats,
        default=("png",),
        metavar="png,pdf,svg",
        help="figure formats, comma-separated (default: png)",
    )


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(
            f"figure format {', '.join(bad) or '(none)'} is not one of {', '.join(FIGURE_FORMATS)}"
        )
    return formats


def _figure_options(args: argparse.Namespace) -> dict:
    return {
        "theory": not getattr(args, "no_theory", False),
        "formats": getattr(args, "format", ("png",)),
    }


def _write_figures_and_report(ds, ph, out: Path, args: argparse.Namespace) -> None:
    """The default figures, then DIR/report.html with them inline (groksweep.report)."""
    from groksweep import plot, report

    options = _figure_options(args)
    figures = plot.figures_for(ds, ph, out, **options)
    for path in [*figures, report.write(out, ds, ph, figures, theory=options["theory"])]:
        print(f"wrote {path}")


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"level must be in (0, 1), got {text}")
    return value


if __name__ == "__main__":
    sys.exit(console())
