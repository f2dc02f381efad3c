"""MagmaForCausalLM: ConvNeXt image encoder -> MLP projector -> any causal LM.

Each `<image>` token in `input_ids` receives one image-feature vector, in order: the processor
expands every image placeholder to as many image tokens as `place_image_tokens` lays out, and
the model fills them with the projected ConvNeXt feature maps. Two layouts:

- views (ours): each view's h x w feature cells, row-major, view after view;
- grid (the Magma-8B release, `image_grid` given): an image's rows x cols crops form one
  (rows*h) x (cols*w) feature grid, read row by row.

With `config.row_separator` a learnt vector ends every feature row (the release's
`row_seperator`), so a grid of R x C cells gives R * (C + 1) tokens. The loss is taken on
`labels` (-100 everywhere but the assistant targets).
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
from magma.packed_attention import (PER_SAMPLE_SDPA, VARLEN_IMPLEMENTATIONS, attention_implementation,
                                    block_causal_mask, varlen_inputs)


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

        if config.row_separator:
            # The release's learnt row separator; zeros until trained or converted.
            self.row_separator = nn.Parameter(torch.zeros(d_out))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features))


def place_image_tokens(maps: torch.Tensor, grids: list[tuple[int, int]],
                       row_separator: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Projected feature maps [V, h, w, D] (crops/views in order) -> one [tokens, D] tensor per
    grid. `grids` lists (rows, cols) of crops per grid, row-major, sum(rows * cols) == V; the
    views layout is one (1, 1) grid per view. A grid is read as one (rows*h) x (cols*w) map, row
    by row, with `row_separator` [D] after every row when given. The one layout for the
    transformers model, the vLLM plugin and the processor's token count (`count_image_tokens`)."""
    n_views, h, w, dim = maps.shape
    if sum(r * c for r, c in grids) != n_views:
        raise ValueError(f"crop grids {grids} hold {sum(r * c for r, c in grids)} crops, but "
                         f"{n_views} views were encoded")
    out, start = [], 0
    for rows, cols in grids:
        crops = maps[start:start + rows * cols]
        start += rows * cols
        grid = crops.reshape(rows, cols, h, w, dim).permute(0, 2, 1, 3, 4).reshape(rows * h, cols * w, dim)
        if row_separator is not None:
            sep = row_separator.to(grid.dtype).reshape(1, 1, dim).expand(rows * h, 1, dim)
            grid = torch.cat([grid, sep], dim=1)
        out.append(grid.reshape(-1, dim))
    return out


def project_views(config: MagmaConfig, vision_tower: nn.Module, projector: nn.Module,
                  pixel_values: torch.Tensor) -> torch.Tensor:
    """[V, 3, S, S] views or crops -> [V, tokens_per_view, hidden]: the feature stage's cells,
    row-major, through the projector (the transformers model and the vLLM plugin alike)."""
    stage = config.feature_stage
    last = len(config.vision_config.hidden_sizes) - 1
    pixel_values = pixel_values.to(dtype=next(vision_tower.parameters()).dtype)
    if stage == last:
        fmap = vision_tower(pixel_values).last_hidden_state
    else:
        fmap = vision_tower(pixel_values, output_hidden_states=True).hidden_states[stage + 1]
    feats = fmap.flatten(2).transpose(1, 2)  # [V, h*w, C], row-major cells
    return projector(feats)


def image_tokens(config: MagmaConfig, projector: nn.Module, feats: torch.Tensor,
                 grids: list[tuple[int, int]]) -> list[torch.Tensor]:
    """`project_views` output [V, T, D] -> one [tokens, D] tensor per grid (`place_image_tokens`,
    with the projector's row separator when the config has one)."""
    side = config.image_size // config.vision_stride
    maps = feats.reshape(feats.shape[0], side, side, feats.shape[-1])
    return place_image_tokens(maps, grids, getattr(projector, "row_separator", None))


def grids_of(image_grid: torch.Tensor | None, n_views: int) -> list[tuple[int, int]]:
    """`image_grid` [N, 2] (rows, cols per image, the grid layout) as a list; the views layout
    (None) is one 1 x 1 grid per view."""
    if image_grid is None:
        return [(1, 1)] * n_views
    return [(int(r), int(c)) for r, c in torch.as_tensor(image_grid).reshape(-1, 2).tolist()]


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
        elif isinstance(module, MagmaProjector) and getattr(module, "row_separator", None) is not None:
            nn.init.zeros_(module.row_separator)


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
        return project_views(self.config, self.vision_tower, self.multi_modal_projector, pixel_values)

    def image_token_features(self, pixel_values: torch.Tensor,
                             image_grid: torch.Tensor | None = None) -> torch.Tensor:
        """[V, 3, S, S] views or crops -> [image tokens, hidden], laid out by `place_image_tokens`."""
        feats = self.get_image_features(pixel_values)
        placed = image_tokens(self.config, self.multi_modal_projector, feats, grids_of(image_grid, feats.shape[0]))
        return torch.cat(placed) if placed else feats.reshape(0, feats.shape[-1])

    def _merge_image_features(self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor,
                              pixel_values: torch.Tensor,
                              image_grid: torch.Tensor | None = None) -> torch.Tensor:
        image_mask = input_ids == self.config.image_token_id
        n_slots = int(image_mask.sum())
        feats = self.image_token_features(pixel_values, image_grid)
        if n_slots != feats.shape[0]:
            raise ValueError(
                f"{n_slots} <image> tokens in input_ids but {pixel_values.shape[0]} views give "
                f"{feats.shape[0]} image features; build inputs with MagmaProcessor so each "
                "placeholder expands to the right number of tokens")
        return inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), feats.to(inputs_embeds.dtype))

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
        image_grid: torch.LongTensor | None = None,
        sample_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> MagmaCausalLMOutput:
        """`image_grid` [images, 2]: (rows, cols) of crops per image in the release's grid layout
        (the processor gives it); None for the views layout.

        `sample_index` [B, L] (packed rows, train.data.collate): the sample each token belongs to,
        -1 on padding; with `position_ids` restarting per sample, every sample then attends only
        to itself (magma.packed_attention), so its logits equal those of the sample run alone.
        `attention_mask` is then ignored (padding is -1 in `sample_index`)."""
        kwargs.pop("image_num_views", None)  # processor bookkeeping, not a model input
        if inputs_embeds is None:
            ids = input_ids.clone()
            image_mask = ids == self.config.image_token_id
            ids[image_mask] = 0  # placeholder rows are overwritten by image features below
            inputs_embeds = self.get_input_embeddings()(ids)
            if pixel_values is not None:
                inputs_embeds = self._merge_image_features(input_ids, inputs_embeds, pixel_values, image_grid)
            elif bool(image_mask.any()):
                raise ValueError("input_ids contain <image> tokens but no pixel_values were given")
        if sample_index is not None:
            return self._forward_packed(inputs_embeds, sample_index, position_ids, labels, **kwargs)
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


    def _forward_packed(self, inputs_embeds: torch.Tensor, sample_index: torch.Tensor,
                        position_ids: torch.Tensor | None, labels: torch.Tensor | None,
                        **kwargs) -> MagmaCausalLMOutput:
        """Packed rows with per-sample attention: flash-attention and sdpa get the varlen layout
        (one flattened row of real tokens, logits scattered back to [B, L]; sdpa through one SDPA
        call per sample, magma.packed_attention.PER_SAMPLE_SDPA); eager, and sdpa under gradient
        checkpointing, get a block-causal mask (checkpointing recomputes the layers during
        backward, after the per-sample implementation has been switched back)."""
        if position_ids is None:
            raise ValueError("sample_index (packed rows) needs position_ids restarting at every sample; "
                             "build the batch with train.data.collate(packing=True)")
        impl = self.language_model.config._attn_implementation
        per_sample = impl == "sdpa" and not self.language_model.is_gradient_checkpointing
        if impl in VARLEN_IMPLEMENTATIONS or per_sample:  # flash: GPU only, not covered by CPU tests
            keep, varlen = varlen_inputs(sample_index, position_ids)
            with attention_implementation(self.language_model, PER_SAMPLE_SDPA if impl == "sdpa" else impl):
                out = self.language_model(inputs_embeds=inputs_embeds[keep][None], attention_mask=None,
                                          use_cache=False, **varlen, **kwargs)
            logits = out.logits.new_zeros(*sample_index.shape, out.logits.shape[-1])
            logits[keep] = out.logits[0]
        else:
            mask = block_causal_mask(sample_index, inputs_embeds.dtype, impl)
            out = self.language_model(inputs_embeds=inputs_embeds, attention_mask=mask,
                                      position_ids=position_ids, use_cache=False, **kwargs)
            logits = out.logits
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return MagmaCausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                   attentions=out.attentions)


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
