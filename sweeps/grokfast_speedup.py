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
    steps = args.steps or steps
    return gs.Sweep(
        "transformer",
        params=model | {
            "op": args.op, "frac": 0.5, "n_heads": 4, "layer_norm": "pre", "predictor": "plain",
            "loss": "cross_entropy", "optimizer": "adam", "lr": 1e-3, "beta1": 0.9,
            "beta2": 0.98, "grokfast": "ema", "grokfast_alpha": 0.98,
        },
        axes={"gamma": args.gammas, "grokfast_lamb": LAMBS, "seed": list(range(args.seeds))},
        steps=steps,
        log_points=60,
        measures=[],
    )  # fmt: skip


def _options(parser) -> None:
    parser.add_argument(
        "--op", choices=("add", "mul"), default="add", help="the operation (Grokfast's paper: mul)"
    )
    parser.add_argument(
        "--gammas",
        type=float,
        nargs="+",
        default=GAMMAS,
        help=f"weight decays (default {GAMMAS}; the filter runs at the largest)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument("--steps", type=int, help="steps (default 16000, --full 100000)")


def main() -> None:
    args = rp.arguments("grokfast_speedup", __doc__.splitlines()[0], extra=_options)
    spec = sweep(args)
    ds, phase = rp.train(spec, args, level=LEVEL)
    steps = int(ds.time[-1])
    t_test = phase.t_test
    # Censored seeds count as +inf: where half or more never grokked, the median is only known
    # to be past the run's length (reduce_seeds gives NaN there).
    reduced = gs.reduce_seeds(phase)
    median = reduced.t_test_median.fillna(steps)
    lower_bound = reduced.test_censored_fraction >= 0.5

    def cell(gamma, lamb):
        at = {"gamma": gamma, "grokfast_lamb": lamb}
        value, bounded = float(median.sel(at)), bool(lower_bound.sel(at))
        return (f"≥ {steps}" if bounded else rp.fmt(value)), value, bounded

    rows, summary = [], {}
    for gamma in ds.gamma.values:
        for lamb in ds.grokfast_lamb.values:
            at = {"gamma": gamma, "grokfast_lamb": lamb}
            text, value, bounded = cell(gamma, lamb)
            per_seed = " / ".join(rp.fmt(t) for t in t_test.sel(at).values)
            rows.append([f"{gamma:g}", "none" if lamb == 0 else f"ema α 0.98, λ {lamb:g}",
                         rp.fmt(float(phase.t_train.sel(at).median())), per_seed, text,
                         rp.fmt(float(ds.test_acc.sel(at).isel(time=-1).median()))])  # fmt: skip
            summary[f"gamma{gamma:g}_lamb{lamb:g}"] = {
                "t_test_median": value,
                "lower_bound": bounded,
            }

    top = max(args.gammas)  # the filter's weight decay

    def speed_up(baseline):
        """t(baseline) / t(filter): a lower bound where the baseline has not grokked, unknown
        where the filter has not."""
        (_, value, bounded), (_, filtered, filter_bounded) = baseline, cell(top, LAMBS[1])
        if filter_bounded:
            return "—"
        return ("≥ " if bounded else "") + rp.fmt(value / filtered)

    ratios = [[f"same γ = {top:g} (the filter's own effect)", speed_up(cell(top, LAMBS[0]))]]
    if 0.0 in args.gammas and top > 0:
        ratios.append([f"baseline γ = 0 against filter with γ = {top:g} (the paper's ×50)",
                       speed_up(cell(0.0, LAMBS[0]))])  # fmt: skip
    summary["ratios"] = {name: value for name, value in ratios}
    tables = [
        rp.table(["γ", "filter", "t_train (median)", f"t_test (acc {LEVEL}, seeds; — : not "
                  "reached)", "t_test median", "final test acc"], rows,
                 title=f"(a {args.op} b) mod {spec.params['p']}, Adam, {steps} steps"),
        rp.table(["comparison", "t_test(no filter) / t_test(filter)"], ratios,
                 title="Grokfast speed-up, ratio of seed medians"),
    ]  # fmt: skip

    fig, (axes,) = rp.panels(ds.sizes["gamma"] + 1)
    for ax, gamma in zip(axes, ds.gamma.values):
        for lamb in ds.grokfast_lamb.values:
            curve = ds.sel(gamma=gamma, grokfast_lamb=lamb).median("seed")
            label = "no filter" if lamb == 0 else f"EMA α 0.98, λ {lamb:g}"
            (line,) = ax.semilogx(curve.time[1:], curve.test_acc[1:], "-", label=label)
            ax.semilogx(curve.time[1:], curve.train_acc[1:], "--", color=line.get_color())
        ax.set(xlabel="step", ylabel="accuracy (train dashed, test solid; seed median)",
               title=f"weight decay γ = {gamma:g}", ylim=(0, 1.02))  # fmt: skip
        ax.legend(fontsize=8)
    # Seed by seed at the filter's gamma: a run that never grokked sits at the run's length.
    pairs = t_test.sel(gamma=top).fillna(steps)
    scatter = axes[-1]
    scatter.loglog(pairs.sel(grokfast_lamb=LAMBS[0]), pairs.sel(grokfast_lamb=LAMBS[1]), "o")
    for factor, style in ((1, "k-"), (0.5, "k--"), (0.02, "k:")):
        scatter.loglog(
            [10, steps],
            [10 * factor, steps * factor],
            style,
            lw=0.8,
            label=f"{1 / factor:g}× sooner" if factor != 1 else "no speed-up",
        )
    scatter.set(
        xlabel="t_test without the filter (step)",
        ylabel="t_test with the filter",
        title=f"per seed, γ = {top:g} (at {steps}: not grokked)",
        xlim=(10, steps * 1.3),
        ylim=(10, steps * 1.3),
    )
    scatter.legend(fontsize=8)  # fmt: skip
    fig.suptitle(f"Grokfast on (a {args.op} b) mod {spec.params['p']}, "
                 "one-layer transformer, Adam")  # fmt: skip
    rp.finish(fig, args, tables, summary=summary)


if __name__ == "__main__":
    main()
