"""k-sparse parity (Barak et al. 2022) learnt by a 2-layer ReLU MLP: a groksweep plugin task.

The inputs are n_bits random signs, the label is the product of the first k of them. The MLP
needs its biases: without them relu(z) - relu(-z) = z makes its odd part linear, and the parity
of an odd number of bits is odd with no linear part.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from groksweep import ModelTask, Param
from groksweep.tasks import draws


class SparseParity(ModelTask):
    name = "sparse_parity"
    params = {
        "n_bits": Param(int, 20, "static", "input bits", ge=1),
        "k": Param(int, 3, "static", "bits in the parity (the first k)", ge=1),
        "width": Param(int, 128, "static", "hidden units", ge=1),
        "n_train": Param(int, 500, "padded", "training samples", ge=1),
        "n_test": Param(int, 2000, "static", "test samples", ge=1),
    }
    optimizer_defaults = {"optimizer": "adamw", "lr": 0.01, "gamma": 0.1}
    loss, accuracy = "mse", "sign"  # labels are +-1: squared error, and the output's sign

    def init(self, key, shape):
        n_bits, width = shape["n_bits"], shape["width"]
        return eqx.nn.MLP(n_bits, "scalar", width, depth=1, activation=jax.nn.relu, key=key)

    def data(self, key, shape, dtype):
        data = {}
        for i, role in enumerate(("train", "test")):
            size = (shape[f"n_{role}"],)  # rows: prefix-stable, n_train = 200 sees 400's first
            x = draws.signs(draws.stream(key, i), size, (shape["n_bits"],), dtype)
            data |= {f"x_{role}": x, f"y_{role}": jnp.prod(x[:, : shape["k"]], axis=1)}
        return data
