"""Model for training: built from a size config or loaded from a checkpoint folder, then frozen
parts, LoRA adapters and gradient checkpointing applied as the config asks."""
from __future__ import annotations

import copy
from typing import Any

import torch

from magma.action_tokenizer import ActionStats
from train.config import ModelSection


def build_training_model(spec: ModelSection) -> tuple[torch.nn.Module, Any, dict[str, ActionStats]]:
    """(model in train mode, processor, action stats of the source checkpoint)."""
    if spec.checkpoint:
        from magma.checkpoint import load_checkpoint
        model, processor, stats = load_checkpoint(spec.checkpoint)
    else:
        from magma.build import build_model
        model, processor = build_model(spec.config, seed=spec.seed)
        stats = {}
    model.train()
    if spec.freeze_vision:
        for p in list(model.vision_tower.parameters()) + list(model.multi_modal_projector.parameters()):
            p.requires_grad_(False)
    if spec.freeze_language:
        for p in model.language_model.parameters():
            p.requires_grad_(False)
    if spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if spec.lora.enabled:
        from peft import LoraConfig, get_peft_model
        lora = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                          target_modules=spec.lora.target_modules)
        model = get_peft_model(model, lora)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no trainable parameters: freeze_vision and freeze_language both set without LoRA")
    return model, processor, stats


def exportable_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain MagmaForCausalLM to write as a HF folder (LoRA merged into a copy)."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def count_trainable(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
