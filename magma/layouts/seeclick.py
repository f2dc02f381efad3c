"""SeeClick GUI grounding data, as published (github.com/njucckevin/SeeClick, readme_data.md).

Web data (`seeclick_web.json`): a JSON list of screenshots,

    {"img_filename": "5b3e....png", "url": "https://...",
     "elements": [{"instruction": "Sign in", "bbox": [0.81, 0.02, 0.87, 0.05], "data_type": "text"}, ...]}

`bbox` is [left, top, right, bottom], each a fraction in [0, 1] of the image width or height;
`data_type` is "text" or "hover" (the two element kinds SeeClick crawled). The mobile sets
(widget captioning, RICOSCA) are flat records `{"img_filename", "instruction", "bbox"}` with the
same box convention; they read as a screen with one element.

An element whose box is not a valid fraction box is returned as a LayoutError beside the
screen's good elements ('bad_box': corners out of order or zero size; 'box_outside_image':
outside [0, 1] by more than BOX_TOLERANCE), so a reader can drop it and keep the rest.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from magma.layouts.errors import LayoutError
from magma.layouts.json_records import RawRecord, four_numbers, require_object, required_str

BOX_TOLERANCE = 1e-3  # fractions a crawled box may overshoot the screenshot by (then clipped)
Box = tuple[float, float, float, float]


class SeeClickElement(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: int  # position in the record's `elements`
    instruction: str
    bbox: Box  # x1, y1, x2, y2 as fractions of the image, clipped to [0, 1]
    data_type: str = ""  # "text" | "hover" (web); "" in the flat mobile records


class SeeClickScreen(BaseModel):
    model_config = ConfigDict(frozen=True)
    file: str
    index: int
    img_filename: str
    url: str | None = None
    elements: list[SeeClickElement]

    @property
    def where(self) -> str:
        return f"{self.file}: record {self.index} ({self.img_filename})"


def fraction_box(value: Any, key: str, where: str) -> Box:
    """A [x1, y1, x2, y2] box of fractions, clipped to [0, 1]; raises LayoutError."""
    x1, y1, x2, y2 = four_numbers(value, key, where)
    if x2 <= x1 or y2 <= y1:
        raise LayoutError("bad_box", f"{where}: {key} {list(value)} needs x1 < x2 and y1 < y2 "
                          "([left, top, right, bottom])")
    if min(x1, y1) < -BOX_TOLERANCE or max(x2, y2) > 1 + BOX_TOLERANCE:
        raise LayoutError("box_outside_image", f"{where}: {key} {list(value)} is outside the image: "
                          "SeeClick boxes are fractions in [0, 1]")
    return max(0.0, x1), max(0.0, y1), min(1.0, x2), min(1.0, y2)


def _element(el: Any, n: int, where: str) -> SeeClickElement:
    at = f"{where}: element {n}"
    if not isinstance(el, dict):
        raise LayoutError("bad_record", f"{at}: expected an object with instruction and bbox")
    data_type = el.get("data_type", "")
    if not isinstance(data_type, str):
        raise LayoutError("bad_record", f"{at}: 'data_type' must be a string")
    return SeeClickElement(index=n, instruction=required_str(el, "instruction", at),
                           bbox=fraction_box(el.get("bbox"), "bbox", at), data_type=data_type)


def parse_seeclick_record(raw: RawRecord) -> tuple[SeeClickScreen, list[LayoutError]]:
    """One raw record -> (the screen with its valid elements, the errors of the others).
    Raises LayoutError when the record itself is unusable (no image name, no elements)."""
    rec = require_object(raw)
    where = raw.where
    img = required_str(rec, "img_filename", where)
    where = f"{where} ({img})"
    url = rec.get("url")
    if url is not None and not isinstance(url, str):
        raise LayoutError("bad_record", f"{where}: 'url' must be a string")
    if "elements" in rec:
        raw_elements = rec["elements"]
        if not isinstance(raw_elements, list):
            raise LayoutError("bad_record", f"{where}: 'elements' must be a list")
    elif "instruction" in rec or "bbox" in rec:  # flat mobile record
        raw_elements = [{"instruction": rec.get("instruction"), "bbox": rec.get("bbox"),
                         "data_type": rec.get("data_type", "")}]
    else:
        raise LayoutError("bad_record", f"{where}: needs 'elements' (web) or 'instruction' and 'bbox'")
    elements, problems = [], []
    for n, el in enumerate(raw_elements):
        try:
            elements.append(_element(el, n, where))
        except LayoutError as exc:
            problems.append(exc)
    screen = SeeClickScreen(file=raw.file, index=raw.index, img_filename=img, url=url, elements=elements)
    return screen, problems
