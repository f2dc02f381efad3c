"""Offline teacher-forced metrics on a small generated shard (tiny random model)."""
import json

import numpy as np
import pytest

from magma.action_tokenizer import ActionStats, ActionTokenizer
from magma.prompts import grounding_prompt, robot_action_prompt
from magma.schema import Sample, Turn
from magma.shards import write_shard

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model, processor = build_model("configs/model/tiny.yaml")
    stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-1, 1, (100, 4)))
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(model, processor, folder, {"metaworld": stats})
    return folder, stats


def _write_shard(path, stats):
    img = np.zeros((48, 48, 3), np.uint8)
    tok = ActionTokenizer(1 << 20, stats)
    act = tok.render(np.zeros((2, 4)))
    samples = [
        Sample("g-0", [img], [Turn("user", grounding_prompt("the OK button")),
                              Turn("assistant", "Mark 3", "spatial")], "som/t", meta={"split": "heldout"}),
        Sample("a-0", [img], [Turn("user", robot_action_prompt("reach")), Turn("assistant", act, "action")],
               "robot/t", dataset="metaworld", meta={"split": "heldout"}),
        Sample("a-1", [img], [Turn("user", robot_action_prompt("reach")), Turn("assistant", act, "action")],
               "robot/t", dataset="metaworld", meta={"split": "train"}),
    ]
    write_shard(path, samples)


def test_offline_metrics_count_and_bound(checkpoint, tmp_path):
    from eval.cli import main

    folder, stats = checkpoint
    _write_shard(tmp_path / "shard-000000.tar", stats)
    out = tmp_path / "offline.json"
    assert main(["offline", "--checkpoint", str(folder), "--shards", str(tmp_path),
                 "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["samples"] == 2 and m["mark_samples"] == 1 and m["action_tokens"] == 8  # train skipped
    assert 0.0 <= m["action_token_accuracy"] <= 1.0 and 0.0 <= m["mark_accuracy"] <= 1.0
    # decoded bin centres lie within the statistics' range: L1 is bounded by its width
    assert 0.0 <= m["action_l1"] <= float(np.max(np.asarray(stats.q99) - np.asarray(stats.q01)))
    assert main(["offline", "--checkpoint", str(folder), "--shards", str(tmp_path),
                 "--split", "all"]) == 0
    assert main(["offline", "--checkpoint", str(folder), "--shards", str(tmp_path / "nope")]) == 2
