"""The demo app is composed of one builder per tab (serve.demo.tabs); built without a browser."""
from __future__ import annotations

import gradio as gr
import pytest

from serve.demo.app import build_app
from serve.demo.live import LiveSession
from serve.demo.logic import DemoLimits
from serve.demo.tabs import build_agent_tab, build_live_tab, build_som_tab, build_tom_tab

TABS = [("som", "Set-of-Mark"), ("tom", "Trace-of-Mark"), ("agent", "Agent"), ("live", "Live")]


class InfoBackend:
    name = "fake"

    def __init__(self, datasets=("metaworld",)):
        self.datasets = datasets

    def info(self):
        return {"model": "fake", "action_datasets": {d: {} for d in self.datasets}}


def _tabs(app: gr.Blocks) -> list[tuple[str, str]]:
    return [(b.id, b.label) for b in app.blocks.values() if isinstance(b, gr.Tab)]


def _handlers(app: gr.Blocks) -> list[str]:
    fns = app.fns.values() if isinstance(app.fns, dict) else app.fns
    return sorted(f.name for f in fns)


def test_app_composes_the_four_tabs_in_order():
    live = LiveSession()
    try:
        app = build_app(InfoBackend(("metaworld", "libero")), live=live)
    finally:
        live.close()
    assert _tabs(app) == TABS
    assert _handlers(app) == ["agent_ask", "agent_load", "agent_robot", "live_auto", "live_reset",
                              "live_step", "som_click", "som_from_page", "som_from_upload",
                              "tom_predict", "tom_track", "tom_track"]
    dropdown = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "robot-dataset")
    assert dropdown.value == "libero"  # the checkpoint's datasets, sorted


@pytest.mark.parametrize("tab_id, build", [("som", lambda b: build_som_tab(b, DemoLimits())),
                                           ("tom", lambda b: build_tom_tab(b, DemoLimits())),
                                           ("agent", lambda b: build_agent_tab(b, DemoLimits(), [])),
                                           ("live", lambda b: build_live_tab(b, LiveSession()))])
def test_each_tab_builds_alone(tab_id, build):
    with gr.Blocks() as app:
        tab = build(InfoBackend())
    assert isinstance(tab, gr.Tab) and _tabs(app) == [t for t in TABS if t[0] == tab_id]
    assert all(name.startswith(tab_id) for name in _handlers(app))


def test_an_unreachable_backend_is_shown_in_the_header():
    from serve.demo.backend import DemoError

    class Down(InfoBackend):
        def info(self):
            raise DemoError("policy server at http://x is not answering")

    live = LiveSession()
    try:
        app = build_app(Down(), live=live)
    finally:
        live.close()
    header = next(b for b in app.blocks.values() if isinstance(b, gr.Markdown))
    assert "**Error:** policy server at http://x is not answering" in header.value
    assert _tabs(app) == TABS
