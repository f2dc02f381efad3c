"""Marks for natural images and frames without annotations.

Default: classical OpenCV proposals (Canny edge contours at two scales + MSER regions), scored
by edge contrast along the border against the inside, then non-maximum suppression. Optional
SAM backend (`backend="sam"`) only with a local checkpoint and the `segment_anything` package.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from magma.marks import Mark
from data_pipeline.som.dom_marks import reading_order


PROPOSAL_SIDE = 512


class ProposalBackendError(RuntimeError):
    pass


def _candidate_boxes(rgb: np.ndarray, gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    boxes: list[tuple[int, int, int, int]] = []
    blurred = cv2.GaussianBlur(rgb, (5, 5), 0)
    for lo, hi, kernel in ((50, 150, 3), (20, 60, 7)):
        # per-channel edges: colour boundaries of equal brightness still count
        edges = np.bitwise_or.reduce([cv2.Canny(blurred[:, :, c], lo, hi) for c in range(3)])
        closed = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((kernel, kernel), np.uint8))
        contours, _ = cv2.findContours(closed, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes.extend(cv2.boundingRect(c) for c in contours)
    mser = cv2.MSER_create()
    mser.setMinArea(max(30, gray.size // 2000))
    mser.setMaxArea(gray.size // 4)
    _, rects = mser.detectRegions(gray)
    boxes.extend(tuple(int(v) for v in r) for r in rects)
    return boxes


def _score(gradient: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean gradient on the box border minus mean inside: objects have strong outlines."""
    x, y, w, h = box
    patch = gradient[y:y + h, x:x + w]
    inner = patch[2:-2, 2:-2]
    border_sum = float(patch.sum()) - float(inner.sum())
    border_n = patch.size - inner.size
    border = border_sum / max(1, border_n)
    inside = float(inner.mean()) if inner.size else 0.0
    return border - 0.5 * inside + 1e-3 * np.sqrt(w * h)


def propose_marks(image: np.ndarray, max_marks: int = 32, min_area_frac: float = 0.002,
                  max_area_frac: float = 0.6, nms_iou: float = 0.4, backend: str = "opencv",
                  sam_checkpoint: str | None = None) -> list[Mark]:
    """RGB uint8 [H, W, 3] -> up to `max_marks` region marks, ids in reading order."""
    if backend == "sam":
        return _propose_sam(image, max_marks, sam_checkpoint)
    if backend != "opencv":
        raise ProposalBackendError(f"unknown proposal backend {backend!r}; use 'opencv' or 'sam'")
    h0, w0 = image.shape[:2]
    # proposals on a copy at most PROPOSAL_SIDE px wide/high: MSER and contours scale with area
    factor = min(1.0, PROPOSAL_SIDE / max(h0, w0))
    small = image if factor == 1.0 else cv2.resize(image, (max(1, round(w0 * factor)),
                                                          max(1, round(h0 * factor))),
                                                  interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    grad = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    area = float(h * w)
    boxes, scores = [], []
    for b in set(_candidate_boxes(small, gray)):
        bw, bh = b[2], b[3]
        if not (min_area_frac * area <= bw * bh <= max_area_frac * area):
            continue
        if bw < 4 or bh < 4 or max(bw / bh, bh / bw) > 12:
            continue
        boxes.append(list(b))
        scores.append(_score(grad, b))
    if not boxes:
        return []
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], boxes[i]))  # deterministic ties
    boxes, scores = [boxes[i] for i in order], [scores[i] for i in order]
    low = min(scores)
    keep = cv2.dnn.NMSBoxes(boxes, [s - low + 1e-3 for s in scores], score_threshold=0.0,
                            nms_threshold=nms_iou)
    keep = [int(k) for k in np.asarray(keep).reshape(-1)][:max_marks]
    chosen = [(min(w0, boxes[k][0] / factor), min(h0, boxes[k][1] / factor),
               min(w0, (boxes[k][0] + boxes[k][2]) / factor),
               min(h0, (boxes[k][1] + boxes[k][3]) / factor)) for k in keep]
    return [Mark(i, tuple(round(float(v), 1) for v in chosen[j]), "", "region")  # type: ignore[arg-type]
            for i, j in enumerate(reading_order(chosen))]


def _propose_sam(image: np.ndarray, max_marks: int, checkpoint: str | None) -> list[Mark]:
    if not checkpoint or not Path(checkpoint).is_file():
        raise ProposalBackendError(f"SAM backend needs a local checkpoint file (got {checkpoint!r}); "
                                   "pass --sam-checkpoint PATH or use the default opencv backend")
    try:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError:
        raise ProposalBackendError("SAM backend needs the segment_anything package "
                                   "(pip install segment-anything); not installed") from None
    kind = next((k for k in ("vit_h", "vit_l", "vit_b") if k in Path(checkpoint).name), "vit_b")
    generator = SamAutomaticMaskGenerator(sam_model_registry[kind](checkpoint=checkpoint))
    masks = sorted(generator.generate(image), key=lambda m: -m["predicted_iou"])[:max_marks]
    boxes = [(m["bbox"][0], m["bbox"][1], m["bbox"][0] + m["bbox"][2], m["bbox"][1] + m["bbox"][3])
             for m in masks]
    return [Mark(i, tuple(float(v) for v in boxes[j]), "", "region")  # type: ignore[arg-type]
            for i, j in enumerate(reading_order(boxes))]
