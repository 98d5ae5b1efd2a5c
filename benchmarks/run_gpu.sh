#!/usr/bin/env bash
# The GPU measurements of docs/PERFORMANCE.md, in one go on a machine with an NVIDIA GPU and
# JAX (CUDA build), optax, equinox, xarray, netCDF4, tomli-w and tqdm installed:
#
#     OUT=results_dir bash benchmarks/run_gpu.sh [bench] [fig1] [fig7] [tests]
#
# (all four when none is named):
# 1. the throughput benchmark (benchmarks/bench_linear.py);
# 2. the quick Fig. 1 sweep at float32 and at tensorfloat32 matmul precision, whose results.nc
#    are compared with a CPU run of the same spec (see docs/PERFORMANCE.md);
# 3. the paper-sized Fig. 7 reproduction (sweeps/fig7_phase.py --full), timed;
# 4. the test suite (or the files in $TESTS) on the GPU.
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv

steps=${*:-bench fig1 fig7 tests}
want() { [[ " $steps " == *" $1 "* ]]; }
timed() {  # timed LABEL COMMAND...: run COMMAND and print its wall time
    local label=$1 start=$EPOCHREALTIME
    shift
    "$@"
    echo "$label: $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $start}") s"
}

want bench && timeout 330 "$PY" benchmarks/bench_linear.py --json "$OUT/results_gpu.json" 2>&1 | tee "$OUT/bench.txt"

want fig1 && for precision in float32 tensorfloat32; do
    sed "s/^\[params\]/[params]\nprecision = \"$precision\"/" sweeps/fig1_lambda_quick.toml \
        > "/tmp/fig1_$precision.toml"
    timed "fig1 quick ($precision)" "$PY" -m groksweep.cli run \
        "/tmp/fig1_$precision.toml" --out "/tmp/fig1_$precision" --quiet 2>&1 | tail -2
    cp "/tmp/fig1_$precision/results.nc" "$OUT/fig1_quick_$precision.nc"
done

if want fig7; then
    timed "fig7 full" timeout 330 "$PY" sweeps/fig7_phase.py --full --out /tmp/fig7 2>&1 \
        | tail -15 | tee "$OUT/fig7.txt"
    cp /tmp/fig7/*.png /tmp/fig7/summary.json "$OUT/"
fi

want tests && timeout 250 "$PY" -m pytest -q -x -p no:cacheprovider ${TESTS:-tests} 2>&1 | tail -15 | tee "$OUT/tests.txt"
