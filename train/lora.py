"""LoRA on the language model: adapters applied for training, exported alone, merged back.

An adapter folder (written beside every LoRA run's HF folder, as `<step-N or final>/adapter/`):

    adapter_config.json          PEFT's LoraConfig; base_model_name_or_path = the checkpoint the
                                 run started from (null for a run from a size config)
    adapter_model.safetensors    the LoRA weights, PEFT's names (PeftModel.from_pretrained loads it)
    trainables.safetensors       modules trained in full beside the adapters
                                 (`model.lora.modules_to_save`, e.g. the projector), our names
    action_stats.json  inference_settings.json   the run's, so a merge behaves like the run

`merge_adapter(adapter, out, base=None)` (`magma train merge-lora`) rebuilds the full checkpoint:
base weights + LoRA deltas + the trained modules, with the base's processor.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from train.config import LoraSpec
from train.model_setup import MODULES

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINABLES = "trainables.safetensors"


def apply_lora(model: torch.nn.Module, spec: LoraSpec, base: str | None = None) -> torch.nn.Module:
    """PEFT LoRA on `spec.target_modules`; every other weight frozen but `spec.modules_to_save`.
    `base`: the checkpoint folder the adapter applies to (recorded in adapter_config.json)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, base_model_name_or_path=base)
    peft_model = get_peft_model(model, lora)  # freezes every non-LoRA weight
    peft_model.peft_config["default"].base_model_name_or_path = base  # PEFT fills in _name_or_path
    for part in spec.modules_to_save:
        getattr(model, MODULES[part]).requires_grad_(True)
    peft_model.magma_modules_to_save = list(spec.modules_to_save)
    return peft_model


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def export_adapter(peft_model: torch.nn.Module, folder: str | Path, action_stats: dict | None = None,
                   inference: Any = None) -> Path:
    """Writes only the adapter (and the modules trained beside it) to `folder`. Under ZeRO-3
    call it inside the engine's `full_weights()` (the parameters must be gathered)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from magma.action_tokenizer import save_action_stats
    from magma.inference_settings import save_inference_settings

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.peft_config["default"].save_pretrained(str(folder))
    save_file(_cpu(get_peft_model_state_dict(peft_model)), str(folder / ADAPTER_WEIGHTS))
    base = peft_model.get_base_model()
    trained = {}
    for part in getattr(peft_model, "magma_modules_to_save", []):
        attr = MODULES[part]
        trained.update({f"{attr}.{k}": v for k, v in getattr(base, attr).state_dict().items()})
    if trained:
        save_file(_cpu(trained), str(folder / TRAINABLES))
    save_action_stats(action_stats or {}, folder)
    if inference is not None:
        save_inference_settings(inference, folder)
    return folder


def merge_adapter(adapter: str | Path, out: str | Path, base: str | Path | None = None,
                  dtype: torch.dtype = torch.float32) -> Path:
    """A full checkpoint folder at `out`: `base` (default: the adapter's recorded base) with the
    LoRA deltas merged in and the trained modules replaced, plus the run's action statistics and
    inference settings; weights in `dtype` (a bf16 run's export is bf16). Raises
    FileNotFoundError / ValueError naming what is missing."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from magma.action_tokenizer import ACTION_STATS_FILE, load_action_stats
    from magma.checkpoint import load_checkpoint, save_checkpoint
    from magma.inference_settings import INFERENCE_SETTINGS_FILE, read_inference_settings

    adapter = Path(adapter)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file() or not (adapter / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{adapter}: not an adapter folder (needs adapter_config.json and {ADAPTER_WEIGHTS}; "
                                f"a LoRA run writes one as <run>/final/{ADAPTER_DIR}/)")
    recorded = json.loads(config_file.read_text()).get("base_model_name_or_path")
    base = base or recorded
    if not base:
        raise ValueError(f"{config_file}: records no base checkpoint (the run started from a size config); "
                         "pass the base folder with --base")
    model, processor, _ = load_checkpoint(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if (adapter / TRAINABLES).is_file():
        trained = load_file(str(adapter / TRAINABLES))
        unknown = sorted(set(trained) - set(merged.state_dict()))
        if unknown:
            raise ValueError(f"{adapter / TRAINABLES}: keys {unknown[:3]} are not in the base model {base}")
        merged.load_state_dict(trained, strict=False)
    stats = load_action_stats(adapter) if (adapter / ACTION_STATS_FILE).is_file() else {}
    inference = read_inference_settings(adapter) if (adapter / INFERENCE_SETTINGS_FILE).is_file() else None
    return save_checkpoint(merged, processor, out, stats, inference)
