"""A sweep's report: ``DIR/report.html``, one self-contained HTML file that a browser opens
offline.

It holds the spec, the environment (the versions and devices of each session of
``groksweep run``, and of the process that wrote the report), the timings per bucket and chunk,
the figures inline (PNG or SVG as ``data:`` URIs), the grokking times of every run, the diverged
and the censored runs and, for a sweep the exact theory describes (the linear task,
:mod:`groksweep.theory_grid`), the trained times against the theory's. The file has no script
and loads nothing: every string from the spec or the log is escaped.

The timings and devices are read from ``DIR/log.txt``, line by line: an entry the engine or the
command line writes in a form this module does not know is left out, never an error. Tables
longer than :data:`MAX_ROWS` show their first rows and say how many more the files hold.
"""

from __future__ import annotations

import ast
import base64
import html
import platform
import re
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from groksweep.files import write_atomic
from groksweep.plot import label

REPORT = "report.html"
LOG = "log.txt"
MAX_ROWS = 200
"""Rows a table shows at most; the rest is counted in a note."""
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
"""Figure formats a browser shows inline, in order of preference (a PDF is only named)."""
PACKAGES = ("groksweep", "jax", "jaxlib", "numpy", "xarray", "matplotlib", "netCDF4")
"""Packages whose versions the report gives for the process that wrote it."""


def write(
    out_dir: str | Path,
    ds: xr.Dataset,
    phase: xr.Dataset,
    figures: Iterable[str | Path],
    *,
    theory: bool = True,
) -> Path:
    """Write ``out_dir/report.html`` (:data:`REPORT`) atomically for the results ``ds`` and
    grokking times ``phase`` of a sweep, with the ``figures`` written for it (the paths
    :func:`groksweep.plot.figures_for` returns) and the log ``out_dir/log.txt`` where there is
    one (never through a link planted in its place). ``theory`` adds the table of trained
    against theory grokking times where the task has a theory. Returns the report's path."""
    out = Path(out_dir)
    log_path = out / LOG
    own_log = log_path.is_file() and not log_path.is_symlink()
    log_text = log_path.read_text(errors="replace") if own_log else ""
    path = out / REPORT
    write_atomic(path, render(ds, phase, figures, log_text, theory=theory).encode())
    return path


def render(
    ds: xr.Dataset,
    phase: xr.Dataset,
    figures: Iterable[str | Path],
    log_text: str = "",
    *,
    theory: bool = True,
) -> str:
    """The report's HTML (see :func:`write`), from the datasets, figure files and log text."""
    log = parse_log(log_text)
    spec = ds.attrs.get("spec", "")
    title = f"groksweep sweep: {_task_name(spec)}"
    runs = len(_rows(ds, ds["diverged_at"].dims, ("diverged_at",)))
    sections = {
        "Spec": f"<pre>{html.escape(spec)}</pre>",
        "Environment": _environment(ds, log),
        "Timings": _timings(log),
        "Figures": _figures(figures),
        "Grokking times": _phase_table(phase),
        "Diverged runs": _diverged(ds, runs),
        "Censored runs": _censored(phase),
    }
    agreement = _theory_agreement(ds, phase) if theory else None
    if agreement is not None:
        sections["Agreement with theory"] = agreement
    contents = " · ".join(f'<a href="#{_anchor(t)}">{html.escape(t)}</a>' for t in sections)
    subtitle = f"{runs:,} runs; report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return TEMPLATE.format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        contents=contents,
        body="\n".join(_section(heading, content) for heading, content in sections.items()),
    )


def _task_name(spec: str) -> str:
    try:
        return str(tomllib.loads(spec).get("task", "unknown task"))
    except tomllib.TOMLDecodeError:
        return "unknown task"


# --- the log ------------------------------------------------------------------------------------
ENTRY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")
HEADER = re.compile(r"groksweep (?P<groksweep>\S+), jax (?P<jax>\S+), devices (?P<devices>.*)")
BUCKET = re.compile(
    r"bucket (?P<bucket>\d+): (?P<shape>\{.*\}); (?P<runs>\d+) runs as \(groups, families, "
    r"slots\) = (?P<layout>\([\d, ]*\)); (?P<groups>\d+) groups per chunk"
)
COMPILED = re.compile(r"bucket (?P<bucket>\d+): program compiled in (?P<seconds>[\d.]+) s")
CHUNK = re.compile(
    r"bucket (?P<bucket>\d+) chunk (?P<chunk>\S+): (?:(?P<runs>\d+) runs (?:trained in "
    r"(?P<seconds>[\d.]+) s, (?P<segments>\d+) segments|(?P<read_back>read back))|"
    r"(?P<resumed>resumed) after \d+ of \d+ units)"
)

FINISHED = re.compile(r"(?P<outcome>trained in [\d.]+ s; \d+ diverged runs|interrupted: .*)")


@dataclass
class Log:
    """What the report takes from ``log.txt``: the sessions of ``groksweep run`` (each a dict of
    ``started``, ``groksweep``, ``jax``, ``devices`` and, once it ended, ``outcome``), each
    bucket's last description, its compile times, and the chunks' entries (dicts of ``time``,
    ``bucket``, ``chunk``, ``runs``, ``event``, ``seconds``, ``segments``)."""

    sessions: list[dict[str, str]] = field(default_factory=list)
    buckets: dict[int, dict[str, str]] = field(default_factory=dict)
    compiles: dict[int, list[float]] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)


def parse_log(text: str) -> Log:
    """The entries of a ``log.txt`` that the report shows; lines it does not know are skipped
    (a log entry's continuation lines, such as the spec, start without a time stamp)."""
    log = Log()
    for line in text.splitlines():
        entry = ENTRY.match(line)
        if entry is None:
            continue
        stamp, message = entry.groups()
        if match := HEADER.fullmatch(message):
            log.sessions.append({"started": stamp, **match.groupdict()})
        elif (match := FINISHED.fullmatch(message)) and log.sessions:
            log.sessions[-1]["outcome"] = match["outcome"]
        elif match := BUCKET.match(message):
            log.buckets[int(match["bucket"])] = match.groupdict()
        elif match := COMPILED.fullmatch(message):
            log.compiles.setdefault(int(match["bucket"]), []).append(float(match["seconds"]))
        elif match := CHUNK.fullmatch(message):
            event = match["read_back"] or match["resumed"] or "trained"
            seconds = float(match["seconds"]) if match["seconds"] else None
            log.chunks.append(
                {"time": stamp, "event": event, "seconds": seconds}
                | {key: match[key] for key in ("bucket", "chunk", "runs", "segments")}
            )
    return log


# --- sections -----------------------------------------------------------------------------------
def _environment(ds: xr.Dataset, log: Log) -> str:
    """The results' own record (versions, device), each run session's, and this process's."""
    recorded = [
        ("groksweep", ds.attrs.get("groksweep_version", "?")),
        ("jax", ds.attrs.get("jax_version", "?")),
        ("platform", ds.attrs.get("platform", "?")),
        ("device", ds.attrs.get("device", "?")),
    ]
    parts = [
        "<h3>Recorded in results.nc</h3>",
        _table(("name", "value"), recorded),
        "<h3>Sessions of <code>groksweep run</code> (log.txt)</h3>",
    ]
    if log.sessions:
        keys = ("started", "groksweep", "jax", "devices", "outcome")
        rows = [[session.get(key, "") for key in keys] for session in log.sessions]
        parts.append(_table(keys, rows))
    else:
        parts.append("<p>No log.txt, or none of its entries names a session.</p>")
    this = [("python", platform.python_version()), ("system", platform.platform())]
    this += [(name, _version(name)) for name in PACKAGES]
    parts += ["<h3>The process that wrote this report</h3>", _table(("name", "version"), this)]
    return "\n".join(parts)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _timings(log: Log) -> str:
    """Per bucket (its shape, layout, compile and training time), then per chunk entry."""
    if not log.buckets and not log.chunks:
        return "<p>log.txt records no bucket or chunk.</p>"
    rows = []
    for index in sorted(set(log.buckets) | set(log.compiles)):
        bucket = log.buckets.get(index, {})
        chunks = [c for c in log.chunks if int(c["bucket"]) == index]
        trained = [c for c in chunks if c["event"] == "trained"]
        rows.append(
            (
                index,
                bucket.get("runs", "?"),
                bucket.get("layout", "?"),
                bucket.get("groups", "?"),
                _seconds(sum(log.compiles.get(index, []))),
                len(trained),
                _seconds(sum(c["seconds"] for c in trained)),
                sum(c["event"] == "read back" for c in chunks),
                _shape(bucket.get("shape", "")),
            )
        )
    headers = (
        "bucket",
        "runs",
        "(groups, families, slots)",
        "groups per chunk",
        "compile s",
        "chunks trained",
        "training s",
        "chunks read back",
        "shape",
    )
    parts = [_table(headers, rows)]
    if len(log.sessions) > 1:
        parts.append(f"<p>Summed over {len(log.sessions)} sessions of <code>run</code>.</p>")
    chunk_rows = [
        (
            c["time"],
            c["bucket"],
            c["chunk"],
            c["runs"] or "",
            c["event"],
            _seconds(c["seconds"]),
            c["segments"] or "",
        )
        for c in log.chunks
    ]
    chunk_headers = ("time", "bucket", "chunk", "runs", "event", "seconds", "segments")
    parts += ["<h3>Chunks</h3>", _capped_table(chunk_headers, chunk_rows, "log.txt")]
    return "\n".join(parts)


def _shape(text: str) -> str:
    """A bucket's static values and sizes (a dict's repr in the log) as ``name=value`` words."""
    try:
        shape = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if not isinstance(shape, dict):
        return text
    return " ".join(f"{name}={value}" for name, value in shape.items())


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _figures(paths: Iterable[str | Path]) -> str:
    """Each figure once, inline in the first format a browser shows (:data:`IMAGE_TYPES`)."""
    by_stem: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        by_stem.setdefault(path.stem, []).append(path)
    if not by_stem:
        return "<p>No figures were written.</p>"
    parts = []
    for stem, files in by_stem.items():
        shown = next((f for t in IMAGE_TYPES for f in files if f.suffix == t), None)
        if shown is None:
            names = ", ".join(f.name for f in files)
            parts.append(
                f"<p>{html.escape(stem)}: written as {html.escape(names)} only, which a browser "
                "does not show inline (<code>groksweep plot DIR --format png</code> adds it).</p>"
            )
            continue
        data = base64.b64encode(shown.read_bytes()).decode("ascii")
        source = f"data:{IMAGE_TYPES[shown.suffix]};base64,{data}"
        parts.append(
            f'<figure><img src="{source}" alt="{html.escape(stem)}">'
            f"<figcaption>{html.escape(shown.name)}</figcaption></figure>"
        )
    return "\n".join(parts)


def _phase_table(phase: xr.Dataset) -> str:
    """Every run's grokking times (and at every threshold), with why a time is missing."""
    level = phase.attrs.get("level")
    intro = ""
    if isinstance(level, (float, int, np.number)):  # grokking times on accuracy, as the CLI's
        intro = (
            f"<p>First step at which the accuracy reaches {level:g}, interpolated in log-time "
            "(phase.nc).</p>"
        )
    dims = list(phase["delta_t"].dims)
    frame = _rows(phase, dims, ("t_train", "t_test", "delta_t"))
    flags = _rows(phase, dims, ("train_censored", "test_censored", "diverged"))
    rows = [(*row, _status(*flag[len(dims) :])) for row, flag in zip(frame, flags, strict=True)]
    headers = (*map(label, dims), "t_train", "t_test", "Δt", "status")
    return intro + _capped_table(headers, rows, "phase.nc")


def _status(train_censored: bool, test_censored: bool, diverged: bool) -> str:
    if diverged:
        return "diverged"
    if train_censored:
        return "train never reached"
    if test_censored:
        return "test never reached"
    return "grokked"


def _diverged(ds: xr.Dataset, runs: int) -> str:
    """The runs whose loss or weights stopped being finite, with the first such step."""
    dims = list(ds["diverged_at"].dims)
    rows = [row for row in _rows(ds, dims, ("diverged_at",)) if row[-1] >= 0]
    if not rows:
        return f"<p>None of the {runs:,} runs diverged.</p>"
    note = f"<p>{len(rows):,} of {runs:,} runs diverged; their metrics are NaN from this step.</p>"
    return note + _capped_table((*map(label, dims), "first non-finite step"), rows, "results.nc")


def _censored(phase: xr.Dataset) -> str:
    """The runs (at each threshold) that never reached the level: no time, but not diverged."""
    dims = list(phase["delta_t"].dims)
    every = _rows(phase, dims, ("train_censored", "test_censored"))
    rows = [
        (*row[: len(dims)], "train and test" if row[-2] else "test")
        for row in every
        if row[-2] or row[-1]
    ]
    total = len(every)
    what = "(run, ε) pairs" if "eps" in dims else "runs"
    if not rows:
        return f"<p>All {total:,} {what} reached the level, but for any that diverged.</p>"
    note = (
        f"<p>{len(rows):,} of {total:,} {what} never reached the level within the sweep's "
        "steps, without diverging (right-censored: their time is later than the last step).</p>"
    )
    return note + _capped_table((*map(label, dims), "never reached"), rows, "phase.nc")


def _theory_agreement(ds: xr.Dataset, phase: xr.Dataset) -> str | None:
    """Seed medians of the trained times beside the theory's on the same grid
    (:func:`groksweep.theory_grid.grokking_agreement`), or None where the sweep has no theory."""
    from groksweep import theory_grid

    if "eps" not in ds.dims or phase.attrs.get("on", "accuracy") != "accuracy":
        return None
    level = float(phase.attrs.get("level", theory_grid.LEVEL))
    try:
        _, theory_times = theory_grid.theory_on_grid(ds, level=level)
        agreement = theory_grid.grokking_agreement(phase, theory_times)
    except ValueError:  # another task, optimizer or input spectrum; a grid not the spec's own
        return None
    agreement["diverged_fraction"] = phase["diverged"].mean("seed")
    if "computed" in phase:  # a refined grid: the points trained (see _rows)
        agreement["computed"] = phase["computed"]
    names = ("t_train", "t_train_theory", "t_test", "t_test_theory", "delta_t", "delta_t_theory")
    names += ("delta_t_ratio", "test_censored_fraction", "diverged_fraction")
    dims = list(agreement["delta_t"].dims)
    headers = (*map(label, dims), "t_train", "theory", "t_test", "theory", "Δt", "theory Δt")
    headers += ("Δt trained / theory", "test censored", "diverged")
    intro = (
        "<p>Trained: the median over seeds (missing where half the seeds or more never reach "
        "the level or diverged). Theory: the exact d_in → ∞ theory of the linear task (gradient "
        "flow) at each run's parameters (groksweep.theory_grid). The last two columns are "
        "fractions of the seeds.</p>"
    )
    return intro + _capped_table(headers, _rows(agreement, dims, names), "phase.nc")


# --- tables -------------------------------------------------------------------------------------
def _rows(data: xr.Dataset, dims: Sequence[str], names: Sequence[str]) -> list[tuple]:
    """One tuple per grid point of ``dims`` (in their order, last fastest): the coordinates,
    then each variable of ``names`` there. On a refined grid (:mod:`groksweep.refine`), only
    the points computed: the others are no runs."""
    dims, names = list(dims), list(names)
    refined = "computed" in data and "computed" not in names
    frame = data[names + ["computed"] * refined].to_dataframe(dim_order=dims).reset_index()
    if refined:
        frame = frame[frame["computed"].astype(bool)]
    return list(frame[dims + names].itertuples(index=False, name=None))


def _capped_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], source: str) -> str:
    """:func:`_table` of the first :data:`MAX_ROWS` rows, and a note of how many are left out."""
    table = _table(headers, rows[:MAX_ROWS])
    if len(rows) <= MAX_ROWS:
        return table
    left = len(rows) - MAX_ROWS
    return table + f"<p>The first {MAX_ROWS} of {len(rows):,} rows; {left:,} more in {source}.</p>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>\n"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


def _cell(value: Any) -> str:
    """A number to four significant digits ("—" where it is NaN: no value), else as text."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "—" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _section(title: str, content: str) -> str:
    return f'<section id="{_anchor(title)}"><h2>{html.escape(title)}</h2>\n{content}\n</section>'


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #222; line-height: 1.4; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }}
th {{ background: #f0f0f0; }}
td:last-child {{ text-align: left; }}
figure {{ margin: 1em 0; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{subtitle}</p>
<nav>{contents}</nav>
{body}
</body>
</html>
"""
"""The page: one style sheet, no script, nothing loaded from elsewhere."""
