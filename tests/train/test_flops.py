"""magma.flops: the training FLOP count from the model's shapes, checked against a hand count on
the micro config and against torch.utils.flop_counter.FlopCounterMode on real forwards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from magma.build import build_model
from magma.flops import (batch_flops, batch_sample_lengths, forward_flops, lm_forward_flops,
                         projector_flops_per_token, vision_flops_per_view)
from magma.schema import Sample, Turn
from train.data import collate
from train.engines import MODEL_INPUTS

from conftest import HERE


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    model, processor = build_model(HERE / "micro_model.yaml")[:2]
    # eager attention: its QK^T / AV are bmm calls FlopCounterMode counts (CPU SDPA it does not)
    model.language_model.set_attn_implementation("eager")
    return model.float().train(), processor


def sample(processor, i: int, words: int):
    rng = np.random.default_rng(i)
    image = rng.integers(0, 255, size=(40 + i, 50, 3), dtype=np.uint8)
    return processor.encode_sample(Sample(id=f"s{i}", images=[image], source="x", conversation=[
        Turn("user", "<image>\n" + " ".join(["where is the red square"] * words)),
        Turn("assistant", "Top left.", kind="verbal")]))


def test_hand_count_on_the_micro_config(micro):
    """micro_model.yaml: 64 px views, patch 4, widths 8/16/32/64, one block per stage; a 2-layer
    Llama, hidden 64, MLP 128, 2 heads of 32."""
    c = micro[0].config
    stem = 2 * (16 * 16) * 8 * 3 * (4 * 4)
    blocks = [2 * side ** 2 * (ch * 49 + 2 * ch * 4 * ch) for side, ch in ((16, 8), (8, 16), (4, 32), (2, 64))]
    downs = [2 * side ** 2 * cout * cin * 4 for side, cin, cout in ((8, 8, 16), (4, 16, 32), (2, 32, 64))]
    assert vision_flops_per_view(c) == stem + sum(blocks) + sum(downs) == 1_818_112
    assert projector_flops_per_token(c) == 2 * (64 * 64 + 64 * 64)  # LayerNorm, then 64 -> 64 -> 64
    vocab = c.text_config.vocab_size
    lm = lm_forward_flops(c.text_config, [10, 3])
    per_token = 2 * 2 * (4 * 64 * 64 + 3 * 64 * 128)  # 2 layers: q k v o + gate up down
    assert lm.lm_linear == 13 * per_token
    assert lm.lm_head == 13 * 2 * 64 * vocab
    # causal: 10 tokens see 55 keys in all, 3 tokens 6; QK^T + AV, 2 heads x 32, 2 layers
    assert lm.attention == (55 + 6) * 2 * 2 * 64 * 2
    assert lm_forward_flops(c.text_config, [10], causal=False).attention == 100 * 2 * 2 * 64 * 2
    full = forward_flops(c, [10, 3], n_views=2)
    assert full.vision == 2 * 1_818_112 and full.projector == 2 * 4 * projector_flops_per_token(c)
    assert full.training == 3 * full.forward


def test_matches_torch_flop_counter_on_one_forward(micro):
    """One sample alone: FlopCounterMode's count of the real forward equals the executed count
    (full n x n eager attention); its backward matmuls are exactly twice the forward's (the x3)."""
    model, processor = micro
    batch = collate([sample(processor, 0, 3)], processor.tokenizer.pad_token_id)
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    with FlopCounterMode(display=False) as fwd:
        logits = model(**inputs).logits
    ours = batch_flops(model.config, batch, executed=True)
    assert fwd.get_total_flops() == ours.forward
    n = int(batch["n_tokens"])
    useful = batch_flops(model.config, batch)
    assert ours.forward - useful.forward == ours.attention - ours.attention * (n + 1) / (2 * n)
    with FlopCounterMode(display=False) as bwd:
        logits.sum().backward()
    model.zero_grad(set_to_none=True)
    counts_f, counts_b = fwd.get_flop_counts()["Global"], bwd.get_flop_counts()["Global"]
    matmuls = lambda counts: sum(v for k, v in counts.items() if str(k).split(".")[-1] in  # noqa: E731
                                 ("mm", "addmm", "bmm"))
    assert matmuls(counts_b) == 2 * matmuls(counts_f) > 0
    # (its depthwise-conv backward ignores groups, so the vision tower's backward is not compared)


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_useful_flops_count_real_tokens_of_each_sample_alone(micro, packing: bool):
    model, processor = micro
    pad = processor.tokenizer.pad_token_id
    encoded = [sample(processor, i, w) for i, w in enumerate((1, 9, 3))]
    lengths = [len(e["input_ids"]) for e in encoded]
    batch = collate(encoded, pad, packing=packing, pack_length=max(lengths) + 8)
    assert sorted(batch_sample_lengths(batch)) == sorted(lengths)
    alone = [batch_flops(model.config, collate([e], pad)) for e in encoded]
    useful = batch_flops(model.config, batch)
    assert useful.forward == pytest.approx(sum(a.forward for a in alone), rel=1e-12)
    executed = batch_flops(model.config, batch, executed=True)
    rows, length = batch["input_ids"].shape
    assert executed.lm_linear / useful.lm_linear == pytest.approx(rows * length / sum(lengths))
    assert executed.forward > useful.forward and executed.vision == useful.vision
