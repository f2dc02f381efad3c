"""MagmaConfig: a ConvNeXt vision config, a causal-LM text config and the glue between them."""
from __future__ import annotations

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import CONFIG_MAPPING, AutoConfig, PreTrainedConfig


@strict
class MagmaConfig(PreTrainedConfig):
    """Magma-style vision-language-action model configuration.

    vision_config: a `ConvNextConfig` (Magma uses ConvNeXt-XXLarge).
    text_config: any causal-LM config (Magma uses Llama-3-8B).
    image_token_id: vocabulary id of `<image>`; each view contributes `tokens_per_view` copies.
    vision_feature_stage: ConvNeXt stage whose feature map becomes image tokens (-1 = last).
    max_crops: > 0 splits large images into up to this many crops plus a global view.
    action_bins: number of action tokens at the end of the vocabulary.
    vision_norm_eps: LayerNorm eps of the vision tower when its source used another one than
        transformers' ConvNeXt (timm's convnext_xxlarge: 1e-5); see magma.convnext_keys.
    row_separator: the public Magma-8B layout: a learnt vector (`multi_modal_projector.row_separator`)
        ends every row of image features (magma.modeling_magma.place_image_tokens). Off by default.
    """

    model_type = "magma"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 0
    image_size: int = 224
    max_crops: int = 0
    vision_feature_stage: int = -1
    projector_type: Literal["mlp2x_gelu", "linear"] = "mlp2x_gelu"
    projector_norm: bool = True  # LayerNorm before the MLP (off for the public Magma-8B layout)
    action_bins: int = 256
    tie_word_embeddings: bool = False
    vision_norm_eps: float | None = None  # every vision LayerNorm's eps (None: transformers' 1e-6)
    row_separator: bool = False

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict):
            self.vision_config.setdefault("model_type", "convnext")
            self.vision_config = CONFIG_MAPPING[self.vision_config["model_type"]](**self.vision_config)
        elif self.vision_config is None:
            self.vision_config = CONFIG_MAPPING["convnext"]()
        if isinstance(self.text_config, dict):
            self.text_config.setdefault("model_type", "llama")
            self.text_config = CONFIG_MAPPING[self.text_config["model_type"]](**self.text_config)
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["llama"]()
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        super().__post_init__(**kwargs)

    # -- derived shapes (one place, used by the processor, the model and the vLLM plugin)

    @property
    def feature_stage(self) -> int:
        n = len(self.vision_config.hidden_sizes)
        return self.vision_feature_stage % n

    @property
    def vision_feature_dim(self) -> int:
        return self.vision_config.hidden_sizes[self.feature_stage]

    @property
    def vision_stride(self) -> int:
        return self.vision_config.patch_size * 2 ** self.feature_stage

    @property
    def tokens_per_view(self) -> int:
        side = self.image_size // self.vision_stride
        return side * side
