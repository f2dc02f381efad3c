"""MagmaForCausalLM: ConvNeXt image encoder -> MLP projector -> any causal LM.

Each `<image>` token in `input_ids` receives one image-feature vector, in order: the processor
expands every image placeholder to `views x tokens_per_view` image tokens, and the model fills
them with the projected ConvNeXt feature maps of those views (row-major cells). The loss is
taken on `labels` (-100 everywhere but the assistant targets).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from magma.configuration_magma import MagmaConfig
from magma.convnext_keys import build_vision_tower


@dataclass
class MagmaCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class MagmaProjector(nn.Module):
    def __init__(self, config: MagmaConfig):
        super().__init__()
        d_in, d_out = config.vision_feature_dim, config.get_text_config().hidden_size
        self.norm = nn.LayerNorm(d_in) if config.projector_norm else nn.Identity()
        if config.projector_type == "linear":
            self.proj = nn.Sequential(nn.Linear(d_in, d_out))
        else:
            self.proj = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features))


class MagmaPreTrainedModel(PreTrainedModel):
    config_class = MagmaConfig
    config: MagmaConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    _no_split_modules = ["LlamaDecoderLayer", "ConvNextStage"]
    _skip_keys_device_placement = "past_key_values"

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config.get_text_config(), "initializer_range", 0.02)
        if isinstance(module, nn.Linear) and module in self.multi_modal_projector.modules():
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module in self.multi_modal_projector.modules():
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MagmaForCausalLM(MagmaPreTrainedModel, GenerationMixin):
    def __init__(self, config: MagmaConfig):
        super().__init__(config)
        self.vision_tower = build_vision_tower(config)
        self.multi_modal_projector = MagmaProjector(config)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # -- embeddings plumbing that generate / resize / tying rely on
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # -- vision
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[V, 3, S, S] views -> [V, tokens_per_view, hidden] language-model embeddings."""
        stage = self.config.feature_stage
        last = len(self.config.vision_config.hidden_sizes) - 1
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        if stage == last:
            fmap = self.vision_tower(pixel_values).last_hidden_state
        else:
            fmap = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states[stage + 1]
        feats = fmap.flatten(2).transpose(1, 2)  # [V, h*w, C], row-major cells
        return self.multi_modal_projector(feats)

    def _merge_image_features(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                              pixel_values: torch.Tensor) -> torch.Tensor:
        image_mask = input_ids == self.config.image_token_id
        n_slots = int(image_mask.sum())
        feats = self.get_image_features(pixel_values)
        n_feats = feats.shape[0] * feats.shape[1]
        if n_slots != n_feats:
            raise ValueError(
                f"{n_slots} <image> tokens in input_ids but {feats.shape[0]} views x "
                f"{feats.shape[1]} tokens = {n_feats} image features; build inputs with "
                "MagmaProcessor so each placeholder expands to the right number of tokens")
        feats = feats.reshape(-1, feats.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), feats)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> MagmaCausalLMOutput:
        kwargs.pop("image_num_views", None)  # processor bookkeeping, not a model input
        if inputs_embeds is None:
            ids = input_ids.clone()
            image_mask = ids == self.config.image_token_id
            ids[image_mask] = 0  # placeholder rows are overwritten by image features below
            inputs_embeds = self.get_input_embeddings()(ids)
            if pixel_values is not None:
                inputs_embeds = self._merge_image_features(input_ids, inputs_embeds, pixel_values)
            elif bool(image_mask.any()):
                raise ValueError("input_ids contain <image> tokens but no pixel_values were given")
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, use_cache=use_cache, logits_to_keep=logits_to_keep,
            **kwargs)
        logits = out.logits
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels)
        return MagmaCausalLMOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                   hidden_states=out.hidden_states, attentions=out.attentions)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy; positions labelled -100 are ignored.

    reduction="none" returns per-token losses [B, L-1] (0 where ignored), which the trainer
    uses for per-target-kind losses.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           ignore_index=-100, reduction=reduction).reshape(
        shift_labels.shape if reduction == "none" else ())
