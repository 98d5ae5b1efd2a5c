"""Analysis after training, from saved models: the Fourier concentration of a transformer's
number embeddings, recomputed from the models a sweep kept.

Trains the one-layer transformer of ``sweeps/transformer_quick.toml`` on (a + b) mod p with
``save_models = "log"`` (every log point's model is kept, in ``OUT/models``) and the in-run
``fourier_concentration`` measure recorded; then reads every kept model back with
``groksweep.load_models`` and recomputes the measure with numpy alone from its definition (the
fraction of the power of the number-token embedding E = W_E[:p], Fourier-transformed along the
token axis, in its 4 strongest nonzero frequencies, each counted with its conjugate p - w), and
checks that the two agree. Any other analysis of the saved models (Nanda et al.'s progress
measures, a probe before and after grokking) goes the same way.

    python examples/fourier_from_saved_models.py                      # 12 runs, p = 23: ~1 min
    python examples/fourier_from_saved_models.py --tiny --out /tmp/x  # what the tests run
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import numpy as np

import groksweep as gs

SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "transformer_quick.toml"
TINY = [
    "params.p=11",
    "params.d_model=8",
    "params.n_heads=2",
    "params.d_mlp=16",
    "steps=100",
    "log_points=5",
    "axes.frac=[0.5, 0.8]",
    "axes.seed=[0]",
]
FREQUENCIES = 4


def fourier_concentration(embedding: np.ndarray, k: int) -> float:
    """The fraction of the power of ``embedding`` (p tokens x d) in its ``k`` strongest
    nonzero frequencies w = 1 .. p // 2 (the power of w and p - w together), summed over the d
    dimensions, of the total power, the constant component included."""
    p = embedding.shape[0]
    power = (np.abs(np.fft.fft(embedding.astype(np.float64), axis=0)) ** 2).sum(axis=1)
    paired = [power[w] + (power[p - w] if p - w != w else 0.0) for w in range(1, p // 2 + 1)]
    return float(np.sort(paired)[::-1][:k].sum() / power.sum())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/examples/fourier"), help="folder")
    parser.add_argument(
        "--tiny",
        action="store_true",
        default=bool(os.environ.get("GROKSWEEP_EXAMPLES_TINY")),
        help="two runs at p = 11, 100 steps (also: GROKSWEEP_EXAMPLES_TINY=1)",
    )
    args = parser.parse_args(argv)

    sweep = gs.Sweep.from_toml(SPEC, ["save_models=log", *(TINY if args.tiny else [])])
    models = args.out / "models"
    ds = gs.run(sweep, progress=not args.tiny, models_dir=models)
    p = sweep.params["p"]
    k = min(FREQUENCIES, p // 2)

    worst = 0.0
    print(f"{'frac':>5} {'seed':>4}  concentration at step 0 -> {sweep.steps} (recorded | saved)")
    for run, labels in enumerate(_grid(sweep)):
        kept = gs.load_models(models, run=run)  # every kept step -> the model, a dict of arrays
        steps = sorted(kept)
        recomputed = np.array([fourier_concentration(kept[s]["W_E"][:p], k) for s in steps])
        recorded = ds["fourier_concentration"].sel(labels).sel(time=steps).values
        worst = max(worst, float(np.max(np.abs(recomputed - recorded))))
        print(
            f"{labels['frac']:5.2f} {labels['seed']:4d}  {recorded[0]:.4f} -> {recorded[-1]:.4f} | "
            f"{recomputed[0]:.4f} -> {recomputed[-1]:.4f}"
        )
    print(f"largest difference between the recorded and the recomputed measure: {worst:.1e}")
    if worst > 1e-5:
        raise SystemExit("the measure recomputed from the saved models does not match")
    return worst


def _grid(sweep: gs.Sweep) -> list[dict]:
    """Each run's grid labels, in the grid's C order: the run indices of load_models."""
    return [dict(zip(sweep.axes, point)) for point in itertools.product(*sweep.axes.values())]


if __name__ == "__main__":
    main()
