"""Source types for public instruction and GUI grounding layouts (parsed by `magma.layouts`):

    llava       LLaVA / ShareGPT4V conversations -> verbal samples: answers verbatim as assistant
                turns, every turn kept, text-only records as text-only samples
    seeclick    SeeClick grounding JSON -> per element: instruction -> a click point on the
                screenshot (and/or a point / box answer), the point inside the element's box
    screenspot  a ScreenSpot folder -> the same grounding samples, split "heldout" by default

Grounding answers use the project's codecs: the `click` task asks exactly what serving asks a
UI request without marks (`prompts.ui_action_prompt(instruction)`) and answers
`click at (x,y)`, so `magma eval screenspot --agent policy` scores the trained behaviour. The
point is the box centre's cell in [0, 1000); a box smaller than one cell, whose centre cell would
fall outside it, is dropped ('box_too_small').

Skips (per item) and drops (per element, SeeClick) are counted by reason in the manifest:
the layout errors' reasons (bad_json, bad_record, bad_box, box_outside_image, unknown_speaker,
image_token_mismatch, unknown_data_type), missing_image / unreadable_image, box_too_small.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from magma import prompts
from magma.codecs import (UIAction, denormalize_point, normalize_box, normalize_point, render_box,
                          render_point, render_ui_action)
from magma.config_io import StrictModel
from magma.layouts.errors import LayoutError
from magma.layouts.json_records import RawRecord, json_files, read_json_records
from magma.layouts.llava import LLAVA_IMAGE_TOKEN, LlavaRecord, parse_llava_record
from magma.layouts.screenspot import parse_screenspot_record, screenspot_files
from magma.layouts.seeclick import parse_seeclick_record
from magma.schema import IMAGE_PLACEHOLDER, Sample, Turn
from data_pipeline.build.registry import SkipItem, SourceConfig, SourceType, WorkItem, register_source
from data_pipeline.som.image_io import read_image

GroundingTask = Literal["click", "point", "box"]


# ---------------------------------------------------------------- params

class LlavaParams(StrictModel):
    path: str  # a JSON list / JSON Lines file, or a folder of them
    image_root: str | None = None  # what `image` paths are relative to (default: the file's folder)
    split: str = "train"


class GroundingOptions(StrictModel):
    tasks: list[GroundingTask] = Field(default_factory=lambda: ["click"], min_length=1)
    max_side: int | None = Field(default=None, ge=32)  # downscale screenshots to this longest side
    split: str = "train"


class SeeClickParams(GroundingOptions):
    path: str  # seeclick_web.json (or the mobile JSON files), or a folder of them
    image_root: str | None = None  # folder of `img_filename` (default: the JSON file's folder)


class ScreenSpotParams(GroundingOptions):
    path: str  # the folder with screenspot_{mobile,desktop,web}.json and screenspot_imgs/
    split: str = "heldout"  # a benchmark: held out unless a mix says otherwise


# ---------------------------------------------------------------- listing raw records

def _layout_skip(exc: LayoutError) -> SkipItem:
    return SkipItem(exc.reason, str(exc))


def _raw_items(path: str, cfg: SourceConfig, prefix: str = "") -> list[WorkItem]:
    """One item per record of every JSON / JSON Lines file under `path`; a file that cannot be
    read becomes one item that is skipped with its reason (the other files go on).

    Payloads are plain tuples (LayoutError does not survive pickling to the workers)."""
    try:
        files = json_files(path)
    except LayoutError as exc:
        raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc}") from None
    root = Path(path).expanduser()
    items = []
    for f in files:
        rel = f.relative_to(root) if root.is_dir() else Path(f.name)
        stem = prefix + str(rel.with_suffix("")).replace("/", "__")
        try:
            records = read_json_records(f)
        except LayoutError as exc:
            items.append(WorkItem(f"{stem}-file", ("error", exc.reason, str(exc))))
            continue
        for r in records:
            payload = ("error", r.value.reason, str(r.value)) if isinstance(r.value, LayoutError) \
                else ("record", r.file, r.index, r.where, r.value)
            items.append(WorkItem(f"{stem}-{r.index:07d}", payload))
    return items


def _raw(item: WorkItem) -> RawRecord:
    if item.payload[0] == "error":
        _, reason, message = item.payload
        raise SkipItem(reason, message)
    _, file, index, where, value = item.payload
    return RawRecord(file, index, where, value)


def _image(path: Path, where: str) -> np.ndarray:
    """The record's image; a missing or unreadable one is a skip naming the record too."""
    try:
        return read_image(path)
    except SkipItem as exc:
        raise SkipItem(exc.reason, f"{where}: {exc.detail or path}") from None


# ---------------------------------------------------------------- LLaVA

def llava_turns(rec: LlavaRecord) -> list[Turn]:
    """The record's turns in our schema. gpt answers are kept verbatim. A human turn holding
    LLaVA's `<image>` token(s) gets our placeholder(s) at its start and the rest of its text
    stripped, as LLaVA's own preprocessing moves the token to the front; a record with an image
    but no token gets the placeholder(s) before its first human turn."""
    tokens = sum(t.image_tokens for t in rec.turns)
    turns, placed = [], False
    for t in rec.turns:
        if t.speaker == "gpt":
            turns.append(Turn("assistant", t.value, "verbal"))
        elif t.speaker == "system":
            turns.append(Turn("system", t.value))
        elif t.image_tokens:
            text = t.value.replace(LLAVA_IMAGE_TOKEN, "").strip()
            turns.append(Turn("user", IMAGE_PLACEHOLDER * t.image_tokens + text))
        elif rec.images and not tokens and not placed:
            turns.append(Turn("user", IMAGE_PLACEHOLDER * len(rec.images) + t.value))
            placed = True
        else:
            turns.append(Turn("user", t.value))
    return turns


@register_source("llava")
class LlavaSource(SourceType):
    """LLaVA / ShareGPT4V instruction records -> verbal samples (see magma.layouts.llava)."""

    params_model = LlavaParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        return _raw_items(self.params(cfg).path, cfg)

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: LlavaParams = self.params(cfg)
        try:
            rec = parse_llava_record(_raw(item))
        except LayoutError as exc:
            raise _layout_skip(exc) from None
        root = Path(p.image_root).expanduser() if p.image_root else Path(rec.file).parent
        images = [_image(root / rel, rec.where) for rel in rec.images]
        return [Sample(id="pending", images=images, conversation=llava_turns(rec), source="public/llava",
                       dataset="llava", meta={"split": p.split, "id": rec.id,
                                              "record": f"{rec.file}:{rec.index}"})]


# ---------------------------------------------------------------- grounding

def grounding_target(box: tuple[float, float, float, float], width: float, height: float
                     ) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
    """(centre point, box) in the [0, 1000) codec for a box in the units of width x height
    (pixels with the image size, fractions with 1 x 1: each is converted once, by the codec);
    None when the centre cell's centre, where a click lands, falls outside the box."""
    point = normalize_point((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, width, height)  # type: ignore[arg-type]
    x, y = denormalize_point(point, width, height)  # type: ignore[arg-type]
    if not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
        return None
    return point, normalize_box(box, width, height)  # type: ignore[arg-type]


def _describe(instruction: str) -> str:
    return f'the element for "{" ".join(instruction.split())}"'


def grounding_samples(image: np.ndarray, instruction: str, point: tuple[int, int],
                      box: tuple[int, int, int, int], tasks: list[str], source: str, dataset: str,
                      meta: dict[str, Any]) -> list[Sample]:
    """One sample per task: click (a UI action without marks, as serving asks it), point, box."""
    answers = {
        "click": (prompts.ui_action_prompt(instruction), render_ui_action(UIAction("click", point=point)),
                  "action"),
        "point": (prompts.point_prompt(_describe(instruction)), render_point(point), "spatial"),
        "box": (prompts.box_prompt(_describe(instruction)), render_box(box), "spatial"),
    }
    out = []
    for task in tasks:
        user, answer, kind = answers[task]
        turns = [Turn("user", user), Turn("assistant", answer, kind)]  # type: ignore[arg-type]
        out.append(Sample(id="pending", images=[image], conversation=turns, source=source, dataset=dataset,
                          meta=dict(meta, task=task, target_box=list(box))))
    return out


def _downscaled(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Longest side at most `max_side` (normalised targets do not change with the size)."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


@register_source("seeclick")
class SeeClickSource(SourceType):
    """SeeClick web (and mobile) grounding records -> grounding samples per element
    (see magma.layouts.seeclick; boxes are fractions, converted once to the codec's cells)."""

    params_model = SeeClickParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        return _raw_items(self.params(cfg).path, cfg)

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: SeeClickParams = self.params(cfg)
        try:
            screen, problems = parse_seeclick_record(_raw(item))
        except LayoutError as exc:
            raise _layout_skip(exc) from None
        dropped = Counter(exc.reason for exc in problems)
        root = Path(p.image_root).expanduser() if p.image_root else Path(screen.file).parent
        image = _downscaled(_image(root / screen.img_filename, screen.where), p.max_side)
        samples: list[Sample] = []
        for el in screen.elements:
            target = grounding_target(el.bbox, 1, 1)  # fractions: the codec on a unit image
            if target is None:
                dropped["box_too_small"] += 1
                continue
            meta = {"split": p.split, "data_type": el.data_type, "url": screen.url,
                    "record": f"{screen.file}:{screen.index}:{el.index}"}
            samples += grounding_samples(image, el.instruction, *target, p.tasks, "public/seeclick",
                                         "seeclick", meta)
        if not samples:
            first = problems[0] if problems else None
            raise SkipItem(first.reason if first else "box_too_small",
                           str(first) if first else f"{screen.where}: every element's box is smaller "
                           "than one cell of the [0, 1000) grid")
        if dropped:
            samples[0].meta["_dropped"] = dict(dropped)
        return samples


@register_source("screenspot")
class ScreenSpotSource(SourceType):
    """A ScreenSpot folder -> grounding samples, one record each (see magma.layouts.screenspot)."""

    params_model = ScreenSpotParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        try:
            files = screenspot_files(self.params(cfg).path)
        except LayoutError as exc:
            raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc}") from None
        items = []
        for split, file in files.items():
            for it in _raw_items(str(file), cfg, prefix=""):
                items.append(WorkItem(f"{split}-{it.item_id.rsplit('-', 1)[-1]}", (split, it.payload)))
        return items

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: ScreenSpotParams = self.params(cfg)
        split, payload = item.payload
        try:
            rec = parse_screenspot_record(_raw(WorkItem(item.item_id, payload)), split)
        except LayoutError as exc:
            raise _layout_skip(exc) from None
        image = _image(rec.image_path(Path(p.path).expanduser()), rec.where)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = rec.box
        if x1 > w + 1 or y1 > h + 1:  # one pixel of slack for rounded annotations
            raise SkipItem("box_outside_image", f"{rec.where}: box {list(rec.box)} (x0, y0, x1, y1) "
                           f"outside the {w}x{h} image")
        target = grounding_target((x0, y0, min(x1, w), min(y1, h)), w, h)
        if target is None:
            raise SkipItem("box_too_small", f"{rec.where}: box {list(rec.box)} is smaller than one cell "
                           f"of the [0, 1000) grid on a {w}x{h} image")
        meta = {"split": p.split, "screenspot_split": rec.split, "data_type": rec.data_type,
                "data_source": rec.data_source, "record": f"{rec.file}:{rec.index}"}
        return grounding_samples(_downscaled(image, p.max_side), rec.instruction, *target, p.tasks,
                                 "public/screenspot", "screenspot", meta)
