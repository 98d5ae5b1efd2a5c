"""An independent, exact numpy reference for full-batch GD on the linear teacher-student model.

Nothing here calls groksweep's dynamics: only numpy. The tests feed it the engine's random
draws (from ``task.sample``), so both compute the same trajectories.

Model (Levi, Beck & Bar-Sinai, eq. 1): train inputs X (N x d_in), teacher T and student S
(d_in x d_out), labels y_i = T^T x_i + xi_i (xi = noise * standard normals, train only), loss

    L(S) = 1/(N d_out) sum_i ||S^T x_i - y_i||^2.

With D = S - T, S^T x_i - y_i = D^T x_i - xi_i, so with Sigma = X^T X / N and e = X^T xi / N

    L = (1/d_out) [tr(D^T Sigma D) - 2 tr(D^T e) + sum_i ||xi_i||^2 / N],
    grad_S L = (2/d_out) (Sigma D - e).

Gradient descent with PyTorch weight decay, S <- S - lr (grad L + gamma S), with S = D + T:

    D <- D - lr (2/d_out)(Sigma D - e) - lr gamma (D + T).

In the eigenbasis Sigma = U diag(nu) U^T (tilde-quantities are U^T ...), every row k of
D~ follows its own affine recursion

    D~_{t+1} = r_k D~_t + b_k,   r_k = 1 - lr c_k,   c_k = 2 nu_k / d_out + gamma,
                                 b_k = lr (2 e~_k / d_out - gamma T~_k),

whose exact solution at any integer t is

    D~_t = r_k^t D~_0 + b_k (1 - r_k^t) / (1 - r_k)
         = D~* + r_k^t (D~_0 - D~*),   D~* = b_k / (lr c_k)   (the fixed point, c_k != 0).

The first form is used: it stays exact when c_k = 0 (null directions of Sigma for lam > 1
without weight decay, where D~ stays at D~_0 + t b_k, and b_k = 0 there since X u_k = 0), and
(1 - r^t)/(1 - r) is computed as -expm1(t log1p(-lr c)) / (lr c), without cancellation.

Metrics at step t are computed from the per-sample residuals on the actual samples:
train error_i = ||D_t^T x_i - xi_i||^2 / d_out, test error_i = ||D_t^T x_i||^2 / d_out,
losses are their means, accuracies the fractions with error < eps, weight norm = ||D_t + T||_F.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class ExactLinearGD:
    """Exact GD trajectory of one run, at arbitrary integer steps.

    ``teacher`` and ``student0`` are the already-scaled initial matrices (d_in x d_out);
    ``xi`` is the train-label noise actually added (noise * standard normals, N x d_out).
    """

    def __init__(
        self,
        x_train: np.ndarray,
        teacher: np.ndarray,
        student0: np.ndarray,
        lr: float,
        gamma: float = 0.0,
        xi: np.ndarray | None = None,
        x_test: np.ndarray | None = None,
    ) -> None:
        self.x_train = np.asarray(x_train, dtype=np.float64)
        self.teacher = np.asarray(teacher, dtype=np.float64)
        self.student0 = np.asarray(student0, dtype=np.float64)
        n, d_in = self.x_train.shape
        self.d_out = self.teacher.shape[1]
        self.xi = np.zeros((n, self.d_out)) if xi is None else np.asarray(xi, dtype=np.float64)
        self.x_test = None if x_test is None else np.asarray(x_test, dtype=np.float64)
        self.lr, self.gamma = float(lr), float(gamma)

        sigma = self.x_train.T @ self.x_train / n
        self.nu, self.u = np.linalg.eigh(sigma)
        e = self.x_train.T @ self.xi / n
        self.c = 2.0 * self.nu / self.d_out + self.gamma  # (d_in,)
        self.d0 = self.u.T @ (self.student0 - self.teacher)  # D~_0, (d_in, d_out)
        drive = 2.0 * (self.u.T @ e) / self.d_out - self.gamma * (self.u.T @ self.teacher)
        self.b = self.lr * drive

    # --- the trajectory -----------------------------------------------------------------------
    def _factors(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """r^t and (1 - r^t)/(1 - r) for every direction (rows) and step (columns)."""
        t = np.asarray(t, dtype=np.float64)[None, :]
        x = (self.lr * self.c)[:, None]  # 1 - r
        if np.all(x < 1.0):
            log_r = np.log1p(-x)
            power = np.exp(t * log_r)
            with np.errstate(divide="ignore", invalid="ignore"):
                geom = np.where(x == 0.0, t, -np.expm1(t * log_r) / x)
        else:  # an oscillating (r <= 0) direction: plain powers
            power = np.power(1.0 - x, t)
            with np.errstate(divide="ignore", invalid="ignore"):
                geom = np.where(x == 0.0, t, (1.0 - power) / x)
        return power, geom

    def rotated(self, t: Sequence[int] | np.ndarray) -> np.ndarray:
        """D~_t = U^T (S_t - T) for each step: (len(t), d_in, d_out)."""
        power, geom = self._factors(np.atleast_1d(t))
        return (power.T[:, :, None] * self.d0[None]) + geom.T[:, :, None] * self.b[None]

    def student(self, t: Sequence[int] | np.ndarray) -> np.ndarray:
        """S_t for each step: (len(t), d_in, d_out)."""
        return np.einsum("ij,tjk->tik", self.u, self.rotated(t)) + self.teacher[None]

    def fixed_point(self) -> np.ndarray:
        """S* = T + U D~*, D~* = b / (lr c): where GD goes when every c_k > 0 (gamma > 0 or
        N_tr >= d_in). Nonzero D* with weight decay or label noise."""
        return self.teacher + self.u @ (self.b / (self.lr * self.c[:, None]))

    # --- metrics ------------------------------------------------------------------------------
    def errors(self, role: str, t: Sequence[int] | np.ndarray) -> np.ndarray:
        """Per-sample squared error averaged over outputs: (len(t), n_samples)."""
        x = self.x_train if role == "train" else self.x_test
        if x is None:
            raise ValueError("no test inputs given")
        d = np.einsum("ij,tjk->tik", self.u, self.rotated(t))  # D_t = S_t - T
        n_t, d_in, d_out = d.shape
        # One matrix product for all steps: (n, d_in) @ (d_in, T * d_out).
        resid = (x @ d.transpose(1, 0, 2).reshape(d_in, n_t * d_out)).reshape(-1, n_t, d_out)
        if role == "train":
            resid = resid - self.xi[:, None, :]
        return np.sum(resid**2, axis=2).T / self.d_out

    def metrics(self, t: Sequence[int] | np.ndarray, eps: Sequence[float]) -> dict[str, np.ndarray]:
        """Every metric the engine records, at steps ``t``: scalars (len(t),), accuracies
        (len(t), len(eps))."""
        eps = np.asarray(eps, dtype=np.float64)
        out = {}
        for role in ("train", "test"):
            err = self.errors(role, t)
            out[f"{role}_loss"] = err.mean(axis=1)
            out[f"{role}_acc"] = (err[:, :, None] < eps).mean(axis=1)
        out["weight_norm"] = np.sqrt(np.sum(self.student(t) ** 2, axis=(1, 2)))
        return out

    def accuracy(
        self, role: str, t: Sequence[int] | np.ndarray, eps: float, chunk: int = 64
    ) -> np.ndarray:
        """Accuracy at threshold ``eps`` at steps ``t`` (chunked to bound memory)."""
        t = np.atleast_1d(np.asarray(t))
        parts = [
            (self.errors(role, t[i : i + chunk]) < eps).mean(axis=1)
            for i in range(0, len(t), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    def grokking_step(
        self, role: str, eps: float, level: float, t_max: int, grid_points: int = 200
    ) -> int | None:
        """The first integer step <= t_max at which the ``role`` accuracy reaches ``level``.

        See :func:`first_integer_crossing`; None when it is not reached by ``t_max``.
        """
        accuracy = lambda t: self.accuracy(role, t, eps)  # noqa: E731
        return first_integer_crossing(accuracy, level, t_max, grid_points)


def first_integer_crossing(
    value: Callable[[np.ndarray], np.ndarray],
    level: float,
    t_max: int,
    grid_points: int = 200,
    chunk: int = 256,
) -> int | None:
    """First integer t in [0, t_max] with ``value(t) >= level``, from exact values at integer steps.

    ``value`` (vectorized over an array of steps) need not be monotone. It is evaluated on step
    0 and ``grid_points`` log-spaced integer steps up to ``t_max``; then on *every* integer of the
    bracket (lo, hi] between the last grid step below the level and the first one that reaches
    it. The result t is the first integer of that bracket with value(t) >= level, and value is
    below the level on every grid step before it. Only an excursion above the level that starts
    and ends strictly between two earlier grid steps (a factor t_max^(1/grid_points) apart) could
    be missed; accuracy curves that rise over decades of t, as here, have none of that size.
    """
    log_grid = np.round(np.geomspace(1, t_max, grid_points))
    grid = np.unique(np.concatenate([[0], log_grid]).astype(np.int64))
    reached = np.flatnonzero(value(grid) >= level)
    if len(reached) == 0:
        return None
    k = reached[0]
    if k == 0:
        return 0
    for start in range(int(grid[k - 1]) + 1, int(grid[k]) + 1, chunk):
        steps = np.arange(start, min(start + chunk, int(grid[k]) + 1))
        hit = np.flatnonzero(value(steps) >= level)
        if len(hit):
            return int(steps[hit[0]])
    raise AssertionError("unreachable: the bracket's upper end reaches the level")
