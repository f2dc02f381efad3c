"""Training FLOPs of a Magma model, counted from its shapes (no torch import: configs and batch
tensors are read through their attributes).

What counts (multiply-adds x 2; bias adds, norms, activations, softmax, rotary and the embedding
lookup are left out, as in the usual 6N-style counts and torch.utils.flop_counter):

- vision tower, per view: the stem conv (patch_size x patch_size, stride patch_size), every
  stage's 2x2 stride-2 downsampling conv, and per ConvNeXt block the 7x7 depthwise conv and the
  two pointwise linears (C -> 4C -> C), through the feature stage (later stages feed no token);
- projector, per image token: its linear layers;
- language model, per real token: q/k/v/o projections (grouped kv heads), the MLP (gate/up/down
  for Llama-style gated MLPs, up/down otherwise) and lm_head over the vocabulary;
- attention: QK^T and AV inside each sample, causal (query i sees i + 1 keys): a sample of n
  tokens costs 2 * 2 * n(n+1)/2 * heads * head_dim per layer.

Training = 3 x forward (backward = 2 x forward). "Useful" counts real tokens only, each sample on
its own: padding and attention across samples or onto padding are waste. `executed` counts what a
padded / masked-packed batch makes the hardware do (every row position, full L x L attention, as
SDPA with an explicit mask computes it), so useful / executed is the batch's efficiency.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

__all__ = ["Flops", "batch_flops", "batch_sample_lengths", "forward_flops", "lm_forward_flops",
           "projector_flops_per_token", "vision_flops_per_view", "TRAINING_FACTOR"]

TRAINING_FACTOR = 3  # forward + backward (grad of activations and of weights: 2 x forward)
# Decoders whose MLP is gate/up/down (three matrices); others count up/down.
GATED_MLP_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2")


@dataclass(frozen=True)
class Flops:
    """Forward FLOPs by part; `training` is TRAINING_FACTOR x their sum."""

    vision: float = 0.0
    projector: float = 0.0
    lm_linear: float = 0.0  # attention projections + MLP
    lm_head: float = 0.0
    attention: float = 0.0  # QK^T and AV

    @property
    def forward(self) -> float:
        return self.vision + self.projector + self.lm_linear + self.lm_head + self.attention

    @property
    def training(self) -> float:
        return TRAINING_FACTOR * self.forward

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def vision_flops_per_view(config: Any) -> float:
    """Forward FLOPs of the ConvNeXt tower on one image_size x image_size view, up to and
    including `config.feature_stage` (a MagmaConfig)."""
    vc = config.vision_config
    widths, depths = list(vc.hidden_sizes), list(vc.depths)
    side = config.image_size // vc.patch_size
    flops = 2.0 * side * side * widths[0] * vc.num_channels * vc.patch_size ** 2  # stem
    for stage in range(config.feature_stage + 1):
        c = widths[stage]
        if stage > 0:  # downsampling: 2x2 conv, stride 2, widths[stage-1] -> c
            side //= 2
            flops += 2.0 * side * side * c * widths[stage - 1] * 4
        per_block = 2.0 * side * side * (c * 49 + 2 * c * 4 * c)  # dwconv 7x7 + pwconv1 + pwconv2
        flops += depths[stage] * per_block
    return flops


def projector_flops_per_token(config: Any) -> float:
    """Forward FLOPs of the projector for one image token."""
    d_in, d_out = config.vision_feature_dim, config.text_config.hidden_size
    if config.projector_type == "linear":
        return 2.0 * d_in * d_out
    return 2.0 * (d_in * d_out + d_out * d_out)


def _text_shapes(tc: Any) -> tuple[int, int, int, int, int, int, int]:
    h = tc.hidden_size
    heads = tc.num_attention_heads
    kv = getattr(tc, "num_key_value_heads", None) or heads
    head_dim = getattr(tc, "head_dim", None) or h // heads
    return h, tc.intermediate_size, tc.num_hidden_layers, heads, kv, head_dim, tc.vocab_size


def lm_forward_flops(text_config: Any, lengths: Sequence[int], causal: bool = True) -> Flops:
    """Forward FLOPs of the language model over samples of `lengths` tokens (each attending only
    to itself); `causal=False` counts full n x n scores (what an explicit-mask SDPA computes)
    instead of n(n+1)/2."""
    h, inter, layers, heads, kv, head_dim, vocab = _text_shapes(text_config)
    tokens = float(sum(lengths))
    proj = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o + k, v
    n_mlp = 3 if getattr(text_config, "model_type", "llama") in GATED_MLP_TYPES else 2
    linear = 2.0 * tokens * layers * (proj + n_mlp * h * inter)
    head = 2.0 * tokens * h * vocab
    pairs = sum(n * (n + 1) / 2 if causal else float(n * n) for n in lengths)
    attention = 2.0 * 2.0 * pairs * heads * head_dim * layers
    return Flops(lm_linear=linear, lm_head=head, attention=attention)


def forward_flops(config: Any, lengths: Sequence[int], n_views: int) -> Flops:
    """Useful forward FLOPs of a batch: samples of `lengths` real tokens (image tokens included)
    and `n_views` image views (crops included)."""
    image_tokens = n_views * config.tokens_per_view
    lm = lm_forward_flops(config.text_config, lengths)
    return Flops(vision=n_views * vision_flops_per_view(config),
                 projector=image_tokens * projector_flops_per_token(config)) + lm


def batch_sample_lengths(batch: dict[str, Any]) -> list[int]:
    """Real-token count of every sample of a collated batch (train.data.collate): per packed
    sample from `sample_index` (-1 = padding), else per row from `attention_mask`."""
    index = batch.get("sample_index")
    if index is not None:
        lengths: list[int] = []
        for row in index.tolist():
            counts: dict[int, int] = {}
            for i in row:
                if i >= 0:
                    counts[i] = counts.get(i, 0) + 1
            lengths.extend(counts.values())
        return lengths
    return [int(n) for n in batch["attention_mask"].sum(-1).tolist()]


def batch_flops(config: Any, batch: dict[str, Any], executed: bool = False) -> Flops:
    """Forward FLOPs of a collated batch. Useful (default): real tokens, each sample alone.
    `executed=True`: every row position of the [rows, L] batch with full L x L attention per row
    (padding and cross-sample scores included), what the CPU kernels run."""
    pv = batch.get("pixel_values")
    n_views = 0 if pv is None else int(pv.shape[0])
    if not executed:
        return forward_flops(config, batch_sample_lengths(batch), n_views)
    rows, length = (int(s) for s in batch["input_ids"].shape)
    lm = lm_forward_flops(config.text_config, [length] * rows, causal=False)
    return Flops(vision=n_views * vision_flops_per_view(config),
                 projector=n_views * config.tokens_per_view * projector_flops_per_token(config)) + lm
