"""`/v1/info` reports the checkpoint's action tokens (scheme, start id, binning), and the robot
adapter decodes by that binning: a reuse_last checkpoint with the release's openvla bins gives
the release's values for the ids it generated."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve.server import ServerSettings, create_app

SPEC = """name: info-reuse-last
vision: {depths: [1, 1, 1, 1], hidden_sizes: [8, 8, 16, 16], feature_stage: 3}
image_size: 32
text: {hidden_size: 64, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 1,
       num_key_value_heads: 1, max_position_embeddings: 512, tie_word_embeddings: true}
tokenizer: {builtin_bpe_vocab: 512, action_tokens: reuse_last}
"""
DIM = 3


def _info(policy) -> dict:
    # No context manager: the lifespan would close the policy on exit.
    client = TestClient(create_app(policy, ServerSettings()), raise_server_exceptions=False)
    resp = client.get("/v1/info")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_info_reports_the_append_scheme_of_a_checkpoint_built_here(policy):
    tok = policy.processor.tokenizer
    assert _info(policy)["action_tokens"] == {"scheme": "append", "start": tok.convert_tokens_to_ids("<act_0>"),
                                             "n_bins": 256, "binning": "uniform"}


@pytest.fixture(scope="module")
def openvla_checkpoint(tmp_path_factory):
    """A reuse_last checkpoint whose processor config says `action_binning: openvla`, as
    convert-magma writes for the released weights."""
    from magma.action_tokenizer import ActionStats
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("info")
    (root / "spec.yaml").write_text(SPEC)
    model, processor = build_model(root / "spec.yaml", seed=0)
    stats = ActionStats.from_actions(np.random.default_rng(0).uniform(-2, 3, (100, DIM)))
    folder = save_checkpoint(model, processor, root / "ckpt", {"toy": stats})
    cfg_path = folder / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["action_binning"] == "uniform"  # what every checkpoint built here records
    cfg_path.write_text(json.dumps({**cfg, "action_binning": "openvla"}))
    return folder, stats


def test_info_and_robot_actions_follow_the_recorded_binning(openvla_checkpoint):
    from serve.images import encode_png_b64
    from serve.policy import Policy

    folder, stats = openvla_checkpoint
    policy = Policy.from_checkpoint(folder, engine="hf")
    try:
        base = policy.processor.tokenizer.vocab_size
        assert _info(policy)["action_tokens"] == {"scheme": "reuse_last", "start": base - 256, "n_bins": 256,
                                                  "binning": "openvla"}
        image = encode_png_b64(np.random.RandomState(1).randint(0, 255, (32, 32, 3), np.uint8))
        gen, finish = policy.prepare_act({"adapter": "robot", "instruction": "reach", "image": image})
        out = policy.engine.generate_sync([gen])[0]
        ids = np.array(out.token_ids)
        assert ids.size == DIM and ((ids >= base - 256) & (ids < base)).all()
        # the release's decoding, written out: centres of linspace(-1, 1, 256), clipped at 254
        edges = np.linspace(-1, 1, 256)
        normed = ((edges[:-1] + edges[1:]) / 2)[np.clip(base - ids - 1, 0, 254)]
        lo, hi = np.array(stats.q01), np.array(stats.q99)
        body = finish(out)
        assert body["error"] is None
        np.testing.assert_allclose(body["action"], 0.5 * (normed + 1) * (hi - lo) + lo, atol=1e-9)
    finally:
        policy.close()
