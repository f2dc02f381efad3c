"""ConvNeXt weights in timm / open_clip names, mapped onto transformers' `ConvNextModel`.

One map for every caller (`vision.pretrained` files, the Magma release converter):

    timm / open_clip trunk                     transformers ConvNextModel
    stem.0 / stem.1                            embeddings.patch_embeddings / embeddings.layernorm
    stages.N.downsample.0 / .1                 encoder.stages.N.downsampling_layer.0 / .1
    stages.N.blocks.M.conv_dw                  encoder.stages.N.layers.M.dwconv
    stages.N.blocks.M.norm                     encoder.stages.N.layers.M.layernorm
    stages.N.blocks.M.mlp.fc1 / mlp.fc2        encoder.stages.N.layers.M.pwconv1 / pwconv2
    stages.N.blocks.M.gamma  (layer scale)     encoder.stages.N.layers.M.layer_scale_parameter
    head.norm                                  layernorm  (the pooled-output norm)

A trunk sits under `visual.trunk.` in an open_clip CLIP checkpoint, under
`vision_tower.clip_vision_model.trunk.` in the Magma release, bare in a timm file. Sizes
(depths, widths, patch size, layer scale) are read from the names and shapes.

timm's LayerNorms take their eps from the model definition (1e-6, but 1e-5 for
`convnext_xxlarge`, the CLIP ConvNeXt-XXLarge Magma uses), transformers' ConvNeXt fixes 1e-6:
`build_vision_tower` applies the eps a checkpoint records (`MagmaConfig.vision_norm_eps`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["TRUNK_PREFIXES", "ConvNextLayout", "build_vision_tower", "convnext_config_from_state",
           "map_trunk_key", "set_layer_norm_eps", "split_trunk_state_dict", "timm_norm_eps"]

# Where a ConvNeXt trunk sits, by checkpoint kind (searched in this order).
TRUNK_PREFIXES: dict[str, str] = {
    "open_clip": "visual.trunk.",
    "magma_release": "vision_tower.clip_vision_model.trunk.",
    "open_clip_tower": "trunk.",  # an open_clip TimmModel saved alone
    "timm": "",
}

_BLOCK_PARTS = {"conv_dw": "dwconv", "norm": "layernorm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"}
# Layer scale is `gamma` in timm; some exports of the Magma release name it `weight`.
_LAYER_SCALE_NAMES = ("gamma", "weight")

# timm definitions whose LayerNorm eps is not timm's default 1e-6: (depths, widths) -> eps.
_TIMM_NORM_EPS = {((3, 4, 30, 3), (384, 768, 1536, 3072)): 1e-5}  # convnext_xxlarge
TIMM_DEFAULT_NORM_EPS = 1e-6


def map_trunk_key(name: str) -> str | None:
    """A timm ConvNeXt trunk name (prefix removed) -> its `ConvNextModel` name; None when the
    name is not one of the weights the table in this module's docstring lists."""
    if m := re.fullmatch(r"stem\.([01])\.(weight|bias)", name):
        part = "patch_embeddings" if m.group(1) == "0" else "layernorm"
        return f"embeddings.{part}.{m.group(2)}"
    if m := re.fullmatch(r"stages\.(\d+)\.downsample\.([01])\.(weight|bias)", name):
        return f"encoder.stages.{m.group(1)}.downsampling_layer.{m.group(2)}.{m.group(3)}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.fc2)\.(weight|bias)", name):
        return f"encoder.stages.{m.group(1)}.layers.{m.group(2)}.{_BLOCK_PARTS[m.group(3)]}.{m.group(4)}"
    if m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(\w+)", name):
        if m.group(3) in _LAYER_SCALE_NAMES:
            return f"encoder.stages.{m.group(1)}.layers.{m.group(2)}.layer_scale_parameter"
        return None
    if m := re.fullmatch(r"head\.norm\.(weight|bias)", name):
        return f"layernorm.{m.group(1)}"
    return None


# Trunk weights that are known and deliberately not carried: the classifier of a timm model.
_TRUNK_DROPPED = re.compile(r"head\.fc\.(weight|bias)")


@dataclass
class TrunkSplit:
    """`split_trunk_state_dict`'s answer: the tower in ConvNextModel names, the checkpoint kind,
    the keys deliberately left (other towers, projection heads, classifiers) and the unknown ones."""

    state: dict[str, torch.Tensor]
    kind: str
    dropped: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    source_keys: dict[str, str] = field(default_factory=dict)  # ConvNextModel name -> checkpoint key


def split_trunk_state_dict(state: dict[str, torch.Tensor]) -> TrunkSplit | None:
    """The ConvNeXt trunk of a timm / open_clip / Magma-release state dict, or None when no
    trunk (`<prefix>stem.0.weight`) is found under any of `TRUNK_PREFIXES`.

    In an open_clip or release checkpoint, keys outside the tower (`visual.`, `vision_tower.`)
    belong to other towers and are dropped, as is the tower's CLIP projection head
    (`visual.head.*`, `vision_tower.clip_vision_model.head.*`); any other key in the tower is
    unknown. Inside the trunk every key must map, or be the timm classifier (`head.fc`).
    """
    kind = next((k for k, p in TRUNK_PREFIXES.items() if p + "stem.0.weight" in state), None)
    if kind is None:
        return None
    prefix = TRUNK_PREFIXES[kind]
    # The tower's CLIP projection head sits beside its trunk (visual.head.*); other keys under
    # the tower's parent (visual., vision_tower.) are unknown; the rest belong to other towers.
    head = prefix[:-len("trunk.")] + "head." if prefix.endswith("trunk.") else None
    parent = prefix.split(".")[0] + "." if prefix.count(".") > 1 else None
    out = TrunkSplit(state={}, kind=kind)
    for key, value in state.items():
        if not key.startswith(prefix):
            tower_key = parent is not None and key.startswith(parent) and not (head and key.startswith(head))
            (out.unknown if tower_key else out.dropped).append(key)
            continue
        rest = key[len(prefix):]
        new = map_trunk_key(rest)
        if new is not None:
            out.state[new] = value
            out.source_keys[new] = key
        elif _TRUNK_DROPPED.fullmatch(rest):
            out.dropped.append(key)
        else:
            out.unknown.append(key)
    return out


@dataclass
class ConvNextLayout:
    """What the weights say about a ConvNeXt: the sizes `ConvNextConfig` needs."""

    depths: list[int]
    hidden_sizes: list[int]
    patch_size: int
    num_channels: int
    layer_scale: bool
    has_pooled_norm: bool


def convnext_config_from_state(state: dict[str, torch.Tensor]) -> ConvNextLayout:
    """Sizes of a ConvNeXt in `ConvNextModel` names, read from its keys and shapes (meta tensors
    are fine). Raises ValueError naming the first thing transformers' ConvNeXt cannot hold."""
    stem = state.get("embeddings.patch_embeddings.weight")
    if stem is None or stem.ndim != 4:
        raise ValueError("no stem convolution (stem.0.weight)")
    stages: dict[int, set[int]] = {}
    for key in state:
        if m := re.match(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", key):
            stages.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not stages or sorted(stages) != list(range(len(stages))):
        raise ValueError(f"stages must be numbered 0..N-1, found {sorted(stages)}")
    depths, widths = [], []
    for s in range(len(stages)):
        blocks = sorted(stages[s])
        if blocks != list(range(len(blocks))):
            raise ValueError(f"stage {s}: blocks must be numbered 0..M-1, found {blocks}")
        depths.append(len(blocks))
        dw = state.get(f"encoder.stages.{s}.layers.0.dwconv.weight")
        if dw is None or tuple(dw.shape[1:]) != (1, 7, 7):
            raise ValueError(f"stage {s}: the depthwise convolution must be 7x7 "
                             f"(got {None if dw is None else tuple(dw.shape)})")
        widths.append(int(dw.shape[0]))
        fc1 = state.get(f"encoder.stages.{s}.layers.0.pwconv1.weight")
        if fc1 is None or tuple(fc1.shape) != (4 * widths[-1], widths[-1]):
            raise ValueError(f"stage {s}: the MLP must be Linear {widths[-1]} -> {4 * widths[-1]} "
                             f"(got {None if fc1 is None else tuple(fc1.shape)}; 1x1-conv MLPs are not supported)")
        down = state.get(f"encoder.stages.{s}.downsampling_layer.1.weight")
        if s == 0 and down is not None:
            raise ValueError("stage 0 has a downsampling layer; transformers' ConvNeXt has none there")
        if s > 0 and (down is None or tuple(down.shape) != (widths[-1], widths[-2], 2, 2)):
            raise ValueError(f"stage {s}: expected a 2x2 stride-2 downsampling convolution "
                             f"{widths[-2]} -> {widths[-1]} (got {None if down is None else tuple(down.shape)})")
    if int(stem.shape[0]) != widths[0]:
        raise ValueError(f"the stem gives {stem.shape[0]} channels but stage 0 has {widths[0]}")
    scales = {k for k in state if k.endswith(".layer_scale_parameter")}
    if scales and len(scales) != sum(depths):
        raise ValueError(f"layer scale (gamma) on {len(scales)} of {sum(depths)} blocks")
    return ConvNextLayout(depths=depths, hidden_sizes=widths, patch_size=int(stem.shape[-1]),
                          num_channels=int(stem.shape[1]), layer_scale=bool(scales),
                          has_pooled_norm="layernorm.weight" in state)


def timm_norm_eps(depths: list[int], hidden_sizes: list[int]) -> float:
    """The LayerNorm eps of the timm definition with these sizes (1e-5 for convnext_xxlarge)."""
    return _TIMM_NORM_EPS.get((tuple(depths), tuple(hidden_sizes)), TIMM_DEFAULT_NORM_EPS)


def set_layer_norm_eps(module: nn.Module, eps: float | None) -> None:
    """Every LayerNorm in `module` uses `eps` (None leaves transformers' values)."""
    if eps is None:
        return
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = float(eps)


def build_vision_tower(config) -> nn.Module:
    """The vision tower of a `MagmaConfig` (random weights), with the LayerNorm eps it records.
    The one builder for the transformers model and the vLLM plugin."""
    from transformers import AutoModel

    tower = AutoModel.from_config(config.vision_config)
    set_layer_norm_eps(tower, getattr(config, "vision_norm_eps", None))
    return tower
