#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs the end-to-end quickstart:
# record demonstrations -> build shards -> pretrain the tiny model (2 CPU ranks, DeepSpeed) ->
# serve it -> evaluate on held-out MiniWoB++ and Meta-World seeds -> summary + report.
# Pass --fast for the ~5-minute smoke version, --from-scratch to start from random weights.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[quickstart] .venv/bin/magma quickstart $*"
exec .venv/bin/magma quickstart "$@"
