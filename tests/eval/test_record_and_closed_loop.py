"""Recorder round-trip and closed-loop logic on browser-free fakes (fast)."""
import json

import httpx
import numpy as np
import pytest

from eval.closed_loop import (PolicyUnavailable, RobotExpertAgent, RobotPolicyAgent, RobotRandomAgent,
                              UIExpertAgent, UIPolicyAgent, call_policy, run_robot_episode,
                              run_ui_episode)
from eval.record import record_metaworld_episode, record_miniwob_episode
from magma.episode import Episode
from eval_fakes import FakeClickButtonEnv, FakeReachEnv

DOM_KEYS = {"ref", "left", "top", "width", "height", "tag", "text", "value", "classes", "flags"}


def test_ui_recorder_round_trip(tmp_path):
    env = FakeClickButtonEnv()
    episode, reason = record_miniwob_episode(env, "click-button", 7, "train")
    assert reason == ""
    folder = episode.save(tmp_path)
    loaded = Episode.load(folder)
    assert loaded.meta.env == "miniwob" and loaded.meta.action_space == "ui"
    assert loaded.meta.seed == 7 and loaded.meta.split == "train" and loaded.meta.success
    assert loaded.meta.instruction == f'Click on the "{env.target}" button.'
    assert loaded.images.shape == (1, 210, 160, 3) and np.array_equal(loaded.images, episode.images)
    step = loaded.steps[0]
    assert all(set(e) == DOM_KEYS for e in step["dom_elements"])
    action = step["action"]
    assert set(action) == {"op", "ref", "point", "text", "direction"}
    target = next(e for e in step["dom_elements"] if e["text"] == env.target)
    assert action["op"] == "click" and action["ref"] == target["ref"]
    assert action["point"] == [target["left"] + target["width"] / 2, target["top"] + target["height"] / 2]
    json.dumps(step)  # json-safe


def test_robot_recorder_round_trip(tmp_path):
    env = FakeReachEnv()
    episode, reason = record_metaworld_episode(env, "reach-v3", 3, "heldout")
    assert reason == "" and episode is not None
    loaded = Episode.load(episode.save(tmp_path))
    t = loaded.images.shape[0]
    assert loaded.actions.shape == (t, 4) and loaded.proprio.shape == (t, 4)
    assert loaded.meta.action_space == "robot" and loaded.meta.split == "heldout"
    assert loaded.meta.meta["camera"] == "corner" and len(loaded.meta.meta["goal"]) == 3
    np.testing.assert_allclose(loaded.actions, episode.actions, atol=1e-6)


def test_failed_expert_episode_is_not_recorded():
    env = FakeReachEnv()
    env.max_steps = 1  # too short for the expert
    episode, reason = record_metaworld_episode(env, "reach-v3", 3, "train")
    assert episode is None and reason == "expert_failed"


class _EchoUIBackend:
    """A policy that clicks the button whose text is in the instruction (via the marks it is sent)."""

    def __init__(self, broken: bool = False):
        self.requests = []
        self.broken = broken

    def act(self, request):
        self.requests.append(request)
        if self.broken:
            return {"kind": "ui", "raw": "blah", "error": {"code": "unparsable_ui_action", "message": "x"}}
        target = request["instruction"].split('"')[1]
        e = next(d for d in request["dom_elements"] if d["text"] == target)
        return {"kind": "ui", "op": "click", "mark": 1, "text": None, "direction": None,
                "point": [e["left"] + 1, e["top"] + 1], "marks": [], "raw": "click Mark 1"}


def test_ui_closed_loop_policy_and_expert():
    env = FakeClickButtonEnv()
    backend = _EchoUIBackend()
    rec, trace = run_ui_episode(env, UIPolicyAgent(backend), 1_000_001, "heldout", 3, keep_trace=True)
    assert rec.success and rec.steps == 1 and len(rec.latencies_ms) == 1 and len(trace) == 1
    req = backend.requests[0]
    assert req["adapter"] == "ui" and req["image"] and req["dom_elements"][0]["ref"] == 1
    rec, _ = run_ui_episode(env, UIPolicyAgent(_EchoUIBackend(broken=True)), 5, "heldout", 3)
    assert not rec.success and rec.reason.startswith("policy_error: unparsable_ui_action")
    assert run_ui_episode(env, UIExpertAgent("click-button"), 5, "heldout", 3)[0].success


class _RobotBackend:
    def __init__(self, env):
        self.env = env

    def act(self, request):
        assert request["adapter"] == "robot" and len(request["proprio"]) == 4
        a = self.env.expert_action().tolist()
        return {"kind": "robot", "action": a, "chunk": [a, a], "raw": ""}


def test_robot_closed_loop_runs_chunks_and_baselines():
    env = FakeReachEnv()
    rec, _ = run_robot_episode(env, RobotPolicyAgent(_RobotBackend(env), chunk=2), 1_000_000, "heldout")
    assert rec.success and len(rec.latencies_ms) == pytest.approx(rec.steps / 2, abs=1)
    assert run_robot_episode(env, RobotExpertAgent(env), 1_000_000, "heldout")[0].success
    rand = run_robot_episode(env, RobotRandomAgent(np.random.default_rng(0)), 1_000_000, "heldout")[0]
    assert not rand.success and rand.steps == env.max_steps and rand.reason == "max_steps"


def test_server_that_stops_answering_fails_clearly():
    from serve.client.http import PolicyClient

    client = PolicyClient("http://127.0.0.1:9", timeout=2.0)  # nothing listens on port 9
    with pytest.raises(PolicyUnavailable, match="stopped answering"):
        call_policy(client, {"adapter": "robot"})

    class Dead:
        def act(self, request):
            raise httpx.ReadTimeout("timed out")

    with pytest.raises(PolicyUnavailable):
        run_robot_episode(FakeReachEnv(), RobotPolicyAgent(Dead()), 1, "heldout")
