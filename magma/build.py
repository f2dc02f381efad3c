"""Build a model + processor from a model spec (`configs/model/*.yaml`), offline.

A spec gives each backbone either sizes (random weights) or a local source to start from:
`text.pretrained` (a Hugging Face causal-LM folder) and `vision.pretrained` (a ConvNextModel
folder or an open_clip/timm ConvNeXt file); see magma.pretrained. The projector is always new.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import ConvNextConfig

from magma.auto_register import register
from magma.config_io import ConfigError
from magma.configuration_magma import MagmaConfig
from magma.image_processing_magma import IMAGENET_MEAN, IMAGENET_STD, MagmaImageProcessor
from magma.model_config import ModelSpec, load_model_spec
from magma.modeling_magma import MagmaForCausalLM
from magma.pretrained import TextSource, VisionSource, local_source, read_text_source, read_vision_source
from magma.processing_magma import MagmaProcessor
from magma.tokenizer_build import IMAGE_TOKEN
from magma.tokenizer_setup import TokenSetup, load_tokenizer, tokenizer_from_spec

# what this module builds must load back through the Auto classes in the same process
register()


def build_tokenizer(spec: ModelSpec) -> tuple[Any, TokenSetup]:
    """The spec's tokenizer prepared by `magma.tokenizer_setup` (chat template, end of turn, pad,
    <image>, action tokens by `tokenizer.action_tokens`) and what that resolved."""
    if spec.tokenizer.path:
        folder = local_source(spec.tokenizer.path, "tokenizer.path", spec.path)
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder", file=spec.path, key="tokenizer.path",
                              fix="give the folder holding tokenizer.json / tokenizer_config.json")
        return load_tokenizer(folder, spec.tokenizer.action_tokens)
    return tokenizer_from_spec(spec)


@dataclass
class Backbones:
    """The spec's pretrained sources, read and checked once (None: built from sizes)."""

    text: TextSource | None
    vision: VisionSource | None

    @classmethod
    def of(cls, spec: ModelSpec, load_weights: bool = False) -> "Backbones":
        """`load_weights`: also read a vision checkpoint file's tensors (else shapes only)."""
        return cls(text=read_text_source(spec) if spec.text.pretrained else None,
                   vision=read_vision_source(spec, load_weights) if spec.vision.pretrained else None)


def magma_config_from_spec(spec: ModelSpec, vocab_size: int, image_token_id: int,
                           backbones: Backbones | None = None) -> MagmaConfig:
    """The MagmaConfig of a spec. With `text.pretrained` the vocabulary is at least the source
    LM's (`vocab_size` may add rows for new tokens); sizes come from the sources."""
    b = backbones or Backbones.of(spec)
    if b.vision is not None:
        vision, norm_eps = b.vision.config, b.vision.norm_eps
    else:
        vision = ConvNextConfig(depths=list(spec.vision.depths), hidden_sizes=list(spec.vision.hidden_sizes),
                                num_stages=len(spec.vision.depths), image_size=spec.image_size,
                                drop_path_rate=spec.vision.drop_path_rate)
        norm_eps = spec.vision.norm_eps
    if b.text is not None:
        text = b.text.text_config_dict(max(vocab_size, int(b.text.config.vocab_size)))
        tie = bool(getattr(b.text.config, "tie_word_embeddings", False))
    else:
        text = spec.text.model_dump(exclude_none=True, exclude={"pretrained"})
        text["vocab_size"] = vocab_size
        tie = spec.text.tie_word_embeddings
    return MagmaConfig(vision_config=vision.to_dict(), text_config=text,
                       image_token_id=image_token_id, image_size=spec.image_size,
                       max_crops=spec.max_crops, vision_feature_stage=spec.vision.feature_stage,
                       projector_type=spec.projector.type, projector_norm=spec.projector.norm,
                       action_bins=spec.action_bins, tie_word_embeddings=tie, vision_norm_eps=norm_eps)


def image_normalisation(spec: ModelSpec, backbones: Backbones) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for the processor: the spec's, else the pretrained tower's, else ImageNet's."""
    if backbones.vision is not None:  # already holds the spec's overrides
        return backbones.vision.image_mean, backbones.vision.image_std
    return (tuple(spec.vision.image_mean or IMAGENET_MEAN), tuple(spec.vision.image_std or IMAGENET_STD))


def build_processor(config: MagmaConfig, tokenizer, image_mean: tuple[float, ...] = IMAGENET_MEAN,
                    image_std: tuple[float, ...] = IMAGENET_STD, setup: TokenSetup | None = None) -> MagmaProcessor:
    """`setup`: what `magma.tokenizer_setup` resolved (end of turn, action scheme), recorded in
    the processor config; None only for a tokenizer in the built-in layout."""
    image_processor = MagmaImageProcessor(image_size=config.image_size, max_crops=config.max_crops,
                                          image_mean=image_mean, image_std=image_std)
    return MagmaProcessor(image_processor, tokenizer, tokens_per_view=config.tokens_per_view,
                          **(setup.processor_kwargs() if setup else {}))


def _spec(spec_or_path: ModelSpec | str | Path) -> ModelSpec:
    return spec_or_path if isinstance(spec_or_path, ModelSpec) else load_model_spec(spec_or_path)


def build_config_and_processor(spec_or_path: ModelSpec | str | Path, backbones: Backbones | None = None
                               ) -> tuple[MagmaConfig, MagmaProcessor]:
    spec = _spec(spec_or_path)
    b = backbones or Backbones.of(spec)
    tok, setup = build_tokenizer(spec)
    vocab = spec.text.vocab_size if spec.text.vocab_size and b.text is None else len(tok)
    if vocab < len(tok):
        raise ConfigError(f"text.vocab_size {vocab} is smaller than the tokenizer ({len(tok)})")
    config = magma_config_from_spec(spec, vocab, tok.convert_tokens_to_ids(IMAGE_TOKEN), b)
    return config, build_processor(config, tok, *image_normalisation(spec, b), setup=setup)


def build_model(spec_or_path: ModelSpec | str | Path, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> tuple[MagmaForCausalLM, MagmaProcessor]:
    """The model of a spec and its processor: random weights from sizes (deterministic for a
    given seed), the source's weights for a `pretrained` backbone (new projector)."""
    spec = _spec(spec_or_path)
    if not spec.from_pretrained:
        config, processor = build_config_and_processor(spec)
        torch.manual_seed(seed)
        model = MagmaForCausalLM(config).to(dtype)
    else:
        b = Backbones.of(spec, load_weights=True)
        config, processor = build_config_and_processor(spec, b)
        model = _build_from_pretrained(spec, config, processor, b, seed, dtype)
    set_generation_defaults(model, processor)
    return model, processor


def _build_from_pretrained(spec: ModelSpec, config: MagmaConfig, processor: MagmaProcessor, b: Backbones,
                           seed: int, dtype: torch.dtype) -> MagmaForCausalLM:
    from magma.pretrained import assemble_model, base_vocab_size, load_language_model, load_vision_tower

    lm = None
    if b.text is not None:
        n_source = base_vocab_size(spec.tokenizer.path)
        src_rows = int(b.text.config.vocab_size)
        if n_source > src_rows:
            raise ConfigError(f"the tokenizer has {n_source} tokens but {b.text.folder} has {src_rows} "
                              "embedding rows", file=spec.path, key="tokenizer.path",
                              fix="use the LM's own tokenizer (leave tokenizer.path unset)")
        lm = load_language_model(b.text, config.get_text_config().vocab_size, n_source,
                                 len(processor.tokenizer) - n_source, dtype)
    tower = load_vision_tower(b.vision, dtype) if b.vision is not None else None
    return assemble_model(config, lm, tower, seed=seed, dtype=dtype)


def set_generation_defaults(model: MagmaForCausalLM, processor: MagmaProcessor) -> None:
    """Generation stops at the end of the assistant turn (the processor's recorded end-of-turn
    token, magma.tokenizer_setup) and pads with the pad token."""
    tok = processor.tokenizer
    model.generation_config.eos_token_id = processor.eot_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
