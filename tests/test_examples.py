"""The scripts in examples/ run, at tiny size, as their command lines would run them (in this
process, to share its JAX start-up: ``python examples/NAME.py --tiny``)."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--tiny", *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_phase_diagram_draws_a_png(tmp_path, monkeypatch, capsys):
    run_example("phase_diagram.py", "--out", str(tmp_path), monkeypatch=monkeypatch)
    figure = tmp_path / "phase_diagram.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cells grok" in capsys.readouterr().out


def test_own_loop_brackets_the_target_and_sets_the_theory_beside_it(monkeypatch, capsys):
    run_example("own_loop.py", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "round 2: Δt = 1000 lies between" in out
    rows = [line.split() for line in out.splitlines() if line[:1] == " " and "λ" not in line]
    assert len(rows) >= 4 and all(float(value) > 0 for row in rows for value in row)
    # the trained bracket holds the d_in = 20 answer, near the theory's (finite-size shift)
    trained, predicted = map(
        float, re.search(r"λ ≈ ([\d.]+) trained .*, ([\d.]+) in the", out).groups()
    )
    assert 0.2 < trained < 0.9 and abs(trained - predicted) < 0.15


def test_benchmark_reports_a_rate(monkeypatch, capsys):
    run_example("benchmark.py", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    rate = float(out.split("s, ")[-1].split()[0])
    assert rate > 0 and "run-steps/s" in out


@pytest.mark.slow
def test_fourier_from_saved_models_recomputes_the_recorded_measure(tmp_path, monkeypatch, capsys):
    run_example("fourier_from_saved_models.py", "--out", str(tmp_path), monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    worst = float(out.split("recomputed measure: ")[1].split()[0])
    assert worst < 1e-5
    assert len(list((tmp_path / "models").glob("*.nc"))) >= 1
    rows = [line.split() for line in out.splitlines()[1:-1]]
    assert len(rows) == 2  # the tiny sweep's two runs, each recorded | recomputed
    for row in rows:
        assert row[2:5] == row[6:9]  # the first and last values, to 4 digits
