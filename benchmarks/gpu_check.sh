#!/usr/bin/env bash
# GPU check of hwnas_jax, from a fresh copy of the repository, in under 10 minutes:
#   1. installs the CUDA extra (pip install -e '.[cuda]') unless JAX already sees a GPU;
#   2. prints nvidia-smi;
#   3. times the proxy strategies at full size (vmap at populations 20/1/8/40, loop, exact;
#      C=16, N=5, batch 32, 100 SGD steps): benchmarks/gpu_check.py --part=strategies;
#   4. runs the main job for 3 generations (configs/nb201_latency.py) and prints the seconds per
#      generation, MFU and peak GPU memory: benchmarks/gpu_check.py --part=main.
# Every part is time-boxed (the budgets below add up to 560 s at most). Results: JSON lines on
# stdout and in $OUT/gpu_check.jsonl where OUT is set (else ./gpu_check.jsonl).
#
# Run: bash benchmarks/gpu_check.sh
# Expect: a 'devices' line naming the GPU, one line per strategy case (skipped ones say so), one
#   per generation of the main job and a summary line; 'done in N s' at the end, N < 600.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-.}"
RESULTS="$OUT_DIR/gpu_check.jsonl"
export OUT="$OUT_DIR"
START=$SECONDS
left() { echo $(( 560 - (SECONDS - START) )); }

echo "== install (<= 200 s)"
if timeout 60 "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  echo "JAX already sees a GPU: no install"
else
  timeout 200 "$PY" -m pip install -q -e '.[cuda]' || echo "pip install -e '.[cuda]' failed or timed out (status $?)"
fi
"$PY" -c "import jax; print('JAX', jax.__version__, jax.devices())" 2>&1 | tail -1

echo "== nvidia-smi"
timeout 20 nvidia-smi || echo "nvidia-smi not available"

STRAT=$(( $(left) / 2 - 20 ))
echo "== strategies (budget ${STRAT} s)"
timeout $(( STRAT + 90 )) "$PY" benchmarks/gpu_check.py --part=strategies --budget="$STRAT" \
  --out="$RESULTS" || echo "strategies part ended with status $?"

MAIN=$(( $(left) - 30 ))
if [ "$MAIN" -lt 60 ]; then
  echo "== main job skipped: ${MAIN} s left"
else
  echo "== main job, 3 generations (budget ${MAIN} s)"
  timeout $(( MAIN + 25 )) "$PY" benchmarks/gpu_check.py --part=main --budget="$MAIN" \
    --generations=3 --workdir="$OUT_DIR/gpu_check_main" --out="$RESULTS" \
    || echo "main part ended with status $?"
fi

echo "done in $(( SECONDS - START )) s; results in $RESULTS"
