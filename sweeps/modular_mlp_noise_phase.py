"""Doshi, Das, He & Gromov (*To grok or not to grok*, ICLR 2024): the phase diagram of the
modular MLP on corrupted labels, label noise x train fraction x weight decay.

A fraction ``label_noise`` of the training pairs of (a + b) mod p gets a wrong label (test labels
stay clean, arithmetic.noisy_labels); the network is the square-activation, mean-field MLP of
sweeps/modular_mlp_quick.toml (MSE on one-hot targets, AdamW lr 0.03, decoupled weight decay
gamma). Every axis is traced: one compiled program for the whole grid.

Each run's phase is read from its final accuracies, train accuracy on the noisy labels and test
accuracy on clean ones, by :func:`phase_of` (thresholds ``GENERALISES``, ``FITS``,
``MEMORISED``):

- ``fails to fit``: train accuracy below FITS (1 - noise), not even the clean pairs are learnt
  (too much weight decay: Doshi et al.'s forgetting / confusion);
- ``memorises``: fits, but test accuracy below GENERALISES;
- ``generalises, memorises noise``: test accuracy above GENERALISES and more than half of the
  corrupted labels fitted too (train accuracy >= 1 - noise (1 - MEMORISED)); Doshi et al.'s
  coexistence;
- ``generalises, rejects noise``: test accuracy above GENERALISES with most corrupted labels
  predicted by the rule, not memorised (Doshi et al.'s inversion). At noise 0 the two
  generalising phases coincide (shown as the second).

A cell shows the phase of the seed median of the two accuracies. The figure has one panel
frac x gamma per noise level; the table lists the seed medians and the share of the corrupted
labels fitted, (train accuracy - (1 - noise)) / noise (about 0 when the rule predicts them, 1
when all are memorised, if the clean pairs are fitted). Measured: docs/EXPERIMENTS.md, "Frontier
knobs: headline numbers".

    python sweeps/modular_mlp_noise_phase.py [--full] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp
import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

import groksweep as gs

GENERALISES = 0.9  # final test accuracy (clean labels)
FITS = 0.9  # share of the clean training pairs' accuracy, 1 - noise, that counts as fitted
MEMORISED = 0.5  # share of the corrupted labels fitted that counts as memorising the noise
PHASES = (
    "fails to fit",
    "memorises",
    "generalises, memorises noise",
    "generalises, rejects noise",
)
COLOURS = ("#9e9e9e", "#d62728", "#ff7f0e", "#2ca02c")


def sweep(full: bool) -> gs.Sweep:
    if full:
        base, seeds, steps = {"p": 31, "d_h": 100}, list(range(4)), 10_000
        noises, fracs = [0.0, 0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        gammas = [0.0, 0.03, 0.1, 0.3, 0.6, 1.0]
    else:
        base, seeds, steps = {"p": 23, "d_h": 48}, [0, 1], 3000
        noises, fracs = [0.0, 0.15, 0.3], [0.3, 0.5, 0.7, 0.9]
        gammas = [0.0, 0.1, 0.3, 0.6, 1.0]
    return gs.Sweep(
        "modular_mlp",
        params=base
        | {
            "op": "add",
            "activation": "square",
            "parametrisation": "mean_field",
            "loss": "mse",
            "optimizer": "adamw",
            "lr": 0.03,
        },
        axes={"label_noise": noises, "frac": fracs, "gamma": gammas, "seed": seeds},
        steps=steps,
        log_points=30,
    )


def phase_of(train_acc, test_acc, noise):
    """The index into :data:`PHASES` of final accuracies and the label noise (numpy arrays)."""
    fits = train_acc >= FITS * (1 - noise)
    memorised_noise = train_acc >= 1 - noise * (1 - MEMORISED)
    generalises = test_acc >= GENERALISES
    phase = np.where(generalises, np.where(memorised_noise & (noise > 0), 2, 3), 1)
    return np.where(fits, phase, 0)


def main() -> None:
    args = rp.arguments("modular_mlp_noise_phase", __doc__.splitlines()[0])
    spec = sweep(args.full)
    ds, _ = rp.train(spec, args)
    final = ds[["train_acc", "test_acc"]].isel(time=-1).median("seed")
    noise_grid = final["label_noise"].broadcast_like(final["train_acc"])
    phase = xr.DataArray(
        phase_of(final["train_acc"].values, final["test_acc"].values, noise_grid.values),
        coords=final["train_acc"].coords,
    )
    gammas, fracs = ds["gamma"].values, ds["frac"].values

    rows = []
    for n in ds["label_noise"].values:
        for f in fracs:
            for g in gammas:
                at = {"label_noise": n, "frac": f, "gamma": g}
                train, test = (float(final[m].sel(at)) for m in ("train_acc", "test_acc"))
                kind = int(phase.sel(at))
                memorised = rp.fixed3((train - (1 - n)) / n) if n > 0 and kind > 0 else "–"
                cells = [rp.fixed3(train), rp.fixed3(test), memorised, PHASES[kind]]
                rows.append([f"{n:g}", f"{f:g}", f"{g:g}", *cells])
    counts = [
        [f"{n:g}"] + [str(int((phase.sel(label_noise=n) == k).sum())) for k in range(len(PHASES))]
        for n in ds["label_noise"].values
    ]
    tables = [
        rp.table(["noise", *PHASES], counts, title="cells per phase (frac × γ)"),
        rp.table(
            [
                "noise",
                "frac",
                "γ",
                "train acc (noisy)",
                "test acc (clean)",
                "noise memorised",
                "phase",
            ],
            rows,
            title=f"seed medians after {spec.steps} steps",
        ),
    ]

    fig, (axes,) = rp.panels(ds.sizes["label_noise"], width=4.2, height=4.0)
    colours = ListedColormap(COLOURS)
    for ax, noise in zip(axes, ds["label_noise"].values):
        cells = phase.sel(label_noise=noise).transpose("gamma", "frac")
        ax.imshow(cells.values, origin="lower", cmap=colours, vmin=-0.5, vmax=len(PHASES) - 0.5,
                  aspect="auto")  # fmt: skip
        test = final["test_acc"].sel(label_noise=noise).transpose("gamma", "frac").values
        for (i, j), value in np.ndenumerate(test):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(fracs)), [f"{f:g}" for f in fracs])
        ax.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas])
        ax.set(xlabel="train fraction", ylabel="weight decay γ", title=f"label noise {noise:g}")
    fig.legend(
        handles=[Patch(color=c, label=name) for c, name in zip(COLOURS, PHASES)],
        loc="outside lower center",
        ncol=len(PHASES),
        fontsize=8,
    )
    fig.suptitle(
        f"(a + b) mod {spec.params['p']}, d_h = {spec.params['d_h']}, AdamW lr 0.03, "
        f"{spec.steps} steps: phase of the seed median (numbers: test accuracy)"
    )
    rp.finish(fig, args, tables)


if __name__ == "__main__":
    main()
