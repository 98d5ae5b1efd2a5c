"""Throughput of groksweep against the alternatives, on one machine, in one run.

    python benchmarks/bench_linear.py [--quick] [--json results.json]

Workload (issue spec): the linear task, d_in = 200, d_out = 1, lr = 0.01, 20 000 steps,
200 log points, 256 runs (16 lam x 16 seeds), eps = 1e-3, n_test = 10 000. Contenders, each
in its own subprocess so that compile time and peak memory are its own:

1. ``groksweep-step``: ``groksweep.run`` with gradient steps (``method = "step"``);
2. ``groksweep-spectral``: ``groksweep.run`` with its default for this workload, the exact
   spectral jump;
3. ``bare``: a hand-written ``jit(vmap(vmap(scan)))`` of the same Gram-matrix update and the
   same evaluations, on pre-drawn data: the floor for engine overhead; ``bare-chunked`` calls
   it one seed (16 runs) at a time, the cache-sized chunks groksweep picks on a CPU;
4. ``jax-loop``: one jitted run at a time, as a JAX user writes first (a subset of runs,
   throughput extrapolated per run-step);
5. ``torch-loop``: PyTorch, one config at a time, X @ S forward, MSE, backward, SGD step, as
   the papers trained (a subset of runs; needs ``pip install torch==2.13.0``).

The MLP workload (``mlp-*``): a 2-layer tanh teacher-student MLP, 100-100-1, N_tr = 200,
n_test = 1000, lr = 0.05, 5000 steps, 100 log points, 64 runs (4 gammas x 16 seeds), against a
bare ``jit(vmap(scan))`` with autodiff gradients and a PyTorch loop; its ratios are taken
against ``mlp-groksweep``.

``segment-overhead`` trains groksweep-step's workload in segments (as ``groksweep run`` does,
:class:`groksweep.trainer.ChunkTraining`) and in one call per chunk, in one process.

Also measured: data-sharing families against the per-run path on a gamma x d_out grid, the
spectral jump against gradient steps at 10^5 steps, and the machine's peak FLOP/s and memory
bandwidth, against which achieved rates are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

D_IN, D_OUT, LR, STEPS, LOG_POINTS, EPS, N_TEST = 200, 1, 0.01, 20_000, 200, 1e-3, 10_000
LAMS = list(np.round(np.linspace(0.1, 0.9, 16), 4))
SEEDS = list(range(16))


def spec(quick: bool, **params) -> dict:
    seeds = SEEDS[:4] if quick else SEEDS
    return dict(
        task="linear",
        steps=STEPS // 4 if quick else STEPS,
        log_points=LOG_POINTS,
        eps=[EPS],
        params={"d_in": D_IN, "d_out": D_OUT, "lr": LR, "n_test": N_TEST} | params,
        axes={"lam": LAMS, "seed": seeds},
    )


def evaluation_steps(steps: int, log_points: int) -> np.ndarray:
    """The log points after step 0 at which groksweep evaluates, so that every contender
    evaluates as often."""
    from groksweep.spec import log_schedule

    return log_schedule(steps, log_points)[1:]


def flops_per_run_step() -> float:
    """Multiply-adds of one Gram-matrix step, times two."""
    return 2.0 * D_IN * D_IN * D_OUT


def bytes_per_run_step() -> float:
    """Memory traffic of one float32 Gram-matrix step if nothing stays cached: the d_in x d_in
    matrix read, the d_in x d_out weights read and written."""
    return 4.0 * (D_IN * D_IN + 2 * D_IN * D_OUT)


# --- contenders, each run in a subprocess -----------------------------------------------------
STEADY_CALLS = 2


def first_and_steady(program, runs: int, steps: int) -> dict:
    """Time ``program`` once, then ``STEADY_CALLS`` more times: the best of these is the steady
    time (the least disturbed by other load on the machine), the first call's excess over it
    compilation."""
    first = _timed(program)
    steady = min(_timed(program) for _ in range(STEADY_CALLS))
    return {"runs": runs, "steps": steps, "seconds": steady, "compile_s": first - steady}


def groksweep_contender(quick: bool, method: str, share_data: bool = True, sweep=None) -> dict:
    import groksweep as gs

    sweep = gs.Sweep.from_dict(sweep or spec(quick, method=method))
    program = lambda: gs.run(sweep, progress=False, share_data=share_data)  # noqa: E731
    return first_and_steady(program, sweep.n_runs, sweep.steps)


def segment_overhead(quick: bool) -> dict:
    """groksweep-step's workload trained in segments against one call per chunk, in one process,
    the variants' calls interleaved (after one call each that compiles) so that they see the
    same machine; each variant's time is its best call. With a store (as ``groksweep run``),
    every finished chunk is saved, and with 1-second segments the state of a chunk in progress
    every half second."""
    import tempfile

    import groksweep as gs
    from groksweep.store import ChunkStore

    sweep = gs.Sweep.from_dict(spec(quick, method="step"))

    def variant(checkpoint_every, stored):
        def call():
            with tempfile.TemporaryDirectory() as directory:
                store = ChunkStore(directory, sweep.to_toml()) if stored else None
                gs.run(sweep, progress=False, store=store, checkpoint_every=checkpoint_every)

        return call

    variants = {
        "whole": variant(None, False),
        "segmented": variant(180.0, False),
        "whole-stored": variant(None, True),
        "segmented-stored": variant(180.0, True),
        "segments-of-1s-stored": variant(1.0, True),
    }
    for call in variants.values():
        call()
    times = {name: [] for name in variants}
    for _ in range(STEADY_CALLS + 1):
        for name, call in variants.items():
            times[name].append(_timed(call))
    best = {name: min(t) for name, t in times.items()}
    call, save = segment_costs(sweep)
    return {
        "runs": sweep.n_runs,
        "steps": sweep.steps,
        "seconds": best["segmented"],
        "variants_s": best,
        # What segmenting adds, measured apart from the noise of whole runs: per segment, one
        # more call of the program and one save of the chunk's state.
        "segment_call_s": call,
        "state_save_s": save,
        "overhead_of_180s_segments": (call + save) / 180.0,
        "overhead_of_1s_segments": (call + save) / 1.0,
        "segmented_over_whole": best["segmented"] / best["whole"],
        "segmented_over_whole_stored": best["segmented-stored"] / best["whole-stored"],
        "segments_of_1s_over_whole_stored": best["segments-of-1s-stored"] / best["whole-stored"],
    }


def segment_costs(sweep, repeats: int = 20) -> tuple[float, float]:
    """The fixed costs a segment adds to the training of the sweep's first chunk (the units it
    runs cost the same in one call or many): the median time of a call of the segment program
    that runs no unit (dispatch, the carried state handed over, the wait), and of a save of the
    chunk's state to a store (written, checksummed, fsync'ed and renamed, as between segments)."""
    import statistics
    import tempfile

    import numpy as np

    from groksweep import engine, trainer
    from groksweep.store import ChunkStore

    bucket, groups, block = engine.prepare(sweep).buckets[0]
    chunk = next(engine._chunks(bucket, groups))  # the first chunk, as engine.run cuts it
    training = trainer.ChunkTraining(
        sweep.task_def, chunk, sweep.times(), np.asarray(sweep.eps), (), block
    )
    training.advance(1)
    calls = [_timed(lambda: training.advance(0)) for _ in range(repeats)]
    with tempfile.TemporaryDirectory() as directory:
        store = ChunkStore(directory, sweep.to_toml())
        saves = [
            _timed(lambda: store.save_partial("k", block, 1, training.state()))
            for _ in range(repeats)
        ]
    return statistics.median(calls), statistics.median(saves)


def bare_contender(quick: bool, seeds_per_call: int | None = None) -> dict:
    """The same update and evaluations, hand-written: jit(vmap over seeds(vmap over lam(scan))),
    called on all seeds at once or, like groksweep's cache-sized chunks, a few seeds a call."""
    import jax
    import jax.numpy as jnp

    s = spec(quick)
    steps, seeds = s["steps"], s["axes"]["seed"]
    n_max = round(D_IN / min(LAMS))
    n_train = jnp.array([round(D_IN / lam) for lam in LAMS])
    times = evaluation_steps(steps, LOG_POINTS)
    segments = jnp.asarray(np.diff(np.concatenate([[0], times])), jnp.int32)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((len(seeds), n_max, D_IN)), jnp.float32)
    x_test = jnp.asarray(rng.standard_normal((len(seeds), N_TEST, D_IN)), jnp.float32)
    scale = 1 / np.sqrt(2 * D_IN * D_OUT)
    t = jnp.asarray(rng.standard_normal((len(seeds), D_IN, D_OUT)) * scale, jnp.float32)
    s0 = jnp.asarray(rng.standard_normal((len(seeds), D_IN, D_OUT)) * scale, jnp.float32)

    def one_run(x, x_test, t, s0, n):
        rows = (jnp.arange(n_max) < n).astype(jnp.float32)
        xm = x * rows[:, None]
        gram = xm.T @ xm / n

        def metrics(d):
            train_err = jnp.sum((x @ d) ** 2, axis=1) / D_OUT
            test_err = jnp.sum((x_test @ d) ** 2, axis=1) / D_OUT
            return (
                jnp.sum(train_err * rows) / n,
                jnp.mean(test_err),
                jnp.sum((train_err < EPS) * rows) / n,
                jnp.mean(test_err < EPS),
            )

        def segment(d, k):
            d = jax.lax.fori_loop(0, k, lambda _, d: d - LR * (2 / D_OUT) * (gram @ d), d)
            return d, metrics(d)

        return jax.lax.scan(segment, s0 - t, segments)[1]

    per_seed = jax.vmap(one_run, in_axes=(None, None, None, None, 0))
    compiled = jax.jit(jax.vmap(per_seed, in_axes=(0, 0, 0, 0, None)))
    step = seeds_per_call or len(seeds)

    def program():
        for i in range(0, len(seeds), step):
            part = slice(i, i + step)
            jax.block_until_ready(compiled(x[part], x_test[part], t[part], s0[part], n_train))

    return first_and_steady(program, len(seeds) * len(LAMS), steps)


def jax_loop_contender(quick: bool) -> dict:
    """One jitted run per config; N_tr is a shape, so every lam compiles again."""
    import jax
    import jax.numpy as jnp

    steps = spec(quick)["steps"]
    times = evaluation_steps(steps, LOG_POINTS)
    rng = np.random.default_rng(0)
    x_test = jnp.asarray(rng.standard_normal((N_TEST, D_IN)), jnp.float32)
    lams = LAMS[:: 4 if quick else 2]
    start = time.perf_counter()
    for lam in lams:
        n = round(D_IN / lam)
        x = jnp.asarray(rng.standard_normal((n, D_IN)), jnp.float32)
        d = jnp.asarray(rng.standard_normal((D_IN, D_OUT)) / np.sqrt(D_IN), jnp.float32)

        @jax.jit
        def advance(d, k, x=x):
            grad = lambda d: 2 / (n * D_OUT) * x.T @ (x @ d)  # noqa: E731
            return jax.lax.fori_loop(0, k, lambda _, d: d - LR * grad(d), d)

        @jax.jit
        def evaluate(d, x=x):
            return jnp.mean((x @ d) ** 2), jnp.mean((x_test @ d) ** 2)

        previous = 0
        for t in times:
            d = advance(d, int(t - previous))
            jax.block_until_ready(evaluate(d))
            previous = t
    return {
        "runs": len(lams),
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "compile_s": None,
    }


def torch_loop_contender(quick: bool) -> dict:
    """PyTorch as the papers trained, on the GPU when there is one."""
    import torch

    torch.set_default_device("cuda" if torch.cuda.is_available() else "cpu")
    steps = spec(quick)["steps"] // (4 if quick else 2)  # a subset of steps; throughput is per step
    times = set(evaluation_steps(steps, LOG_POINTS).tolist())
    lams = LAMS[:: 8 if quick else 4]
    x_test = torch.randn(N_TEST, D_IN)
    start = time.perf_counter()
    for lam in lams:
        n = round(D_IN / lam)
        x = torch.randn(n, D_IN)
        teacher = torch.nn.Linear(D_IN, D_OUT, bias=False)
        student = torch.nn.Linear(D_IN, D_OUT, bias=False)
        with torch.no_grad():
            y, y_test = teacher(x), teacher(x_test)
        opt = torch.optim.SGD(student.parameters(), lr=LR)
        for step in range(1, steps + 1):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(student(x), y)
            loss.backward()
            opt.step()
            if step in times:
                with torch.no_grad():
                    err = ((student(x_test) - y_test) ** 2).mean(1)
                    (err < EPS).float().mean().item()
    return {
        "runs": len(lams),
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "compile_s": None,
    }


def sharing_grid(quick: bool) -> dict:
    """Fig. 7's gamma x d_out grid at one lam: every run of a seed shares its training set."""
    return dict(
        task="linear",
        steps=2000 if quick else 10_000,
        log_points=50,
        eps=[EPS],
        params={"d_in": D_IN, "lam": 0.5, "lr": LR, "n_test": 2000, "method": "step"},
        axes={"gamma": list(np.geomspace(1e-4, 1e-1, 8)), "d_out": [1, 2, 3, 4], "seed": [0, 1]},
    )


def long_grid(quick: bool, method: str) -> dict:
    """10^5 steps of 16 runs: where the spectral jump's cost no longer grows with steps."""
    return dict(
        task="linear",
        steps=20_000 if quick else 100_000,
        log_points=LOG_POINTS,
        eps=[EPS],
        params={"d_in": D_IN, "lr": LR, "n_test": N_TEST, "method": method},
        axes={"lam": [0.3, 0.5, 0.7, 0.9], "seed": [0, 1, 2, 3]},
    )


# --- the MLP workload ----------------------------------------------------------------------------
MLP = {"d_in": 100, "d_h": 100, "d_out": 1, "n_train": 200, "n_test": 1000, "lr": 0.05}
MLP_GAMMAS = [0.0, 1e-4, 1e-3, 1e-2]


def mlp_sweep(quick: bool) -> dict:
    """A 2-layer tanh teacher-student MLP (100-100-1, N_tr = 200): 4 gammas x 16 seeds."""
    return {
        "task": "mlp_teacher_student",
        "steps": 1000 if quick else 5000,
        "log_points": 100,
        "eps": [EPS],
        "params": MLP | {"depth": 1, "activation": "tanh", "predictor": "plain"},
        "axes": {"gamma": MLP_GAMMAS, "seed": SEEDS[:4] if quick else SEEDS},
    }


def mlp_cost() -> tuple[float, float]:
    """FLOPs of one full-batch step (forward, and backward at twice its cost) and its bytes if
    nothing stays cached (inputs read, weights read and written)."""
    weights = MLP["d_in"] * MLP["d_h"] + MLP["d_h"] * MLP["d_out"]
    flops = 6.0 * MLP["n_train"] * weights
    return flops, 4.0 * (MLP["n_train"] * MLP["d_in"] + 3 * weights)


def _mlp_data(rng, runs: int):
    """Teacher, student and inputs for ``runs`` independent runs, in float32 numpy."""
    d_in, d_h, n = MLP["d_in"], MLP["d_h"], MLP["n_train"]
    scale = (1 / np.sqrt(2 * d_in * d_h), 1 / np.sqrt(2 * d_h * MLP["d_out"]))
    draw = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {
        "x": draw(runs, n, d_in),
        "x_test": draw(runs, MLP["n_test"], d_in),
        "teacher": [draw(runs, d_in, d_h) * scale[0], draw(runs, d_h, MLP["d_out"]) * scale[1]],
        "student": [draw(runs, d_in, d_h) * scale[0], draw(runs, d_h, MLP["d_out"]) * scale[1]],
    }


def mlp_bare_contender(quick: bool) -> dict:
    """jit(vmap(scan(fori_loop(SGD step)))) of the same MLP, autodiff gradients, all runs in
    one call: the floor for engine overhead on this workload."""
    import jax
    import jax.numpy as jnp

    s = mlp_sweep(quick)
    runs, steps = len(MLP_GAMMAS) * len(s["axes"]["seed"]), s["steps"]
    times = evaluation_steps(steps, s["log_points"])
    segments = jnp.asarray(np.diff(np.concatenate([[0], times])), jnp.int32)
    data = jax.tree.map(jnp.asarray, _mlp_data(np.random.default_rng(0), runs))
    gamma = jnp.asarray(np.repeat(MLP_GAMMAS, runs // len(MLP_GAMMAS)), jnp.float32)

    def one_run(x, x_test, teacher, student, gamma):
        forward = lambda w, x: jnp.tanh(x @ w[0]) @ w[1]  # noqa: E731
        y, y_test = forward(teacher, x), forward(teacher, x_test)
        loss = lambda w: jnp.mean((forward(w, x) - y) ** 2)  # noqa: E731

        def step(_, w):
            return [v - MLP["lr"] * (g + gamma * v) for v, g in zip(w, jax.grad(loss)(w))]

        def segment(w, k):
            w = jax.lax.fori_loop(0, k, step, w)
            return w, (loss(w), jnp.mean((forward(w, x_test) - y_test) ** 2))

        return jax.lax.scan(segment, student, segments)[1]

    compiled = jax.jit(jax.vmap(one_run))

    def program():
        jax.block_until_ready(
            compiled(data["x"], data["x_test"], data["teacher"], data["student"], gamma)
        )

    return first_and_steady(program, runs, steps)


def mlp_torch_contender(quick: bool) -> dict:
    """PyTorch, one config at a time: nn.Sequential(Linear, Tanh, Linear), SGD with weight
    decay, full batch, test loss at the log points (on the GPU when there is one)."""
    import torch

    torch.set_default_device("cuda" if torch.cuda.is_available() else "cpu")
    s = mlp_sweep(quick)
    steps = s["steps"] // 2  # a subset of steps; throughput is per step
    times = set(evaluation_steps(steps, s["log_points"]).tolist())
    configs = MLP_GAMMAS
    start = time.perf_counter()
    for gamma in configs:
        net = lambda: torch.nn.Sequential(  # noqa: E731
            torch.nn.Linear(MLP["d_in"], MLP["d_h"], bias=False),
            torch.nn.Tanh(),
            torch.nn.Linear(MLP["d_h"], MLP["d_out"], bias=False),
        )
        teacher, student = net(), net()
        x = torch.randn(MLP["n_train"], MLP["d_in"])
        x_test = torch.randn(MLP["n_test"], MLP["d_in"])
        with torch.no_grad():
            y, y_test = teacher(x), teacher(x_test)
        opt = torch.optim.SGD(student.parameters(), lr=MLP["lr"], weight_decay=gamma)
        for step in range(1, steps + 1):
            opt.zero_grad()
            torch.nn.functional.mse_loss(student(x), y).backward()
            opt.step()
            if step in times:
                with torch.no_grad():
                    torch.nn.functional.mse_loss(student(x_test), y_test).item()
    return {
        "runs": len(configs),
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "compile_s": None,
    }


def machine_peaks() -> dict:
    """Best of a few large float32 matmuls (FLOP/s) and array copies (bytes/s)."""
    import jax
    import jax.numpy as jnp

    n = 8192 if jax.default_backend() == "gpu" else 2048
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda a: jnp.matmul(a, a, precision="highest"))
    jax.block_until_ready(matmul(a))
    best = min(_timed(lambda: jax.block_until_ready(matmul(a))) for _ in range(5))
    flops = 2 * n**3 / best
    big = jnp.ones(256 * 2**20, jnp.float32)  # 1 GiB, beyond every cache
    copy = jax.jit(lambda v: v * 2.0)
    jax.block_until_ready(copy(big))
    best = min(_timed(lambda: jax.block_until_ready(copy(big))) for _ in range(5))
    return {"peak_flops": flops, "peak_bytes_per_s": 2 * big.nbytes / best}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


CONTENDERS = {
    "groksweep-step": lambda q: groksweep_contender(q, "step"),
    "groksweep-spectral": lambda q: groksweep_contender(q, "spectral"),
    "segment-overhead": segment_overhead,
    "bare": bare_contender,
    "bare-chunked": lambda q: bare_contender(q, seeds_per_call=1),
    "jax-loop": jax_loop_contender,
    "torch-loop": torch_loop_contender,
    "shared-families": lambda q: groksweep_contender(q, "step", True, sharing_grid(q)),
    "per-run": lambda q: groksweep_contender(q, "step", False, sharing_grid(q)),
    "long-step": lambda q: groksweep_contender(q, "step", True, long_grid(q, "step")),
    "long-spectral": lambda q: groksweep_contender(q, "spectral", True, long_grid(q, "spectral")),
    "mlp-groksweep": lambda q: groksweep_contender(q, "step", True, mlp_sweep(q)),
    "mlp-bare": mlp_bare_contender,
    "mlp-torch-loop": mlp_torch_contender,
    "peaks": lambda q: machine_peaks(),
}


def _child(name: str, quick: bool) -> None:
    result = CONTENDERS[name](quick)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the steps, 4 seeds")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--only", nargs="*", choices=list(CONTENDERS), help="run only these")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.quick)
    results = {}
    for name in args.only or CONTENDERS:
        command = [sys.executable, __file__, "--child", name] + (["--quick"] if args.quick else [])
        env = os.environ | {"GROKSWEEP_COMPILATION_CACHE": "0"}
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name}: {results[name]}", file=sys.stderr)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def report(results: dict) -> str:
    peaks = results.get("peaks", {})
    rows = [
        (
            "| contender | runs x steps | seconds | run-steps/s | groksweep time ÷ its time "
            "| GFLOP/s | % peak FLOP/s | GB/s | % peak GB/s | compile s | peak RSS MB |"
        ),
        "|---" * 11 + "|",
    ]
    rate = {n: r["runs"] * r["steps"] / r["seconds"] for n, r in results.items() if "runs" in r}
    nan = float("nan")
    for name, r in results.items():
        if "runs" not in r:
            continue
        mlp = name.startswith("mlp-")
        step_flops, step_bytes = mlp_cost() if mlp else (flops_per_run_step(), bytes_per_run_step())
        # The spectral jump does not take steps: step FLOP/s and bytes mean nothing there.
        stepping = "spectral" not in name
        flops = rate[name] * step_flops if stepping else nan
        traffic = rate[name] * step_bytes if stepping else nan
        pct_flops = 100 * flops / peaks["peak_flops"] if peaks else nan
        pct_bytes = 100 * traffic / peaks["peak_bytes_per_s"] if peaks else nan
        # Ratios against groksweep on the same workload.
        ratio = rate.get("mlp-groksweep" if mlp else "groksweep-step", nan) / rate[name]
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else "-"
        rows.append(
            f"| {name} | {r['runs']} x {r['steps']} | {r['seconds']:.2f} | {rate[name]:.3g} | "
            f"{ratio:.3g} | {flops / 1e9:.1f} | {pct_flops:.0f} | {traffic / 1e9:.1f} | "
            f"{pct_bytes:.0f} | {compile_s} | {r['peak_rss_mb']:.0f} |"
        )
    overhead = results.get("segment-overhead")
    if overhead:
        variants = ", ".join(f"{n} {t:.2f} s" for n, t in overhead["variants_s"].items())
        rows.append(
            f"\nsegments (one process, best of {STEADY_CALLS + 1} interleaved calls): {variants}; "
            f"segmented ÷ whole {overhead['segmented_over_whole']:.3f}, with a store "
            f"{overhead['segmented_over_whole_stored']:.3f}, 1 s segments with a store "
            f"{overhead['segments_of_1s_over_whole_stored']:.3f}; a segment's own cost "
            f"{1e3 * overhead['segment_call_s']:.2f} ms a call + "
            f"{1e3 * overhead['state_save_s']:.2f} ms a save: "
            f"{overhead['overhead_of_180s_segments']:.1e} of a 180 s segment, "
            f"{overhead['overhead_of_1s_segments']:.1e} of a 1 s one"
        )
    if peaks:
        rows.append(
            f"\nmachine peaks: {peaks['peak_flops'] / 1e9:.1f} GFLOP/s (float32 matmul), "
            f"{peaks['peak_bytes_per_s'] / 1e9:.1f} GB/s (array copy)"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
