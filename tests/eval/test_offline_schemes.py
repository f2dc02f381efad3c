"""Offline metrics under both action-token schemes (a very small random checkpoint each).

The LM's final norm is zeroed, so every logit is exactly 0 and every teacher-forced prediction
is a tie: the argmax over the action ids is the first of them (`vocab.start`), which is bin 0
under `append` and bin 255 under `reuse_last`. The expected L1 then follows from the scheme's
id -> bin map alone, and it differs between the schemes. A verbal answer made of ids from the
action range must not count as action tokens: labels are picked by target kind, not id range."""
from __future__ import annotations

import numpy as np
import pytest

from magma.action_tokenizer import ActionStats, ActionTokenizer, bins_to_values
from magma.prompts import grounding_prompt, robot_action_prompt
from magma.schema import Sample, Turn
from magma.shards import write_shard

SPEC = """name: offline-{scheme}
vision: {{depths: [1, 1, 1, 1], hidden_sizes: [8, 8, 16, 16], feature_stage: 3}}
image_size: 32
text: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 1,
        num_key_value_heads: 1, max_position_embeddings: 512, tie_word_embeddings: true}}
tokenizer: {{builtin_bpe_vocab: 512, action_tokens: {scheme}}}
"""
DIM, CHUNK = 4, 2


def _checkpoint(root, scheme: str):
    import torch

    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    spec = root / f"{scheme}.yaml"
    spec.write_text(SPEC.format(scheme=scheme))
    model, processor = build_model(spec, seed=0)
    with torch.no_grad():
        model.get_decoder().norm.weight.zero_()  # every logit 0: ties everywhere
    stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-1, 1, (100, DIM)))
    save_checkpoint(model, processor, root / scheme, {"metaworld": stats})
    return root / scheme, processor, stats


@pytest.mark.parametrize("scheme", ["append", "reuse_last"])
def test_offline_metrics_read_the_checkpoints_action_tokens(scheme, tmp_path):
    from eval.offline import offline_metrics

    folder, processor, stats = _checkpoint(tmp_path, scheme)
    vocab = processor.action_vocab
    codec = ActionTokenizer(vocab, stats)
    actions = np.random.default_rng(1).uniform(-0.5, 0.5, (CHUNK, DIM)) * (np.array(stats.q99) - stats.q01)
    act_text = codec.render(actions)
    # a verbal answer spelled with ids of the action range (under reuse_last ordinary tokens,
    # under append the text <act_3><act_7>)
    verbal = processor.tokenizer.decode([vocab.start + 3, vocab.start + 7])
    assert vocab.is_action(np.array(processor.text_to_ids(verbal))).all()
    img = np.zeros((32, 32, 3), np.uint8)
    samples = [
        Sample("g-0", [img], [Turn("user", grounding_prompt("the OK button")),
                              Turn("assistant", "Mark 3", "spatial")], "som/t", meta={"split": "heldout"}),
        Sample("v-0", [img], [Turn("user", "<image>Say it."), Turn("assistant", verbal, "verbal")],
               "som/t", meta={"split": "heldout"}),
        Sample("a-0", [img], [Turn("user", robot_action_prompt("reach")), Turn("assistant", act_text, "action")],
               "robot/t", dataset="metaworld", meta={"split": "heldout"}),
    ]
    write_shard(tmp_path / "shard-000000.tar", samples)

    m = offline_metrics(folder, tmp_path)
    assert m["samples"] == 3 and m["mark_samples"] == 1 and m["mark_accuracy"] == 0.0
    assert m["action_tokens"] == CHUNK * DIM  # the verbal answer's in-range ids are not counted
    target_bins = codec.to_bins(actions)
    tie_bin = 0 if scheme == "append" else 255  # the first action id
    assert (target_bins != tie_bin).all() and m["action_token_accuracy"] == 0.0
    span = np.array(stats.q99) - np.array(stats.q01)
    expected = np.abs(bins_to_values(np.full_like(target_bins, tie_bin)) - bins_to_values(target_bins)) / 2 * span
    assert m["action_l1"] == pytest.approx(float(expected.mean()), rel=1e-9)
