"""Live capture on hand-written pages whose element boxes are fixed by CSS (data-box attributes
hold the expected viewport box, clipped; data-expect="hidden" elements must get no mark)."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from data_pipeline.som.dom_marks import box_iou
from data_pipeline.som.rendering import layout_labels, render_marks

pytestmark = pytest.mark.browser
PAGES = Path(__file__).parent / "pages"


class _Expectations(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.visible: list[tuple[str, tuple[float, ...]]] = []
        self.hidden: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-box"):
            self.visible.append((tag, tuple(float(v) for v in a["data-box"].split(","))))
        if a.get("data-expect") == "hidden":
            self.hidden.append(tag)


def expectations(page: str) -> _Expectations:
    p = _Expectations()
    p.feed((PAGES / page).read_text())
    return p


@pytest.fixture(scope="module")
def capturer():
    from data_pipeline.som.page_capture import PageCapturer
    c = PageCapturer()
    yield c
    c.close()


@pytest.mark.parametrize("page", ["form.html", "nested.html", "hidden.html", "crowded.html"])
def test_each_visible_element_gets_exactly_one_matching_mark(capturer, page):
    image, marks = capturer.capture(PAGES / page)
    assert image.shape == (800, 1280, 3)
    exp = expectations(page)
    assert exp.visible
    used = set()
    for tag, box in exp.visible:
        matches = [m for m in marks if box_iou(m.box, box) >= 0.95]
        assert len(matches) == 1, f"{page}: <{tag}> at {box} matched {[(m.id, m.box) for m in matches]}"
        used.add(matches[0].id)
    # nothing else: hidden, covered, folded and off-viewport elements have no mark of their own
    extra = [(m.id, m.role, m.text, m.box) for m in marks if m.id not in used]
    assert not extra, f"{page}: unexpected marks {extra}"
    assert [m.id for m in marks] == list(range(len(marks)))


def test_texts_roles_and_labels(capturer):
    _, marks = capturer.capture(PAGES / "form.html")
    by_text = {m.text: m for m in marks}
    assert by_text["Subscribe"].role == "checkbox"  # checkbox takes its <label>'s text
    assert by_text["Monthly"].role == "radio"
    assert by_text["Submit"].role == "button"
    assert by_text["Terms"].role == "link"
    assert by_text["Red"].role == "select"
    assert by_text["Name"].role == "textbox"  # placeholder
    assert by_text["Create your account"].role == "text"
    _, nested = capturer.capture(PAGES / "nested.html")
    texts = {m.text for m in nested}
    assert "Save now" in texts and "Email" in texts and "Block link" in texts


def test_reading_order_is_top_to_bottom_left_to_right(capturer):
    _, marks = capturer.capture(PAGES / "crowded.html")
    assert [m.text for m in marks] == [str(i) for i in range(96)]


def test_scrolled_page_marks_what_is_in_the_viewport(capturer):
    _, top = capturer.capture(PAGES / "hidden.html")
    assert "BelowFold" not in {m.text for m in top}
    _, scrolled = capturer.capture(PAGES / "hidden.html", scroll=(0, 1000))
    below = [m for m in scrolled if m.text == "BelowFold"]
    assert len(below) == 1 and box_iou(below[0].box, (20, 100, 120, 130)) >= 0.95
    assert "Visible" not in {m.text for m in scrolled}


@pytest.mark.parametrize("style", ["box", "dot"])
def test_labels_never_overlap_and_stay_inside(capturer, style):
    image, marks = capturer.capture(PAGES / "crowded.html")
    labels, _ = layout_labels(marks, (image.shape[1], image.shape[0]), style)
    assert len(labels) == len(marks) == 96
    for i, a in enumerate(labels):
        assert 0 <= a.x0 < a.x1 <= image.shape[1] and 0 <= a.y0 < a.y1 <= image.shape[0]
        for b in labels[i + 1:]:
            assert not a.overlaps(b), (a, b)
    marked = render_marks(image, marks, style=style)
    assert marked.shape == image.shape and (marked != image).any()


def test_failed_page_raises_capture_error_with_reason(capturer, tmp_path):
    from data_pipeline.som.page_capture import CaptureError
    with pytest.raises(CaptureError) as e:
        capturer.capture(tmp_path / "missing.html")
    assert e.value.reason == "page_failed_to_load"
    with pytest.raises(CaptureError) as e:
        capturer.capture("http://127.0.0.1:9/nothing", timeout_s=5)
    assert e.value.reason in ("page_failed_to_load", "page_timeout")
    assert re.search(r"127\.0\.0\.1", e.value.detail)
