"""Magma as a vLLM multimodal model: ConvNeXt encoder + projector here (the checkpoint's own
modules), the language model through vLLM's Llama (or any registered causal LM).

Prompts carry one `<image>` per image; vLLM's renderer tokenises them and the processor below
expands each placeholder into the image tokens `MagmaProcessor` counts (views x tokens_per_view,
or the release's crop grid with its row separators), and the features are laid out by the
transformers model's own functions (`project_views`, `image_tokens`), so positions and greedy
tokens match.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import BatchFeature

from magma.configuration_magma import MagmaConfig
from magma.convnext_keys import build_vision_tower
from magma.modeling_magma import MagmaProjector, grids_of, image_tokens, project_views
from magma.processing_magma import MagmaProcessor
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.inputs import MultiModalDataDict
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.utils import AutoWeightsLoader, init_vllm_registered_model, maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageSize, MultiModalDataItems
from vllm.multimodal.processing import (BaseDummyInputsBuilder, BaseMultiModalProcessor,
                                        BaseProcessingInfo, PromptReplacement, PromptUpdate)
from vllm.sequence import IntermediateTensors


class MagmaProcessingInfo(BaseProcessingInfo):
    def get_hf_config(self) -> MagmaConfig:
        return self.ctx.get_hf_config(MagmaConfig)

    def get_hf_processor(self, **kwargs: object) -> MagmaProcessor:
        return self.ctx.get_hf_processor(MagmaProcessor, **kwargs)

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        return self.get_hf_processor().num_image_tokens(image_width, image_height)

    def get_image_size_with_most_features(self) -> ImageSize:
        # A 1 x max_crops strip gets the most crops (both crop grids follow the aspect ratio);
        # with row separators a tall strip (more feature rows) gives more tokens than a wide one.
        config = self.get_hf_config()
        n, s = max(1, config.max_crops), config.image_size
        return max((ImageSize(width=s * n, height=s), ImageSize(width=s, height=s * n)),
                   key=lambda size: self.get_num_image_tokens(image_width=size.width, image_height=size.height))


class MagmaDummyInputsBuilder(BaseDummyInputsBuilder[MagmaProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return "<image>" * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int],
                          mm_options: MultiModalDummyOptions) -> MultiModalDataDict:
        size = self.info.get_image_size_with_most_features()
        return {"image": self._get_dummy_images(width=size.width, height=size.height,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image"))}


class MagmaMultiModalProcessor(BaseMultiModalProcessor[MagmaProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        # vLLM tokenises the prompt itself; only the images go through Magma's image processor.
        images = hf_data.get("images") or []
        feats = self.info.get_hf_processor().image_processor(list(images))
        out = {"pixel_values": torch.as_tensor(feats["pixel_values"]),
               "image_num_views": torch.as_tensor(feats["image_num_views"])}
        if "image_grid" in feats:  # the release's crop grid (rows, cols) per image
            out["image_grid"] = torch.as_tensor(feats["image_grid"])
        return BatchFeature(out)

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        views = hf_inputs.get("image_num_views", torch.empty(0, dtype=torch.long))
        fields = {"pixel_values": MultiModalFieldConfig.flat_from_sizes("image", views),
                  "image_num_views": MultiModalFieldConfig.batched("image")}
        if "image_grid" in hf_inputs:
            fields["image_grid"] = MultiModalFieldConfig.batched("image")
        return fields

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        image_token_id = self.info.get_hf_config().image_token_id
        processor = self.info.get_hf_processor()

        def replacement(item_idx: int) -> list[int]:
            item = out_mm_kwargs["image"][item_idx]
            inputs = {"image_num_views": [int(item["image_num_views"].data)]}
            if "image_grid" in item:
                inputs["image_grid"] = item["image_grid"].data.reshape(1, 2)
            return [image_token_id] * processor.image_token_counts(inputs)[0]

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(MagmaMultiModalProcessor, info=MagmaProcessingInfo,
                                        dummy_inputs=MagmaDummyInputsBuilder)
class MagmaForVLLM(nn.Module, SupportsMultiModal):
    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("Magma takes only images")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: MagmaConfig = vllm_config.model_config.hf_config
        self.config = config
        text_config = config.get_text_config()
        if not getattr(text_config, "architectures", None):
            text_config.architectures = ["LlamaForCausalLM"] if text_config.model_type == "llama" else None
        self.configure_mm_token_handling(vocab_size=text_config.vocab_size, mm_token_ids=[config.image_token_id])
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_tower = build_vision_tower(config)  # the transformers model's own builder
            self.multi_modal_projector = MagmaProjector(config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=text_config, prefix=maybe_prefix(prefix, "language_model"))
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """One [tokens, hidden] tensor per image, computed and laid out by the transformers
        model's own functions (project_views, image_tokens)."""
        pixel_values = kwargs.get("pixel_values")
        views = kwargs.get("image_num_views")
        grid = kwargs.get("image_grid")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.cat([p.reshape(-1, *p.shape[-3:]) for p in pixel_values])
        views = [int(v) for v in torch.as_tensor(views).flatten()] if views is not None else [1] * len(pixel_values)
        feats = project_views(self.config, self.vision_tower, self.multi_modal_projector, pixel_values)
        if grid is not None:  # the release layout: one crop grid per image
            grid = torch.cat([torch.as_tensor(g).reshape(-1, 2) for g in grid]) if isinstance(grid, (list, tuple)) \
                else torch.as_tensor(grid).reshape(-1, 2)
            return tuple(image_tokens(self.config, self.multi_modal_projector, feats, grids_of(grid, len(views))))
        per_view = image_tokens(self.config, self.multi_modal_projector, feats, grids_of(None, len(feats)))
        out, start = [], 0
        for v in views:  # our views layout: an image's views one after the other
            out.append(torch.cat(per_view[start:start + v]))
            start += v
        return tuple(out)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: IntermediateTensors | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights)
