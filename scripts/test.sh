#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), runs ruff and the whole test suite, slow tests included.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"` for the quick suite).
set -euo pipefail
cd "$(dirname "$0")/.."
MAGMA_RLDS=1 bash scripts/setup.sh   # also .venv-rlds (TensorFlow) for the rlds reader's tests
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR="$(pwd)/.cache/torch_extensions"
echo "[test] ruff check (configured in pyproject.toml)"
.venv/bin/python -m ruff check --no-cache .
echo "[test] running pytest $*"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout 900 "$@"
rc=$?
if [ "$rc" -eq 0 ] && [ "$#" -eq 0 ]; then
  # the rlds reader on folders written by tensorflow-datasets itself, in the venv that has it
  echo "[test] rlds tests in .venv-rlds (TensorFlow)"
  .venv-rlds/bin/python -m pytest -q -p no:cacheprovider --timeout 900 tests/data_tom/test_rlds_layout.py
  rc=$?
fi
set -e
if [ "$rc" -eq 5 ]; then echo "[test] no tests were collected"; fi
exit "$rc"
