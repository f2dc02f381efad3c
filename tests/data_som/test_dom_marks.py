from __future__ import annotations

import os

import numpy as np
import pytest

from data_pipeline.som.dom_marks import box_iou, element_role, reading_order
from data_pipeline.perception import marks_from_dom_elements
from data_pipeline.som.synthetic import synthetic_screen


def el(ref, tag, left, top, width, height, text="", classes="", leaf=1):
    return {"ref": ref, "left": left, "top": top, "width": width, "height": height, "tag": tag,
            "text": text, "value": "", "classes": classes, "flags": [0, 0, 0, leaf]}


def dom_box(e):
    return (e["left"], e["top"], e["left"] + e["width"], e["top"] + e["height"])


def test_roles_reading_order_and_ref_map():
    elements = [
        el(1, "body", 0, 0, 160, 210, leaf=0),
        el(2, "div", 0, 50, 160, 100, leaf=0),
        el(3, "button", 90, 60, 60, 20, "Right"),
        el(4, "button", 5, 62, 60, 20, "Left"),
        el(5, "span", 10, 65, 30, 10, "Left"),  # text inside the Left button: folded into it
        el(6, "input_checkbox", 5, 100, 14, 14),
        el(-1, "t", 22, 101, 40, 11, "Apples"),  # the checkbox's label text
        el(7, "a", 5, 130, 50, 12, "More", classes="alink"),
        el(8, "button", 5, 150, 0, 20, "ZeroWidth"),
        el(-2, "t", -4906, 76, 26, 11, "Close"),  # off screen
        el(9, "p", 70, 100, 80, 30, "Some text"),
    ]
    marks, ref_to_mark = marks_from_dom_elements(elements, (160, 210))
    assert [(m.role, m.text) for m in marks] == [
        ("button", "Left"), ("button", "Right"), ("checkbox", "Apples"), ("text", "Some text"),
        ("link", "More")]
    assert [m.id for m in marks] == [0, 1, 2, 3, 4]
    assert ref_to_mark[4] == 0 and ref_to_mark[3] == 1 and ref_to_mark[6] == 2 and ref_to_mark[7] == 4
    assert ref_to_mark[5] == 0 and ref_to_mark[-1] == 2  # folded elements point at their mark
    assert 8 not in ref_to_mark and -2 not in ref_to_mark
    by_ref = {e["ref"]: e for e in elements}
    for ref, mid in ((3, 1), (4, 0), (6, 2), (9, 3)):
        assert marks[mid].box == pytest.approx(dom_box(by_ref[ref]))


def test_boxes_are_clipped_to_the_screen_and_tiny_elements_dropped():
    marks, _ = marks_from_dom_elements([el(1, "button", 150, 200, 40, 30, "Edge"),
                                        el(2, "button", 10, 10, 0.5, 10, "Sliver")], (160, 210))
    assert len(marks) == 1 and marks[0].box == (150, 200, 160, 210)


def test_malformed_elements_are_ignored():
    marks, _ = marks_from_dom_elements([{"ref": 1, "tag": "button"}, el(2, "button", 1, 1, 9, 9, "Ok")])
    assert [m.text for m in marks] == ["Ok"]


def test_reading_order_groups_lines():
    boxes = [(100, 12, 150, 30), (0, 10, 50, 30), (0, 40, 50, 60), (60, 8, 90, 28)]
    assert reading_order(boxes) == [1, 3, 0, 2]


def test_synthetic_screen_marks_match_dom_elements():
    rng = np.random.default_rng(3)
    _, elements = synthetic_screen(rng)
    marks, ref_to_mark = marks_from_dom_elements(elements, (160, 210))
    for e in elements:
        if element_role(e) and e["left"] >= 0:
            m = marks[ref_to_mark[e["ref"]]]
            assert box_iou(m.box, dom_box(e)) > 0.999


@pytest.mark.browser
@pytest.mark.envs
@pytest.mark.slow
def test_real_miniwob_observations_marks_match_dom_elements():
    pytest.importorskip("miniwob")
    os.environ.setdefault("MINIWOB_CHROME_BINARY", "/usr/bin/chromium")
    os.environ.setdefault("MINIWOB_CHROMEDRIVER", "/usr/bin/chromedriver")
    try:
        from eval.envs.miniwob_env import MiniWoBEnv  # the recorder's own env wrapper
    except ImportError:
        pytest.skip("eval.envs.miniwob_env not available")
    checked = 0
    for task in ("click-checkboxes", "login-user", "click-tab"):
        with MiniWoBEnv(task) as env:
            obs = env.reset(seed=1)
            h, w = obs.screenshot.shape[:2]
            elements = obs.dom_elements()
            marks, ref_to_mark = marks_from_dom_elements(elements, (w, h))
            assert marks, task
            for e in elements:
                on_screen = e["width"] >= 1 and e["height"] >= 1 and e["left"] >= 0 and e["left"] < w
                if e["tag"] in ("button", "input_text", "input_password", "input_checkbox", "a") and on_screen:
                    m = marks[ref_to_mark[e["ref"]]]
                    clipped = (e["left"], e["top"], min(w, e["left"] + e["width"]),
                               min(h, e["top"] + e["height"]))
                    assert box_iou(m.box, clipped) >= 0.95, (task, e, m)
                    checked += 1
            for m in marks:  # every mark is some element's box
                assert any(box_iou(m.box, (e["left"], e["top"], min(w, e["left"] + e["width"]),
                                           min(h, e["top"] + e["height"]))) > 0.999 for e in elements)
    assert checked >= 8
