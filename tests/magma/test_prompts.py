"""The UI history line: one renderer (magma.prompts) for training, eval, the browser agent and
the demo, so the same actions give the same prompt at every stage."""
from __future__ import annotations

import numpy as np
import pytest

from magma.codecs import UIAction, parse_ui_action, render_ui_action
from magma.prompts import HISTORY_WINDOW, history_entry, render_history, ui_action_prompt

ACTIONS = [UIAction("click", mark=1, text="OK"), UIAction("type", mark=2, text='say "hi"\n'),
           UIAction("click", point=(437, 905)), UIAction("scroll", direction="down"),
           UIAction("select", mark=3, text="Rot / Grün"), UIAction("click", mark=0, point=(1, 2))]


def test_history_window_is_the_one_training_used():
    assert HISTORY_WINDOW == 4


@pytest.mark.parametrize("action", ACTIONS)
def test_history_entry_is_the_model_text_and_round_trips(action):
    entry = history_entry(action)
    assert entry == render_ui_action(action)
    assert parse_ui_action(entry) == action


def test_render_history_shows_the_last_window_oldest_first():
    entries = [history_entry(a) for a in ACTIONS]
    assert render_history([]) == ""
    assert render_history(entries[:1]) == 'click "OK" Mark 1'
    assert render_history(entries) == " | ".join(entries[-HISTORY_WINDOW:])
    assert render_history(entries, window=2) == (
        'select "Rot / Grün" Mark 3 | click Mark 0 at (1,2)')
    assert render_history(entries, window=0) == ""
    with pytest.raises(ValueError, match="history window"):
        render_history(entries, window=-1)


def test_model_text_and_history_entry_give_the_same_line():
    """Clients send the model's raw text; an equivalent spelling renders as training wrote it,
    and text that is no UI action is kept as sent."""
    assert render_history([' type "\\u00e9t\\u00e9" Mark 2 ']) == 'type "été" Mark 2'
    assert render_history(["click Mark 1", "noop"]) == "click Mark 1 | noop"


def test_ui_action_prompt_format_is_unchanged():
    """Byte for byte the prompt the quickstart's shards were built with (window 4, ' | ')."""
    entries = [f"click Mark {i}" for i in range(6)]
    assert ui_action_prompt("Click OK.", None, entries) == (
        "<image>Task: Click OK.\nHistory: click Mark 2 | click Mark 3 | click Mark 4 | "
        "click Mark 5\nNext action?")
    assert ui_action_prompt("Click OK.") == "<image>Task: Click OK.\nNext action?"
    assert ui_action_prompt("Click OK.", history=entries, history_window=0) == \
        "<image>Task: Click OK.\nNext action?"
    assert "History: click Mark 5\n" in ui_action_prompt("x", history=entries, history_window=1)


# ---------------------------------------------------------------- the same prompt at every stage

INSTRUCTION = 'Type "magma", then click "next".'


def _el(ref, tag, text, left, top, w, h):
    return {"ref": ref, "left": float(left), "top": float(top), "width": float(w),
            "height": float(h), "tag": tag, "text": text, "value": "", "classes": "",
            "flags": [0, 0, 0, 1]}


DOM = [_el(1, "button", "okay", 2, 60, 40, 20), _el(2, "input", "", 50, 10, 40, 20),
       _el(3, "button", "next", 50, 60, 40, 20)]
# recorded steps (pixel points, element refs), five so that the window of four matters
STEPS = [{"op": "click", "ref": 1}, {"op": "type", "ref": 2, "text": "magma"},
         {"op": "click", "point": [80.0, 95.0]}, {"op": "scroll", "direction": "down"},
         {"op": "click", "ref": 3}, {"op": "click", "ref": 1}]
SCREEN = np.full((100, 100, 3), 200, np.uint8)


@pytest.fixture(scope="module")
def training_steps(tmp_path_factory):
    """(user prompt, target text) of each step, as the miniwob_episodes source builds them."""
    from data_pipeline.build.registry import SourceConfig, WorkItem, get_source_type
    from magma.episode import Episode, EpisodeMeta

    root = tmp_path_factory.mktemp("eps")
    folder = Episode(EpisodeMeta(episode_id="ep0", env="miniwob", task="t", instruction=INSTRUCTION,
                                 action_space="ui", success=True),
                     images=np.stack([SCREEN] * len(STEPS)),
                     steps=[{"action": a, "dom_elements": DOM} for a in STEPS]).save(root)
    cfg = SourceConfig(name="mw", type="miniwob_episodes",
                       params={"path": str(root), "som_per_step": 0})
    samples = get_source_type("miniwob_episodes").process(WorkItem("ep0", (str(folder), True)), cfg, {})
    assert [s.frame for s in samples] == list(range(len(STEPS)))
    return [(s.conversation[0].content, s.conversation[1].content) for s in samples]


def _server_prompt(request: dict) -> str:
    """The user turn serve's UI adapter builds for a /v1/act request."""
    from PIL import Image

    from serve.adapters.ui import prepare_ui
    from serve.api import ActRequest

    gen, _ = prepare_ui(ActRequest.model_validate(request), Image.fromarray(SCREEN), lambda u: u)
    return gen.prompt


def _png_b64(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class ScriptedPolicy:
    """Answers each request with the next training target (a model that learnt them all) and
    records the prompt the server would build for it."""

    def __init__(self, targets: list[str]):
        self.targets, self.prompts = list(targets), []

    def act(self, request: dict) -> dict:
        self.prompts.append(_server_prompt(request))
        parsed = parse_ui_action(self.targets.pop(0))
        return {"kind": "ui", **parsed.to_dict(), "point": [10.0, 10.0], "marks": [],
                "raw": render_ui_action(parsed), "error": None}


def test_training_steps_carry_the_history(training_steps):
    prompts = [p for p, _ in training_steps]
    assert "History:" not in prompts[0]
    assert prompts[1].endswith('\nHistory: click "okay" Mark 1\nNext action?')
    assert 'History: type "magma" Mark 0 | click at (800,950) | scroll down | click "next" Mark 2\n' \
        in prompts[5]


def test_eval_agent_sends_what_training_saw(training_steps):
    from eval.closed_loop import UIPolicyAgent, run_ui_episode
    from eval.envs.miniwob_env import StepResult, UIObservation

    class Env:
        task = "t"

        def reset(self, seed):
            self.obs = UIObservation(INSTRUCTION, SCREEN, DOM)
            return self.obs

        def step(self, action):
            return StepResult(self.obs, 0.0, False, False)

    policy = ScriptedPolicy([t for _, t in training_steps])
    rec, _ = run_ui_episode(Env(), UIPolicyAgent(policy), 0, "heldout", max_steps=len(STEPS))
    assert rec.reason == "max_steps"
    assert policy.prompts == [p for p, _ in training_steps]


def test_browser_agent_sends_what_training_saw(training_steps, monkeypatch):
    """run_agent's own loop, with the page (Playwright) replaced by the recorded screen."""
    import playwright.sync_api

    from serve.client import browser

    class Page:
        def goto(self, url):
            pass

    class Playwright:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        @property
        def chromium(self):
            return self

        def launch(self, **kwargs):
            return self

        def new_page(self, **kwargs):
            return Page()

        def close(self):
            pass

    png = _png_b64(SCREEN)
    monkeypatch.setattr(playwright.sync_api, "sync_playwright", Playwright)
    monkeypatch.setattr(browser, "observe", lambda page: (png, DOM))
    monkeypatch.setattr(browser, "execute", lambda page, action: (True, action["op"]))
    policy = ScriptedPolicy([t for _, t in training_steps])
    run = browser.run_agent(policy, "file:///x.html", INSTRUCTION, max_steps=len(STEPS))
    assert all(s.executed for s in run.steps)
    assert policy.prompts == [p for p, _ in training_steps]


def test_demo_live_agent_sends_what_training_saw(training_steps, monkeypatch):
    """The demo's Live tab session, with the page replaced by the recorded screen."""
    from serve.demo import live

    png = _png_b64(SCREEN)
    monkeypatch.setattr(live, "observe", lambda page: (png, DOM))
    monkeypatch.setattr(live, "execute", lambda page, action: (True, action["op"]))
    monkeypatch.setattr(live.LiveSession, "_ensure_page", lambda self: object())
    monkeypatch.setattr(live.LiveSession, "_page_status", lambda self: "")
    session = live.LiveSession()
    session._page = object()
    policy = ScriptedPolicy([t for _, t in training_steps])
    try:
        assert all(session.step(policy, INSTRUCTION).executed for _ in STEPS)
    finally:
        session.close()
    assert policy.prompts == [p for p, _ in training_steps]


def test_client_history_stays_within_the_api_limit():
    from serve.api import MAX_HISTORY
    from serve.client.browser import HISTORY_SENT, ui_request

    assert HISTORY_SENT == MAX_HISTORY
    req = ui_request("x", "png", [], [f"click Mark {i}" for i in range(50)])
    assert req["history"] == [f"click Mark {i}" for i in range(50 - MAX_HISTORY, 50)]


def test_ui_prompt_legend_follows_the_given_limits():
    from magma.marks import Mark

    marks = [Mark(i, (0, 0, 10, 10), text=f"label number {i}", role="button") for i in range(3)]
    default = ui_action_prompt("Click OK.", marks)
    assert default.count(" Mark ") == 3 and '"label number 2" Mark 2' in default
    short = ui_action_prompt("Click OK.", marks, legend_max_marks=2, legend_max_text=5)
    assert short.count(" Mark ") == 2 and '"label" Mark 1' in short and "Mark 2" not in short
