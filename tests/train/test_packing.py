"""Packing with isolation: in a packed row every sample attends only to itself, with positions
restarting per sample, so per-sample losses and gradients equal those of the samples run alone."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from magma.build import build_model
from magma.modeling_magma import causal_lm_loss
from magma.packed_attention import block_causal_mask, varlen_inputs
from magma.processing_magma import IGNORE_INDEX
from magma.schema import Sample, Turn
from train.data import MixedShardStream, StreamSpec, collate
from train.engines import MODEL_INPUTS

from conftest import HERE

TOL = 1e-4


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    model, processor = build_model(HERE / "micro_model.yaml")[:2]
    return model.float().eval(), processor


def encoded(shards, processor, n: int = 8) -> list[dict]:
    """n samples of the three synthetic sources (each with an image, lengths differ by source),
    with a text-only sample in the middle (rows then mix samples with and without views)."""
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, n, 0), processor)
    out = []
    for g in ds.global_indices(0):
        src, j = ds.schedule.lookup(g)
        out.append(ds._encode(src, j, Counter())[0])
    text = Sample(id="text-0", images=[], source="text", conversation=[
        Turn("user", "Name a colour."), Turn("assistant", "Green, like the square.", kind="verbal")])
    out.insert(n // 2, processor.encode_sample(text))
    return out


def per_sample_losses(model, batch: dict, n: int, isolate: bool = True) -> torch.Tensor:
    """Sum of token losses per sample (stream index) of a collated batch."""
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch and (isolate or k != "sample_index")}
    logits = model(**inputs).logits
    per_token = causal_lm_loss(logits, batch["labels"], reduction="none")
    index = batch.get("sample_index")
    if index is None:  # one sample per row, row order = stream order
        return per_token.sum(-1)
    owner = index[:, 1:]  # the token whose label each shifted loss predicts
    return torch.stack([per_token[owner == i].sum() for i in range(n)])


def test_packed_batch_really_packs_samples_of_different_lengths(shards, micro):
    _, processor = micro
    ex = encoded(shards, processor)
    assert len({len(e["input_ids"]) for e in ex}) > 1
    assert sum(1 for e in ex if len(e["pixel_values"])) == len(ex) - 1
    batch = collate(ex, processor.tokenizer.pad_token_id, packing=True, pack_length=128)
    assert batch["input_ids"].shape[0] < len(ex)
    index, pos = batch["sample_index"], batch["position_ids"]
    assert sorted(set(index[index >= 0].tolist())) == list(range(len(ex)))
    for i, e in enumerate(ex):  # positions restart at 0 for every sample and run over its tokens
        assert pos[index == i].tolist() == list(range(len(e["input_ids"])))
    assert bool((index[batch["attention_mask"] == 0] == -1).all())
    # image tokens stay with their sample: checked by the loss equality below (a view given to
    # the wrong sample changes both samples' losses)


@pytest.fixture(params=["sdpa", "eager"])
def attention(request, micro):
    """The micro model with its language model on one attention implementation (4D-mask path)."""
    model, processor = micro
    config = model.language_model.config
    before = config._attn_implementation
    config._attn_implementation = request.param
    yield model, processor
    config._attn_implementation = before


def test_packed_losses_and_gradients_equal_the_samples_alone(shards, attention):
    model, processor = attention
    ex = encoded(shards, processor)
    pad = processor.tokenizer.pad_token_id
    alone = torch.cat([per_sample_losses(model, collate([e], pad), 1) for e in ex])
    batch = collate(ex, pad, packing=True, pack_length=128)
    packed = per_sample_losses(model, batch, len(ex))
    assert (packed - alone).abs().max().item() <= TOL, (packed, alone)
    assert int(batch["n_target_tokens"]) == sum(int(collate([e], pad)["n_target_tokens"]) for e in ex)

    # gradients of the summed loss agree as well
    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]

    g_alone = grads(sum(per_sample_losses(model, collate([e], pad), 1).sum() for e in ex))
    g_packed = grads(per_sample_losses(model, batch, len(ex)).sum())
    model.zero_grad(set_to_none=True)
    assert len(g_alone) == len(g_packed)
    worst = max((a - b).abs().max().item() for a, b in zip(g_alone, g_packed))
    assert worst <= TOL, worst


def test_without_isolation_packed_samples_see_each_other(shards, micro):
    """The same packed batch without `sample_index` (the old behaviour: positions restart but
    attention spans the row) gives clearly different losses: the isolation test can fail."""
    model, processor = micro
    ex = encoded(shards, processor)
    pad = processor.tokenizer.pad_token_id
    batch = collate(ex, pad, packing=True, pack_length=128)
    alone = torch.cat([per_sample_losses(model, collate([e], pad), 1) for e in ex])
    with torch.no_grad():
        leaky_logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch and k != "sample_index"}).logits
    per_token = causal_lm_loss(leaky_logits, batch["labels"], reduction="none")
    owner = batch["sample_index"][:, 1:]
    leaky = torch.stack([per_token[owner == i].sum() for i in range(len(ex))])
    assert (leaky - alone).abs().max().item() > 100 * TOL


def test_block_causal_mask_is_per_sample_and_causal():
    index = torch.tensor([[0, 0, 1, 1, 1, -1]])
    m = block_causal_mask(index, torch.float32, "sdpa")[0, 0]
    assert m.tolist()[3] == [False, False, True, True, False, False]
    assert bool(m.diagonal().all())  # no fully masked row (SDPA would return NaN)
    add = block_causal_mask(index, torch.float32, "eager")[0, 0]
    assert add[1, 0] == 0 and add[2, 1] == torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="attn_implementation"):
        block_causal_mask(index, torch.float32, "flex_attention")


def test_varlen_inputs_follow_transformers_flattening_convention():
    """The flash-attention layout (not run here: flash-attn is not installed on CPU)."""
    index = torch.tensor([[0, 0, 2, 2, 2, -1], [1, 1, 1, -1, -1, -1]])
    pos = torch.tensor([[0, 1, 0, 1, 2, 0], [0, 1, 2, 0, 0, 0]])
    keep, kw = varlen_inputs(index, pos)
    assert int(keep.sum()) == 8
    assert kw["cu_seq_lens_q"].tolist() == [0, 2, 5, 8] and kw["max_length_q"] == 3
    assert kw["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2]]


def test_packing_default_is_off_and_first_labels_are_ignored(shards, micro):
    _, processor = micro
    ex = encoded(shards, processor, 4)
    plain = collate(ex, processor.tokenizer.pad_token_id)
    assert "sample_index" not in plain and "position_ids" not in plain
    assert StreamSpec("x", None, 0, 0, 1, 1, 0).packing is False
    packed = collate(ex, processor.tokenizer.pad_token_id, packing=True, pack_length=1024)
    starts = packed["position_ids"] == 0
    assert bool((packed["labels"][starts & (packed["sample_index"] >= 0)] == IGNORE_INDEX).all())
