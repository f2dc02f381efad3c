"""Model size configs (`configs/model/*.yaml`), validated on load: unknown keys are errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from magma.config_io import StrictModel, read_yaml_mapping, validate_config

__all__ = ["ModelSpec", "load_model_spec"]


class VisionSpec(StrictModel):
    """The ConvNeXt tower: sizes for a random one, or `pretrained` (sizes then come from it)."""

    pretrained: str | None = None  # local HF ConvNextModel folder or open_clip/timm checkpoint file
    depths: list[int] | None = Field(default=None, min_length=1)
    hidden_sizes: list[int] | None = Field(default=None, min_length=1)
    feature_stage: int = -1
    drop_path_rate: float = 0.0
    # Image normalisation; default: the tower's own (CLIP for open_clip towers, ImageNet else).
    image_mean: list[float] | None = Field(default=None, min_length=3, max_length=3)
    image_std: list[float] | None = Field(default=None, min_length=3, max_length=3)
    # LayerNorm eps; default: transformers' 1e-6, or the timm definition's for a timm/open_clip file.
    norm_eps: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _sizes_or_pretrained(self) -> "VisionSpec":
        if self.pretrained is None and (self.depths is None or self.hidden_sizes is None):
            raise ValueError("give vision.depths and vision.hidden_sizes, or vision.pretrained")
        if self.depths is not None and self.hidden_sizes is not None \
                and len(self.depths) != len(self.hidden_sizes):
            raise ValueError("vision.depths and vision.hidden_sizes must have the same length")
        return self


class ProjectorSpec(StrictModel):
    type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    norm: bool = True


class TextSpec(StrictModel):
    """The causal LM: sizes for a random one, or `pretrained` (a local Hugging Face causal-LM
    folder; architecture, sizes and weights come from it, and any size given here must agree)."""

    pretrained: str | None = None
    model_type: str = "llama"
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    vocab_size: int | None = None  # taken from the tokenizer (and the pretrained LM) when not given
    tie_word_embeddings: bool = False

    @field_validator("num_attention_heads")
    @classmethod
    def _heads_divide(cls, v: int | None, info: Any) -> int | None:
        hidden = info.data.get("hidden_size")
        if v and hidden and hidden % v:
            raise ValueError(f"hidden_size {hidden} not divisible by num_attention_heads {v}")
        return v

    @model_validator(mode="after")
    def _sizes_or_pretrained(self) -> "TextSpec":
        missing = [k for k in TEXT_SIZE_KEYS if getattr(self, k) is None]
        if self.pretrained is None and missing:
            raise ValueError(f"give text.{', text.'.join(missing)}, or text.pretrained")
        return self

    def given(self) -> dict[str, Any]:
        """The keys written in the spec (not defaults), other than `pretrained`: with
        `pretrained` these must agree with the folder's config.json."""
        return {k: getattr(self, k) for k in sorted(self.model_fields_set) if k != "pretrained"}


TEXT_SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


class TokenizerSpec(StrictModel):
    builtin_bpe_vocab: int | None = None  # build our own byte-level BPE with this many merges+bytes
    path: str | None = None  # or load a tokenizer from a local folder (default: text.pretrained)
    # Where the 256 action bins live (magma.tokenizer_setup): `append` new <act_N> tokens (new,
    # mean-initialised rows), or `reuse_last` the last 256 ids of the base vocabulary (OpenVLA/Magma).
    action_tokens: Literal["append", "reuse_last"] = "append"


class ModelSpec(StrictModel):
    name: str
    vision: VisionSpec
    image_size: int = 224
    max_crops: int = 0
    projector: ProjectorSpec = ProjectorSpec()
    text: TextSpec
    tokenizer: TokenizerSpec = TokenizerSpec(builtin_bpe_vocab=1024)
    action_bins: int = 256

    _path: Path | None = PrivateAttr(default=None)  # the YAML file, for errors that name it

    @model_validator(mode="after")
    def _tokenizer_of_pretrained(self) -> "ModelSpec":
        """`tokenizer.path` defaults to `text.pretrained`: a pretrained LM's embeddings fit only
        its own tokenizer, so the built-in BPE (the default otherwise) is refused beside it."""
        if self.text.pretrained is None or self.tokenizer.path is not None:
            return self
        given = "tokenizer" in self.model_fields_set and "builtin_bpe_vocab" in self.tokenizer.model_fields_set
        if given and self.tokenizer.builtin_bpe_vocab:
            raise ValueError("tokenizer.builtin_bpe_vocab cannot be used with text.pretrained "
                             "(the LM's embeddings fit its own tokenizer); remove it, or set "
                             "tokenizer.path to a tokenizer with the LM's ids")
        self.tokenizer = self.tokenizer.model_copy(
            update={"path": self.text.pretrained, "builtin_bpe_vocab": None})
        return self

    @property
    def path(self) -> Path | None:
        """The YAML file this spec was read from (None for a spec built in code)."""
        return self._path

    @property
    def from_pretrained(self) -> bool:
        return self.text.pretrained is not None or self.vision.pretrained is not None


def load_model_spec(path: str | Path) -> ModelSpec:
    raw = read_yaml_mapping(path, "model config", "configs/model/")
    spec = validate_config(raw, ModelSpec, path)
    spec._path = Path(path)
    return spec
