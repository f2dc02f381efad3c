"""Checkpoint folders: a Hugging Face folder plus `action_stats.json` and `inference_settings.json`.

    config.json  model.safetensors  tokenizer.json  tokenizer_config.json  chat_template.jinja
    processor_config.json / preprocessor_config.json  action_stats.json  generation_config.json
    inference_settings.json   what inference must repeat from training (magma.inference_settings);
                              absent in older checkpoints and `magma model init` ones
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from magma.action_tokenizer import ACTION_STATS_FILE, ActionStats, load_action_stats, save_action_stats
from magma.inference_settings import (INFERENCE_SETTINGS_FILE, InferenceSettings, InferenceSettingsError,
                                      read_inference_settings, save_inference_settings)

REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def save_checkpoint(model, processor, folder: str | Path,
                    action_stats: dict[str, ActionStats] | None = None,
                    inference: InferenceSettings | None = None) -> Path:
    """Writes the HF folder; `inference` (what training baked into prompts) only when given, so a
    checkpoint that was not trained (`magma model init`) claims no settings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    save_action_stats(action_stats or {}, folder)
    if inference is not None:
        save_inference_settings(inference, folder)
    return folder


def verify_checkpoint(folder: str | Path) -> None:
    """Raises CheckpointError naming the first missing or corrupt file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist "
                              "(create one with `magma model init --config configs/model/tiny.yaml --out DIR`)")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing from the checkpoint folder")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", ACTION_STATS_FILE,
                 INFERENCE_SETTINGS_FILE):
        p = folder / name
        if p.is_file():
            try:
                json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{p}: corrupt JSON ({exc})") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{folder}: no *.safetensors weights file")
    from safetensors import safe_open
    for w in weights:
        try:
            with safe_open(str(w), framework="pt") as f:
                for key in list(f.keys())[:1]:
                    f.get_slice(key)
        except Exception as exc:
            raise CheckpointError(f"{w}: corrupt safetensors file ({exc})") from None


def load_checkpoint(folder: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, processor, action_stats) from a checkpoint folder, with clear errors."""
    import magma
    magma.register()  # the Auto classes must know our architecture before loading
    from transformers import AutoModelForCausalLM, AutoProcessor

    folder = Path(folder)
    verify_checkpoint(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        processor = AutoProcessor.from_pretrained(folder)
    except Exception as exc:
        raise CheckpointError(f"{folder}: cannot load ({type(exc).__name__}: {exc})") from None
    stats = load_action_stats(folder) if (folder / ACTION_STATS_FILE).exists() else {}
    return model, processor, stats


def load_inference_settings(folder: str | Path) -> InferenceSettings:
    """The checkpoint's inference settings (`InferenceSettings()` when it has none), checked
    against its action statistics: every dataset with settings has statistics of `action_dim`."""
    folder = Path(folder)
    try:
        settings = read_inference_settings(folder)
    except InferenceSettingsError as exc:
        raise CheckpointError(str(exc)) from None
    if settings.actions:
        try:
            stats = load_action_stats(folder)
        except (FileNotFoundError, ValueError) as exc:
            raise CheckpointError(f"{folder / ACTION_STATS_FILE}: needed by {INFERENCE_SETTINGS_FILE} "
                                  f"({exc})") from None
        for dataset, entry in settings.actions.items():
            have = stats[dataset].dim if dataset in stats else None
            if have != entry.action_dim:
                raise CheckpointError(
                    f"{folder / INFERENCE_SETTINGS_FILE}: dataset {dataset} has action_dim {entry.action_dim}, "
                    f"but {ACTION_STATS_FILE} has " + (f"dim {have}" if have else "no statistics for it"))
    return settings
