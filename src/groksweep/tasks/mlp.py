"""Teacher-student multilayer perceptrons (Levi, Beck & Bar-Sinai §4 and App. A, F; Kumar,
Bordelon, Gershman & Pehlevan App. 8.1 and 8.3.1).

Model
-----
Teacher and student share one architecture: widths (d_in, d_h, ..., d_h, d_out) with ``depth``
hidden layers of width ``d_h``, an entry-wise ``activation`` sigma after every hidden layer, a
linear output layer and no biases. With weights W_0 (d_in x d_h), W_1 ... W_{depth-1}
(d_h x d_h) and W_depth (d_h x d_out), and inputs as rows of X,

    f(X; W) = sigma(... sigma(sigma(X W_0) W_1) ...) W_depth        (eq. 16 for depth = 1).

``activation = "linear"`` with ``depth = 1`` is the solvable two-layer linear network of §4.1,
f(x) = S_1^T S_0^T x; ``"tanh"`` is §4.2 / Fig. 4 (right) and Kumar et al.'s student-teacher
task (App. 8.3.1: 5-100-100-5 with tanh is ``d_in = 5, d_h = 100, depth = 2, d_out = 5``).

Parameters (besides the engine's seed, dtype, method and optimizer ones: lr, gamma, betas)
----------------------------------------------------------------------------------------
=============  =========  ===========  ======================================================
name           role       default      meaning
=============  =========  ===========  ======================================================
d_in           static     1000         input dimension
d_h            static     200          width of every hidden layer
depth          static     1            number of hidden layers
activation     static     "tanh"       "linear", "tanh" or "relu", after every hidden layer
init           static     "levi"       "levi" or "standard" (below)
predictor      static     "plain"      "plain" or "centred" (below)
n_test         static     2000         test inputs per seed (a test evaluation costs
                                       n_test d_in d_h, hence fewer than the linear task's 10^4)
lam            alias      0.5          d_in / N_tr; N_tr = round(d_in / lam)
n_train        padded     -            N_tr directly, instead of lam
d_out          padded     5            output dimension
alpha          traced     1            output scale of the predictor
init_scale     traced     1            multiplier of the student's initial weights
noise          traced     0            std of the training-label noise
input_spectrum static     "identity"   "identity" or "power_law" input covariance (below)
decay          traced     1            exponent of the power_law spectrum k^-decay
=============  =========  ===========  ======================================================

Static values (d_h, depth, activation, init, predictor) may be axes: each value is its own
shape bucket, compiled once.

Defaults: ``task = "mlp_teacher_student"`` with no parameters is Levi et al.'s Fig. 4 (right):
the 1000-200-5 tanh network (d_in = 1000, d_h = 200, d_out = 5), Levi init, the plain
predictor, full-batch gd at lr = 0.01 (the engine's default), at lam = 0.5 (the figure does not
print its lam; 0.5 is the other teacher-student tasks' default). Their accuracy threshold
eps = 1e-4 is the sweep's ``eps``, not a task parameter (tests/test_defaults.py). Kumar et
al.'s student-teacher setting (App. 8.3.1) is set explicitly in sweeps/mlp_lazy_rich.py.

Initialisation (``init``, teacher and student alike, layer l mapping d_{l-1} -> d_l):

- ``"levi"`` (default): entries N(0, 1/(2 d_{l-1} d_l)) (App. A; §4.1: S_0, T_0 ~
  N(0, 1/(2 d_in d_h)), S_1, T_1 ~ N(0, 1/(2 d_out d_h))).
- ``"standard"``: entries N(0, 1/d_{l-1}) (LeCun normal; *not* PyTorch's default uniform).

The student's initial weights are multiplied by ``init_scale`` (sigma in Kumar et al. Fig. 7b;
Liu et al.'s "doubled weight norm" is init_scale = 2); the teacher is never rescaled.

Predictor and output scale (Kumar et al. eq. 7, App. 8.1). With the student's initial weights
theta_0 and the output scale ``alpha``, the student predicts

- ``predictor = "plain"`` (default): alpha f(x; theta) (alpha = 1 is Levi et al.'s model);
- ``predictor = "centred"`` (opt-in): alpha (f(x; theta) - f(x; theta_0)), zero at t = 0.

f(x; theta_0) is computed once per run on the train and test inputs and kept in the run's data
(``f0_train``, ``f0_test``); theta_0 itself is recomputable from the seed's draws. Large alpha is
the lazy (kernel) regime, small alpha the rich one. Gradients scale as alpha and the tangent
kernel as alpha^2: Kumar et al. keep the time scale fixed with lr = eta_0 / alpha^2 for gradient
descent. Adam's step does not scale with the gradient, so there lr = eta_0 / alpha keeps it
fixed, and for AdamW a fixed gamma (docs/EXPERIMENTS.md, *Lazy -> rich*). The engine
does *not* rescale lr: set it yourself (one sweep per alpha with its lr, or an alpha x lr grid
read along its diagonal; axes are Cartesian products). With weight decay the weights shrink
towards 0, where the centred predictor is -alpha f(x; theta_0), not 0.

Data and loss
-------------
N_tr = round(d_in / lam) training inputs x ~ N(0, I_{d_in}) (or ``n_train`` directly), labels
y = f(x; teacher) plus N(0, noise^2) on the training labels only; ``n_test`` fresh test inputs
per seed with clean labels; with ``input_spectrum = "power_law"`` train and test inputs have
covariance R diag(k^-decay) R^T as in the linear task. The loss is PyTorch's mean MSE
(eq. 16 / eq. 39)

    L = 1/(N_tr d_out) sum_i ||prediction(x_i) - y_i||^2,

its gradient comes from autodiff (:meth:`Task.gradient`) and the optimizer is the engine's
(full-batch gd by default, PyTorch weight decay S <- S - lr (grad L + gamma S) on every weight).

Metrics: ``train_loss`` (against the noisy train labels), ``test_loss`` (clean labels),
``train_acc`` / ``test_acc`` per ``eps``: the fraction of samples whose squared error averaged
over the d_out outputs is below eps (as in the linear task, eq. 12), and ``weight_norm``: the
total L2 norm sqrt(sum_l ||W_l||_F^2) of the student's weights (without alpha).

Random draws and padding
------------------------
Draws come from :func:`indexed_normal`: the rows of X (and of the label noise) are prefix-stable
in n_train and the columns of the output layer in d_out, as in :mod:`groksweep.tasks.linear`.
X_train, the label noise and X_test use the same keys as the linear task, so a seed sees the
same inputs in both tasks. Runs are padded to their bucket's largest n_train and d_out: padded
rows are masked out of the loss and metrics, padded output columns are zero in teacher and
student (their gradient is then exactly zero), and all normalisations use the run's own N_tr and
d_out, so a padded run equals the unpadded one. One step costs O(N_tr d_in d_h) (no Gram-matrix
shortcut), so buckets are split where n_train would be padded by more than 2x.

Theory (the linear two-layer network, §4.1, eq. 17-18, App. F)
----------------------------------------------------------------
For ``activation = "linear"``, ``depth = 1``, ``init = "levi"``, ``predictor = "plain"``,
alpha = init_scale = 1 and gd, with D = S_0 S_1 - T (T = T_0 T_1) the flow is
dD/dt = -(2 lr / d_out) (Sigma D S_1^T S_1 + S_0 S_0^T Sigma D). At init S_1^T S_1 ~ I/(2 d_out)
and S_0 S_0^T ~ I/(2 d_in); for d_h >> d_out, d_out << d_in and a frozen kernel this is
dD/dt = -(lr / d_out^2) Sigma D, i.e. eq. 18 with E|D_0|^2 = 1/(2 d_h), implemented (with the
1/d_out of the mean over outputs that the printed eq. 18 lacks) by
:func:`groksweep.theory.losses_two_layer`. Variants follow by the same argument: with
``predictor = "centred"`` the initial residual is -T, so E|D_0|^2 = |T|^2 = 1/(4 d_h) (half the
eq. 18 losses); init_scale sigma and alpha multiply the kernel (hence time) by sigma^2 alpha^2,
and with ``predictor = "plain"`` E|D_0|^2 = (1 + alpha^2 sigma^4)/(4 d_h). The frozen kernel is
the approximation to watch: S_1^T S_1 has eigenvalues (1 +- sqrt(d_out/d_h))^2 / (2 d_out), so
the per-output rates spread by ~ +-2 sqrt(d_out/d_h) and the late-time losses lie above eq. 18
(by ~15-20% after two decades of decay at d_h = 100 d_out; tests/test_mlp.py, which checks
eq. 18, its 1/d_out, the centred halving and lr = eta_0/alpha^2 against training).

With the Levi init the first layer's pre-activations are ~ N(0, 1/(2 d_h)): tanh works in its
linear range and follows the linear network closely (Fig. 4, right; sweeps/mlp_fig4_quick.toml
measures grokking times within 1-2% of the linear ones); ``init = "standard"`` makes teacher and
student visibly nonlinear.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from groksweep.params import Param
from groksweep.tasks.base import (
    DEFAULT_LAM,
    INPUT_PARAMS,
    OUTPUT_SCALE_PARAMS,
    REGRESSION_METRICS,
    Shape,
    Stream,
    Task,
    correlated_inputs,
    indexed_normal,
    input_draws,
    resolve_n_train,
    row_mask,
    sample_metrics,
    stream,
)

ACTIVATIONS = {
    "linear": lambda z: z,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


class MLPTeacherStudent(Task):
    """Teacher-student MLPs; defaults: Levi et al.'s Fig. 4 (right), the 1000-200-5 tanh net."""

    name = "mlp_teacher_student"
    params = {
        "d_in": Param(int, 1000, "static", "input dimension", ge=1),
        "d_h": Param(int, 200, "static", "hidden width (every hidden layer)", ge=1),
        "depth": Param(int, 1, "static", "number of hidden layers", ge=1),
        "activation": Param(
            str, "tanh", "static", "hidden-layer activation", choices=tuple(ACTIVATIONS)
        ),
        "init": Param(
            str, "levi", "static",
            "weight init: levi N(0, 1/(2 fan_in fan_out)) or standard N(0, 1/fan_in)",
            choices=("levi", "standard"),
        ),
        **OUTPUT_SCALE_PARAMS,
        # Levi et al.'s model is plain; Kumar et al.'s centred predictor is opt-in.
        "predictor": replace(OUTPUT_SCALE_PARAMS["predictor"], default="plain"),
        "n_test": Param(int, 2_000, "static", "test inputs per seed", ge=1),
        "lam": Param(float, None, "alias", f"d_in / N_tr (default {DEFAULT_LAM})", gt=0),
        "n_train": Param(int, None, "padded", "training samples N_tr (instead of lam)", ge=1),
        "d_out": Param(int, 5, "padded", "output dimension", ge=1),
        "noise": Param(float, 0.0, "traced", "std of training-label noise", ge=0),
        **INPUT_PARAMS,
    }
    metrics = REGRESSION_METRICS
    # A step costs N_tr d_in d_h: padding n_train wastes work in proportion; d_out is cheap.
    max_padding = {"n_train": 2.0, "d_out": 4.0}
    shared_by = ("n_train", "decay")
    overrides = ("x_train", "x_test")  # correlated inputs replace the draws' standard normal ones

    def resolve(self, values: dict[str, Any], given: set[str]) -> dict[str, Any]:
        return resolve_n_train(values, given)

    def sample(self, key: Array, shape: Shape, dtype: Any) -> dict[str, Array]:
        d_in, d_h, n_train, d_out = shape["d_in"], shape["d_h"], shape["n_train"], shape["d_out"]
        # The linear task's input streams (same inputs for a seed); the layers' streams.
        train, noise, test, output = (
            stream(key, s)
            for s in (Stream.X_TRAIN, Stream.LABEL_NOISE, Stream.X_TEST, Stream.OUTPUT_LAYER)
        )
        draws = {
            "x_train": indexed_normal(train, (n_train,), (d_in,), dtype),
            "label_noise": indexed_normal(noise, (n_train, d_out), (), dtype),
            "x_test": indexed_normal(test, (shape["n_test"],), (d_in,), dtype),
        }
        for layer in range(shape["depth"]):
            fan_in = d_in if layer == 0 else d_h
            # (fan_in, teacher/student, d_h): both networks from one draw.
            w = indexed_normal(stream(key, Stream.HIDDEN_LAYERS, layer), (fan_in,), (2, d_h), dtype)
            draws[f"teacher_{layer}"], draws[f"student_{layer}"] = w[:, 0], w[:, 1]
        # (column, teacher/student, d_h), prefix-stable in d_out like the linear task's weights.
        w = indexed_normal(output, (d_out,), (2, d_h), dtype)
        draws["teacher_out"], draws["student_out"] = w[:, 0].T, w[:, 1].T
        return draws | input_draws(key, shape, dtype)

    def share(self, draws, hp, shape):
        inputs = correlated_inputs(draws, hp, shape)
        x = inputs.get("x_train", draws["x_train"])
        rows = row_mask(shape["n_train"], hp["n_train"], x.dtype)
        return inputs | {"rows": rows}

    def setup(self, data, hp, shape):
        dtype = data["x_train"].dtype
        cols = row_mask(shape["d_out"], hp["d_out"], dtype)
        scales = layer_scales(shape, hp["d_out"].astype(dtype))
        names = [f"{{}}_{layer}" for layer in range(shape["depth"])] + ["{}_out"]
        teacher = [data[n.format("teacher")] * s for n, s in zip(names, scales)]
        student = [hp["init_scale"] * data[n.format("student")] * s for n, s in zip(names, scales)]
        teacher[-1], student[-1] = teacher[-1] * cols, student[-1] * cols
        act = ACTIVATIONS[shape["activation"]]
        run = {
            "y_train": forward(teacher, data["x_train"], act)
            + hp["noise"] * data["label_noise"] * data["rows"][:, None] * cols,
            "y_test": forward(teacher, data["x_test"], act),
        }
        if shape["predictor"] == "centred":
            run["f0_train"] = forward(student, data["x_train"], act)
            run["f0_test"] = forward(student, data["x_test"], act)
        return student, run

    def objective(self, model, data, hp):
        rows = data["rows"][:, None]
        residual = (self.predict(model, data, hp, "train") - data["y_train"]) * rows
        n = hp["n_train"].astype(residual.dtype)
        return jnp.sum(residual**2) / (n * hp["d_out"].astype(residual.dtype))

    def predict(self, model, data, hp, which):
        """The student's prediction on the train or test inputs (padded rows and columns too)."""
        f = forward(model, data[f"x_{which}"], ACTIVATIONS[self.shape["activation"]])
        if f"f0_{which}" in data:
            f = f - data[f"f0_{which}"]
        return hp["alpha"] * f

    def probe(self, model, data, hp, n):
        test = {"x_test": data["x_test"][:n]}
        if "f0_test" in data:
            test["f0_test"] = data["f0_test"][:n]
        return self.predict(model, test, hp, "test"), data["y_test"][:n]

    def evaluate(self, model, data, hp, eps):
        rows = data["rows"]
        d_out = hp["d_out"].astype(rows.dtype)
        train_err, test_err = (
            jnp.sum((self.predict(model, data, hp, role) - data[f"y_{role}"]) ** 2, axis=1) / d_out
            for role in ("train", "test")
        )
        return sample_metrics(train_err, test_err, rows, eps) | {
            "weight_norm": jnp.sqrt(sum(jnp.sum(w**2) for w in model))
        }


def layer_scales(shape: Shape, d_out: Array) -> list[Array]:
    """Standard deviations of each layer's weights (hidden layers, then the output layer) for
    the run's own ``d_out`` (a traced scalar): levi 1/sqrt(2 d_{l-1} d_l), standard
    1/sqrt(d_{l-1})."""
    widths = [shape["d_in"]] + [shape["d_h"]] * shape["depth"]
    one = jnp.ones_like(d_out)
    if shape["init"] == "levi":
        hidden = [one / math.sqrt(2.0 * a * b) for a, b in itertools.pairwise(widths)]
        return [*hidden, one / jnp.sqrt(2.0 * shape["d_h"] * d_out)]
    return [one / math.sqrt(a) for a in widths]


def forward(weights: list[Array], x: Array, act) -> Array:
    """f(X; W): the activation after every hidden layer, a linear output layer, no biases."""
    h = x
    for w in weights[:-1]:
        h = act(h @ w)
    return h @ weights[-1]
