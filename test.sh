#!/usr/bin/env bash
# Set up (idempotent) and run the tests. Modes:
#   ./test.sh           setup + the whole suite (what CI runs)
#   ./test.sh unit      CPU tests only (no simulator)
#   ./test.sh sim       CUDA-simulator tests only (NUMBA_ENABLE_CUDASIM=1)
#   ./test.sh ptx       compile every CUDA kernel to PTX (cc 9.0), no GPU needed
#   ./test.sh gpu       GPU tests on a real GPU (no simulator)
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-all}
scripts/setup.sh
PY=${VENV:-.venv}/bin/python
export PYTHONHASHSEED=0
# Compiled code is cached keyed on the content of every compiled source
# (gpu_bytepiece/jit_cache.py), so an edit anywhere recompiles and nothing
# needs deleting. The tests use their own cache folder: the user's
# (~/.cache/gpu-bytepiece) is neither read nor emptied.
export GPU_BYTEPIECE_CACHE_DIR=${GPU_BYTEPIECE_CACHE_DIR:-$PWD/.cache/jit-tests}
run() { "$PY" -m pytest -q -p no:cacheprovider "$@"; }
case "$mode" in
  all)
    # CPU tests, then the simulator tests in their own process: the simulator
    # must be enabled before Numba is imported.
    run -m "not sim and not gpu" tests
    NUMBA_ENABLE_CUDASIM=1 run -m sim tests
    ;;
  unit) run -m "not sim and not gpu" tests ;;
  sim) NUMBA_ENABLE_CUDASIM=1 run -m sim tests ;;
  ptx) run tests/test_ptx.py ;;
  gpu) run -m gpu tests ;;
  *) echo "unknown mode $mode (all|unit|sim|ptx|gpu)" >&2; exit 2 ;;
esac
