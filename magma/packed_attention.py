"""Attention isolation for packed rows: several samples share a row, each attends only to itself.

A packed batch carries `sample_index` [B, L] (long): for every token, the index of the sample it
belongs to (any id unique within its row), -1 on padding; `position_ids` restart at 0 for every
sample. Two ways to hand that to the language model:

- `block_causal_mask` (eager, and sdpa under gradient checkpointing; any implementation that takes a 4D mask): a
  [B, 1, L, L] mask where query q sees key k iff both belong to the same sample and k <= q.
  Padding tokens see only earlier padding of their row (never a sample, and no row is fully
  masked, which would give NaN in SDPA).
- `varlen_inputs` (flash_attention_2/3, and sdpa through `PER_SAMPLE_SDPA`): the batch flattened
  to one row of real tokens with transformers' varlen kwargs (`cu_seq_lens_q/k`, `max_length_q/k`),
  as its flattening collator does. Flash-attention takes the boundaries itself (not exercised by
  the CPU test suite: flash-attn is not installed there); for sdpa, `per_sample_sdpa_forward`
  runs one causal SDPA call per sample. A block mask makes SDPA compute every L x L score of a
  packed row, 4-8x the per-sample scores for rows of 4-8 samples (torch.profiler on the
  quickstart's shards: the masked kernel was 17% of a tiny-model training step; per sample, the
  language model's forward + backward took 23% less CPU time), and the flat row has no padding.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

VARLEN_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")
MASK_IMPLEMENTATIONS = ("sdpa", "eager")
# Registered with transformers' AttentionInterface only (not its mask interface), so the language
# model builds no mask for it; selected for packed forwards of an sdpa model (see `per_sample`).
PER_SAMPLE_SDPA = "magma_per_sample_sdpa"


def per_sample_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            cu_seq_lens_q: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function for the varlen layout: query/key/value [1, heads, N, D]
    of one flattened row; the span [cu_seq_lens_q[i], cu_seq_lens_q[i+1]) is sample i, which
    attends causally to itself only. Returns ([1, N, heads, D], None) as transformers' sdpa does."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(f"{PER_SAMPLE_SDPA} needs the varlen layout (one flattened row and cu_seq_lens_q); "
                         "use magma.packed_attention.varlen_inputs")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    bounds = cu_seq_lens_q.tolist()
    out = [F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout,
                                          scale=scaling, is_causal=True)
           for s, e in zip(bounds[:-1], bounds[1:])]
    return torch.cat(out, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(PER_SAMPLE_SDPA, per_sample_sdpa_forward)


@contextlib.contextmanager
def attention_implementation(model: torch.nn.Module, implementation: str) -> Iterator[None]:
    """Runs `model` (a transformers model) with another attention implementation, restoring its
    own afterwards (the language model's attention modules read it from the shared config)."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


def block_causal_mask(sample_index: torch.Tensor, dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """[B, L] sample ids -> [B, 1, L, L] block-diagonal causal mask: boolean (True = attend) for
    sdpa, additive (0 / dtype min) for eager."""
    if implementation not in MASK_IMPLEMENTATIONS:
        raise ValueError(f"packed rows need attention isolation, which is implemented for attention "
                         f"{MASK_IMPLEMENTATIONS + VARLEN_IMPLEMENTATIONS}; the language model uses "
                         f"{implementation!r}: set data.packing=false or load it with attn_implementation='sdpa'")
    length = sample_index.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=sample_index.device).tril()
    allowed = (sample_index[:, :, None] == sample_index[:, None, :]) & causal
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=sample_index.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def varlen_inputs(sample_index: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Flash-attention varlen layout: (keep [B, L] bool of real tokens, kwargs) where kwargs hold
    `position_ids` [1, N] and `cu_seq_lens_q/k` (int32, cumulative sample lengths over the
    flattened real tokens, row-major), `max_length_q/k` (int). Samples must be contiguous in
    their row (the packer lays them out so)."""
    keep = sample_index >= 0
    flat_ids = sample_index[keep]
    row = torch.arange(sample_index.shape[0], device=sample_index.device)[:, None].expand_as(sample_index)[keep]
    starts = torch.ones_like(flat_ids, dtype=torch.bool)
    starts[1:] = (flat_ids[1:] != flat_ids[:-1]) | (row[1:] != row[:-1])
    bounds = torch.cat([starts.nonzero().flatten(), torch.tensor([flat_ids.numel()], device=flat_ids.device)])
    cu = bounds.to(torch.int32)
    max_len = int(bounds.diff().max()) if bounds.numel() > 1 else 0
    return keep, {"position_ids": position_ids[keep][None], "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
                  "max_length_q": max_len, "max_length_k": max_len}
