"""`magma model size --plan zero2|zero3 --gpus N`: per-GPU memory from DeepSpeed's estimators,
from parameter counts on the meta device (nothing allocated)."""
from __future__ import annotations

import re

import pytest

from magma.model_cli import main, zero_memory_estimates

SPEC_8B = "configs/model/magma-8b.yaml"
TOTAL_8B = 8_903_027_584          # ConvNeXt-XXLarge + projector + Llama-3-8B, untied
LARGEST_8B = 128_256 * 4096       # embed_tokens (and lm_head): the largest single module


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}GB"


def test_zero3_per_gpu_memory_of_the_8b_build(capsys):
    assert main(["size", "--config", SPEC_8B, "--plan", "zero3", "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    # No offload: 16-bit weights, gradients and fp32 Adam (18 bytes) split over 8 GPUs, plus one
    # gathered layer (4 bytes a parameter), as DeepSpeed's ZeRO-3 estimator counts them.
    per_gpu = 4 * LARGEST_8B + int(18 * TOTAL_8B / 8)
    assert f"{gib(per_gpu)}" in out and "ZeRO-3 on 1 node(s) x 8 GPU(s)" in out, out
    assert re.search(r"total\s+8\.903B", out)


def test_zero2_per_gpu_memory_shrinks_with_more_gpus():
    rows = {n: zero_memory_estimates(SPEC_8B, "zero2", n)[0] for n in (1, 8)}
    # Replicated 16-bit weights (2 bytes) plus 18 bytes of states split over the GPUs.
    assert rows[8]["gpu_bytes"] == 2 * TOTAL_8B + int(18 * TOTAL_8B / 8)
    assert rows[1]["gpu_bytes"] > rows[8]["gpu_bytes"]
    assert rows[8]["options"] == "offload_optimizer=none"


def test_size_of_a_pretrained_spec_reads_the_sources_without_their_weights(tmp_path, capsys):
    import yaml
    from fake_backbones import write_llama_folder, write_open_clip_convnext_file

    clip_file, tower = write_open_clip_convnext_file(tmp_path / "clip.safetensors")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "p", "image_size": 64, "vision": {"pretrained": str(clip_file)},
                                    "text": {"pretrained": str(write_llama_folder(tmp_path / "llama"))}}))
    assert main(["size", "--config", str(spec), "--plan", "zero3", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    n_tower = sum(p.numel() for p in tower.parameters())
    assert re.search(rf"vision_tower\s+\S+B\s+\({n_tower:,}\)", out), out
    assert "ZeRO-3 on 1 node(s) x 2 GPU(s)" in out


@pytest.mark.parametrize("argv, message", [
    (["--plan", "zero1"], "invalid choice"),
    (["--plan", "zero3", "--gpus", "0"], "--gpus and --nodes must be at least 1"),
])
def test_bad_plans_are_refused(argv, message, capsys):
    assert main(["size", "--config", SPEC_8B, *argv]) == 2
    assert message in capsys.readouterr().err
