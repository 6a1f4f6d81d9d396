#!/usr/bin/env bash
# GPU validation in one go, for a lent GPU machine (no network; torch, CuPy, nvcc,
# pybind11, scikit-build-core, pytest and pytest-benchmark preinstalled):
#   1. build the extension with the CUDA module forced on;
#   2. check that the CUDA kernels load and see the device;
#   3. run the whole test suite (the CUDA-parametrised cases included);
#   4. time the CUDA path against the torch baselines and the GPU's own X^T X;
#   5. print the table last.
# Everything is also written under $OUT (a temporary folder when unset).
# On a machine without a GPU it runs up to step 2 and says why it stops.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

echo "== machine"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not available") | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== 1. build (PYRED_CUDA=ON)"
if ! PYRED_CUDA=ON "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "BUILD FAILED"
  exit 1
fi
tail -2 "$OUT/build.log"

echo "== 2. native modules"
"$PY" - <<'PY' | tee "$OUT/native_info.json"
import json, sys, pyred
info = pyred.native_info()
print(json.dumps(info, indent=1))
if not info["cuda_compiled"]:
    sys.exit("the CUDA module did not build or load: " + str(info["errors"]))
if not info["cuda_device_usable"]:
    sys.exit("no usable CUDA device here: the build and the CPU path are checked; stopping before the GPU steps")
PY
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then exit "$status"; fi

echo "== 3. tests (CPU and CUDA cases)"
"$PY" -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -25
tests_status=${PIPESTATUS[0]}

echo "== 4. benchmarks on the GPU"
rm -f "$OUT/bench.md"
PYRED_BENCH_DEVICE=cuda PYRED_BENCH_OUT="$OUT/bench.md" \
  "$PY" -m pytest -q -p no:cacheprovider benchmarks --benchmark-enable >"$OUT/bench.log" 2>&1
bench_status=$?
tail -5 "$OUT/bench.log"

echo "== 5. summary"
echo "tests exit status: $tests_status; benchmarks exit status: $bench_status"
grep -E "passed|failed" "$OUT/tests.log" | tail -1
cat "$OUT/bench.md" 2>/dev/null || echo "(no benchmark table)"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
