"""Model size configs (`configs/model/*.yaml`), validated on load: unknown keys are errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from magma.config_io import StrictModel, read_yaml_mapping, validate_config

__all__ = ["ModelSpec", "load_model_spec"]


class VisionSpec(StrictModel):
    depths: list[int] = Field(min_length=1)
    hidden_sizes: list[int] = Field(min_length=1)
    feature_stage: int = -1
    drop_path_rate: float = 0.0


class ProjectorSpec(StrictModel):
    type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    norm: bool = True


class TextSpec(StrictModel):
    model_type: str = "llama"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    vocab_size: int | None = None  # taken from the tokenizer when not given
    tie_word_embeddings: bool = False

    @field_validator("num_attention_heads")
    @classmethod
    def _heads_divide(cls, v: int, info: Any) -> int:
        hidden = info.data.get("hidden_size")
        if hidden and hidden % v:
            raise ValueError(f"hidden_size {hidden} not divisible by num_attention_heads {v}")
        return v


class TokenizerSpec(StrictModel):
    builtin_bpe_vocab: int | None = None  # build our own byte-level BPE with this many merges+bytes
    path: str | None = None  # or load a tokenizer from a local folder


class ModelSpec(StrictModel):
    name: str
    vision: VisionSpec
    image_size: int = 224
    max_crops: int = 0
    projector: ProjectorSpec = ProjectorSpec()
    text: TextSpec
    tokenizer: TokenizerSpec = TokenizerSpec(builtin_bpe_vocab=1024)
    action_bins: int = 256

    @field_validator("vision")
    @classmethod
    def _same_len(cls, v: VisionSpec) -> VisionSpec:
        if len(v.depths) != len(v.hidden_sizes):
            raise ValueError("vision.depths and vision.hidden_sizes must have the same length")
        return v


def load_model_spec(path: str | Path) -> ModelSpec:
    raw = read_yaml_mapping(path, "model config", "configs/model/")
    return validate_config(raw, ModelSpec, path)
