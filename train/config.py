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


class LoraSpec(StrictModel):
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Regex on module names: the language model's attention and MLP projections.
    target_modules: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class ModelSection(StrictModel):
    config: str | None = None  # configs/model/<size>.yaml: random init (magma.build.build_model)
    checkpoint: str | None = None  # or a checkpoint folder (magma.checkpoint.load_checkpoint)
    seed: int = 0
    freeze_vision: bool = False
    freeze_language: bool = False
    lora: LoraSpec = LoraSpec()
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSection":
        if (self.config is None) == (self.checkpoint is None):
            raise ValueError("set exactly one of model.config (random init) or model.checkpoint (folder)")
        return self


class DataSection(StrictModel):
    shards: str  # folder with the top-level manifest.json written by `magma data build`
    weights: dict[str, float] | None = None  # override the manifest's per-source weights
    num_workers: int = 0
    max_length: int | None = None  # samples longer than this are skipped and counted
    packing: bool = False  # concatenate samples into rows of up to pack_length tokens
    pack_length: int = 1024
    seed: int = 0


class OptimSection(StrictModel):
    lr: float = 1e-3
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
