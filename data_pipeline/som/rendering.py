"""Drawing numbered marks: boxes or dots, with number tags that never overlap each other or
leave the image, in colours with a contrasting outline so they read on any background.

`layout_labels` is the placement alone (tests check it); `render_marks` draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np

from magma.marks import Mark

FONT = cv2.FONT_HERSHEY_SIMPLEX
# Distinct, saturated colours (RGB); each gets black or white text by luminance.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
    (128, 0, 0), (0, 0, 128), (128, 128, 0), (255, 255, 255))
Style = Literal["box", "dot"]


@dataclass(frozen=True)
class LabelBox:
    mark_id: int
    x0: int
    y0: int
    x1: int
    y1: int  # exclusive

    def overlaps(self, other: "LabelBox") -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


def mark_colour(mark_id: int) -> tuple[int, int, int]:
    return PALETTE[mark_id % len(PALETTE)]


def text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def font_scale_for(width: int, height: int) -> float:
    return float(np.clip(min(width, height) / 1000.0 * 0.7, 0.3, 0.9))


def _label_size(mark_id: int, scale: float) -> tuple[int, int]:
    (tw, th), base = cv2.getTextSize(str(mark_id), FONT, scale, 1)
    pad = max(1, int(round(2 * scale)))
    return tw + 2 * pad, th + base + pad


def _candidates(m: Mark, lw: int, lh: int, style: Style) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = (int(round(v)) for v in m.box)
    if style == "dot":
        cx, cy = (int(round(v)) for v in m.centre)
        r = 4
        return [(cx + r + 1, cy - lh // 2), (cx - r - 1 - lw, cy - lh // 2), (cx - lw // 2, cy - r - 1 - lh),
                (cx - lw // 2, cy + r + 1)]
    return [(x0, y0 - lh), (x0, y0), (x0, y1), (x1 - lw, y0 - lh), (x1 - lw, y0),
            (x0 - lw, y0), (x1, y0), (x1 - lw, y1), (x0, y1 - lh), (x1 - lw, y1 - lh)]


def _free(occupancy: np.ndarray, x: int, y: int, lw: int, lh: int) -> bool:
    h, w = occupancy.shape
    return 0 <= x and 0 <= y and x + lw <= w and y + lh <= h and not occupancy[y:y + lh, x:x + lw].any()


def _nearest_free(occupancy: np.ndarray, lw: int, lh: int, near: tuple[float, float]
                  ) -> tuple[int, int] | None:
    """Top-left of the free lw x lh window closest to `near` (integral image over occupancy)."""
    h, w = occupancy.shape
    if lw > w or lh > h:
        return None
    integral = cv2.integral(occupancy.astype(np.uint8))
    sums = (integral[lh:, lw:] - integral[:-lh, lw:] - integral[lh:, :-lw] + integral[:-lh, :-lw])
    ys, xs = np.nonzero(sums == 0)
    if len(xs) == 0:
        return None
    d = (xs + lw / 2 - near[0]) ** 2 + (ys + lh / 2 - near[1]) ** 2
    k = int(np.argmin(d))
    return int(xs[k]), int(ys[k])


def layout_labels(marks: Sequence[Mark], image_size: tuple[int, int], style: Style = "box",
                  scale: float | None = None) -> tuple[list[LabelBox], float]:
    """Places one number tag per mark inside the image, no two overlapping. Prefers spots
    beside the mark's box that cover no other mark; shrinks the font if the image is full.
    Returns the label boxes (in mark order) and the font scale used."""
    width, height = image_size
    scale = font_scale_for(width, height) if scale is None else scale
    for _attempt in range(6):
        labels = _try_layout(marks, width, height, style, scale)
        if labels is not None:
            return labels, scale
        scale *= 0.8
    raise ValueError(f"cannot place {len(marks)} non-overlapping labels in a {width}x{height} image")


def _try_layout(marks: Sequence[Mark], width: int, height: int, style: Style, scale: float
                ) -> list[LabelBox] | None:
    labels_occ = np.zeros((height, width), bool)
    boxes_occ = np.zeros((height, width), bool)
    for m in marks:  # cover other marks' outlines as a soft constraint
        x0, y0, x1, y1 = (int(round(v)) for v in m.box)
        boxes_occ[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    out = []
    for m in marks:
        lw, lh = _label_size(m.id, scale)
        spot = None
        for x, y in _candidates(m, lw, lh, style):
            if _free(labels_occ, x, y, lw, lh):
                spot = spot or (x, y)  # first label-free spot, in case none avoids boxes
                x0, y0, x1, y1 = (int(round(v)) for v in m.box)
                region = boxes_occ[y:y + lh, x:x + lw].copy()
                # the mark's own box does not count as "another mark"
                region[max(0, y0 - y):max(0, y1 - y), max(0, x0 - x):max(0, x1 - x)] = False
                if not region.any():
                    spot = (x, y)
                    break
        if spot is None:
            spot = _nearest_free(labels_occ, lw, lh, m.centre)
            if spot is None:
                return None
        x, y = spot
        labels_occ[y:y + lh, x:x + lw] = True
        out.append(LabelBox(m.id, x, y, x + lw, y + lh))
    return out


def render_marks(image: np.ndarray, marks: Sequence[Mark], style: Style = "box") -> np.ndarray:
    """A copy of `image` (RGB uint8) with each mark drawn and numbered."""
    if style not in ("box", "dot"):
        raise ValueError(f"style must be 'box' or 'dot', got {style!r}")
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    labels, scale = layout_labels(marks, (w, h), style)
    thick = max(1, int(round(min(w, h) / 400)))
    for m in marks:
        colour = mark_colour(m.id)
        outline = text_colour(colour)
        x0, y0, x1, y1 = (int(round(v)) for v in m.box)
        if style == "box":
            # drawn just outside the box so the line never covers the element's first letters
            a, b = (x0 - thick, y0 - thick), (x1 - 1 + thick, y1 - 1 + thick)
            cv2.rectangle(out, (a[0] - 1, a[1] - 1), (b[0] + 1, b[1] + 1), outline, 1)
            cv2.rectangle(out, a, b, colour, thick)
        else:
            cx, cy = (int(round(v)) for v in m.centre)
            cv2.circle(out, (cx, cy), 4, outline, -1)
            cv2.circle(out, (cx, cy), 3, colour, -1)
    for m, lab in zip(marks, labels):
        colour = mark_colour(m.id)
        cv2.rectangle(out, (lab.x0, lab.y0), (lab.x1 - 1, lab.y1 - 1), colour, -1)
        pad = max(1, int(round(2 * scale)))
        (_, th), _ = cv2.getTextSize(str(m.id), FONT, scale, 1)
        cv2.putText(out, str(m.id), (lab.x0 + pad, lab.y0 + pad // 2 + th), FONT, scale,
                    text_colour(colour), 1, cv2.LINE_AA)
    return out


def mark_table(marks: Sequence[Mark]) -> list[dict]:
    """The mark table written beside marked images: id, box, centre, text, role."""
    return [m.to_dict() for m in marks]
