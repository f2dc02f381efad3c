"""Training run configuration (`configs/train/*.yaml`), validated on load: unknown keys are errors.

`--set a.b=v` overrides are applied to the raw YAML before validation; values are parsed as
YAML scalars (`--set optim.lr=3e-4 --set model.lora.enabled=true`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from magma.config_io import ConfigError, StrictModel, read_yaml_mapping, validate_config


TrainableModule = Literal["projector", "vision"]


class LoraSpec(StrictModel):
    """LoRA adapters on the language model (PEFT). Every other weight is frozen, except the
    modules named in `modules_to_save`, which train in full and are exported with the adapter
    (Magma's `non_lora_trainables`, e.g. the projector)."""
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Regex on module names: the language model's attention and MLP projections.
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    modules_to_save: list[TrainableModule] = []


class ModelSection(StrictModel):
    config: str | None = None  # configs/model/<size>.yaml: random init (magma.build.build_model)
    checkpoint: str | None = None  # or a checkpoint folder (magma.checkpoint.load_checkpoint)
    seed: int = 0
    # What trains (without LoRA): everything but the frozen parts. freeze_vision: the ConvNeXt
    # tower only; the projector has its own switch (projector-only alignment freezes both towers).
    freeze_vision: bool = False
    freeze_projector: bool = False
    freeze_language: bool = False
    lora: LoraSpec = LoraSpec()
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSection":
        if (self.config is None) == (self.checkpoint is None):
            raise ValueError("set exactly one of model.config (random init) or model.checkpoint (folder)")
        frozen = {"projector": self.freeze_projector, "vision": self.freeze_vision}
        both = [m for m in self.lora.modules_to_save if frozen[m]]
        if both:
            raise ValueError(f"model.lora.modules_to_save names {both} but model.freeze_{both[0]} is true; "
                             "drop one of the two")
        return self


class DataSection(StrictModel):
    shards: str  # folder with the top-level manifest.json written by `magma data build`
    weights: dict[str, float] | None = None  # override the manifest's per-source weights
    num_workers: int = 0
    max_length: int | None = None  # samples longer than this are skipped and counted
    # concatenate samples into rows of up to pack_length tokens; each sample attends only to
    # itself (magma.packed_attention), so losses equal those of the samples alone. On by default:
    # padding is pure waste (46% of the quickstart's padded tokens), and a micro batch of one
    # sample packs into the same row it would have had anyway
    packing: bool = True
    pack_length: int = 1024
    seed: int = 0


class OptimSection(StrictModel):
    """`lr` is every trainable weight's peak rate unless a per-module rate is set (Magma's
    mm_projector_lr / vision_tokenizer_lr); the schedule scales every group alike."""
    lr: float = 1e-3
    projector_lr: float | None = Field(default=None, gt=0)
    vision_lr: float | None = Field(default=None, gt=0)
    language_lr: float | None = Field(default=None, gt=0)  # LM weights, or its LoRA adapters
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1


class DistSection(StrictModel):
    engine: Literal["auto", "torch", "deepspeed"] = "auto"  # auto: deepspeed when world_size > 1
    deepspeed_config: str = "configs/deepspeed/zero2.json"
    zero_stage: int | None = None  # overrides the stage in deepspeed_config
    backend: Literal["auto", "gloo", "nccl"] = "auto"


class CheckpointSection(StrictModel):
    every: int = 0  # 0: only at the end
    keep_last: int = 2
    resume: str = "auto"  # auto (latest in run_dir if any) | never | a checkpoints/step-N folder


class LogSection(StrictModel):
    every: int = 1
    tensorboard: bool = True
    wandb_project: str | None = None
    progress: bool = True


class TrainConfig(StrictModel):
    run_dir: str
    model: ModelSection
    data: DataSection
    optim: OptimSection = OptimSection()
    dist: DistSection = DistSection()
    checkpoint: CheckpointSection = CheckpointSection()
    log: LogSection = LogSection()
    max_steps: int = Field(gt=0)
    micro_batch_size: int = Field(default=4, gt=0)  # per rank
    grad_accum: int = Field(default=1, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _rates_for_trained_modules(self) -> "TrainConfig":
        m = self.model
        frozen = {"projector": m.freeze_projector, "vision": m.freeze_vision,
                  "language": m.freeze_language and not m.lora.enabled}
        if m.lora.enabled:  # PEFT freezes what is neither an adapter nor in modules_to_save
            frozen.update({k: k not in m.lora.modules_to_save for k in ("projector", "vision")})
        for module, is_frozen in frozen.items():
            if is_frozen and getattr(self.optim, f"{module}_lr") is not None:
                raise ValueError(f"optim.{module}_lr is set but the {module} does not train in this config "
                                 f"(frozen, or LoRA without it in model.lora.modules_to_save); drop one")
        return self


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`raw` with each `a.b=v` override set (v parsed as a YAML scalar; `a.b=` sets null)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError("expected KEY=VALUE", key=f"--set {item!r}",
                              fix="e.g. --set optim.lr=3e-4")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{p!r} is not a section", key=f"--set {key}")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return raw


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = read_yaml_mapping(path, "train config", "configs/train/")
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, TrainConfig, path)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
