"""Pretrained backbones from local folders and files: `text.pretrained`, `vision.pretrained`.

Nothing is downloaded (`local_files_only=True` everywhere); a hub id is refused with that
explanation. Reading a source (`read_text_source`, `read_vision_source`) checks it and the spec
keys written beside it, without loading weights; `load_language_model` / `load_vision_tower`
load them. `assemble_model` puts the loaded LM into `model.language_model` and the tower into
`model.vision_tower`; the projector is new (randomly initialised).

Contracts, tested in tests/magma/test_pretrained.py:
- the text-only forward of the result gives the source LM's logits on the source vocabulary;
- tokens the tokenizer gained (ids from the source tokenizer's size on) get rows initialised
  to the mean of the source rows (input and output embeddings); every source row is unchanged;
- the vision tower gives the source tower's features (ConvNextModel names, timm's LayerNorm eps).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magma.config_io import ConfigError
from magma.convnext_keys import (TIMM_DEFAULT_NORM_EPS, TrunkSplit, convnext_config_from_state,
                                 set_layer_norm_eps, split_trunk_state_dict, timm_norm_eps)
from magma.image_processing_magma import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from magma.model_config import ModelSpec

__all__ = ["TextSource", "VisionSource", "assemble_model", "base_vocab_size", "load_language_model",
           "load_vision_tower", "local_source", "read_text_source", "read_vision_source"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Encoder families that transformers can also run as a causal LM, but only when the config
# says `is_decoder`; a plain BERT/RoBERTa folder is an encoder.
_ENCODER_FAMILIES = {"bert", "bert-generation", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert",
                     "electra", "ernie", "data2vec-text", "xmod", "rembert", "roc_bert", "megatron-bert",
                     "roberta-prelayernorm", "big_bird", "xlm"}


def local_source(value: str, key: str, spec_file: Path | None) -> Path:
    """`value` as an existing local path; a hub id or a missing path is one ConfigError."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if _HUB_ID.fullmatch(value) and not value.startswith((".", "/", "~")):
        raise ConfigError(
            f"{value!r} is not a local path; it looks like a Hugging Face Hub id, and nothing is "
            "downloaded", file=spec_file, key=key,
            fix=f"download it yourself (e.g. `huggingface-cli download {value} --local-dir DIR`) "
                "and give the local folder (a relative path is read from the current directory)")
    raise ConfigError(f"{value} does not exist", file=spec_file, key=key,
                      fix="give an existing local folder or file; relative paths are from the current directory")


# ---------------------------------------------------------------------------------- text


@dataclass
class TextSource:
    """A checked `text.pretrained` folder and its config (the source's own vocab_size)."""

    folder: Path
    config: Any  # transformers PretrainedConfig

    def text_config_dict(self, vocab_size: int) -> dict[str, Any]:
        """The config our checkpoint records for the LM: the source's, with our vocabulary."""
        d = self.config.to_dict()
        for k in ("_name_or_path", "dtype", "torch_dtype", "transformers_version"):
            d.pop(k, None)
        d["vocab_size"] = vocab_size
        return d


def _read_hf_config(folder: Path, fix: str) -> tuple[Any, Path]:
    """A local folder's transformers config (never remote code), or one ConfigError naming it."""
    from transformers import AutoConfig

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError("no config.json: not a Hugging Face model folder", file=folder, fix=fix)
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False), config_file
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"transformers cannot read it ({exc})", file=config_file, fix=fix) from None


def read_text_source(spec: ModelSpec) -> TextSource:
    """The `text.pretrained` folder, checked: a causal LM whose config agrees with every size
    key written beside it in the spec."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = local_source(spec.text.pretrained, "text.pretrained", spec.path)
    fix_lm = ("text.pretrained takes the folder of a decoder LM (Llama, Qwen2, Mistral, Phi-3, ...) "
              "holding config.json, the weights and the tokenizer files")
    if not folder.is_dir():
        raise ConfigError("is a file, not a model folder", file=folder, fix=fix_lm)
    config, config_file = _read_hf_config(folder, fix_lm)
    model_type = getattr(config, "model_type", None)
    archs = list(getattr(config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    what = f"model_type {model_type!r}" + (f" ({', '.join(archs)})" if archs else "")
    if (model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False)
            or (archs and not any(a in causal for a in archs))
            or (model_type in _ENCODER_FAMILIES and not getattr(config, "is_decoder", False))):
        raise ConfigError(f"{what} is not a causal language model (an encoder, an encoder-decoder "
                          "or another task's head)", file=config_file, fix=fix_lm)
    _check_text_agreement(spec, config, config_file)
    return TextSource(folder=folder, config=config)


def _source_value(config: Any, key: str) -> Any:
    if key == "rope_theta":
        rope = getattr(config, "rope_parameters", None) or {}
        return rope.get("rope_theta", getattr(config, "rope_theta", None))
    if key == "num_key_value_heads":
        return getattr(config, key, None) or getattr(config, "num_attention_heads", None)
    return getattr(config, key, None)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def _check_text_agreement(spec: ModelSpec, config: Any, config_file: Path) -> None:
    bad = [f"text.{k} is {v!r} but config.json has {_source_value(config, k)!r}"
           for k, v in spec.text.given().items() if not _same(v, _source_value(config, k))]
    if bad:
        raise ConfigError(f"disagrees with {config_file}: " + "; ".join(bad), file=spec.path,
                          fix="remove these keys (text.pretrained gives architecture and sizes) or correct them")


def base_vocab_size(tokenizer_path: str | Path) -> int:
    """Size of the source tokenizer (before tokens are added): ids from here on are new."""
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True, trust_remote_code=False))


def load_language_model(source: TextSource, vocab_size: int, n_source_tokens: int, n_new_tokens: int,
                        dtype: torch.dtype = torch.float32) -> nn.Module:
    """The source causal LM with `vocab_size` embedding rows. The rows of the tokens the
    tokenizer gained, [n_source_tokens, n_source_tokens + n_new_tokens), start at the mean of
    the source rows (magma.tokenizer_setup.init_new_token_rows); every other row is the source's."""
    from transformers import AutoModelForCausalLM

    from magma.tokenizer_setup import init_new_token_rows

    try:
        lm = AutoModelForCausalLM.from_pretrained(source.folder, local_files_only=True, trust_remote_code=False,
                                                  dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot load the LM weights ({type(exc).__name__}: {exc})", file=source.folder,
                          fix="the folder needs *.safetensors (or pytorch_model*.bin) matching its "
                              "config.json") from None
    if lm.get_input_embeddings().weight.shape[0] < vocab_size:
        lm.resize_token_embeddings(vocab_size, mean_resizing=False)
    init_new_token_rows(lm, n_new_tokens, n_source_tokens)
    return lm


# ---------------------------------------------------------------------------------- vision


@dataclass
class VisionSource:
    """A checked `vision.pretrained` source: the ConvNextConfig it makes, the normalisation
    it expects, its LayerNorm eps, and (files) its weights in ConvNextModel names."""

    path: Path
    kind: str  # "hf_folder", or a checkpoint kind of magma.convnext_keys.TRUNK_PREFIXES
    config: Any  # transformers ConvNextConfig
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    norm_eps: float | None  # None: transformers' own (an HF folder)
    state: dict[str, torch.Tensor] | None = None


def read_vision_source(spec: ModelSpec, load_weights: bool = False) -> VisionSource:
    """The `vision.pretrained` folder or file, checked against the spec's size keys. A file's
    weights are read only with `load_weights` (else shapes only, when the format allows)."""
    path = local_source(spec.vision.pretrained, "vision.pretrained", spec.path)
    source = _vision_folder(path) if path.is_dir() else _vision_file(path, load_weights)
    _check_vision_agreement(spec, source)
    v = spec.vision
    source.config.image_size = spec.image_size
    source.config.drop_path_rate = v.drop_path_rate
    if v.image_mean is not None:
        source.image_mean = tuple(v.image_mean)
    if v.image_std is not None:
        source.image_std = tuple(v.image_std)
    if v.norm_eps is not None:
        source.norm_eps = v.norm_eps
    return source


_FIX_VISION = ("vision.pretrained takes a transformers ConvNextModel folder, or an open_clip (visual.trunk.*) "
               "or timm (stem.*, stages.N.blocks.M.*, head.norm) ConvNeXt checkpoint file")


def _vision_folder(folder: Path) -> VisionSource:

    config, config_file = _read_hf_config(folder, _FIX_VISION)
    if config.model_type != "convnext":
        raise ConfigError(f"model_type {config.model_type!r} is not a ConvNeXt", file=config_file, fix=_FIX_VISION)
    mean, std = IMAGENET_MEAN, IMAGENET_STD  # transformers' ConvNeXt checkpoints are ImageNet ones
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            raw = json.loads(pre.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON ({exc})", file=pre) from None
        mean, std = tuple(raw.get("image_mean", mean)), tuple(raw.get("image_std", std))
    return VisionSource(path=folder, kind="hf_folder", config=config, image_mean=mean, image_std=std,
                        norm_eps=None)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(f"unknown weights file type {path.suffix!r} (expected one of {', '.join(WEIGHT_SUFFIXES)})",
                          file=path, fix=_FIX_VISION)
    try:
        if path.suffix == ".safetensors":  # shapes now, tensors later: only the trunk's are read
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        try:  # mmap: tensors are read when used
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (pre-zip) torch.save file cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: one clear line, whatever the reader raised
        raise ConfigError(f"cannot read the weights ({type(exc).__name__}: {exc})", file=path,
                          fix=_FIX_VISION) from None
    # Training checkpoints nest the weights and DDP prefixes them with `module.`.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ConfigError("not a state dict (name -> tensor)", file=path, fix=_FIX_VISION)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def _vision_file(path: Path, load_weights: bool) -> VisionSource:
    from transformers import ConvNextConfig

    state = _read_weights(path)
    split = split_trunk_state_dict(state)
    if split is None:
        raise ConfigError(f"no ConvNeXt trunk found (no stem.0.weight, bare or under visual.trunk.); "
                          f"its keys: {_few(sorted(state))}", file=path, fix=_FIX_VISION)
    if split.unknown:
        raise ConfigError(f"keys that are not ConvNeXt weights transformers' ConvNextModel can hold: "
                          f"{_few(sorted(split.unknown))}", file=path,
                          fix=_FIX_VISION + "; ConvNeXt-V2 (GRN), conv-MLP and overlapping-stem variants "
                                            "are not supported")
    try:
        layout = convnext_config_from_state(split.state)
    except ValueError as exc:
        raise ConfigError(f"a ConvNeXt transformers cannot hold: {exc}", file=path, fix=_FIX_VISION) from None
    config = ConvNextConfig(num_channels=layout.num_channels, patch_size=layout.patch_size,
                            hidden_sizes=layout.hidden_sizes, depths=layout.depths,
                            num_stages=len(layout.depths), hidden_act="gelu",
                            layer_scale_init_value=1e-6 if layout.layer_scale else 0.0)
    clip = split.kind != "timm"  # open_clip towers (and the Magma release's) are CLIP-trained
    eps = timm_norm_eps(layout.depths, layout.hidden_sizes)
    return VisionSource(path=path, kind=split.kind, config=config,
                        image_mean=CLIP_MEAN if clip else IMAGENET_MEAN,
                        image_std=CLIP_STD if clip else IMAGENET_STD,
                        norm_eps=None if eps == TIMM_DEFAULT_NORM_EPS else eps,
                        state=_trunk_tensors(path, split) if load_weights else None)


def _trunk_tensors(path: Path, split: TrunkSplit) -> dict[str, torch.Tensor]:
    """The trunk's tensors in ConvNextModel names (a safetensors file: only these are read)."""
    if path.suffix != ".safetensors":
        return dict(split.state)  # memory-mapped; load_state_dict copies them into the tower
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {new: f.get_tensor(old) for new, old in split.source_keys.items()}


def _check_vision_agreement(spec: ModelSpec, source: VisionSource) -> None:
    bad = [f"vision.{k} is {getattr(spec.vision, k)} but the source has {list(getattr(source.config, k))}"
           for k in ("depths", "hidden_sizes")
           if getattr(spec.vision, k) is not None and list(getattr(spec.vision, k)) != list(getattr(source.config, k))]
    if bad:
        raise ConfigError(f"disagrees with {source.path}: " + "; ".join(bad), file=spec.path,
                          fix="remove these keys (vision.pretrained gives the sizes) or correct them")


def load_vision_tower(source: VisionSource, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The source tower as a transformers ConvNextModel (with the source's LayerNorm eps)."""
    from transformers import ConvNextModel

    if source.kind == "hf_folder":
        try:
            tower = ConvNextModel.from_pretrained(source.path, config=source.config, local_files_only=True,
                                                  dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load the ConvNeXt weights ({type(exc).__name__}: {exc})",
                              file=source.path, fix=_FIX_VISION) from None
    else:
        if source.state is None:
            raise ValueError("read_vision_source(..., load_weights=True) first")
        tower = ConvNextModel(source.config)
        state = dict(source.state)
        # The pooled-output norm (timm head.norm) is unused for dense features; absent, identity.
        hidden = source.config.hidden_sizes[-1]
        state.setdefault("layernorm.weight", torch.ones(hidden))
        state.setdefault("layernorm.bias", torch.zeros(hidden))
        result = tower.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ConfigError(f"weights do not fill a ConvNextModel: missing {_few(result.missing_keys)}, "
                              f"unexpected {_few(result.unexpected_keys)}", file=source.path, fix=_FIX_VISION)
        tower = tower.to(dtype)
    set_layer_norm_eps(tower, source.norm_eps)
    return tower.eval()


# ---------------------------------------------------------------------------------- model


def assemble_model(config: Any, language_model: nn.Module | None, vision_tower: nn.Module | None,
                   seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A MagmaForCausalLM holding the given LM and tower (None: a random one from `config`)
    and a new projector. Built on the meta device first, so no random copy of a pretrained
    backbone is ever allocated."""
    from magma.convnext_keys import build_vision_tower
    from magma.modeling_magma import MagmaForCausalLM, MagmaProjector

    with torch.device("meta"):
        model = MagmaForCausalLM(config)
    torch.manual_seed(seed)
    if language_model is None:
        from transformers import AutoModelForCausalLM
        language_model = AutoModelForCausalLM.from_config(config.text_config)
    model.language_model = language_model
    model.vision_tower = vision_tower if vision_tower is not None else build_vision_tower(config)
    model.multi_modal_projector = MagmaProjector(config)
    for module in model.multi_modal_projector.modules():
        model._init_weights(module)
    model.tie_weights()
    model = model.to(dtype)
    meta = [n for n, p in model.state_dict().items() if p.is_meta]
    if meta:
        raise RuntimeError(f"parameters left on the meta device: {meta[:5]}")
    return model
