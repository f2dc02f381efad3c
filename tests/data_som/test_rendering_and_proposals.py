from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from magma.marks import Mark
from data_pipeline.som.dom_marks import box_iou
from data_pipeline.som.rendering import PALETTE, layout_labels, text_colour
from data_pipeline.perception import propose_marks, render_marks


def assert_labels_ok(labels, size):
    w, h = size
    for i, a in enumerate(labels):
        assert 0 <= a.x0 < a.x1 <= w and 0 <= a.y0 < a.y1 <= h
        for b in labels[i + 1:]:
            assert not a.overlaps(b), (a, b)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 10_000), st.sampled_from(["box", "dot"]),
       st.sampled_from([(160, 210), (320, 240), (1280, 800)]))
def test_labels_never_overlap_or_leave_the_image(n, seed, style, size):
    rng = np.random.default_rng(seed)
    w, h = size
    marks = []
    for i in range(n):  # heavily overlapping boxes, some touching the border
        x0, y0 = rng.uniform(-5, w - 5), rng.uniform(-5, h - 5)
        marks.append(Mark(i, (max(0, x0), max(0, y0), min(w, x0 + rng.uniform(3, w / 3)),
                              min(h, y0 + rng.uniform(3, h / 3)))))
    labels, _ = layout_labels(marks, size, style)
    assert [lab.mark_id for lab in labels] == [m.id for m in marks]
    assert_labels_ok(labels, size)


def test_label_sits_next_to_its_mark_when_there_is_room():
    marks = [Mark(0, (100, 100, 200, 140)), Mark(1, (300, 300, 340, 330))]
    labels, _ = layout_labels(marks, (640, 480))
    for m, lab in zip(marks, labels):
        assert abs(lab.x0 - m.box[0]) < 2 and lab.y1 <= m.box[1] + 1  # just above its box


def test_text_colour_contrasts_with_every_palette_colour():
    for c in PALETTE:
        t = text_colour(c)
        lum = lambda v: 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2]  # noqa: E731
        assert abs(lum(t) - lum(c)) > 100


def test_render_draws_each_mark_colour_and_keeps_input():
    img = np.full((210, 160, 3), 255, np.uint8)
    marks = [Mark(0, (10, 60, 80, 80)), Mark(1, (10, 100, 80, 120))]
    out = render_marks(img, marks)
    assert (img == 255).all() and out.shape == img.shape
    for m in marks:
        colour = np.array(PALETTE[m.id], np.uint8)
        assert (out == colour).all(axis=2).sum() > 50
    with pytest.raises(ValueError):
        render_marks(img, marks, style="stars")  # type: ignore[arg-type]


def test_proposals_find_the_objects_of_a_synthetic_scene():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(120, 10, (240, 320, 3)), 0, 255).astype(np.uint8)
    objects = [(40, 40, 121, 121), (150, 40, 261, 121), (40, 150, 301, 221)]
    cv2.circle(img, (80, 80), 40, (200, 30, 30), -1)
    cv2.rectangle(img, (150, 40), (260, 120), (30, 200, 30), -1)  # same grey level as the noise
    cv2.rectangle(img, (40, 150), (300, 220), (20, 20, 200), -1)
    marks = propose_marks(img, max_marks=16)
    for obj in objects:
        assert max(box_iou(m.box, obj) for m in marks) > 0.8, obj
    assert [m.id for m in marks] == list(range(len(marks)))
    assert propose_marks(img, max_marks=16) == marks  # deterministic
    assert len(propose_marks(img, max_marks=2)) == 2
    flat = np.full((100, 100, 3), 90, np.uint8)
    assert propose_marks(flat) == []


def test_sam_backend_without_checkpoint_is_a_clear_error():
    from data_pipeline.perception import ProposalBackendError
    with pytest.raises(ProposalBackendError, match="checkpoint"):
        propose_marks(np.zeros((32, 32, 3), np.uint8), backend="sam")


@pytest.mark.browser
def test_som_cli_writes_marks_screenshot_and_marked_image(tmp_path):
    from pathlib import Path
    from data_pipeline.cli import main
    pages = Path(__file__).parent / "pages"
    assert main(["som", "--input", str(pages / "form.html"), "--out", str(tmp_path), "-q",
                 "--viewport", "640x480"]) == 0
    table = json.loads((tmp_path / "form.marks.json").read_text())
    from PIL import Image
    assert Image.open(tmp_path / "form.png").size == (640, 480)
    assert Image.open(tmp_path / "form.marked.png").size == (640, 480)
    assert {"id", "box", "centre", "text", "role"} <= set(table[0])
    assert any(t["text"] == "Submit" and t["role"] == "button" for t in table)
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    from data_pipeline.som.synthetic import synthetic_image
    Image.fromarray(synthetic_image(np.random.default_rng(2))).save(img_dir / "a.png")
    (img_dir / "b.png").write_bytes(b"")
    assert main(["som", "--input", str(img_dir), "--out", str(tmp_path / "o"), "-q"]) == 0
    assert (tmp_path / "o" / "a.marks.json").exists() and not (tmp_path / "o" / "b.png").exists()
    assert main(["som", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
