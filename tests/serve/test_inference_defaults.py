"""Inference settings travel with the checkpoint: a robot source built with chunk 2 + proprio,
trained through the real loop, serves and evaluates with no chunk/proprio given, and a request
for other settings is refused (400) naming the requested and the trained value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from magma.episode import Episode, EpisodeMeta
from magma.inference_settings import INFERENCE_SETTINGS_FILE, ActionSettings, InferenceSettings

REPO = Path(__file__).resolve().parents[2]
T, ACTION_DIM, PROPRIO_DIM, CHUNK = 8, 4, 3, 2
DATASET = "toyenv"  # recorder episodes: the dataset is the env name


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The `final` folder of a 2-step run on shards of two recorder episodes (chunk 2, proprio)."""
    import torch

    from data_pipeline.build.mix_config import MixConfig
    from data_pipeline.build.registry import SourceConfig
    from data_pipeline.build.writer import build_mix
    from train.config import load_train_config
    from train.loop import train

    tmp = tmp_path_factory.mktemp("inference")
    rng = np.random.default_rng(0)
    for i in range(2):
        Episode(EpisodeMeta(episode_id=f"ep{i}", env=DATASET, task="push", instruction="push the block",
                            action_space="robot"),
                images=rng.integers(0, 255, (T, 64, 64, 3), dtype=np.uint8),
                actions=rng.uniform(-1, 1, (T, ACTION_DIM)).astype(np.float32),
                proprio=rng.normal(size=(T, PROPRIO_DIM)).astype(np.float32)).save(tmp / "episodes")
    mix = MixConfig(name="inference", samples_per_shard=64, workers=0, sources=[SourceConfig(
        name="robot", type="robot_episodes",
        params={"path": str(tmp / "episodes"), "chunk": CHUNK, "use_proprio": True, "tom": False})])
    build_mix(mix, tmp / "shards", workers=0, progress=False)
    cfg = load_train_config(REPO / "tests" / "train" / "micro_train.yaml", [
        f"run_dir={tmp / 'run'}", f"data.shards={tmp / 'shards'}", "max_steps=2", "checkpoint.every=0",
        "micro_batch_size=2", "grad_accum=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return tmp / "run" / "final"


@pytest.fixture(scope="module")
def policy(trained):
    from serve.policy import Policy

    p = Policy.from_checkpoint(trained, engine="hf")
    yield p
    p.close()


def _request(image_b64: str, **extra) -> dict:
    return {"adapter": "robot", "instruction": "push the block", "image": image_b64, **extra}


@pytest.fixture(scope="module")
def image_b64() -> str:
    from serve.images import encode_png_b64

    return encode_png_b64(np.random.RandomState(1).randint(0, 255, (64, 64, 3), np.uint8))


def test_the_manifest_and_every_checkpoint_record_the_settings(trained):
    want = {"chunk": CHUNK, "use_proprio": True, "action_dim": ACTION_DIM, "proprio_dim": PROPRIO_DIM}
    manifest = json.loads((trained.parents[1] / "shards" / "manifest.json").read_text())
    assert manifest["inference"] == {DATASET: want}
    for folder in (trained, *sorted((trained.parent / "checkpoints").glob("step-*"))):
        saved = json.loads((folder / INFERENCE_SETTINGS_FILE).read_text())
        assert saved["actions"] == {DATASET: want} and saved["prompt_format"] == "magma-v1"
        assert set(saved["ui"]) == {"history_window", "legend_max_marks", "legend_max_text"}


def test_serves_the_trained_chunk_with_no_chunk_given(policy, image_b64):
    out = policy.act(_request(image_b64, proprio=[0.1, 0.2, 0.3]))
    assert out["error"] is None, out
    assert len(out["chunk"]) == CHUNK and all(len(a) == ACTION_DIM for a in out["chunk"])
    assert out["tokens"] == CHUNK * ACTION_DIM
    # The trained chunk, asked for explicitly, is fine too.
    assert len(policy.act(_request(image_b64, proprio=[0.1, 0.2, 0.3], chunk=CHUNK))["chunk"]) == CHUNK


@pytest.mark.parametrize("extra, code, named", [
    ({"chunk": 3, "proprio": [0.0] * PROPRIO_DIM}, "chunk_not_trained", ("chunk 3 requested", "chunk 2")),
    ({}, "proprio_required", ("no proprio sent", f"trained with proprio ({PROPRIO_DIM} values)")),
    ({"proprio": [0.0] * 5}, "proprio_dim_mismatch", ("5 values sent", f"trained with {PROPRIO_DIM}")),
])
def test_mismatched_requests_are_refused_naming_both_values(policy, image_b64, extra, code, named):
    from serve.errors import ServeError
    from serve.server import ServerSettings, create_app

    with pytest.raises(ServeError) as info:
        policy.act(_request(image_b64, **extra))
    assert info.value.status == 400 and info.value.code == code
    assert all(n in info.value.message for n in named) and DATASET in info.value.message
    client = TestClient(create_app(policy, ServerSettings()), raise_server_exceptions=False)
    r = client.post("/v1/act", json=_request(image_b64, **extra))
    assert r.status_code == 400 and r.json()["code"] == code
    assert all(n in r.json()["message"] for n in named)


def test_info_reports_the_settings(policy):
    from serve.server import ServerSettings, create_app

    client = TestClient(create_app(policy, ServerSettings()), raise_server_exceptions=False)
    body = client.get("/v1/info").json()
    assert body["inference"]["actions"][DATASET]["chunk"] == CHUNK
    assert body["inference"]["actions"][DATASET]["use_proprio"] is True
    assert body["default_chunk"] is None


def test_a_server_chunk_other_than_the_trained_one_is_refused_at_start(trained):
    from serve.cli import main
    from serve.policy import Policy

    with pytest.raises(ValueError, match=f"default chunk 4 requested, but checkpoint {trained} was "
                                         f"trained with chunk 2 for dataset {DATASET}"):
        Policy.from_checkpoint(trained, engine="hf", default_chunk=4)
    assert main(["--checkpoint", str(trained), "--chunk", "4"]) == 2


def test_proprio_sent_to_a_checkpoint_trained_without_it_is_refused(policy, image_b64):
    from serve.errors import ServeError
    from serve.policy import Policy

    settings = InferenceSettings(actions={DATASET: ActionSettings(chunk=CHUNK, use_proprio=False,
                                                                  action_dim=ACTION_DIM)})
    no_proprio = Policy(policy.engine, policy.processor, policy.action_stats, inference=settings)
    with pytest.raises(ServeError, match="proprio sent \\(3 values\\), but checkpoint .* trained without "
                                         "proprio for dataset toyenv") as info:
        no_proprio.act(_request(image_b64, proprio=[0.0] * 3))
    assert info.value.code == "proprio_not_trained"


class _Obs:
    image = np.random.RandomState(2).randint(0, 255, (64, 64, 3), np.uint8)
    proprio = np.zeros(PROPRIO_DIM, np.float32)
    instruction = "push the block"


class _Recording:
    """A backend that records requests and answers as the policy does."""

    def __init__(self, policy):
        self.policy, self.requests = policy, []

    def act(self, request):
        self.requests.append(request)
        return self.policy.act(request)

    def info(self):
        return self.policy.info()


def test_eval_agent_takes_chunk_and_proprio_from_the_checkpoint(policy):
    from eval.closed_loop import RobotPolicyAgent

    backend = _Recording(policy)
    actions, _, error = RobotPolicyAgent(backend, chunk=None, dataset=DATASET).actions(_Obs())
    assert error is None and len(actions) == CHUNK
    assert "chunk" not in backend.requests[0] and len(backend.requests[0]["proprio"]) == PROPRIO_DIM


def test_eval_agent_leaves_proprio_out_when_the_checkpoint_was_trained_without_it(policy):
    from eval.closed_loop import RobotPolicyAgent
    from serve.policy import Policy

    settings = InferenceSettings(actions={DATASET: ActionSettings(chunk=CHUNK, use_proprio=False,
                                                                  action_dim=ACTION_DIM)})
    backend = _Recording(Policy(policy.engine, policy.processor, policy.action_stats, inference=settings))
    actions, _, error = RobotPolicyAgent(backend, dataset=DATASET).actions(_Obs())
    assert error is None and len(actions) == CHUNK and "proprio" not in backend.requests[0]


def test_eval_agent_with_an_untrained_chunk_stops_the_run(policy):
    from eval.closed_loop import PolicyMismatch, RobotPolicyAgent

    with pytest.raises(PolicyMismatch, match="chunk 3 requested, but checkpoint .* trained with chunk 2"):
        RobotPolicyAgent(_Recording(policy), chunk=3, dataset=DATASET).actions(_Obs())


def test_a_checkpoint_without_settings_takes_the_request_as_sent(tiny_checkpoint, image_b64):
    """Older checkpoints and `magma model init` ones: chunk from the request or 1, proprio optional."""
    from serve.policy import Policy

    assert not (tiny_checkpoint / INFERENCE_SETTINGS_FILE).exists()
    p = Policy.from_checkpoint(tiny_checkpoint, engine="hf")
    try:
        assert len(p.act(_request(image_b64))["chunk"]) == 1
        assert len(p.act(_request(image_b64, chunk=3, proprio=[0.5]))["chunk"]) == 3
        assert p.info()["inference"]["actions"] == {}
    finally:
        p.close()


def test_ui_prompts_show_the_checkpoint_history_window(policy, image_b64):
    from magma.inference_settings import UISettings
    from serve.policy import Policy

    request = {"adapter": "ui", "instruction": "click OK", "image": image_b64,
               "history": ["step-one", "step-two", "step-three"]}
    default_prompt = policy.prepare_act(request)[0].prompt
    assert "step-one | step-two | step-three" in default_prompt  # window 4 (magma.prompts.HISTORY_WINDOW)
    narrow = Policy(policy.engine, policy.processor, policy.action_stats,
                    inference=InferenceSettings(ui=UISettings(history_window=1)))
    prompt = narrow.prepare_act(request)[0].prompt
    assert "History: step-three" in prompt and "step-two" not in prompt
