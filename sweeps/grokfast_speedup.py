r"""Grokfast (Lee et al. 2024): how much sooner the one-layer transformer groks modular arithmetic
with the EMA gradient filter g + lamb EMA_alpha(g), as a ratio of grokking times.

The reference setting (their main.py), shrunk for a CPU: full-batch Adam at lr 1e-3, betas
(0.9, 0.98), weight decay gamma added to the gradient as torch.optim.Adam does (``optimizer =
"adam"``), LayerNorm, cross entropy, half of the pairs trained; the filter at their defaults
alpha 0.98, lamb 2. Their headline (x50) compares the filter *with* gamma = 0.005 against a
baseline *without* weight decay; here gamma is an axis, so the filter's own share (same gamma)
and the headline's comparison (gamma 0 baseline) are read from one compiled program: lamb = 0 is
the unfiltered optimizer (tests/test_knobs.py). Differences: one layer instead of two, no
learning-rate warm-up, full batch (their 512 exceeds the quick variant's 264 training pairs).

A seed groks when its test accuracy reaches LEVEL; the ratio is of seed medians, and a baseline
that has not grokked gives a lower bound (its median is then at least the run's length).

Quick: (a + b) mod 23, d_model 32, 4 heads, d_mlp 128, gamma {0, 0.005} x lamb {0, 2}, seeds
0-2, 16000 steps (about 12 min on a 2-core CPU). Full: p = 97 (their modulus), d_model 128,
d_mlp 512, 10^5 steps (an accelerator; not run yet).

    python sweeps/grokfast_speedup.py [--full] [--op add|mul] [--out DIR] [--docs]
"""

from __future__ import annotations

import _reproduce as rp

import groksweep as gs

LEVEL = 0.95
GAMMAS = [0.0, 0.005]
LAMBS = [0.0, 2.0]


def sweep(args) -> gs.Sweep:
    if args.full:
        model, steps = {"p": 97, "d_model": 128, "d_mlp": 512}, 100_000
    else:
        model, steps = {"p": 23, "d_model": 32, "d_mlp": 128}, 16_000
    return gs.Sweep(
        "transformer",
        params=model | {
            "op": args.op, "frac": 0.5, "n_heads": 4, "layer_norm": "pre", "predictor": "plain",
            "loss": "cross_entropy", "optimizer": "adam", "lr": 1e-3, "beta1": 0.9,
            "beta2": 0.98, "grokfast": "ema", "grokfast_alpha": 0.98,
        },
        axes={"gamma": GAMMAS, "grokfast_lamb": LAMBS, "seed": [0, 1, 2]},
        steps=steps,
        log_points=60,
        measures=[],
    )  # fmt: skip


def _options(parser) -> None:
    parser.add_argument("--op", choices=("add", "mul"), default="add",
                        help="the operation (Grokfast's paper: mul)")  # fmt: skip


def main() -> None:
    args = rp.arguments("grokfast_speedup", __doc__.splitlines()[0], extra=_options)
    ds, phase = rp.train(sweep(args), args, level=LEVEL)
    steps = int(ds.time[-1])
    t_test = phase.t_test
    # A seed that never groks is censored at the run's length: its median is then a lower bound.
    censored = t_test.isnull()
    median = t_test.fillna(steps).median("seed")
    lower_bound = censored.sum("seed") * 2 > censored.sizes["seed"]

    def cell(gamma, lamb):
        at = {"gamma": gamma, "grokfast_lamb": lamb}
        value = float(median.sel(at))
        return (f"≥ {steps}" if bool(lower_bound.sel(at)) else rp.fmt(value)), value

    rows, summary = [], {}
    for gamma in ds.gamma.values:
        for lamb in ds.grokfast_lamb.values:
            at = {"gamma": gamma, "grokfast_lamb": lamb}
            text, value = cell(gamma, lamb)
            per_seed = " / ".join(rp.fmt(t) for t in t_test.sel(at).values)
            rows.append([f"{gamma:g}", "none" if lamb == 0 else f"ema α 0.98, λ {lamb:g}",
                         rp.fmt(float(phase.t_train.sel(at).median())), per_seed, text,
                         rp.fmt(float(ds.test_acc.sel(at).isel(time=-1).median()))])  # fmt: skip
            summary[f"gamma{gamma:g}_lamb{lamb:g}"] = {
                "t_test_median": value,
                "lower_bound": bool(lower_bound.sel(at)),
            }

    def speed_up(baseline):
        """t(baseline) / t(filter): a lower bound where the baseline has not grokked, unknown
        where the filter has not."""
        (text, value), (filter_text, filtered) = baseline, cell(GAMMAS[1], LAMBS[1])
        if filter_text.startswith("≥"):
            return "—"
        return ("≥ " if text.startswith("≥") else "") + rp.fmt(value / filtered)

    ratios = [
        ["same γ = 0.005 (the filter's own effect)", speed_up(cell(GAMMAS[1], LAMBS[0]))],
        ["baseline γ = 0 against filter with γ = 0.005 (the paper's ×50)",
         speed_up(cell(GAMMAS[0], LAMBS[0]))],
    ]  # fmt: skip
    summary["ratios"] = {name: value for name, value in ratios}
    tables = [
        rp.table(["γ", "filter", "t_train (median)", f"t_test (acc {LEVEL}, seeds; — : not "
                  "reached)", "t_test median", "final test acc"], rows,
                 title=f"(a {args.op} b) mod {int(sweep(args).params['p'])}, Adam, {steps} steps"),
        rp.table(["comparison", "t_test(no filter) / t_test(filter)"], ratios,
                 title="Grokfast speed-up, ratio of seed medians"),
    ]  # fmt: skip

    fig, (axes,) = rp.panels(2)
    for ax, gamma in zip(axes, ds.gamma.values):
        for lamb in ds.grokfast_lamb.values:
            curve = ds.sel(gamma=gamma, grokfast_lamb=lamb).median("seed")
            label = "no filter" if lamb == 0 else f"EMA α 0.98, λ {lamb:g}"
            (line,) = ax.semilogx(curve.time[1:], curve.test_acc[1:], "-", label=label)
            ax.semilogx(curve.time[1:], curve.train_acc[1:], "--", color=line.get_color())
        ax.set(xlabel="step", ylabel="accuracy (train dashed, test solid; seed median)",
               title=f"weight decay γ = {gamma:g}", ylim=(0, 1.02))  # fmt: skip
        ax.legend(fontsize=8)
    fig.suptitle(f"Grokfast on (a {args.op} b) mod {int(sweep(args).params['p'])}, "
                 "one-layer transformer, Adam")  # fmt: skip
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
