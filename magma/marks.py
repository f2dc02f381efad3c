"""The mark table record shared by the Set-of-Mark extractor, the UI adapter and the recorder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class Mark:
    """One numbered region on a screen or image; coordinates in image pixels."""

    id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    text: str = ""
    role: str = ""

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "box": [float(v) for v in self.box],
                "centre": [float(v) for v in self.centre], "text": self.text, "role": self.role}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Mark":
        box = d["box"]
        if len(box) != 4:
            raise ValueError(f"mark {d.get('id')!r}: box needs 4 numbers, got {box!r}")
        return cls(id=int(d["id"]), box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                   text=str(d.get("text", "")), role=str(d.get("role", "")))


def reading_order(boxes: Sequence[Sequence[float]]) -> list[int]:
    """Indices sorted into lines (top to bottom), each line left to right. A box joins the
    current line when its vertical centre lies within the line's first box."""
    order = sorted(range(len(boxes)), key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
    lines: list[list[int]] = []
    for i in order:
        cy = (boxes[i][1] + boxes[i][3]) / 2
        if lines and boxes[lines[-1][0]][1] <= cy <= boxes[lines[-1][0]][3]:
            lines[-1].append(i)
        else:
            lines.append([i])
    return [i for line in lines for i in sorted(line, key=lambda j: (boxes[j][0], boxes[j][1]))]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes (0 when the union is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
