"""Packed rows on an sdpa language model run the varlen layout through one causal SDPA call per
sample (magma.packed_attention.PER_SAMPLE_SDPA) instead of a block mask over the whole row."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import yaml

import magma.packed_attention as packed_attention
from magma.build import build_model
from magma.modeling_magma import causal_lm_loss
from train.data import MixedShardStream, StreamSpec, collate
from train.engines import MODEL_INPUTS

from conftest import HERE


@pytest.fixture(scope="module")
def gqa_micro(tmp_path_factory):
    """The micro model with grouped-query attention (2 query heads share 1 kv head)."""
    spec = yaml.safe_load((HERE / "micro_model.yaml").read_text())
    spec["text"]["num_key_value_heads"] = 1
    path = tmp_path_factory.mktemp("gqa") / "micro-gqa.yaml"
    path.write_text(yaml.safe_dump(spec))
    torch.manual_seed(0)
    model, processor = build_model(path)[:2]
    assert model.language_model.config._attn_implementation == "sdpa"
    return model.float().eval(), processor


def test_packed_sdpa_runs_per_sample_and_matches_samples_alone(shards, gqa_micro, monkeypatch):
    model, processor = gqa_micro
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, 6, 0), processor)
    encoded = [ds._encode(*ds.schedule.lookup(g), Counter())[0] for g in ds.global_indices(0)]
    pad = processor.tokenizer.pad_token_id
    batch = collate(encoded, pad, packing=True, pack_length=256)
    assert any(len(set(row) - {-1}) > 1 for row in batch["sample_index"].tolist())  # rows hold several samples

    calls: list[list[int]] = []
    real = packed_attention.per_sample_sdpa_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        calls.append(kwargs["cu_seq_lens_q"].tolist())
        assert attention_mask is None and query.shape[0] == 1
        return real(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(packed_attention.AttentionInterface._global_mapping, packed_attention.PER_SAMPLE_SDPA, spy)
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
        alone = [causal_lm_loss(model(**{k: b[k] for k in MODEL_INPUTS if k in b}).logits, b["labels"],
                                reduction="none").sum().item()
                 for b in (collate([e], pad) for e in encoded)]
    n_layers = model.config.text_config.num_hidden_layers
    lengths = [len(e["input_ids"]) for e in encoded]
    assert len(calls) == n_layers and sorted(b - a for a, b in zip(calls[0][:-1], calls[0][1:])) == sorted(lengths)
    assert model.language_model.config._attn_implementation == "sdpa"  # restored after the packed forward
    per_token = causal_lm_loss(logits, batch["labels"], reduction="none")
    owner = batch["sample_index"][:, 1:]
    worst = max(abs(per_token[owner == i].sum().item() - a) for i, a in enumerate(alone))
    assert worst <= 1e-4, worst


def test_per_sample_sdpa_refuses_a_batch_without_boundaries():
    q = torch.zeros(2, 1, 4, 8)
    with pytest.raises(ValueError, match="varlen"):
        packed_attention.per_sample_sdpa_forward(torch.nn.Module(), q, q, q, None)


def test_gradient_checkpointing_keeps_the_mask_path(shards, gqa_micro, monkeypatch):
    """Checkpointing recomputes layers in backward, outside the per-sample switch: such runs take the
    block mask (the same tensors in both passes), and their gradients still match the samples alone."""
    model, processor = gqa_micro
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, 4, 0), processor)
    encoded = [ds._encode(*ds.schedule.lookup(g), Counter())[0] for g in ds.global_indices(0)]
    pad = processor.tokenizer.pad_token_id
    batch = collate(encoded, pad, packing=True, pack_length=256)
    called: list[int] = []
    monkeypatch.setitem(packed_attention.AttentionInterface._global_mapping, packed_attention.PER_SAMPLE_SDPA,
                        lambda *a, **k: called.append(1))

    def grads(batches) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        for b in batches:
            causal_lm_loss(model(**{k: b[k] for k in MODEL_INPUTS if k in b}).logits, b["labels"],
                           reduction="none").sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        packed = grads([batch])
        alone = grads([collate([e], pad) for e in encoded])
    finally:
        model.gradient_checkpointing_disable()
        model.eval()
        model.zero_grad(set_to_none=True)
    assert not called
    assert max((a - b).abs().max().item() for a, b in zip(packed, alone)) <= 1e-4
