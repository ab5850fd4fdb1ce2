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
# Numba's on-disk cache keys a function on its own file only: a kernel that
# calls gpu_bytepiece/core/lattice.py would not notice an edit there. Tests always
# compile from the current sources.
find gpu_bytepiece kernels cpu_fallback -name '*.nbi' -delete -o -name '*.nbc' -delete
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
