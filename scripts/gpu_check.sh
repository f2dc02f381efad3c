#!/usr/bin/env bash
# GPU check for train/ (not part of CI). On a machine with CUDA GPUs:
#   1. the train tests on CUDA (NCCL process groups, one rank per GPU) in fp32, then in bf16
#      (bitwise checks become tolerance checks; CPU-only probes skip themselves);
#   2. the from-pretrained path (tests/train/test_gpu_from_pretrained.py): random "pretrained"
#      backbones -> `magma model init --dtype bfloat16` -> `magma model size --plan zero3` ->
#      the recipes on every GPU in bf16: finetune-full under ZeRO-3 (each rank partitioned at
#      construction; the loss goes down; the result generates), align-projector (both towers
#      bitwise unchanged), finetune-lora (its adapter merges back to the final weights);
#   3. the MFU benchmark of a ~1B model.
# Without a CUDA GPU it prints why and exits 0 (nothing to check). Aim: < 15 min on one GPU.
#   scripts/gpu_check.sh            (uses .venv/bin/python; PY=... to override)
#   SKIP_MFU=1 scripts/gpu_check.sh (steps 1-2 only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$(pwd)/.cache/torch_extensions}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export TOKENIZERS_PARALLELISM=false

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: skipped: no CUDA GPU visible to $PY (torch.cuda.is_available() is False);" \
       "run it on a machine with an NVIDIA GPU and a CUDA build of torch"
  exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "x", torch.cuda.device_count(), "torch", torch.__version__)'
step() { printf '\n\033[1m[gpu_check]\033[0m %s\n' "$*"; }
PYTEST=("$PY" -m pytest -x -q -p no:cacheprovider)

step "train tests on CUDA, fp32 (NCCL for the DeepSpeed runs)"
MAGMA_TRAIN_TEST_DEVICE=cuda MAGMA_TRAIN_TEST_PRECISION=fp32 timeout 480 "${PYTEST[@]}" tests/train \
  --ignore tests/train/test_gpu_from_pretrained.py

step "train tests on CUDA, bf16 (loss curves and resume within tolerance)"
MAGMA_TRAIN_TEST_DEVICE=cuda MAGMA_TRAIN_TEST_PRECISION=bf16 timeout 480 "${PYTEST[@]}" tests/train \
  -k "not test_data" --ignore tests/train/test_gpu_from_pretrained.py

step "from pretrained backbones: model init (bf16), model size --plan zero3, the recipes on $("$PY" -c 'import torch; print(torch.cuda.device_count())') GPU(s)"
timeout 600 "${PYTEST[@]}" tests/train/test_gpu_from_pretrained.py -rs

if [ "${SKIP_MFU:-0}" != "1" ]; then
  step "MFU of a ~1B model (DeepSpeed ZeRO-2, bf16, packed 2048-token rows)"
  timeout 300 "$PY" bench/train.py --mfu --workers 8
fi
step "done"
