#!/usr/bin/env bash
# GPU check for train/ (not part of CI): the train tests on CUDA (NCCL process groups, one rank
# per GPU) in fp32 and bf16, then the MFU benchmark of a ~1B model. Aim: < 5 min on one GPU.
#   scripts/gpu_check.sh            (uses .venv/bin/python; PY=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$(pwd)/.cache/torch_extensions}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
$PY - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); install a CUDA torch build")
print("gpu_check:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "torch", torch.__version__)
PY
step() { printf '\n\033[1m[gpu_check]\033[0m %s\n' "$*"; }

step "train tests on CUDA, fp32 (NCCL for the DeepSpeed runs)"
MAGMA_TRAIN_TEST_DEVICE=cuda MAGMA_TRAIN_TEST_PRECISION=fp32 timeout 240 $PY -m pytest tests/train -x -q -p no:cacheprovider

step "train tests on CUDA, bf16 (loss curves and resume within tolerance)"
MAGMA_TRAIN_TEST_DEVICE=cuda MAGMA_TRAIN_TEST_PRECISION=bf16 timeout 240 $PY -m pytest tests/train -x -q -p no:cacheprovider \
  -k "not test_data"

step "MFU of a ~1B model (DeepSpeed ZeRO-2, bf16, packed 2048-token rows)"
timeout 300 $PY bench/train.py --mfu --workers 8
