#!/usr/bin/env bash
# Create .venv (or $VENV) with gpu-bytepiece installed editable, plus what the
# tests and benchmarks compare against. Idempotent; safe to re-run.
#   scripts/setup.sh          package + test tools + reference bytepiece
#   scripts/setup.sh --min    package only (what users need)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }
pip install --upgrade pip setuptools wheel
if [ "${1:-}" = "--min" ]; then
  pip install -e .
  exit 0
fi
# PTX compilation in CI needs NVVM from PyPI ([ptx]); no driver or GPU needed.
pip install -e '.[test,ptx,ray]' Cython
# The reference, exactly as the issues prescribe: a byte-level pyahocorasick
# built from source, then bytepiece 0.6.3 built against it.
if ! "$VENV/bin/python" -c 'import ahocorasick, sys; sys.exit(ahocorasick.unicode)' 2>/dev/null; then
  AHOCORASICK_BYTES=1 pip install --no-cache-dir --force-reinstall --no-binary pyahocorasick pyahocorasick
fi
"$VENV/bin/python" -c 'import bytepiece' 2>/dev/null || pip install --no-build-isolation bytepiece==0.6.3
"$VENV/bin/python" -c 'import ahocorasick, sys; assert ahocorasick.unicode == 0, "pyahocorasick must be built with AHOCORASICK_BYTES=1"'
