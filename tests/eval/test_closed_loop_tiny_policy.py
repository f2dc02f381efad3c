"""A random-init tiny checkpoint, served in process, through the whole eval path (slow)."""
import json

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.envs, pytest.mark.browser]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("serve.policy")
    import torch

    from magma.action_tokenizer import ActionStats
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model, processor = build_model("configs/model/tiny.yaml")
    actions = np.random.default_rng(0).uniform(-1, 1, (200, 4))
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(model, processor, folder, {"metaworld": ActionStats.from_actions(actions)})
    return folder


def test_tiny_policy_closed_loop_two_episodes(tiny_checkpoint, tmp_path):
    pytest.importorskip("miniwob")
    pytest.importorskip("metaworld")
    from eval.cli import run_eval
    from eval.config import EvalConfig

    cfg = EvalConfig.model_validate({
        "name": "tiny", "policy": {"checkpoint": str(tiny_checkpoint)},
        "miniwob": {"tasks": ["click-button"], "episodes": 2, "baseline_episodes": 4, "max_steps": 1},
        "metaworld": {"tasks": ["reach-v3"], "episodes": 2, "baseline_episodes": 1, "max_steps": 8,
                      "image_size": 64, "chunk": 4},
    })
    results = run_eval(cfg, tmp_path)
    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    policy = [e for e in episodes if e["agent"] == "policy"]
    assert len(policy) == 4 and all(e["seed"] >= 1_000_000 for e in episodes)
    robot = [e for e in policy if e["env"] == "metaworld"]
    # a chunk of 4 per call: 8 steps need 2 calls, each timed
    assert all(e["steps"] == 8 and len(e["latencies_ms"]) == 2 for e in robot), robot
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk) == {"miniwob", "metaworld"}
    cb = on_disk["miniwob"]["click-button"]
    assert cb["episodes"] == 2 and cb["expert"] == 1.0 and 0.0 <= cb["random_baseline"] <= 1.0
    assert cb["ci95"][0] <= cb["success_rate"] <= cb["ci95"][1]
    assert results["metaworld"]["reach-v3"]["agents"]["random"]["episodes"] == 1
    assert (tmp_path / "report.md").exists() and list((tmp_path / "filmstrips").glob("*.png"))
