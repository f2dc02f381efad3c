#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), runs ruff and the whole test suite, slow tests included.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"` for the quick suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR="$(pwd)/.cache/torch_extensions"
echo "[test] ruff check (configured in pyproject.toml)"
.venv/bin/python -m ruff check --no-cache .
echo "[test] running pytest $*"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] no tests were collected"; fi
exit "$rc"
