"""The fuzz and fault suite: two processes on one directory, a full disk at every write, links
planted in the output directory, swapped and foreign chunk files, code that changed between a
sweep and its resume, and malformed input of every kind. Each case was found by an adversarial
test; each must end in one line and the right exit code, with nothing lost or corrupt."""

import errno
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import groksweep as gs
from groksweep import cli, files, store
from groksweep.cli import main
from groksweep.files import DirectoryLock
from groksweep.tasks import TASKS

SPEC = """
task = "linear"
steps = 300
log_points = 12
eps = [1e-3, 1e-1]

[params]
d_in = 8
n_test = 64

[axes]
lam = [0.4, 0.8]
gamma = [0.0, 0.01]
seed = [0, 1, 2]
"""
CHUNKS = ["--chunk-size", "4"]  # three chunks, one seed each
RUN = [sys.executable, "-m", "groksweep.cli", "run"]


def spec_file(tmp_path, text=SPEC, name="spec.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run_args(spec, out, *extra):
    return ["run", str(spec), "--out", str(out), "--quiet", *CHUNKS, *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("groksweep: error: ") and "\n" not in err, err
    return err


def assert_same_results(a_path, b_path):
    with xr.open_dataset(a_path) as a, xr.open_dataset(b_path) as b:
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def no_temporaries(out) -> bool:
    return not [p for p in out.rglob("*.tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    assert main(run_args(spec_file(tmp), tmp / "out")) == 0
    return tmp / "out" / "results.nc"


# --- one owner per directory ----------------------------------------------------------------
def test_a_locked_directory_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with DirectoryLock(out):
        start = time.perf_counter()
        assert main(run_args(spec_file(tmp_path), out)) == 1
        assert time.perf_counter() - start < 10
    assert one_line_error(capsys) == f"groksweep: error: {out} is in use by pid {os.getpid()}"
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else was touched


@pytest.mark.slow
def test_two_processes_started_together_never_corrupt_results(tmp_path, reference):
    """Two identical commands on one directory: one trains and writes, the other is refused at
    once (or, started after the first finished, reads its chunks back); results.nc is always
    whole and right."""
    spec = spec_file(tmp_path)
    for trial in range(20):
        out = tmp_path / f"out{trial}"
        command = RUN + [str(spec), "--out", str(out), "--quiet", *CHUNKS]
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
        assert outcomes[0][0] == 0, outcomes
        if outcomes[1][0] != 0:
            code, err = outcomes[1]
            assert code == 1 and err.strip().endswith("is in use by pid " + err.split()[-1])
            assert err.count("\n") == 1
        assert_same_results(out / "results.nc", reference)
        assert no_temporaries(out)


# --- a full disk ------------------------------------------------------------------------------
WRITES = [
    "spec.toml",
    "chunks/",
    "chunks/",
    "chunks/",
    "results.nc",
    "phase.nc",
    "learning_curves.png",
    "phase_diagram.png",
]
"""The atomic writes of a run, in order: the fault is injected at the n-th one's fsync."""


@pytest.mark.parametrize("nth", range(len(WRITES)), ids=WRITES)
def test_a_full_disk_at_every_write_is_one_line_and_the_rerun_completes(
    tmp_path, reference, capsys, monkeypatch, nth
):
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == nth + 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    spec, out = spec_file(tmp_path), tmp_path / "out"
    monkeypatch.setattr(files.os, "fsync", fsync)
    assert main(run_args(spec, out)) == 1
    err = one_line_error(capsys)
    assert "No space left on device" in err and WRITES[nth] in err
    assert no_temporaries(out)
    if nth < 5:
        assert not (out / "results.nc").exists()
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert main(run_args(spec, out)) == 0  # never refused as "a different sweep"
    assert_same_results(out / "results.nc", reference)


def test_a_full_disk_in_the_log_is_one_line(tmp_path, capsys, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("log.txt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", full)
    assert main(run_args(spec_file(tmp_path), tmp_path / "out")) == 1
    err = one_line_error(capsys)
    assert "log.txt" in err and "No space left on device" in err


def _mount_tmpfs(path, options):
    path.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")


@pytest.fixture
def tiny_disk(tmp_path):
    """A file system of a few KiB, grown back after the test's first run."""
    mount = tmp_path / "disk"
    yield mount
    # lazily: after a failed write on a full disk the netCDF library may keep its file open
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("size", ["8k", "24k", "40k", "64k", "200k"])
def test_a_real_full_file_system_fails_in_one_line_then_resumes(
    tmp_path, tiny_disk, reference, capsys, size
):
    """A real tmpfs that fills up at whichever write its size allows (the log, a chunk, the
    netCDF library's own writes of results.nc, a figure): exit 1, one line, no temporary left;
    once the file system grows, the same command finishes with the same results."""
    _mount_tmpfs(tiny_disk, f"size={size}")
    spec, out = spec_file(tmp_path), tiny_disk / "out"
    assert main(run_args(spec, out)) == 1
    assert "No space left on device" in one_line_error(capsys)
    assert no_temporaries(out)
    subprocess.run(["mount", "-o", "remount,size=8m", str(tiny_disk)], check=True)
    assert main(run_args(spec, out)) == 0
    assert_same_results(out / "results.nc", reference)


def test_a_read_only_file_system_and_a_file_in_place_of_the_directory_exit_1(
    tmp_path, tiny_disk, capsys
):
    spec = spec_file(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(run_args(spec, tmp_path / "afile")) == 1
    assert "not a directory" in one_line_error(capsys)
    _mount_tmpfs(tiny_disk, "ro,size=1m")
    assert main(run_args(spec, tiny_disk / "out")) == 1
    assert "Read-only file system" in one_line_error(capsys)


# --- links planted in the output directory ----------------------------------------------------
@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


@pytest.mark.parametrize("name", ["results.nc", "phase.nc", ".results.nc.tmp", "phase_diagram.png"])
def test_links_planted_at_output_names_are_replaced_not_written_through(
    tmp_path, victim, reference, name
):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    assert main(run_args(spec_file(tmp_path), out)) == 0
    assert victim.read_text() == "precious"
    assert_same_results(out / "results.nc", reference)
    assert not (out / "results.nc").is_symlink() and not (out / "phase.nc").is_symlink()


def test_a_linked_spec_is_a_different_sweep_and_overwrite_replaces_the_link(
    tmp_path, victim, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "spec.toml").symlink_to(victim)
    spec = spec_file(tmp_path)
    assert main(run_args(spec, out)) == 2
    assert "holds a different sweep" in one_line_error(capsys)
    assert main(run_args(spec, out, "--overwrite")) == 0
    assert victim.read_text() == "precious" and not (out / "spec.toml").is_symlink()


@pytest.mark.parametrize("name", ["log.txt", "chunks"])
def test_a_linked_log_or_chunk_folder_is_refused(tmp_path, victim, capsys, name):
    out = tmp_path / "out"
    out.mkdir()
    target = victim if name == "log.txt" else tmp_path
    (out / name).symlink_to(target)
    spec = spec_file(tmp_path, name="s.toml")
    before = sorted(tmp_path.iterdir())
    assert main(run_args(spec, out)) == 1
    assert "symbolic link" in one_line_error(capsys)
    assert victim.read_text() == "precious" and sorted(tmp_path.iterdir()) == before


# --- chunk files that are not what their name says --------------------------------------------
def _finished(tmp_path):
    spec, out = spec_file(tmp_path), tmp_path / "out"
    assert main(run_args(spec, out)) == 0
    (out / "results.nc").unlink()
    return spec, out, sorted((out / "chunks").glob("*.npz"))


def _rerun_recomputes(spec, out, reference, expected_rejections):
    (out / "log.txt").unlink()
    assert main(run_args(spec, out)) == 0
    log = (out / "log.txt").read_text()
    assert log.count("not used") == expected_rejections, log
    assert log.count("trained in") == expected_rejections + 1  # the chunks, then the sweep
    assert_same_results(out / "results.nc", reference)


def test_swapped_chunk_files_are_recomputed(tmp_path, reference):
    spec, out, (a, b, c) = _finished(tmp_path)
    a.rename(tmp_path / "a")
    b.rename(a)
    (tmp_path / "a").rename(b)
    _rerun_recomputes(spec, out, reference, 2)


def test_duplicated_and_foreign_chunk_files_are_recomputed(tmp_path, reference):
    spec, out, (a, b, c) = _finished(tmp_path)
    shutil.copy(a, b)  # a duplicate under another chunk's name
    other = tmp_path / "other"
    assert main(run_args(spec_file(tmp_path, SPEC.replace("300", "301"), "o.toml"), other)) == 0
    shutil.copy(sorted((other / "chunks").glob("*.npz"))[0], c)  # another sweep's chunk
    _rerun_recomputes(spec, out, reference, 2)


def test_a_chunk_with_a_valid_checksum_but_wrong_shapes_is_recomputed(tmp_path, reference):
    spec, out, (a, b, c) = _finished(tmp_path)
    with np.load(a) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("__")}
    arrays["train_loss"] = arrays["train_loss"][..., :3]
    store.ChunkStore(out / "chunks", "").save(a.stem, arrays)  # right key, right checksum
    _rerun_recomputes(spec, out, reference, 1)


# --- code that changed between a sweep and its resume -----------------------------------------
TASK_MODULE = '''
from groksweep.tasks.linear import Linear

SCALE = {scale}


class Scaled(Linear):
    """The linear task with its student's output multiplied by SCALE."""

    name = "scaled_linear"

    def evaluate(self, model, data, hp, eps):
        return super().evaluate(SCALE * model, data, hp, eps)
'''


def test_editing_a_task_outside_the_package_invalidates_its_saved_chunks(tmp_path, monkeypatch):
    (tmp_path / "scaled_task.py").write_text(TASK_MODULE.format(scale=1.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # edits within one second still load
    import scaled_task

    spec = spec_file(tmp_path, SPEC.replace('"linear"', '"scaled_linear"'))
    out = tmp_path / "out"
    results = []
    for scale in (1.0, 0.0):
        (tmp_path / "scaled_task.py").write_text(TASK_MODULE.format(scale=scale))
        module = importlib.reload(scaled_task)
        monkeypatch.setitem(TASKS, "scaled_linear", module.Scaled())
        assert main(run_args(spec, out)) == 0
        with xr.open_dataset(out / "results.nc") as ds:
            results.append(ds.train_acc.sel(eps=0.1).isel(time=-1).values)
    assert "read back" not in (out / "log.txt").read_text().split("scaled_linear")[-1]
    assert results[0].min() > 0.999 and results[1].max() < 0.9  # the edit shows


def test_saved_chunks_of_another_groksweep_version_are_recomputed(tmp_path, reference, monkeypatch):
    spec, out, _ = _finished(tmp_path)
    monkeypatch.setattr(store, "code_identity", lambda: "another version")
    (out / "log.txt").unlink()
    assert main(run_args(spec, out)) == 0
    log = (out / "log.txt").read_text()
    assert "read back" not in log and log.count("trained in") == 4
    assert "removed 3 chunk files of other code" in log and len(list(out.glob("chunks/*"))) == 3
    assert_same_results(out / "results.nc", reference)


# --- input, validated before anything happens -------------------------------------------------
BAD_SPECS = {
    "not utf-8": b'task = "linear"\n# \xff\xfe\n',
    "task a number": b"task = 5\n",
    "params a number": b'task = "linear"\nparams = 5\n',
    "axes a list": b'task = "linear"\naxes = [1, 2]\n',
    "axis a table": b'task = "linear"\n[axes]\ngamma = {a = 1}\n',
    "steps 1e30": b'task = "linear"\nsteps = 1e30\n',
    "steps 31 digits": b'task = "linear"\nsteps = 1234567890123456789012345678901\n',
    "step method past int32": b'task = "linear"\nsteps = 4294967396\n[params]\nmethod = "step"\n',
    "log points 1e9": b'task = "linear"\nlog_points = 1e9\n',
    "grid of 10^7 runs": b'task = "linear"\n[axes]\n'
    + b"".join(
        b"%s = [%s]\n" % (n, b", ".join(b"%d" % i for i in range(1, 11)))
        for n in (b"seed", b"d_in", b"d_out", b"n_test", b"ntk_points", b"n_train")
    )
    + b"gamma = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]\n",
    "nested too deep": b"task = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "eps a table": b'task = "linear"\neps = {a = 1}\n',
    "measures of numbers": b'task = "linear"\nmeasures = [[1]]\n',
    "empty": b"",
    "huge": b"#" * (2**20 + 10),
}


@pytest.mark.parametrize("content", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_malformed_specs_are_one_line_exit_2_and_claim_nothing(tmp_path, capsys, content):
    spec = tmp_path / "bad.toml"
    spec.write_bytes(content)
    start = time.perf_counter()
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "out").exists()
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "SPEC", "--out", ""],
        ["run", "SPEC", "--out", "OUT", "--memory-budget", "nan"],
        ["run", "SPEC", "--out", "OUT", "--memory-budget", "inf"],
        ["run", "SPEC", "--out", "OUT", "--memory-budget", "lots"],
        ["run", "SPEC", "--out", "OUT", "--chunk-size", "0"],
        ["run", "SPEC", "--out", "OUT", "--level", "x"],
        ["run", "SPEC"],
        ["rn"],
        [],
        ["run", "/dev/zero", "--out", "OUT"],
        ["run", "DIR", "--out", "OUT"],
    ],
)
def test_bad_command_lines_are_one_line_exit_2(tmp_path, capsys, argv):
    names = {"SPEC": str(spec_file(tmp_path)), "OUT": str(tmp_path / "out"), "DIR": str(tmp_path)}
    assert main([names.get(a, a) for a in argv]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_spec_refused_for_memory_claims_nothing_and_its_fix_runs_there(tmp_path, capsys):
    spec, out = spec_file(tmp_path), tmp_path / "out"
    assert main(run_args(spec, out, "--memory-budget", "1B")) == 2
    assert "over the memory budget of 1 B" in one_line_error(capsys)
    assert not out.exists()
    assert main(run_args(spec, out)) == 0


def test_huge_specs_are_refused_before_memory_grows(tmp_path):
    """A 10^7-run grid and 10^9 log points are refused in well under a second of work and
    without the run table or the results being allocated."""
    tracemalloc.start()
    try:
        axes = {name: list(range(1, 11)) for name in ("seed", "d_in", "d_out", "n_test", "n_train")}
        for spec in (
            dict(task="linear", axes=axes | {"gamma": [0.1 * i for i in range(10)], "lr": [1, 2]}),
            dict(task="linear", log_points=10**9),
            dict(
                task="linear",
                params={"d_in": 2},
                axes={"seed": list(range(100))},
                log_points=10**5,
                steps=10**12,
                eps=list(np.geomspace(1e-9, 1, 1000)),
            ),
        ):
            with pytest.raises(gs.SpecError):
                gs.prepare(gs.Sweep.from_dict(spec), memory_budget=2**30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_the_api_takes_numpy_numbers_and_arrays_and_refuses_none_as_a_task():
    numpy = gs.Sweep(
        "linear",
        params={"d_in": np.int64(20), "lr": np.float32(0.5), "optimizer": np.str_("gd")},
        axes={"gamma": np.array([0.0, 0.1]), "seed": np.arange(2)},
        steps=np.int32(100),
        eps=np.array([1e-3]),
    )
    plain = gs.Sweep(
        "linear",
        params={"d_in": 20, "lr": 0.5, "optimizer": "gd"},
        axes={"gamma": [0.0, 0.1], "seed": [0, 1]},
        steps=100,
        eps=[1e-3],
    )
    assert numpy == plain and numpy.to_toml() == plain.to_toml()
    assert gs.Sweep("linear", params=None, axes=None) == gs.Sweep("linear")
    for bad in (dict(task=None), dict(task="linear", params=[1]), dict(task="linear", axes=5)):
        with pytest.raises(gs.SpecError):
            gs.Sweep(**bad)
    with pytest.raises(gs.SpecError, match="memory_budget"):
        gs.prepare(plain, memory_budget=float("nan"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_sweep_or_one_spec_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "spec.toml"
    path.write_bytes(content)
    try:
        gs.Sweep.from_toml(path)
    except gs.SpecError as err:
        assert str(err) and "\n" not in str(err)


toml_values = st.recursive(
    st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=5),
        st.booleans(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD_NAMES = ["task", "steps", "log_points", "eps", "measures", "params", "axes"]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(FIELD_NAMES), toml_values, max_size=5),
    st.dictionaries(
        st.sampled_from(["d_in", "lam", "gamma", "seed", "dtype"]), toml_values, max_size=3
    ),
)
def test_structured_specs_of_any_type_are_a_sweep_or_one_spec_error(fields, params):
    spec = {"task": "linear"} | fields
    if params:
        spec["params"] = params
    try:
        gs.Sweep.from_dict(spec)
    except gs.SpecError as err:
        assert str(err) and "\n" not in str(err)


@pytest.mark.parametrize(
    "delay",
    [
        0.5,
        pytest.param(1.0, marks=pytest.mark.slow),
        2.0,
        pytest.param(3.5, marks=pytest.mark.slow),
    ],
)
def test_ctrl_c_during_start_up_is_a_clean_stop(tmp_path, delay):
    """SIGINT at any moment of start-up (imports, validation, planning, compiling) stops the
    command without a traceback: exit 130 and a line saying so, or, when the sweep had already
    finished, exit 0. (The interpreter's own first 0.1 s, before main runs, are Python's.)"""
    command = RUN + [str(spec_file(tmp_path)), "--out", str(tmp_path / "out"), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert process.returncode in (0, 130), (process.returncode, err)
    if process.returncode == 130:
        assert "interrupted" in err or "stopping" in err


def test_ctrl_c_while_the_finished_command_exits_changes_nothing(tmp_path):
    """Once the command has printed its results, Ctrl-C has nothing left to stop: a burst of
    SIGINTs during the interpreter's exit (JAX's teardown takes a while) leaves exit 0, where
    the interpreter's reset handlers would otherwise die of the signal with no status."""
    spec, out = spec_file(tmp_path), tmp_path / "out"
    assert main(run_args(spec, out)) == 0
    command = RUN + [str(spec), "--out", str(out), *CHUNKS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "results.nc" in line:
            break
    while process.poll() is None:
        process.send_signal(signal.SIGINT)
        time.sleep(0.005)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, (process.returncode, err)
    assert "Traceback" not in err, err


# --- the rest ---------------------------------------------------------------------------------
def test_overwrite_removes_the_figures_of_the_old_sweep(tmp_path):
    out = tmp_path / "out"
    assert main(run_args(spec_file(tmp_path), out)) == 0
    assert (out / "phase_diagram.png").is_file()
    one_axis = SPEC.replace("gamma = [0.0, 0.01]\n", "")
    assert main(run_args(spec_file(tmp_path, one_axis, "one.toml"), out, "--overwrite")) == 0
    assert (out / "delta_t.png").is_file() and not (out / "phase_diagram.png").exists()


def test_a_full_disk_message_names_the_file(tmp_path):
    with pytest.raises(files.OutputError) as err:
        files.write_atomic(tmp_path / "missing" / "x.nc", b"data")
    assert str(err.value).startswith(f"cannot write {tmp_path / 'missing' / 'x.nc'}: ")


def test_the_command_line_module_loads_without_jax():
    """The Ctrl-C handler is installed by main's first line; importing groksweep.cli must not
    first spend seconds importing JAX, where a signal would land unhandled."""
    code = "import sys, groksweep.cli; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert cli.main is main
