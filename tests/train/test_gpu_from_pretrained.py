"""The from-pretrained path on CUDA (run by scripts/gpu_check.sh; skipped without a GPU):
random "pretrained" backbones -> `magma model init --dtype bfloat16` -> the named recipes on
every visible GPU (NCCL, bf16): full fine-tuning under ZeRO-3, projector-only alignment, LoRA
with its adapter merged back, and a generate from the result."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from train.metrics import read_metrics

from conftest import REPO, train_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]
MICRO = ("micro_batch_size=2", "grad_accum=1", "optim.warmup_steps=0", "data.packing=false", "data.max_length=",
         "data.num_workers=0", "log.progress=false", "log.tensorboard=false", "device=cuda", "precision=bf16",
         "checkpoint.every=0", "log.every=1")


def gpus() -> int:
    return torch.cuda.device_count()


def recipe(name: str, run_dir: Path, shards: Path, checkpoint: Path, *overrides: str) -> str:
    """Runs configs/train/<name>.yaml under torchrun on every GPU; returns its stdout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sets = [f"run_dir={run_dir}", f"data.shards={shards}", f"model.checkpoint={checkpoint}", *MICRO, *overrides]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus()), "--master_port", str(port),
           "-m", "train", "--config", str(REPO / "configs" / "train" / f"{name}.yaml")]
    cmd += [a for o in sets for a in ("--set", o)]
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(4), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def init_bf16(tmp_path_factory) -> Path:
    from fake_backbones import write_llama_folder, write_open_clip_convnext_file

    from magma.model_cli import main

    root = tmp_path_factory.mktemp("pretrained")
    clip_file, _ = write_open_clip_convnext_file(root / "open_clip_convnext.safetensors", seed=1)
    spec = {"name": "gpu-from-pretrained", "image_size": 64,
            "text": {"pretrained": str(write_llama_folder(root / "llama"))}, "vision": {"pretrained": str(clip_file)}}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["init", "--config", str(root / "spec.yaml"), "--out", str(root / "init"), "--dtype", "bfloat16"]) == 0
    assert main(["size", "--config", str(root / "spec.yaml"), "--plan", "zero3", "--gpus", str(gpus())]) == 0
    return root / "init"


def test_full_finetune_zero3_bf16_lowers_the_loss_and_generates(init_bf16, shards, tmp_path):
    out = recipe("finetune-full", tmp_path / "full", shards, init_bf16, "max_steps=10", "optim.lr=1e-3")
    held = re.findall(r"rank (\d+): ZeRO-3 partitioned at construction, holds (\d+) of (\d+)", out)
    assert len(held) == gpus(), out[-2000:]
    losses = [r["loss"] for r in read_metrics(tmp_path / "full")]
    assert all(x == x for x in losses) and sum(losses[-2:]) < sum(losses[:2]), losses
    from magma.checkpoint import load_checkpoint
    model, processor, _ = load_checkpoint(tmp_path / "full" / "final", dtype=torch.bfloat16, device="cuda")
    from PIL import Image
    inputs = processor(images=[Image.new("RGB", (48, 48), (200, 30, 30))],
                       text=processor.render_prompt("What colour is the square?"), return_tensors="pt").to("cuda")
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_align_projector_keeps_both_towers_bitwise(init_bf16, shards, tmp_path):
    recipe("align-projector", tmp_path / "align", shards, init_bf16, "max_steps=3")
    before = load_file(init_bf16 / "model.safetensors")
    after = load_file(tmp_path / "align" / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("multi_modal_projector.") for k in changed), sorted(changed)[:5]


def test_lora_adapter_merges_back_to_the_final_weights(init_bf16, shards, tmp_path):
    from train.lora import merge_adapter

    recipe("finetune-lora", tmp_path / "lora", shards, init_bf16, "max_steps=4", "model.lora.r=8")
    merged = merge_adapter(tmp_path / "lora" / "final" / "adapter", tmp_path / "merged", dtype=torch.bfloat16)
    a, b = load_file(tmp_path / "lora" / "final" / "model.safetensors"), load_file(merged / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # bf16 weights, merged in bf16 by both
        torch.testing.assert_close(b[k], a[k], rtol=1e-2, atol=1e-3, msg=k)
