"""The digits task (groksweep.tasks.digits): its data against scikit-learn's own copy, the split,
and, in the slow tier, Omnigrok's grokking on real images at a CPU size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import groksweep as gs
from groksweep.tasks import get_task
from groksweep.tasks.base import Stream, stream

TASK = get_task("digits")


def _data(seed, n_train, n_test):
    """The seed's data as the task draws it (eagerly: compiling costs more than drawing)."""
    shape = {"n_train": n_train, "n_test": n_test, "width": 8, "depth": 1}
    with jax.enable_x64(True):
        data = TASK.data(stream(jax.random.key(seed), Stream.DATA), shape, jnp.float64)
    return {k: np.asarray(v) for k, v in data.items()}


def _image_index(images, x):
    """Index of each row of ``x`` among scikit-learn's images scaled to [0, 1] (the first of
    equal images); pixels k/16 are exact in binary, so rows compare exactly."""
    index = {}
    for i, image in enumerate(images):
        index.setdefault(image.tobytes(), i)
    found = [index.get(row.tobytes()) for row in np.asarray(x, images.dtype)]
    assert None not in found, "a row is no digit image"
    return np.array(found)


def test_data_are_sklearns_images_scaled_and_split_at_random():
    bunch = load_digits()
    images = bunch.data / 16.0
    assert images.shape == (1797, 64) and images.max() == 1.0 and images.min() == 0.0
    d = _data(0, 300, 200)
    assert d["x_train"].shape == (300, 64) and d["x_test"].shape == (200, 64)
    assert d["y_train"].shape == (300, 10)
    train, test = _image_index(images, d["x_train"]), _image_index(images, d["x_test"])
    # One-hot labels of the right image (duplicated images carry equal labels: checked).
    for x_idx, y in ((train, d["y_train"]), (test, d["y_test"])):
        np.testing.assert_array_equal(y, np.eye(10)[bunch.target[x_idx]])
    distinct = np.unique(images, axis=0, return_index=True)[1]
    assert len(distinct) > 1700  # few duplicates, so disjoint indices mean disjoint images
    assert not set(train) & set(test)
    assert len(set(train)) > 290 and len(set(test)) > 190
    # All ten classes on both sides, and a random order: not sklearn's first images.
    assert set(bunch.target[train]) == set(range(10)) == set(bunch.target[test])
    assert not np.array_equal(np.sort(test), np.arange(200))
    # Fewer training images are a prefix; the test set does not move; seeds differ.
    smaller = _data(0, 120, 200)
    np.testing.assert_array_equal(smaller["x_train"], d["x_train"][:120])
    np.testing.assert_array_equal(smaller["x_test"], d["x_test"])
    assert not np.array_equal(_data(1, 120, 200)["x_test"], d["x_test"])


def test_defaults_and_a_too_large_split():
    run = gs.Sweep("digits").runs()[0]
    assert (run["n_train"], run["n_test"], run["width"], run["depth"]) == (1000, 797, 200, 2)
    assert (run["optimizer"], run["lr"], run["gamma"], run["init_scale"]) == (
        "adamw",
        1e-3,
        0.01,
        8.0,
    )
    assert run["predictor"] == "plain"
    with pytest.raises(gs.SpecError, match="n_train \\+ n_test = 1800 exceeds the 1797"):
        gs.Sweep("digits", params={"n_train": 1000, "n_test": 800}).runs()


# Measured (busy 2-core CPU, ~17 s): from init_scale 8 with AdamW lr 1e-3 and weight decay 0.1
# the train accuracy reaches 0.99 at step ~3300 with the test accuracy at 0.26, the test accuracy
# passes 0.8 at ~8500, and the weight norm ends at 0.36 of its start. The same weights with the
# output scaled by alpha = 0.01 (Kumar et al. Fig. 6(a)) fit at step ~300 with the test accuracy
# already at 0.9: no grokking (docs/EXPERIMENTS.md, sweeps/digits_grokking.py, digits_alpha.py).
@pytest.mark.slow
def test_digits_grok_from_a_large_initialisation_and_alpha_removes_it():
    sweep = gs.Sweep(
        "digits",
        params={"n_train": 200, "width": 100, "gamma": 0.1, "predictor": "plain"},
        axes={"alpha": [1.0, 0.01]},
        steps=12_000,
        log_points=40,
    )
    ds = gs.run(sweep, progress=False).isel(seed=0)
    t_train = gs.grokking_time(ds, level=0.99).t_train
    t_test = gs.grokking_time(ds, level=0.8).t_test
    test_at_fit = [
        float(ds.test_acc.sel(alpha=a).interp(time=float(t_train.sel(alpha=a))))
        for a in (1.0, 0.01)
    ]
    # alpha = 1: Omnigrok's grokking (NaN, never reached, fails the comparisons too).
    assert float(t_test.sel(alpha=1.0)) > 2 * float(t_train.sel(alpha=1.0))
    assert test_at_fit[0] < 0.5
    norm = ds.weight_norm.sel(alpha=1.0)
    assert float(norm[-1]) < 0.6 * float(norm[0])  # decay did the shrinking
    # alpha = 0.01 from the very same weights: the test accuracy rises with the train accuracy.
    start = ds.weight_norm.isel(time=0).values
    assert start[0] == start[1]
    assert float(t_test.sel(alpha=0.01)) <= float(t_train.sel(alpha=0.01)) < 1000
    assert test_at_fit[1] > 0.85
