"""DIR/report.html: written by `run` and `plot` for real sweeps, its tables read back against
the files and the theory computed directly, its text escaped, and opened in headless Chromium.

The linear sweep has runs that diverge (lr = 3 is far past gradient descent's stable step),
runs that never reach the level (lam > 1, and eps = 1e-3 within 300 steps) and runs that grok.
"""

import os
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest

from groksweep import report, results, theory
from groksweep.cli import main

LINEAR = """
task = "linear"
steps = 300
log_points = 15
eps = [1e-3, 1e-1]

[params]
d_in = 16
n_test = 300

[axes]
lam = [0.3, 1.2]
lr = [0.01, 3.0]
seed = [0, 1]
"""

MLP = """
task = "mlp_teacher_student"
steps = 200
log_points = 10

[params]
d_in = 8
d_h = 8
n_test = 100

[axes]
lam = [0.5, 0.9]
seed = [0]
"""


@pytest.fixture(scope="module")
def linear_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear")
    spec = root / "spec.toml"
    spec.write_text(LINEAR)
    out = root / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    return out


class Tables(HTMLParser):
    """The text of a report: each section's tables as lists of rows of cell texts, its images'
    attributes, and every tag seen."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, list[list[list[str]]]] = {}
        self.images: list[dict] = []
        self.tags: set[str] = set()
        self._section = None
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "section":
            self._section = self.sections.setdefault(attrs["id"], [])
        elif tag == "table":
            self._section.append([])
        elif tag == "tr":
            self._section[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._section[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def body(table: list[list[str]]) -> list[list[str]]:
    return table[1:]  # the first row holds the headers


def test_run_writes_a_report_of_the_sweep(linear_dir):
    text = (linear_dir / "report.html").read_text()
    page = Tables(text)
    # Self-contained: no script, no style sheet or image from elsewhere.
    assert not page.tags & {"script", "link", "iframe", "object"}
    assert "http://" not in text and "https://" not in text
    assert len(page.images) == 2 and all(
        image["src"].startswith("data:image/png;base64,") for image in page.images
    )
    assert "steps = 300" in text  # the spec

    ds = results.load(linear_dir / "results.nc", kind="results")
    phase = results.load(linear_dir / "phase.nc", kind="phase")
    sections = page.sections

    # Environment: the versions results.nc records, and the devices of the session.
    recorded = dict(body(sections["environment"][0]))
    assert recorded["groksweep"] == ds.attrs["groksweep_version"]
    assert recorded["jax"] == ds.attrs["jax_version"]
    (session,) = body(sections["environment"][1])
    assert "Device" in session[3] and session[4].startswith("trained in")

    # Timings: one bucket, one trained chunk of all 8 runs.
    (bucket,) = body(sections["timings"][0])
    assert bucket[:2] == ["0", "8"] and bucket[5] == "1" and float(bucket[4]) > 0
    (chunk,) = body(sections["timings"][1])
    assert chunk[1] == "0" and chunk[3] == "8" and chunk[4] == "trained"

    # Grokking times: every (run, eps), as phase.nc has them.
    rows = body(sections["grokking-times"][0])
    assert len(rows) == ds.sizes["lam"] * ds.sizes["lr"] * ds.sizes["seed"] * ds.sizes["eps"]
    for lam, lr, seed, eps, _, t_test, _, status in rows:
        at = phase.sel(lam=float(lam), lr=float(lr), seed=int(seed), eps=float(eps))
        expected = float(at["t_test"])
        assert t_test == ("—" if np.isnan(expected) else f"{expected:.4g}")
        assert (status == "diverged") == bool(at["diverged"])

    # Diverged: exactly the runs with a first non-finite step, at that step; all at lr = 3.
    diverged = body(sections["diverged-runs"][0])
    flagged = ds["diverged_at"].where(ds["diverged_at"] >= 0, drop=True)
    assert len(diverged) == int((ds["diverged_at"] >= 0).sum()) == 4
    for lam, lr, seed, step in diverged:
        assert lr == "3"
        assert int(step) == int(flagged.sel(lam=float(lam), lr=float(lr), seed=int(seed)))

    # Censored: no time, not diverged; with which accuracy never reached the level.
    censored = body(sections["censored-runs"][0])
    expected = (phase["train_censored"] | phase["test_censored"]).sum()
    assert len(censored) == int(expected) > 0
    for lam, lr, seed, eps, which in censored:
        at = phase.sel(lam=float(lam), lr=float(lr), seed=int(seed), eps=float(eps))
        assert which == ("train and test" if at["train_censored"] else "test")
        assert bool(at["test_censored"]) and not bool(at["diverged"])

    # Theory: each grid point's exact grokking times, computed here from groksweep.theory at
    # the run's effective lam = d_in / N_tr, N_tr = round(d_in / lam) (the linear task's rule).
    agreement = body(sections["agreement-with-theory"][0])
    assert len(agreement) == 2 * 2 * 2  # lam x lr x eps, seeds reduced
    for lam, lr, eps, _, t_train_theory, _, t_test_theory, *_ in agreement:
        t_train, t_test = theory.grokking_time(
            16 / round(16 / float(lam)), lr=float(lr), eps=float(eps), level=0.95
        )
        for cell, value in ((t_train_theory, t_train), (t_test_theory, t_test)):
            assert cell == ("—" if np.isnan(value) else f"{value:.4g}")


def test_plot_rewrites_the_report_and_escapes_what_the_files_hold(linear_dir, tmp_path):
    """A spec comment and a log entry may hold anything (results.nc is checked, but a TOML
    comment is valid); the report shows them as text. `plot --no-theory` drops the theory."""
    out = tmp_path / "out"
    shutil.copytree(linear_dir, out)
    hostile = "<script>alert(1)</script>"
    ds = results.load(out / "results.nc", kind="results")
    phase = results.load(out / "phase.nc", kind="phase")
    for data, name in ((ds, "results.nc"), (phase, "phase.nc")):
        data.attrs["spec"] = f"# {hostile}\n" + data.attrs["spec"]
        results.save(data, out / name)
    with open(out / "log.txt", "a") as log:
        log.write(f"2026-01-01 00:00:00 groksweep 9.9, jax 9.9, devices [<img src=x>{hostile}]\n")
    (out / "report.html").unlink()

    assert main(["plot", str(out), "--no-theory"]) == 0
    text = (out / "report.html").read_text()
    page = Tables(text)
    assert "script" not in page.tags and text.count("<img") == 2  # the two figures only
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # spec and log
    assert "agreement-with-theory" not in page.sections
    sessions = body(page.sections["environment"][1])
    assert len(sessions) == 2 and sessions[1][3] == f"[<img src=x>{hostile}]"


def test_long_tables_are_cut_with_a_note(linear_dir, monkeypatch):
    monkeypatch.setattr(report, "MAX_ROWS", 5)
    ds = results.load(linear_dir / "results.nc", kind="results")
    phase = results.load(linear_dir / "phase.nc", kind="phase")
    text = report.render(ds, phase, [], theory=False)
    rows = body(Tables(text).sections["grokking-times"][0])
    assert len(rows) == 5
    assert "The first 5 of 16 rows; 11 more in phase.nc." in text
    assert "No figures were written." in text


def test_parse_log_keeps_what_it_knows_and_skips_the_rest():
    text = "\n".join(
        [
            "2026-01-01 10:00:00 groksweep 0.1.0, jax 0.10.2, devices [CudaDevice(id=0)]",
            "task = 'linear'",  # a continuation of the entry above (the spec)
            "2026-01-01 10:00:01 bucket 1: {'d_in': 16}; 6 runs as (groups, families, slots) "
            "= (2, 3, 1); 2 groups per chunk; 15 log points evaluated at once",
            "2026-01-01 10:00:02 bucket 1: program compiled in 1.50 s",
            "2026-01-01 10:00:03 bucket 1 chunk abc: 6 runs trained in 2.25 s, 3 segments",
            "2026-01-01 10:00:04 bucket 1 chunk def: 6 runs read back",
            "2026-01-01 10:00:05 bucket 1 chunk ghi: resumed after 4 of 9 units",
            "2026-01-01 10:00:06 bucket 1 chunk jkl: 6 runs trained in soon",  # unknown forms
            "2026-01-01 10:00:06 bucket 1 chunk mno: 6 runs trained",
            "2026-01-01 10:00:07 interrupted: stopped before a new chunk",
            "garbage \x00 line",
            "2026-01-01 10:00",  # cut short
        ]
    )
    log = report.parse_log(text)
    (session,) = log.sessions
    assert session["devices"] == "[CudaDevice(id=0)]"
    assert session["outcome"] == "interrupted: stopped before a new chunk"
    assert log.buckets[1]["layout"] == "(2, 3, 1)" and log.compiles == {1: [1.5]}
    events = [(c["chunk"], c["event"], c["seconds"], c["segments"]) for c in log.chunks]
    assert events == [
        ("abc", "trained", 2.25, "3"),
        ("def", "read back", None, None),
        ("ghi", "resumed", None, None),
    ]
    assert report.parse_log("") == report.Log()


def _chromium() -> str:
    """Chromium from the system's packages; CI installs it, so there a missing one fails."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


def _headless(*args: str) -> subprocess.CompletedProcess:
    # No network at all: the report must render from itself.
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu"]
    command += ["--host-resolver-rules=MAP * ~NOTFOUND", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(linear_dir, tmp_path):
    shot = tmp_path / "report.png"
    done = _headless(
        f"--screenshot={shot}", "--window-size=1200,2000", (linear_dir / "report.html").as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels[..., :3].std() > 0.05  # text, tables and figures, not a blank page

    # Each figure decoded to its file's own size: a script added to a copy of the report (the
    # report has none) writes every image's decoded width into the DOM that Chromium prints.
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { for (const img of document.images)"
        " img.dataset.decoded = img.naturalWidth + 'x' + img.naturalHeight; });</script>"
    )
    probe.write_text(
        (linear_dir / "report.html").read_text().replace("</body>", script + "</body>")
    )
    done = _headless("--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    decoded = [image.get("data-decoded") for image in Tables(done.stdout).images]
    expected = [
        "{1}x{0}".format(*matplotlib.image.imread(linear_dir / f"{stem}.png").shape[:2])
        for stem in ("learning_curves", "phase_diagram")
    ]
    assert decoded == expected


@pytest.mark.slow
def test_report_of_a_sweep_without_theory(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(MLP)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    page = Tables((out / "report.html").read_text())
    assert "agreement-with-theory" not in page.sections
    assert len(page.images) == 2  # learning curves and the delta_t curve
    phase = results.load(out / "phase.nc", kind="phase")
    rows = body(page.sections["grokking-times"][0])
    assert [row[:3] for row in rows] == [["0.5", "0", "0.001"], ["0.9", "0", "0.001"]]
    for row, censored in zip(rows, phase["train_censored"].values.ravel(), strict=True):
        assert (row[-1] == "train never reached") == censored
