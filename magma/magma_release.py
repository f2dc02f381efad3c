"""Load checkpoints saved in the layout of the public Magma-8B release.

That release keeps three modules: `vision_tower` (an open_clip / timm ConvNeXt under
`vision_tower.clip_vision_model.trunk`), `multi_modal_projector` (`proj.0`, GELU, `proj.2`,
plus a learnt `row_seperator`) and `language_model` (a Llama causal LM, same names as ours).
`map_release_key` renames one key to our layout (transformers' ConvNextModel names);
`convert_magma_release` rewrites a whole folder into a checkpoint our loaders accept.
Not carried over: the row separator embedding (our image tokens have no row separators), and
the trunk's pooled-head norm (unused for dense features); both are reported, not hidden.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

_TRUNK = "vision_tower.clip_vision_model.trunk."

_BLOCK_PARTS = {"conv_dw": "dwconv", "norm": "layernorm", "mlp.fc1": "pwconv1",
                "mlp.fc2": "pwconv2", "gamma": "layer_scale_parameter",
                # some exports store the layer scale as `weight` of the block
                "weight": "layer_scale_parameter"}


def map_release_key(key: str) -> str | None:
    """Release key -> our key, or None for weights we deliberately drop."""
    if key.startswith("language_model."):
        return key
    if key.startswith("multi_modal_projector."):
        rest = key[len("multi_modal_projector."):]
        if rest.startswith("proj."):
            return "multi_modal_projector." + rest
        return None  # row_seperator / img_start/end separators
    if not key.startswith(_TRUNK):
        return None
    rest = key[len(_TRUNK):]
    vt = "vision_tower."
    if m := re.fullmatch(r"stem\.0\.(weight|bias)", rest):
        return vt + f"embeddings.patch_embeddings.{m.group(1)}"
    if m := re.fullmatch(r"stem\.1\.(weight|bias)", rest):
        return vt + f"embeddings.layernorm.{m.group(1)}"
    if m := re.fullmatch(r"stages\.(\d+)\.downsample\.([01])\.(weight|bias)", rest):
        return vt + f"encoder.stages.{m.group(1)}.downsampling_layer.{m.group(2)}.{m.group(3)}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)",
                         rest):
        part = _BLOCK_PARTS[m.group(3)]
        return vt + f"encoder.stages.{m.group(1)}.layers.{m.group(2)}.{part}.{m.group(4)}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(gamma|weight)", rest):
        return vt + f"encoder.stages.{m.group(1)}.layers.{m.group(2)}.layer_scale_parameter"
    return None  # head.*, norm_pre (identity), pooled-only weights


def map_release_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renamed state dict and the list of source keys that were dropped."""
    out, dropped = {}, []
    for k, v in state.items():
        new = map_release_key(k)
        if new is None:
            dropped.append(k)
        else:
            out[new] = v
    return out, dropped


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors files in the release folder")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def convert_magma_release(src: str | Path, config_path: str | Path, out: str | Path,
                          tokenizer_dir: str | Path | None = None) -> Path:
    """Rewrite a release-layout folder as one of our checkpoint folders.

    `config_path` is a size config whose shapes match the release (configs/model/magma-8b.yaml;
    its tokenizer.path is replaced by `tokenizer_dir` or `src` when given).
    """
    from magma.build import build_config_and_processor, set_generation_defaults
    from magma.checkpoint import save_checkpoint
    from magma.model_config import load_model_spec
    from magma.modeling_magma import MagmaForCausalLM

    src = Path(src)
    spec = load_model_spec(config_path)
    if tokenizer_dir is not None or spec.tokenizer.path is None and (src / "tokenizer.json").exists():
        spec.tokenizer.path = str(tokenizer_dir or src)
    config, processor = build_config_and_processor(spec)
    state, dropped = map_release_state_dict(_read_safetensors(src))
    with torch.device("meta"):
        model = MagmaForCausalLM(config)
    expected = set(model.state_dict())
    # ConvNextModel's pooled-output norm is unused for dense features: give it identity values.
    hidden = config.vision_config.hidden_sizes[-1]
    state.setdefault("vision_tower.layernorm.weight", torch.ones(hidden))
    state.setdefault("vision_tower.layernorm.bias", torch.zeros(hidden))
    missing = sorted(expected - set(state) - _tied_keys(model))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{src}: release weights do not fit {config_path}: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    set_generation_defaults(model, processor)
    if dropped:
        print(f"convert-magma: dropped {len(dropped)} release weights not used by this architecture "
              f"(e.g. {dropped[0]})")
    return save_checkpoint(model, processor, out)


def _tied_keys(model: torch.nn.Module) -> set[str]:
    if not getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        return set()
    return {"language_model.lm_head.weight"}
