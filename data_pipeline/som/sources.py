"""Set-of-Mark source types for `magma data build`.

    verbal            captions / QA jsonl, passed through (docs/data_formats.md)
    images            natural images or frames -> region proposals -> grounding/referring/point/box
    html              HTML files / URLs rendered in Chromium -> DOM marks -> same sample kinds
    ui_annotations    JSON screenshot + element boxes (Mind2Web / SeeClick style)
    miniwob_episodes  recorded MiniWoB++ episodes -> UI action steps + grounding on the marked screen
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from magma.episode import Episode, iter_episode_dirs
from magma.marks import Mark
from magma.prompts import history_entry, verbal_prompt
from magma.schema import IMAGE_PLACEHOLDER, Sample, Turn
from data_pipeline.som.dom_marks import marks_from_dom_elements, reading_order
from data_pipeline.som.image_io import read_image
from data_pipeline.som.rendering import mark_table, render_marks
from data_pipeline.som.page_capture import CaptureError, shared_capturer
from data_pipeline.som.region_proposals import propose_marks
from data_pipeline.som.params import (HtmlParams, ImagesParams, MiniWoBParams, SomOptions,
                                      UIAnnotationsParams, VerbalParams)
from data_pipeline.som.samples import seeded_rng, som_samples, ui_action_from_step, ui_action_sample
from data_pipeline.build.registry import SkipItem, SourceConfig, SourceType, WorkItem, register_source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _existing_path(path: str, cfg: SourceConfig) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise SkipItem("path_not_found", f"source {cfg.name!r}: {path} does not exist")
    return path


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _item_stem(root: Path, file: Path) -> str:
    rel = file.relative_to(root) if root.is_dir() else Path(file.name)
    return str(rel.with_suffix("")).replace("/", "__")


# ---------------------------------------------------------------- verbal pass-through

@register_source("verbal")
class VerbalSource(SourceType):
    """jsonl records: {"image"|"images", "conversation"} or {"image", "question", "answer"} or
    {"image", "caption"}; image paths are relative to the jsonl file."""

    params_model = VerbalParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        root = _existing_path(self.params(cfg).path, cfg)
        items = []
        for f in _files(root, (".jsonl",)):
            for n, line in enumerate(f.read_text().splitlines()):
                if line.strip():
                    items.append(WorkItem(f"{_item_stem(root, f)}-{n:06d}", (str(f), line)))
        return items

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        file, line = item.payload
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SkipItem("bad_json", f"{file}: {exc}") from None
        if not isinstance(rec, dict):
            raise SkipItem("bad_json", f"{file}: record is not an object")
        paths = rec.get("images") or ([rec["image"]] if rec.get("image") else [])
        images = [read_image(Path(file).parent / p) for p in paths]
        if "conversation" in rec:
            try:
                turns = [Turn(role=t["role"], content=t["content"],
                              kind=t.get("kind", "verbal") if t["role"] == "assistant" else None)
                         for t in rec["conversation"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise SkipItem("missing_field", f"{file}: conversation turn {exc}") from None
        elif "question" in rec and "answer" in rec:
            turns = [Turn("user", str(rec["question"])), Turn("assistant", str(rec["answer"]), "verbal")]
        elif "caption" in rec:
            turns = [Turn("user", self.params(cfg).caption_prompt),
                     Turn("assistant", str(rec["caption"]), "verbal")]
        else:
            raise SkipItem("missing_field", f"{file}: need conversation, question+answer or caption")
        user = next((t for t in turns if t.role == "user"), None)
        n_placeholders = sum(t.content.count(IMAGE_PLACEHOLDER) for t in turns)
        if user is not None and n_placeholders == 0 and images:
            user.content = verbal_prompt(user.content, n_images=len(images))
        return [Sample(id=item.item_id, images=images, conversation=turns,
                       source=f"verbal/{cfg.name}", meta={"split": rec.get("split", "train")})]


# ---------------------------------------------------------------- shared SoM samples

def _marked_samples(image: np.ndarray, marks: list[Mark], p: SomOptions, cfg: SourceConfig,
                    item: WorkItem, kind: str) -> list[Sample]:
    if not marks:
        raise SkipItem("no_marks", item.item_id)
    marked = render_marks(image, marks, style=p.style)
    meta = {"marks": mark_table(marks), "split": p.split}
    return som_samples(image, marked, marks, f"som/{kind}", seeded_rng(cfg.name, item.item_id),
                       meta=meta, **p.sample_options())


# ---------------------------------------------------------------- natural images / frames

@register_source("images")
class ImagesSource(SourceType):
    """Images without annotations -> OpenCV region proposals (or SAM with params.sam_checkpoint)."""

    params_model = ImagesParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        root = _existing_path(self.params(cfg).path, cfg)
        return [WorkItem(_item_stem(root, f), str(f)) for f in _files(root, IMAGE_SUFFIXES)]

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: ImagesParams = self.params(cfg)
        image = read_image(item.payload)
        marks = propose_marks(image, max_marks=p.max_marks,
                              backend="sam" if p.sam_checkpoint else "opencv",
                              sam_checkpoint=p.sam_checkpoint)
        return _marked_samples(image, marks, p, cfg, item, "images")


# ---------------------------------------------------------------- live pages

def _page_list(path: Path) -> list[tuple[str, str]]:
    """(item id, url or file) for a folder of .html files or a .txt with one URL per line."""
    if path.suffix == ".txt":
        urls = [u.strip() for u in path.read_text().splitlines() if u.strip() and not u.startswith("#")]
        return [(f"url{n:05d}", u) for n, u in enumerate(urls)]
    return [(_item_stem(path, f), str(f)) for f in _files(path, (".html", ".htm"))]


@register_source("html")
class HtmlSource(SourceType):
    """HTML files or URLs rendered in headless chromium -> DOM marks (params.viewport [w, h])."""

    params_model = HtmlParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        return [WorkItem(i, u) for i, u in _page_list(_existing_path(self.params(cfg).path, cfg))]

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: HtmlParams = self.params(cfg)
        try:
            image, marks = shared_capturer().capture(item.payload, p.viewport, p.timeout_s)
        except CaptureError as exc:
            raise SkipItem(exc.reason, exc.detail) from None
        return _marked_samples(image, marks, p, cfg, item, "html")


# ---------------------------------------------------------------- screenshot + element boxes

def _annotation_marks(rec: dict[str, Any], width: int, height: int, where: str
                      ) -> tuple[list[Mark], int]:
    """Validated marks in reading order + the number of zero/negative-size elements dropped."""
    units = rec.get("box_units", "pixels")
    fmt = rec.get("box_format", "xyxy")
    if units not in ("pixels", "normalized") or fmt not in ("xyxy", "xywh"):
        raise SkipItem("bad_box_format", f"{where}: box_units pixels|normalized, box_format xyxy|xywh")
    boxes, dropped = [], 0
    for n, el in enumerate(rec["elements"]):
        if not isinstance(el, dict) or "box" not in el:
            raise SkipItem("missing_field", f"{where}: element {n} has no box")
        try:
            x0, y0, a, b = (float(v) for v in el["box"])
        except (TypeError, ValueError):
            raise SkipItem("missing_field", f"{where}: element {n} box is not 4 numbers") from None
        x1, y1 = (x0 + a, y0 + b) if fmt == "xywh" else (a, b)
        if units == "normalized":
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        tol = 1.0
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise SkipItem("box_out_of_range", f"{where}: element {n} box {el['box']} outside "
                           f"{width}x{height}")
        boxes.append(((max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)),
                      str(el.get("text", "")), str(el.get("role", "element"))))
    order = reading_order([b for b, _, _ in boxes])
    return [Mark(i, boxes[k][0], boxes[k][1], boxes[k][2]) for i, k in enumerate(order)], dropped


@register_source("ui_annotations")
class UIAnnotationsSource(SourceType):
    """JSON files: {"image", "elements": [{"box", "text", "role"}], "box_units", "box_format",
    "instruction"?, "target"?: element index, "action"?: {op, text}} (docs/data_formats.md)."""

    params_model = UIAnnotationsParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        root = _existing_path(self.params(cfg).path, cfg)
        return [WorkItem(_item_stem(root, f), str(f)) for f in _files(root, (".json",))]

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p: UIAnnotationsParams = self.params(cfg)
        path = Path(item.payload)
        try:
            rec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SkipItem("bad_json", f"{path}: {exc}") from None
        if not isinstance(rec, dict) or "image" not in rec or not isinstance(rec.get("elements"), list):
            raise SkipItem("missing_field", f"{path}: needs 'image' and an 'elements' list")
        image = read_image(path.parent / rec["image"])
        h, w = image.shape[:2]
        marks, dropped = _annotation_marks(rec, w, h, str(path))
        samples = _marked_samples(image, marks, p, cfg, item, "ui_annotations")
        target = rec.get("target")
        if rec.get("instruction") and isinstance(target, int) and 0 <= target < len(rec["elements"]):
            # the target's mark: match its (validated) box among the marks
            samples.extend(self._action_sample(rec, marks, image, target, p.split, item, w, h))
        if dropped and samples:
            samples[0].meta["_dropped"] = {"element with zero or negative size": dropped}
        return samples

    @staticmethod
    def _action_sample(rec: dict[str, Any], marks: list[Mark], image: np.ndarray, target: int,
                       split: str, item: WorkItem, w: int, h: int) -> list[Sample]:
        one = dict(rec, elements=[rec["elements"][target]])
        tmarks, _ = _annotation_marks(one, w, h, item.item_id)
        if not tmarks:
            return []
        mark = next((m for m in marks if m.box == tmarks[0].box), None)
        if mark is None:
            return []
        act = rec.get("action") or {"op": "click"}
        action = ui_action_from_step({"op": act.get("op", "click"), "ref": 0, "text": act.get("text")},
                                     {0: mark.id}, marks, w, h)
        if action is None:
            return []
        marked = render_marks(image, marks)
        return [ui_action_sample(marked, str(rec["instruction"]), marks, [], action,
                                 "som/ui_annotations", {"split": split})]


# ---------------------------------------------------------------- recorded MiniWoB++ episodes

@register_source("miniwob_episodes")
class MiniWoBEpisodesSource(SourceType):
    """Episodes in the magma.episode format (env miniwob): each step -> a UI action sample on
    the marked screen (+ params.som_per_step grounding/referring/point/box samples;
    params.actions: false leaves the action samples out)."""

    params_model = MiniWoBParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p: MiniWoBParams = self.params(cfg)
        root = _existing_path(p.path, cfg)
        return [WorkItem(d.name, (str(d), p.only_success)) for d in iter_episode_dirs(root)]

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        folder, only_success = item.payload
        try:
            ep = Episode.load(folder)
        except ValueError as exc:
            raise SkipItem("unreadable_episode", str(exc)) from None
        if ep.meta.action_space != "ui":
            raise SkipItem("not_a_ui_episode", f"{folder}: action_space {ep.meta.action_space}")
        if only_success and ep.meta.success is False:
            raise SkipItem("failed_episode", folder)
        if not ep.steps:
            raise SkipItem("no_steps", folder)
        p: MiniWoBParams = self.params(cfg)
        som_per_step = p.som_per_step
        # actions: false makes a SoM-only source of the same episodes (weighted on its own)
        emit_actions = p.actions
        rng = seeded_rng(cfg.name, item.item_id)
        meta = {"split": ep.meta.split, "task": ep.meta.task, "env": ep.meta.env}
        common = {"dataset": ep.meta.env if p.dataset is None else p.dataset,
                  "episode": ep.meta.episode_id}
        samples, history, dropped = [], [], Counter()
        for t, step in enumerate(ep.steps):
            image = ep.images[t]
            h, w = image.shape[:2]
            # the exact call serve/eval make at inference (no screen size), so ids agree
            marks, ref_to_mark = marks_from_dom_elements(step.get("dom_elements") or [])
            if not marks:
                dropped["step without marks"] += 1
                continue
            marked = render_marks(image, marks)
            try:
                action = ui_action_from_step(step.get("action") or {}, ref_to_mark, marks, w, h)
            except (ValueError, TypeError) as exc:
                action = None
                dropped[f"bad action ({type(exc).__name__})"] += 1
            step_meta = dict(meta, marks=mark_table(marks))
            if action is None:
                dropped["action target not marked"] += 1
            else:
                if emit_actions:
                    samples.append(ui_action_sample(marked, ep.meta.instruction, marks, history,
                                                    action, "som/miniwob", step_meta, frame=t,
                                                    **common))
                history.append(history_entry(action))
            if som_per_step > 0:
                samples.extend(som_samples(image, marked, marks, "som/miniwob", rng,
                                           per_task=som_per_step, meta=step_meta, frame=t,
                                           tasks=tuple(p.tasks),
                                           **common))
        if not samples:
            raise SkipItem("no_usable_steps", folder)
        if dropped:
            samples[0].meta["_dropped"] = dict(dropped)
        return samples
