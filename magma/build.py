"""Build a model + processor from a size config (`configs/model/*.yaml`), offline."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, ConvNextConfig

from magma.action_tokenizer import N_ACTION_BINS, action_token
from magma.config_io import ConfigError
from magma.configuration_magma import MagmaConfig
from magma.image_processing_magma import MagmaImageProcessor
from magma.model_config import ModelSpec, load_model_spec
from magma.modeling_magma import MagmaForCausalLM
from magma.processing_magma import MagmaProcessor
from magma.tokenizer_build import END_OF_TURN, IMAGE_TOKEN, build_bpe_tokenizer


def build_tokenizer(spec: ModelSpec):
    if spec.tokenizer.path:
        folder = Path(spec.tokenizer.path)
        if not folder.is_dir():
            raise ConfigError(f"tokenizer.path {folder} is not a local folder (nothing is downloaded)")
        tok = AutoTokenizer.from_pretrained(folder)
        missing = [t for t in [IMAGE_TOKEN] + [action_token(i) for i in range(N_ACTION_BINS)]
                   if t not in tok.get_vocab()]
        if missing:  # real tokenizers: append <image> and the action tokens at the end
            tok.add_tokens(missing, special_tokens=True)
        return tok
    if spec.tokenizer.builtin_bpe_vocab:
        return build_bpe_tokenizer(spec.tokenizer.builtin_bpe_vocab)
    raise ConfigError("tokenizer: set builtin_bpe_vocab or path")


def magma_config_from_spec(spec: ModelSpec, vocab_size: int, image_token_id: int) -> MagmaConfig:
    vision = ConvNextConfig(depths=list(spec.vision.depths), hidden_sizes=list(spec.vision.hidden_sizes),
                            num_stages=len(spec.vision.depths), image_size=spec.image_size,
                            drop_path_rate=spec.vision.drop_path_rate)
    text = spec.text.model_dump(exclude_none=True)
    text["vocab_size"] = vocab_size
    return MagmaConfig(vision_config=vision.to_dict(), text_config=text,
                       image_token_id=image_token_id, image_size=spec.image_size,
                       max_crops=spec.max_crops, vision_feature_stage=spec.vision.feature_stage,
                       projector_type=spec.projector.type, projector_norm=spec.projector.norm,
                       action_bins=spec.action_bins,
                       tie_word_embeddings=spec.text.tie_word_embeddings)


def build_processor(config: MagmaConfig, tokenizer) -> MagmaProcessor:
    image_processor = MagmaImageProcessor(image_size=config.image_size, max_crops=config.max_crops)
    return MagmaProcessor(image_processor, tokenizer, tokens_per_view=config.tokens_per_view)


def build_config_and_processor(spec_or_path: ModelSpec | str | Path) -> tuple[MagmaConfig, MagmaProcessor]:
    spec = spec_or_path if isinstance(spec_or_path, ModelSpec) else load_model_spec(spec_or_path)
    tok = build_tokenizer(spec)
    vocab = spec.text.vocab_size or len(tok)
    if vocab < len(tok):
        raise ConfigError(f"text.vocab_size {vocab} is smaller than the tokenizer ({len(tok)})")
    config = magma_config_from_spec(spec, vocab, tok.convert_tokens_to_ids(IMAGE_TOKEN))
    return config, build_processor(config, tok)


def build_model(spec_or_path: ModelSpec | str | Path, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> tuple[MagmaForCausalLM, MagmaProcessor]:
    """A randomly initialised model and its processor (deterministic for a given seed)."""
    config, processor = build_config_and_processor(spec_or_path)
    torch.manual_seed(seed)
    model = MagmaForCausalLM(config).to(dtype)
    set_generation_defaults(model, processor)
    return model, processor


def set_generation_defaults(model: MagmaForCausalLM, processor: MagmaProcessor) -> None:
    """Generation stops at <|end|> (end of the assistant turn) and pads with <pad>."""
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = None
