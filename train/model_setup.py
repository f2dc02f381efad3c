"""Model for training: built from a size config or loaded from a checkpoint folder (partitioned
at construction under ZeRO-3, see train/zero3.py), then frozen parts, LoRA adapters and gradient
checkpointing applied as the config asks."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from magma.action_tokenizer import ActionStats
from train.config import ModelSection

# The three parts of a Magma model that train (or freeze) and get their own learning rate.
MODULES = {"vision": "vision_tower", "projector": "multi_modal_projector", "language": "language_model"}


@dataclass
class BuildPlan:
    """How to materialise the weights. `zero3`: the run's DeepSpeed config when it is ZeRO-3
    (parameters partitioned at construction); `scratch`: where rank 0 writes a size config's
    weights for that (under the run folder); `dtype`: the dtype weights are loaded in."""
    dtype: torch.dtype = torch.float32
    zero3: dict[str, Any] | None = None
    scratch: Path | None = None


def build_training_model(spec: ModelSection, plan: BuildPlan | None = None
                         ) -> tuple[torch.nn.Module, Any, dict[str, ActionStats]]:
    """(model in train mode, processor, action stats of the source checkpoint)."""
    plan = plan or BuildPlan()
    if plan.zero3 is not None:
        from train.zero3 import INIT_DIR, build_zero3, load_zero3
        if spec.checkpoint:
            model, processor, stats = load_zero3(spec.checkpoint, plan.zero3, plan.dtype)
        else:
            scratch = plan.scratch or Path(INIT_DIR)
            model, processor, stats = build_zero3(spec.config, spec.seed, scratch, plan.zero3, plan.dtype)
    elif spec.checkpoint:
        from magma.checkpoint import load_checkpoint
        model, processor, stats = load_checkpoint(spec.checkpoint, dtype=plan.dtype)
    else:
        from magma.build import build_model
        # Random init stays fp32 (DeepSpeed casts parameters only; a bf16 build would also cast buffers).
        model, processor = build_model(spec.config, seed=spec.seed)
        stats = {}
    model.train()
    for part, frozen in (("vision", spec.freeze_vision), ("projector", spec.freeze_projector),
                         ("language", spec.freeze_language)):
        if frozen:
            getattr(model, MODULES[part]).requires_grad_(False)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.lora.enabled:
        from train.lora import apply_lora
        model = apply_lora(model, spec.lora, base=str(Path(spec.checkpoint).resolve()) if spec.checkpoint else None)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no trainable parameters: model.freeze_vision, freeze_projector and freeze_language "
                         "all set without LoRA; unfreeze one (projector-only alignment: freeze_vision and "
                         "freeze_language)")
    return model, processor, stats


def module_of_parameters(model: torch.nn.Module) -> dict[int, str]:
    """id(parameter) -> 'vision' | 'projector' | 'language' (LoRA adapters count as language)."""
    owner = {}
    for part, attr in MODULES.items():
        for p in getattr(model, attr).parameters():
            owner[id(p)] = part
    return owner


def exportable_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain MagmaForCausalLM to write as a HF folder (LoRA merged into a copy)."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def count_trainable(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; ZeRO-3 partitions count at their full size."""
    def n(p: torch.nn.Parameter) -> int:
        return getattr(p, "ds_numel", p.numel())
    return sum(n(p) for p in model.parameters() if p.requires_grad), sum(n(p) for p in model.parameters())
