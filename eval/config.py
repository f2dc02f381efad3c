"""Eval suite configs (configs/eval/<suite>.yaml), validated with pydantic."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from magma.config_io import StrictModel, read_yaml_mapping, validate_config


class PolicyConfig(StrictModel):
    checkpoint: str | None = None  # in-process serve.policy.Policy
    server: str | None = None  # or the HTTP policy server (wins when both are given)
    engine: Literal["hf", "vllm"] = "hf"
    token: str | None = None
    timeout_s: float = Field(default=300.0, gt=0)


class SuiteConfig(StrictModel):
    tasks: list[str] = Field(min_length=1)
    episodes: int = Field(ge=1)
    baseline_episodes: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    image_size: int = Field(default=128, ge=16, le=224)
    chunk: int | None = Field(default=None, ge=1)  # robot: None = the chunk the checkpoint was trained with
    episode_seconds: float | None = Field(default=120.0, gt=0)


class EvalConfig(StrictModel):
    name: str
    split: Literal["train", "heldout"] = "heldout"
    seed_offset: int = Field(default=0, ge=0)
    agents: list[Literal["policy", "random", "expert"]] = ["policy", "random", "expert"]
    policy: PolicyConfig = PolicyConfig()
    miniwob: SuiteConfig | None = None
    metaworld: SuiteConfig | None = None
    filmstrips: int = Field(default=1, ge=0)
    training_metrics: str | None = None
    out: str = "runs/eval"

    @model_validator(mode="after")
    def _needs_an_env(self) -> "EvalConfig":
        if self.miniwob is None and self.metaworld is None:
            raise ValueError("give at least one of 'miniwob' or 'metaworld'")
        return self


def load_eval_config(path: str | Path) -> EvalConfig:
    raw = read_yaml_mapping(path, "eval config", "configs/eval/*.yaml")
    return validate_config(raw, EvalConfig, path)
