"""Text codecs: one function renders each target as text, one parses it back.

Coordinates in text are integers normalised to [0, 1000) of the image width/height, so the
same text works for any resolution. `parse_*(render_*(x)) == x` for every valid `x`; parsing
malformed model output returns a `ParseError` value, never raises.

Formats (the model is trained on exactly these strings):
  mark      Mark 7
  point     (123,456)
  box       [12,34,560,780]
  traces    Mark 3: (1,2) (3,4); Mark 5: (5,6) (7,8)
  ui action click Mark 7 at (123,456) | click "OK" Mark 7 | type "hello" Mark 3 | scroll down |
            select "Red" Mark 2
  robot     <act_12><act_200>...  (see action_tokenizer.py)
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Literal, TypeVar, Union

COORD_BINS = 1000  # normalised coordinates are ints in [0, COORD_BINS)


@dataclass(frozen=True)
class ParseError:
    """Typed result for model text that does not parse as the expected target."""

    target: str  # "mark", "point", "box", "traces", "ui_action", "action_tokens"
    message: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"code": f"unparsable_{self.target}", "message": self.message, "text": self.text}


T = TypeVar("T")
Parsed = Union[T, ParseError]

Point = tuple[int, int]
Box = tuple[int, int, int, int]


# ---------------------------------------------------------------- coordinates

def normalize_point(x: float, y: float, width: int, height: int) -> Point:
    """Pixel (x, y) -> integer cell in [0, 1000)^2 (clipped at the image border)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    nx = min(COORD_BINS - 1, max(0, int(math.floor(x / width * COORD_BINS))))
    ny = min(COORD_BINS - 1, max(0, int(math.floor(y / height * COORD_BINS))))
    return nx, ny


def denormalize_point(p: Point, width: int, height: int) -> tuple[float, float]:
    """Integer cell -> pixel coordinates of the cell centre."""
    return (p[0] + 0.5) / COORD_BINS * width, (p[1] + 0.5) / COORD_BINS * height


def normalize_box(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    x0, y0 = normalize_point(box[0], box[1], width, height)
    x1, y1 = normalize_point(box[2], box[3], width, height)
    return x0, y0, x1, y1


def _valid_coord(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < COORD_BINS


def _check_point(p: Point) -> None:
    if len(p) != 2 or not all(_valid_coord(v) for v in p):
        raise ValueError(f"point must be two ints in [0, {COORD_BINS}), got {p!r}")


# ---------------------------------------------------------------- marks

_MARK = r"Mark (\d{1,4})"


def render_mark(mark_id: int) -> str:
    if not isinstance(mark_id, int) or isinstance(mark_id, bool) or not 0 <= mark_id < 10000:
        raise ValueError(f"mark id must be an int in [0, 10000), got {mark_id!r}")
    return f"Mark {mark_id}"


def parse_mark(text: str) -> Parsed[int]:
    m = re.fullmatch(_MARK, text.strip())
    if not m:
        return ParseError("mark", "expected 'Mark N'", text)
    return int(m.group(1))


# ---------------------------------------------------------------- points and boxes

_POINT = r"\((\d{1,3}),(\d{1,3})\)"


def render_point(p: Point) -> str:
    _check_point(p)
    return f"({p[0]},{p[1]})"


def parse_point(text: str) -> Parsed[Point]:
    m = re.fullmatch(_POINT, text.strip())
    if not m:
        return ParseError("point", "expected '(x,y)' with integers in [0, 1000)", text)
    return int(m.group(1)), int(m.group(2))


def render_box(b: Box) -> str:
    if len(b) != 4 or not all(_valid_coord(v) for v in b) or b[0] > b[2] or b[1] > b[3]:
        raise ValueError(f"box must be [x0,y0,x1,y1] ints in [0, 1000) with x0<=x1, y0<=y1: {b!r}")
    return f"[{b[0]},{b[1]},{b[2]},{b[3]}]"


def parse_box(text: str) -> Parsed[Box]:
    m = re.fullmatch(r"\[(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})\]", text.strip())
    if not m:
        return ParseError("box", "expected '[x0,y0,x1,y1]' with integers in [0, 1000)", text)
    b = tuple(int(g) for g in m.groups())
    if b[0] > b[2] or b[1] > b[3]:
        return ParseError("box", "box corners out of order", text)
    return b  # type: ignore[return-value]


# ---------------------------------------------------------------- traces

@dataclass(frozen=True)
class MarkTrace:
    """A mark's positions over the next frames (normalised points)."""

    mark: int
    points: tuple[Point, ...]


def render_traces(traces: list[MarkTrace]) -> str:
    if not traces:
        raise ValueError("need at least one trace")
    parts = []
    for tr in traces:
        if not tr.points:
            raise ValueError(f"trace of mark {tr.mark} has no points")
        parts.append(render_mark(tr.mark) + ": " + " ".join(render_point(p) for p in tr.points))
    return "; ".join(parts)


def parse_traces(text: str) -> Parsed[list[MarkTrace]]:
    out: list[MarkTrace] = []
    for part in text.strip().split(";"):
        m = re.fullmatch(_MARK + r":((?: " + _POINT + r")+)", part.strip())
        if not m:
            return ParseError("traces", f"bad trace segment {part.strip()!r}; expected "
                              "'Mark N: (x,y) (x,y)'", text)
        pts = tuple((int(a), int(b)) for a, b in re.findall(_POINT, m.group(2)))
        out.append(MarkTrace(int(m.group(1)), pts))
    return out


# ---------------------------------------------------------------- UI actions

UIOp = Literal["click", "type", "scroll", "select"]
UI_OPS: tuple[str, ...] = ("click", "type", "scroll", "select")
SCROLL_DIRECTIONS: tuple[str, ...] = ("up", "down", "left", "right")


@dataclass(frozen=True)
class UIAction:
    """A UI step. `point` is normalised [0, 1000); adapters convert to screen pixels."""

    op: UIOp
    mark: int | None = None
    point: Point | None = None
    text: str | None = None  # typed text (type), option (select), target label (click/scroll)
    direction: str | None = None  # scroll only

    def validate(self) -> "UIAction":
        if self.op not in UI_OPS:
            raise ValueError(f"op must be one of {UI_OPS}, got {self.op!r}")
        if self.mark is not None:
            render_mark(self.mark)
        if self.point is not None:
            _check_point(self.point)
        if self.op in ("type", "select") and self.text is None:
            raise ValueError(f"{self.op} needs text")
        # On click/scroll, `text` is the label of the target element: the model names what it
        # clicks before naming the mark, which lets a small model copy "label -> Mark N" from
        # the marks legend (see prompts.marks_legend). Executors ignore it.
        if self.op == "scroll":
            if self.direction not in SCROLL_DIRECTIONS:
                raise ValueError(f"scroll needs direction in {SCROLL_DIRECTIONS}")
        elif self.direction is not None:
            raise ValueError(f"{self.op} takes no direction")
        if self.op == "click" and self.mark is None and self.point is None:
            raise ValueError("click needs a mark or a point")
        return self

    def to_dict(self) -> dict:
        return {"op": self.op, "mark": self.mark,
                "point": list(self.point) if self.point is not None else None,
                "text": self.text, "direction": self.direction}


def render_ui_action(a: UIAction) -> str:
    a.validate()
    parts = [a.op]
    if a.text is not None:
        parts.append(json.dumps(a.text, ensure_ascii=False))
    if a.direction is not None:
        parts.append(a.direction)
    if a.mark is not None:
        parts.append(render_mark(a.mark))
    if a.point is not None:
        parts.append("at " + render_point(a.point))
    return " ".join(parts)


_UI_ACTION = re.compile(
    r"(?P<op>click|type|scroll|select)"
    r"(?: (?P<text>\"(?:[^\"\\]|\\.)*\"))?"
    r"(?: (?P<dir>up|down|left|right))?"
    r"(?: " + _MARK + r")?"
    r"(?: at " + _POINT + r")?",
    re.DOTALL,
)


def parse_ui_action(text: str) -> Parsed[UIAction]:
    m = _UI_ACTION.fullmatch(text.strip())
    if not m:
        return ParseError("ui_action", "expected e.g. 'click Mark 7 at (123,456)' or "
                          "'type \"text\" Mark 3'", text)
    try:
        typed = json.loads(m.group("text")) if m.group("text") is not None else None
        mark = int(m.group(4)) if m.group(4) is not None else None
        point = (int(m.group(5)), int(m.group(6))) if m.group(5) is not None else None
        return UIAction(op=m.group("op"), mark=mark, point=point, text=typed,
                        direction=m.group("dir")).validate()
    except (ValueError, json.JSONDecodeError) as exc:
        return ParseError("ui_action", str(exc), text)


def is_error(x: object) -> bool:
    return isinstance(x, ParseError)
