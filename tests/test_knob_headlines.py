"""The headline results of the frontier knobs, at a small size (docs/EXPERIMENTS.md, "Frontier
knobs: headline numbers"; the knobs themselves are checked against reference code in
tests/test_knobs.py).

The thresholds come from measured runs (float32 on a 2-core CPU) with a margin; each test
compares two settings that differ in one knob, so it fails if the knob does nothing.
"""

from __future__ import annotations

import pytest

import groksweep as gs

# The quick setting of sweeps/stablemax_collapse.py at frac 0.6, one seed, half the steps.
STABLEMAX_SETTING = {
    "p": 23, "d_h": 64, "frac": 0.6, "op": "add", "activation": "square",
    "parametrisation": "mean_field", "predictor": "plain", "optimizer": "adam", "lr": 0.03,
    "gamma": 0.0, "dtype": "float32",
}  # fmt: skip


@pytest.mark.slow
def test_stablemax_generalises_further_than_softmax_without_weight_decay():
    """Prieto et al.: without weight decay, StableMax cross-entropy keeps learning after the
    training set is fitted where softmax cross-entropy lags (at this size not because of Softmax
    Collapse: docs/EXPERIMENTS.md). Measured at step 1500 (seed 0): both fit every training
    pair; test accuracy 0.245 with softmax, 0.396 with StableMax (at step 3000: 0.27 and 0.43;
    seed 1: 0.26 and 0.46)."""
    sweep = gs.Sweep("modular_mlp", params=STABLEMAX_SETTING,
                     axes={"loss": ["cross_entropy", "stablemax"]}, steps=1500,
                     log_points=3)  # fmt: skip
    final = gs.run(sweep, progress=False).isel(time=-1).squeeze("seed")
    assert final["train_acc"].values.min() == 1.0
    softmax, stablemax = (
        float(final["test_acc"].sel(loss=k)) for k in ("cross_entropy", "stablemax")
    )
    assert softmax < 0.32
    assert stablemax > 0.35
    assert stablemax - softmax > 0.08


@pytest.mark.slow
def test_softmax_collapse_stops_learning_where_stablemax_keeps_generalising():
    """Prieto et al.'s mechanism: run long enough, float32 softmax cross-entropy collapses
    (every training pair's softmax rounds to exactly 1) and its test accuracy stalls from there;
    StableMax's keeps rising over the same steps. Measured (seed 0): collapse complete at the
    log point 28 291; from there to step 50 000 the softmax test accuracy gains 0.000 (0.420),
    the StableMax one 0.066 (to 0.538)."""
    sweep = gs.Sweep("modular_mlp", params=STABLEMAX_SETTING,
                     axes={"loss": ["cross_entropy", "stablemax"]}, steps=50_000,
                     log_points=20, measures=["softmax_collapse"])  # fmt: skip
    ds = gs.run(sweep, progress=False).squeeze("seed")
    softmax, stablemax = (ds.sel(loss=k) for k in ("cross_entropy", "stablemax"))
    collapsed = softmax["softmax_collapse"].values >= 0.99
    assert collapsed[-1] and not collapsed[: len(collapsed) // 2].any()
    since = int(collapsed.argmax())  # the first log point after the collapse
    gain = {k: float(run["test_acc"][-1] - run["test_acc"][since]) for k, run in
            (("softmax", softmax), ("stablemax", stablemax))}  # fmt: skip
    assert gain["softmax"] <= 0.02
    assert gain["stablemax"] >= 0.04
    assert float(stablemax["test_acc"][-1] - softmax["test_acc"][-1]) >= 0.08
