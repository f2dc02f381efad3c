"""The demo's tab logic without a browser or a model: limits, readable errors, drawings,
and the guard that keeps handlers from raising into Gradio."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from serve.demo import logic
from serve.demo.backend import DemoError, RemoteBackend
from tests.demo.conftest import ROOT, moving_square_video, screenshot_like

SMALL = logic.DemoLimits(max_upload_mb=0.05, max_video_seconds=1.0, max_video_frames=20)
SHORT_VIDEOS = logic.DemoLimits(max_video_seconds=1.0)


class FakeBackend:
    """Answers like the policy would, without a model."""

    name = "fake"

    def __init__(self, ui=None, robot=None, chat=None):
        self.ui, self.robot, self.chat_reply, self.requests = ui, robot, chat, []

    def act(self, request: dict) -> dict:
        self.requests.append(request)
        return self.ui if request["adapter"] == "ui" else self.robot

    def chat(self, text, image_b64, max_tokens=64, expect="verbal"):
        self.requests.append({"text": text, "expect": expect, "max_tokens": max_tokens})
        return self.chat_reply

    def info(self):
        return {"model": "fake", "action_datasets": {}}

    def close(self):
        pass


def test_load_image_accepts_png_and_refuses_bad_uploads(tmp_path):
    good = tmp_path / "s.png"
    cv2.imwrite(str(good), screenshot_like()[:, :, ::-1])
    assert logic.load_image(good).shape == (300, 420, 3)
    text = tmp_path / "t.png"
    text.write_text("hello " * 100)
    with pytest.raises(DemoError, match="not a usable image"):
        logic.load_image(text)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(60_000))
    with pytest.raises(DemoError, match="too large.*limit is 0.05 MB"):
        logic.load_image(big, SMALL)
    with pytest.raises(DemoError, match="no image uploaded"):
        logic.load_image(None)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(DemoError, match="empty"):
        logic.load_image(empty)


def test_only_local_pages_are_captured():
    assert logic.is_local_target("http://127.0.0.1:8000/x.html")
    assert logic.is_local_target("file:///tmp/a.html") and logic.is_local_target("/tmp/a.html")
    assert not logic.is_local_target("https://example.com/")
    with pytest.raises(DemoError, match="only local pages"):
        logic.capture("https://example.com/")


def test_predict_click_draws_the_chosen_mark_and_point():
    image = screenshot_like()
    marks = logic.propose(image)
    target = marks[0]
    backend = FakeBackend(ui={"kind": "ui", "op": "click", "mark": target.id, "point": list(target.centre),
                              "raw": f"click Mark {target.id}", "marks": []})
    result = logic.predict_click(backend, image, marks, "click the Submit button")
    sent = backend.requests[0]
    assert sent["adapter"] == "ui" and len(sent["marks"]) == len(marks)
    assert f"Mark {target.id}" in result.summary
    cx, cy = (int(v) for v in target.centre)
    assert tuple(result.image[cy, cx]) != tuple(image[cy, cx])  # the crosshair is drawn there
    with pytest.raises(DemoError, match="instruction"):
        logic.predict_click(backend, image, marks, "  ")


def test_unparsable_answers_are_reported_shortly():
    resp = {"op": None, "raw": "x" * 5000, "error": {"code": "unparsable_ui_action", "message": "y" * 5000}}
    text = logic.describe_ui_action(resp)
    assert "No action" in text and len(text) < 600


def test_read_video_limits_and_corrupt_files(tmp_path):
    clip = moving_square_video(tmp_path / "clip.avi", frames=14, fps=10)
    frames, fps = logic.read_video(clip)
    assert frames.shape == (14, 120, 160, 3) and fps == pytest.approx(10)
    with pytest.raises(DemoError, match="too long: 1.4 s"):
        logic.read_video(clip, SHORT_VIDEOS)
    corrupt = tmp_path / "bad.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DemoError, match="corrupt"):
        logic.read_video(corrupt)


def test_trace_of_mark_and_predicted_traces(tmp_path):
    frames, _ = logic.read_video(moving_square_video(tmp_path / "clip.avi"))
    result = logic.analyse_video(frames, n_future=6)
    assert result.foreground_marks, "the moving square should give foreground marks"
    raw, traces = logic.tom_images(frames, result, 6)
    assert raw.shape == traces.shape == frames[0].shape and not np.array_equal(traces, frames[0])
    mid = result.foreground_marks[0]
    parsed = [{"mark": mid, "points": [[900, 900]] * 6}]
    backend = FakeBackend(chat={"text": f"Mark {mid}: (900,900)", "parsed": parsed, "error": None})
    image, text = logic.predict_traces(backend, frames, result, "push the box", 6)
    assert "Predicted traces for 1 marks" in text
    assert "Predict the next 6 positions" in backend.requests[0]["text"]
    assert backend.requests[0]["expect"] == "traces"
    h, w = image.shape[:2]
    x, y = round(900 / 1000 * w), round(900 / 1000 * h)
    assert image[y - 2:y + 3, x - 2:x + 3, 1].min() < 60  # a magenta predicted point is drawn
    with pytest.raises(DemoError, match="nothing moves"):
        logic.analyse_video(np.repeat(frames[:1], 12, axis=0), n_future=6)


def test_robot_action_units_and_state_parsing():
    backend = FakeBackend(robot={"kind": "robot", "action": [0.5, -0.2, 0.1, 1.0], "dataset": "metaworld",
                                 "tokens": 4, "raw": ""})
    result = logic.robot_action(backend, screenshot_like(), "open the drawer", "metaworld", "0.1, 0.2 0.3")
    assert [r[0] for r in result.rows] == ["dx", "dy", "dz", "gripper"]
    assert result.rows[0][1:] == [0.5, "cm"]
    assert backend.requests[0]["proprio"] == [0.1, 0.2, 0.3]
    assert len(result.figure.axes[0].patches) == 4
    with pytest.raises(DemoError, match="numbers"):
        logic.robot_action(backend, screenshot_like(), "open", "metaworld", "up please")
    failing = FakeBackend(robot={"kind": "robot", "error": {"code": "unparsable_action_tokens", "message": "bad"}})
    with pytest.raises(DemoError, match="did not decode"):
        logic.robot_action(failing, screenshot_like(), "open", None)
    assert logic.action_labels("other", 2) == [("a0", "dataset units"), ("a1", "dataset units")]


def test_guard_turns_failures_into_status_messages():
    from serve.demo.guard import guarded

    @guarded(3, 2)
    def refuses():
        raise DemoError("bad upload")

    @guarded(3, 2)
    def crashes():
        raise KeyError("boom")

    out = refuses()
    assert "bad upload" in out[2] and "Error" in out[2]
    out = crashes()
    assert "internal error (KeyError" in out[2] and "Traceback" not in out[2]


def test_remote_backend_turns_server_refusals_into_messages(monkeypatch):
    from serve.client.http import PolicyError

    backend = RemoteBackend("http://127.0.0.1:9", timeout=2)

    def refuse(request):
        raise PolicyError(413, "image_too_large", "image: more than 8388608 bytes")

    monkeypatch.setattr(backend.client, "act", refuse)
    with pytest.raises(DemoError, match=r"refused the request \(413 image_too_large\): image: more than"):
        backend.act({"adapter": "ui"})


def test_remote_backend_reports_an_unreachable_server():
    backend = RemoteBackend("http://127.0.0.1:9", timeout=2)
    with pytest.raises(DemoError, match="cannot reach the policy server"):
        backend.info()


@pytest.mark.slow
def test_cli_help_and_bad_checkpoint(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "magma.cli", "demo", *a], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    assert "--checkpoint" in run("--help").stdout
    bad = run("--checkpoint", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "is not a folder" in bad.stderr
    assert run("--server", "http://127.0.0.1:9").returncode == 2
