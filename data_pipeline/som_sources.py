"""Set-of-Mark source types for `magma data build`.

    verbal            captions / QA jsonl, passed through (docs/data_formats.md)
    images            natural images or frames -> region proposals -> grounding/referring/point/box
    html              HTML files / URLs rendered in Chromium -> DOM marks -> same sample kinds
    ui_annotations    JSON screenshot + element boxes (Mind2Web / SeeClick style)
    miniwob_episodes  recorded MiniWoB++ episodes -> UI action steps + grounding on the marked screen
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from magma.schema import IMAGE_PLACEHOLDER, Sample, Turn
from magma.prompts import verbal_prompt
from data_pipeline.image_io import read_image
from data_pipeline.sources import SkipItem, SourceConfig, SourceType, WorkItem, register_source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _require_path(cfg: SourceConfig, key: str = "path") -> Path:
    if key not in cfg.params:
        raise KeyError(f"source {cfg.name!r} ({cfg.type}) needs params.{key}")
    path = Path(str(cfg.params[key])).expanduser()
    if not path.exists():
        raise SkipItem("path not found", f"source {cfg.name!r}: {path} does not exist")
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

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        root = _require_path(cfg)
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
            raise SkipItem("bad json", f"{file}: {exc}") from None
        if not isinstance(rec, dict):
            raise SkipItem("bad json", f"{file}: record is not an object")
        paths = rec.get("images") or ([rec["image"]] if rec.get("image") else [])
        images = [read_image(Path(file).parent / p) for p in paths]
        if "conversation" in rec:
            try:
                turns = [Turn(role=t["role"], content=t["content"],
                              kind=t.get("kind", "verbal") if t["role"] == "assistant" else None)
                         for t in rec["conversation"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise SkipItem("missing field", f"{file}: conversation turn {exc}") from None
        elif "question" in rec and "answer" in rec:
            turns = [Turn("user", str(rec["question"])), Turn("assistant", str(rec["answer"]), "verbal")]
        elif "caption" in rec:
            turns = [Turn("user", str(cfg.params.get("caption_prompt", "Describe the image."))),
                     Turn("assistant", str(rec["caption"]), "verbal")]
        else:
            raise SkipItem("missing field", f"{file}: need conversation, question+answer or caption")
        user = next((t for t in turns if t.role == "user"), None)
        n_placeholders = sum(t.content.count(IMAGE_PLACEHOLDER) for t in turns)
        if user is not None and n_placeholders == 0 and images:
            user.content = verbal_prompt(user.content, n_images=len(images))
        return [Sample(id=item.item_id, images=images, conversation=turns,
                       source=f"verbal/{cfg.name}", meta={"split": rec.get("split", "train")})]
