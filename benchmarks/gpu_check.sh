#!/usr/bin/env bash
# GPU validation in one call, for a lent GPU machine (no network; torch, CuPy, nvcc,
# pybind11, scikit-build-core and pytest preinstalled). Stages, each under `timeout`,
# each adding a row to $OUT/summary.md as it ends (so a cut-off run still reports):
#   1. build with the CUDA module forced on;
#   2. the native modules load and see the device (on a machine without a GPU the
#      script stops here and exits 0, saying so);
#   3. pytest -m cuda, with a per-test time limit;
#   4. a short benchmark subset on the GPU: the CKA sweep against cuBLAS X^T X, the
#      probe step (gathered, grouped, masked layouts; CUDA graphs) against the per-head
#      loop and the autograd masked baseline, one wide-layer step (d = 100,000) in each
#      layout (for WIDE_LAYOUT), and the layout crossover by density with the thresholds
#      it suggests for pyred.probes.layouts.GATHERED_BELOW;
#   5. compute-sanitizer memcheck over the kernels' CUDA cases;
#   6. the paper's online stream (FeatureStream) in images/s, augmentation on the CPU
#      or on the device, with and without AMP, against the bare forward.
# Budget: PYRED_GPU_CHECK_BUDGET seconds in all (default 470, under 8 minutes): each
# stage's limit is cut to what is left, and a stage with under 10 s left is skipped.
# A second try after a fix can run some stages only: PYRED_GPU_CHECK_STAGES="3 4" (stages
# 1 and 2, the build and the device check, always run: the others stand on them).
# The tables are printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
printf '| stage | status | seconds |\n|---|---|---|\n' >"$SUMMARY"

DEADLINE=$((SECONDS + ${PYRED_GPU_CHECK_BUDGET:-470}))

stage() {  # stage NAME LIMIT_SECONDS LOG COMMAND...
  local name=$1 limit=$2 log=$3
  shift 3
  case " 1 2 ${PYRED_GPU_CHECK_STAGES:-3 4 5 6} " in  # build and device check always run
    *" ${name%%.*} "*) ;;
    *) printf '| %s | not selected | 0 |\n' "$name" >>"$SUMMARY"; return 0 ;;
  esac
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "== $name: skipped, the budget is spent"
    printf '| %s | skipped: budget spent | 0 |\n' "$name" >>"$SUMMARY"
    return 1
  fi
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS status
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$log" 2>&1
  status=$?
  local took=$((SECONDS - start)) word=ok
  [ "$status" -eq 124 ] || [ "$status" -eq 137 ] && word="TIMED OUT"
  [ "$status" -ne 0 ] && [ "$word" = ok ] && word="failed (exit $status)"
  printf '| %s | %s | %d |\n' "$name" "$word" "$took" >>"$SUMMARY"
  tail -4 "$OUT/$log"
  return "$status"
}

finish() {
  echo
  echo "== tables"
  cat "$OUT/gpu.txt" 2>/dev/null
  cat "$SUMMARY"
  [ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
  exit "${1:-0}"
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available") >"$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >>"$OUT/gpu.txt" 2>&1

export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
stage "1. build (PYRED_CUDA=ON)" 180 build.log \
  env PYRED_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -e . || finish 1

stage "2. native modules" 30 native_info.json "$PY" - <<'PY'
import json, sys, pyred
info = pyred.native_info()
print(json.dumps(info, indent=1))
if not info["cuda_compiled"]:
    sys.exit("the CUDA module did not build or load: " + str(info["errors"]))
if not info["cuda_device_usable"]:
    print("NO-GPU: no usable CUDA device here; the build and the CPU module are checked")
PY
[ $? -eq 0 ] || finish 1
if grep -q "^NO-GPU" "$OUT/native_info.json"; then
  echo "no usable CUDA device: stopping before the GPU stages (build and CPU module checked)"
  printf '| 3-6. GPU stages | skipped: no usable CUDA device | 0 |\n' >>"$SUMMARY"
  finish 0
fi

failed=0
PYRED_TEST_TIMEOUT=60 stage "3. pytest -m cuda" 120 tests_cuda.log \
  "$PY" -m pytest -q -p no:cacheprovider -m cuda tests || failed=1

rm -f "$OUT/bench.md"
PYRED_BENCH_DEVICE=cuda PYRED_BENCH_OUT="$OUT/bench.md" stage "4. benchmarks on the GPU" 170 bench.log \
  "$PY" -m pytest -q -p no:cacheprovider benchmarks --benchmark-enable -s \
  -k "(test_subset_cka and not loop and not gram) or test_sgd or test_wide_step or test_layout_crossover or test_report_crossover" \
  || failed=1

if command -v compute-sanitizer >/dev/null 2>&1; then
  stage "5. compute-sanitizer memcheck (kernel cases)" 100 memcheck.log \
    compute-sanitizer --tool memcheck --error-exitcode 99 --leak-check no \
    "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_ops.py tests/test_heads.py tests/test_cuda.py || failed=1
else
  printf '| 5. compute-sanitizer memcheck | skipped: not installed | 0 |\n' >>"$SUMMARY"
fi

PYRED_BENCH_DEVICE=cuda PYRED_BENCH_OUT="$OUT/bench.md" stage "6. online stream images/s" 60 stream.log \
  "$PY" benchmarks/stream_throughput.py --images 1024 --batch 256 || failed=1

finish "$failed"
