"""Handwritten digits (scikit-learn's bundled 8x8 images) learnt by a ReLU MLP from a large
initialisation with weight decay: the Omnigrok grokking on real inputs (Liu, Michaud & Tegmark
2022, their MNIST setting; Kumar, Bordelon, Gershman & Pehlevan §6 / Fig. 6(a)). Written on the
public task API, a :class:`~groksweep.ModelTask`.

Data
----
The 1797 images of ``sklearn.datasets.load_digits`` (shipped with scikit-learn: nothing is
downloaded), 64 pixels with intensities 0-16 scaled to [0, 1] (as MNIST's ToTensor), labels
0-9. Each seed orders the images at random (:func:`groksweep.tasks.draws.order`): the first
``n_test`` are the test set, the next ``n_train`` the training set, so a run with fewer training
images sees a prefix of a larger one's and every run of a seed is tested on the same images.

Model and loss
--------------
An MLP 64 -> width -> ... -> 10 with ``depth`` hidden ReLU layers and biases (equinox's
``MLP``, its default initialisation: weights and biases uniform in +-1/sqrt(fan_in)), every
array multiplied by ``init_scale`` (Omnigrok's alpha, 8 in their MNIST figure); the prediction
is alpha f(x) (``predictor = "plain"``) or Kumar et al.'s centred alpha (f(x) - f(x; theta_0)).
The loss is Omnigrok's mean squared error against the one-hot label (mean over the 10 outputs),
the accuracy the argmax.

Defaults
--------
Omnigrok's MNIST setting where it carries over: width 200, depth 2 (three linear layers),
init_scale 8, the plain predictor, MSE, AdamW at lr 1e-3 with weight decay 0.01
(``gamma``), 1000 training images; full batch rather than their batches of 200, and 797 test
images (the rest of the 1797).

=========== ======= ======= ============================================================
name        role    default meaning
=========== ======= ======= ============================================================
n_train     padded  1000    training images (n_train + n_test <= 1797)
n_test      static  797     test images
width       static  200     hidden width
depth       static  2       hidden layers
predictor   static  plain   plain alpha f(x), or centred alpha (f(x) - f(x; theta_0))
alpha       traced  1       output scale
init_scale  traced  8       multiplier of the initial weights and biases
=========== ======= ======= ============================================================
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from groksweep.errors import SpecError
from groksweep.params import Param
from groksweep.tasks import draws
from groksweep.tasks.base import OUTPUT_SCALE_PARAMS
from groksweep.tasks.model import ModelTask

N_IMAGES, N_PIXELS, N_CLASSES = 1797, 64, 10


@functools.cache
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 images (pixels scaled to [0, 1]) and their labels, from scikit-learn's bundled
    copy (imported here: scikit-learn takes a second to import)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int32)


class Digits(ModelTask):
    """Omnigrok-style grokking of 8x8 digits (sklearn); defaults: init x8, AdamW, wd 0.01."""

    name = "digits"
    params: ClassVar[dict[str, Param]] = {
        "n_train": Param(int, 1000, "padded", "training images", ge=1),
        "n_test": Param(int, 797, "static", "test images", ge=1),
        "width": Param(int, 200, "static", "hidden width", ge=1),
        "depth": Param(int, 2, "static", "hidden ReLU layers", ge=1),
        **OUTPUT_SCALE_PARAMS,
        # Omnigrok's network is plain, started at 8 times the standard scale.
        "predictor": replace(OUTPUT_SCALE_PARAMS["predictor"], default="plain"),
        "init_scale": replace(OUTPUT_SCALE_PARAMS["init_scale"], default=8.0),
    }
    optimizer_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adamw", "lr": 1e-3, "gamma": 0.01}
    loss, accuracy = "mse", "argmax"
    # Small sizes for groksweep.testing.check_task (tests/test_contract.py).
    example_params: ClassVar[dict[str, Any]] = {
        "n_train": 40,
        "n_test": 30,
        "width": 16,
        "depth": 1,
        "optimizer": "gd",
        "lr": 0.05,
    }

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        if values["n_train"] + values["n_test"] > N_IMAGES:
            raise SpecError(
                f"n_train + n_test = {values['n_train'] + values['n_test']} exceeds the "
                f"{N_IMAGES} digit images"
            )
        return values

    def init(self, key, shape):
        return eqx.nn.MLP(N_PIXELS, N_CLASSES, shape["width"], shape["depth"], jax.nn.relu, key=key)

    def data(self, key, shape, dtype):
        images, labels = load_digits()
        order = draws.order(key, N_IMAGES)
        n_test = shape["n_test"]
        test, train = order[:n_test], order[n_test : n_test + shape["n_train"]]
        x, y = jnp.asarray(images, dtype), jax.nn.one_hot(labels, N_CLASSES, dtype=dtype)
        return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
