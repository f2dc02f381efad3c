"""The BrowserGym harness (eval/envs/browsergym_env.py, eval/benchmarks/browsergym.py).

The conversion tests run everywhere, on a DOM snapshot written as Chrome DevTools' protocol
publishes `DOMSnapshot.captureSnapshot` (https://chromedevtools.github.io/devtools-protocol/tot/DOMSnapshot/:
documents[].nodes with parentIndex/nodeType/nodeName/nodeValue/attributes and the rare
inputValue/inputChecked tables, layout with nodeIndex/bounds/text, textBoxes with
layoutIndex/bounds/start/length, all strings indexed into `strings`) and BrowserGym 0.14's
`extra_element_properties` ({bid: {"visibility", "bbox": [x, y, w, h] in screenshot pixels,
"clickable", "set_of_marks"}}, browsergym/core/observation.py). The live tests need browsergym
(an optional install, see eval.envs.browsergym_env.INSTALL_HINT) and Debian chromium; without
them they skip with that reason.
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from eval.envs.browsergym_env import (ACTION_SUBSETS, CHROMIUM_EXECUTABLE, elements_from_snapshot,
                                      resolve_element, to_browsergym_action)
from eval.envs.miniwob_env import DOM_KEYS, UIObservation

HAS_BROWSERGYM = importlib.util.find_spec("browsergym") is not None \
    and importlib.util.find_spec("browsergym.miniwob") is not None
needs_browsergym = pytest.mark.skipif(
    not HAS_BROWSERGYM or not os.path.exists(CHROMIUM_EXECUTABLE),
    reason="browsergym not importable (optional: pip install --no-deps browsergym-core==0.14.3 "
           "browsergym-miniwob==0.14.3, then pip install 'lxml<6' beautifulsoup4) or no chromium at "
           + CHROMIUM_EXECUTABLE)
SCALE = 1.5  # BrowserGym's miniwob zoom (_bgym_scale_factor)


def _snapshot() -> tuple[dict, dict]:
    """A MiniWoB-like page: a skipped #query, a button, a two-line text node, a checked checkbox
    in its label, a hidden span, a text input with a value."""
    strings: list[str] = []

    def s(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    # (parent, nodeType, nodeName, nodeValue, attributes)
    nodes = [
        (-1, 9, "#document", "", {}),                                    # 0
        (0, 1, "HTML", "", {}),                                          # 1
        (1, 1, "HEAD", "", {}),                                          # 2
        (1, 1, "BODY", "", {"bid": "1"}),                                # 3
        (3, 1, "DIV", "", {"id": "wrap", "bid": "2"}),                   # 4
        (4, 1, "DIV", "", {"id": "query", "bid": "3"}),                  # 5
        (5, 3, "#text", 'Click on the "ok" button.', {}),                # 6
        (4, 1, "DIV", "", {"id": "area", "bid": "4"}),                   # 7
        (7, 1, "BUTTON", "", {"class": "btn big", "bid": "5"}),          # 8
        (8, 3, "#text", " ok ", {}),                                     # 9
        (7, 3, "#text", "Pick one: red or blue", {}),                    # 10
        (7, 1, "LABEL", "", {"bid": "7"}),                               # 11
        (11, 1, "INPUT", "", {"type": "checkbox", "bid": "8"}),          # 12
        (11, 3, "#text", " red", {}),                                    # 13
        (7, 1, "SPAN", "", {"bid": "9"}),                                # 14 (display: none)
        (14, 3, "#text", "hidden", {}),                                  # 15
        (7, 1, "INPUT", "", {"bid": "10"}),                              # 16 (type omitted: text)
        (7, 3, "#text", "\n   ", {}),                                    # 17 whitespace only
    ]
    css_boxes = {1: [0, 0, 332, 214], 3: [0, 0, 332, 210], 4: [0, 0, 160, 210], 5: [0, 0, 160, 50],
                 6: [2, 2, 150, 11], 7: [0, 50, 160, 160], 8: [2, 52, 40, 21], 9: [10, 55, 12, 11],
                 10: [2, 74, 120, 22], 11: [2, 97, 50, 13], 12: [2, 97, 13, 13], 13: [16, 97, 20, 11],
                 16: [2, 112, 100, 20]}
    layout_index = sorted(css_boxes)
    doc = {
        "nodes": {
            "parentIndex": [n[0] for n in nodes], "nodeType": [n[1] for n in nodes],
            "nodeName": [s(n[2]) for n in nodes], "nodeValue": [s(n[3]) if n[3] else -1 for n in nodes],
            "attributes": [[x for k, v in n[4].items() for x in (s(k), s(v))] for n in nodes],
            "inputValue": {"index": [12, 16], "value": [s("on"), s("abc")]},
            "inputChecked": {"index": [12]},
        },
        "layout": {"nodeIndex": layout_index, "bounds": [css_boxes[i] for i in layout_index],
                   "text": [s(nodes[i][3]) if nodes[i][1] == 3 else -1 for i in layout_index]},
        # the two-line text node: "Pick one: " on the first line, "red or blue" on the second
        "textBoxes": {"layoutIndex": [layout_index.index(10), layout_index.index(10)],
                      "bounds": [[2, 74, 60, 11], [2, 85, 70, 11]], "start": [0, 10], "length": [10, 11]},
        "scrollOffsetX": 0, "scrollOffsetY": 0,
    }
    extra = {}
    for i, n in enumerate(nodes):
        bid = n[4].get("bid")
        if bid:
            box = css_boxes.get(i)
            extra[bid] = {"visibility": 1.0 if box else 0.0, "bbox": [v * SCALE for v in box] if box else None,
                          "clickable": n[2] in ("BUTTON", "INPUT"), "set_of_marks": bool(box)}
    return {"documents": [doc], "strings": strings}, extra


def test_snapshot_becomes_miniwob_style_elements():
    dom, extra = _snapshot()
    els = elements_from_snapshot(dom, extra, SCALE, focused_bid="10")
    got = [(e["ref"], e["parent"], e["tag"], e["text"], e["value"]) for e in els]
    assert got == [
        (1, 0, "body", "", ""), (2, 1, "div", "", ""), (4, 2, "div", "", ""),
        (5, 4, "button", "ok", ""),              # text-only element: a leaf with its text
        (-1, 4, "t", "Pick one:", ""), (-2, 4, "t", "red or blue", ""),  # one t per line
        (7, 4, "label", "", ""), (8, 7, "input_checkbox", "", "True"), (-3, 7, "t", "red", ""),
        (10, 4, "input_text", "", "abc"),
    ]  # #query and the unrendered span (bbox None) are left out with what they hold
    by_ref = {e["ref"]: e for e in els}
    assert [by_ref[5][k] for k in ("left", "top", "width", "height")] == [3.0, 78.0, 60.0, 31.5]
    assert [by_ref[-2][k] for k in ("left", "top", "width", "height")] == [3.0, 127.5, 105.0, 16.5]
    assert by_ref[5]["classes"] == "btn big" and by_ref[5]["bid"] == "5" and by_ref[-1]["bid"] is None
    assert by_ref[10]["flags"] == [1, 0, 0, 1] and by_ref[5]["flags"][0] == 0  # focused, leaf
    assert by_ref[7]["flags"][3] == 0  # the label holds an element: not a leaf
    json.dumps(els)  # json-safe: what a request carries


def test_observation_keeps_goal_fields_and_crops_to_the_task_area_on_request():
    import numpy as np

    from eval.envs.browsergym_env import observation_from_browsergym

    dom, extra = _snapshot()
    obs = {"dom_object": dom, "extra_element_properties": extra, "focused_element_bid": "",
           "goal": 'Click on the "ok" button.', "screenshot": np.zeros((321, 498, 3), np.uint8)}
    full = observation_from_browsergym(obs, "click-button", SCALE)
    assert full.screenshot.shape == (321, 498, 3) and full.utterance == 'Click on the "ok" button.'
    assert full.fields == {"target": "ok"}  # miniwob's own field extractor for the task
    cropped = observation_from_browsergym(obs, "click-button", SCALE, crop_to_task=True)
    assert cropped.screenshot.shape == (315, 240, 3)  # #wrap: 160x210 CSS px at zoom 1.5
    assert cropped.elements == full.elements


def test_marks_and_experts_read_the_elements_and_act_by_bid():
    from data_pipeline.perception import marks_from_dom_elements
    from eval.envs.miniwob_experts import expert_action

    dom, extra = _snapshot()
    els = elements_from_snapshot(dom, extra, SCALE)
    marks, ref_to_mark = marks_from_dom_elements([{k: e[k] for k in DOM_KEYS} for e in els])
    roles = {m.id: (m.role, m.text) for m in marks}
    assert roles[ref_to_mark[5]] == ("button", "ok")
    assert roles[ref_to_mark[8]] == ("checkbox", "red")  # a checkbox takes its label's text
    assert roles[ref_to_mark[10]][0] == "textbox"
    # a mark (what the policy and the random agent answer) acts on its element's bid
    assert to_browsergym_action({"op": "click", "mark": ref_to_mark[5], "point": [1, 1]}, els) == "click('5')"
    assert to_browsergym_action({"op": "type", "mark": ref_to_mark[10], "text": "hi"}, els) == "fill('10', 'hi')"
    obs = UIObservation('Click on the "ok" button.', None, els, {"target": "ok"})  # type: ignore[arg-type]
    assert to_browsergym_action(expert_action("click-button", obs), els) == "click('5')"


def test_actions_without_a_bid_use_the_point_and_bad_ones_are_refused():
    dom, extra = _snapshot()
    els = elements_from_snapshot(dom, extra, SCALE)
    # a text pseudo-element has no bid: its point is clicked (BrowserGym maps it through the zoom)
    assert to_browsergym_action({"op": "click", "ref": -1, "point": [40.25, 90.0]}, els) == \
        "mouse_click(40.2, 90.0)"
    assert to_browsergym_action({"op": "click", "point": [10, 20]}, els) == "mouse_click(10.0, 20.0)"
    assert to_browsergym_action({"op": "type", "point": [10, 20], "text": "it's"}, els) == \
        "mouse_click(10.0, 20.0)\nkeyboard_type(\"it's\")"
    assert to_browsergym_action({"op": "scroll", "direction": "up"}, els) == "scroll(0.0, -100.0)"
    assert resolve_element({"op": "click", "mark": 999}, els) is None
    for bad in ({"op": "click", "mark": 999}, {"op": "type", "ref": 10}, {"op": "select", "point": [1, 2]},
                {"op": "drag"}):
        with pytest.raises(ValueError, match="cannot be executed in BrowserGym"):
            to_browsergym_action(bad, els)


@pytest.mark.skipif(not HAS_BROWSERGYM, reason="browsergym not importable (optional install)")
def test_browsergym_parses_every_action_string_we_emit():
    from browsergym.core.action.highlevel import HighLevelActionSet

    to_code = HighLevelActionSet(subsets=list(ACTION_SUBSETS)).to_python_code
    dom, extra = _snapshot()
    els = elements_from_snapshot(dom, extra, SCALE)
    for action in ({"op": "click", "ref": 5}, {"op": "type", "ref": 10, "text": 'a "b"'},
                   {"op": "select", "ref": 10, "text": "x"}, {"op": "click", "point": [1.5, 2]},
                   {"op": "type", "point": [1, 2], "text": "q"}, {"op": "scroll", "direction": "down"},
                   {"op": "noop"}, {"op": "wait"}):
        assert to_code(to_browsergym_action(action, els))  # raises on a string it cannot parse


def test_cli_refuses_a_policy_without_a_model_and_names_a_missing_browsergym(tmp_path, capsys):
    from eval.cli import main

    assert main(["browsergym", "--tasks", "click-button", "--agent", "policy", "--out", str(tmp_path)]) == 2
    assert "--checkpoint DIR or --server URL" in capsys.readouterr().err
    assert main(["browsergym", "--agent", "oracle,nobody", "--out", str(tmp_path)]) == 2
    if not HAS_BROWSERGYM:
        assert main(["browsergym", "--tasks", "click-button", "--agent", "oracle", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "browsergym is not importable" in err and "pip install --no-deps browsergym-core" in err


# ---------------------------------------------------------------- live (browsergym + chromium)

class _TargetButtonBackend:
    """A stand-in policy server: answers the mark of the button whose text the instruction
    quotes, in the server's response shape (marks from the request's dom_elements)."""

    def act(self, request):
        import re

        from data_pipeline.perception import marks_from_dom_elements

        marks, _ = marks_from_dom_elements(request["dom_elements"])
        target = re.search(r'"([^"]*)"', request["instruction"]).group(1)
        m = next(m for m in marks if m.role == "button" and m.text == target)
        return {"kind": "ui", "op": "click", "mark": m.id, "point": list(m.centre),
                "raw": f"click Mark {m.id}", "marks": [x.to_dict() for x in marks]}


@needs_browsergym
@pytest.mark.browser
@pytest.mark.envs
def test_elements_match_miniwobs_own_getdominfo_on_a_browsergym_page():
    from eval.envs.browsergym_env import BrowserGymEnv

    with BrowserGymEnv("click-checkboxes") as env:
        obs = env.reset(1_000_000)
        raw = env._env.unwrapped.page.evaluate("() => { core.resetRefCode(); return core.getDOMInfo(); }")

    def flat(d, out):  # miniwob.dom.DOMElement's pre-order, all-text children folded into the parent
        kids = d["children"]
        if kids and all(k["tag"] == "t" for k in kids):
            d["text"], kids = " ".join(k["text"] for k in kids), []
        out.append(d)
        for k in kids:
            flat(k, out)
        return out

    theirs = flat(raw, [])[1:]  # <body> is the root of both (its box is the viewport's; not compared)
    ours = obs.elements[1:]
    assert len(theirs) == len(ours) > 5
    for d, e in zip(theirs, ours):
        value = d.get("value")
        value = "True" if value is True else ("" if value in (None, False) else str(value))
        assert (d["tag"].lower(), d.get("text") or "", str(d.get("classes") or ""), value) == \
            (e["tag"], e["text"], e["classes"], e["value"])
        for k in ("left", "top", "width", "height"):  # BrowserGym zooms the page by 1.5
            assert abs(d[k] * SCALE - e[k]) < 1.01, (k, d, e)


@needs_browsergym
@pytest.mark.browser
@pytest.mark.envs
def test_oracle_random_and_policy_agents_run_on_click_button(tmp_path):
    from eval.benchmarks.browsergym import EPISODES, run_benchmark
    from eval.cli import main

    records = run_benchmark(["click-button"], 2, ["oracle", "random", "policy"], _TargetButtonBackend(),
                            tmp_path, progress=False)
    by_agent = {a: [r for r in records if r["agent"] == a] for a in ("oracle", "random", "policy")}
    assert all(len(v) == 2 for v in by_agent.values())
    assert all(r["success"] and r["actions"][0].startswith("click('") for r in by_agent["oracle"])
    assert all(r["success"] and len(r["latencies_ms"]) == 1 for r in by_agent["policy"]), by_agent["policy"]
    assert all(a.startswith("click('") for r in by_agent["random"] for a in r["actions"])
    assert all(r["env"] == "browsergym" and r["reset_s"] and r["env_step_s"] for r in records)
    # the CLI resumes the same folder (nothing rerun) and writes results.json and report.md
    lines = (tmp_path / EPISODES).read_text().splitlines()
    assert main(["browsergym", "--tasks", "click-button", "--episodes", "2", "--agent", "oracle,random",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / EPISODES).read_text().splitlines() == lines
    res = json.loads((tmp_path / "results.json").read_text())["browsergym"]
    assert res["tasks"]["click-button"]["oracle"]["success_rate"] == 1.0
    assert res["tasks"]["click-button"]["oracle"]["ci95"][0] > 0.3
    assert res["overall"]["random"]["episodes"] == 2 and res["versions"]["browsergym-core"]
    assert "| click-button | oracle | 1.00" in (tmp_path / "report.md").read_text()
