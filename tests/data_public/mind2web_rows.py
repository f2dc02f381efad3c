"""Multimodal-Mind2Web rows written the way the published dataset has them.

Columns, types and value conventions follow the dataset card of `osunlp/Multimodal-Mind2Web`
(huggingface.co/datasets/osunlp/Multimodal-Mind2Web: `operation` a JSON string, `pos_candidates`
/ `neg_candidates` sequences of JSON strings, `target_action_index` a string, `screenshot` an
`image` feature, which `datasets` stores as a struct {bytes, path}) and the candidate records of
the Mind2Web repo (github.com/OSU-NLP-Group/Mind2Web: `tag`, `attributes` a JSON string with
`bounding_box_rect` "x,y,w,h" and `backend_node_id`, `is_original_target`,
`is_top_level_target`). Files are written by pyarrow itself, with the schema metadata `datasets`
adds, so the reader meets what `pq.read_table` meets on the Hub files.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PAGE_W = 320
TARGET_RGB = (0, 200, 0)


@dataclass
class El:
    node: str
    tag: str
    rect: tuple[float, float, float, float] | str  # x, y, w, h (or a raw rect string)
    text: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    rgb: tuple[int, int, int] = (200, 200, 255)


def rect_string(rect) -> str:
    return rect if isinstance(rect, str) else ",".join(f"{v:g}" for v in rect)


def candidate_json(el: El, positive: bool) -> str:
    attrs = {"backend_node_id": el.node, "bounding_box_rect": rect_string(el.rect), "class": "c"}
    attrs.update(el.attrs)
    rec: dict[str, Any] = {"tag": el.tag, "attributes": json.dumps(attrs), "backend_node_id": el.node}
    if positive:
        rec.update(is_original_target=True, is_top_level_target=True)
    return json.dumps(rec)


def page_png(height: int, elements: list[El], target: El | None) -> bytes:
    img = np.full((height, PAGE_W, 3), 245, np.uint8)
    for el in elements + ([target] if target else []):
        if isinstance(el.rect, str):
            continue
        x, y, w, h = (int(round(v)) for v in el.rect)
        if w > 0 and h > 0:
            img[max(0, y):y + h, max(0, x):x + w] = TARGET_RGB if el is target else el.rgb
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def cleaned_html(elements: list[El]) -> str:
    body = "".join(f'<div><{e.tag} backend_node_id="{e.node}">{e.text}</{e.tag}></div>'
                   if e.tag not in ("input", "img") else f'<{e.tag} backend_node_id="{e.node}">'
                   for e in elements)
    return f"<html><body>{body}</body></html>"


def row(aid: str, uid: str, index: int, reprs: list[str], target: El | None, negatives: list[El],
        op: str = "CLICK", value: str = "", page_h: int = 1400, task: str = "Find flights",
        **override: Any) -> dict[str, Any]:
    """One step's row; `override` replaces any column (to break the layout on purpose)."""
    els = negatives + ([target] if target else [])
    rec = {
        "action_uid": uid,
        "raw_html": "<html>" + cleaned_html(els) + "</html>",
        "cleaned_html": cleaned_html(els),
        "operation": json.dumps({"original_op": op, "value": value, "op": op}),
        "pos_candidates": [candidate_json(target, True)] if target else [],
        "neg_candidates": [candidate_json(e, False) for e in negatives],
        "website": "exampleair", "domain": "Travel", "subdomain": "Airlines",
        "annotation_id": aid,
        "confirmed_task": task,
        "screenshot": {"bytes": page_png(page_h, negatives, target), "path": None},
        "action_reprs": reprs,
        "target_action_index": str(index),
        "target_action_reprs": reprs[index] if 0 <= index < len(reprs) else "",
    }
    rec.update(override)
    return rec


FEATURES = {  # the `huggingface` schema metadata `datasets` writes (dataset card `dataset_info`)
    "action_uid": {"dtype": "string", "_type": "Value"},
    "raw_html": {"dtype": "string", "_type": "Value"},
    "cleaned_html": {"dtype": "string", "_type": "Value"},
    "operation": {"dtype": "string", "_type": "Value"},
    "pos_candidates": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "neg_candidates": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "website": {"dtype": "string", "_type": "Value"},
    "domain": {"dtype": "string", "_type": "Value"},
    "subdomain": {"dtype": "string", "_type": "Value"},
    "annotation_id": {"dtype": "string", "_type": "Value"},
    "confirmed_task": {"dtype": "string", "_type": "Value"},
    "screenshot": {"_type": "Image"},
    "action_reprs": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "target_action_index": {"dtype": "string", "_type": "Value"},
    "target_action_reprs": {"dtype": "string", "_type": "Value"},
}


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("action_uid", pa.string()), ("raw_html", pa.string()), ("cleaned_html", pa.string()),
        ("operation", pa.string()), ("pos_candidates", pa.list_(pa.string())),
        ("neg_candidates", pa.list_(pa.string())), ("website", pa.string()), ("domain", pa.string()),
        ("subdomain", pa.string()), ("annotation_id", pa.string()), ("confirmed_task", pa.string()),
        ("screenshot", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("action_reprs", pa.list_(pa.string())), ("target_action_index", pa.string()),
        ("target_action_reprs", pa.string()),
    ], metadata={"huggingface": json.dumps({"info": {"features": FEATURES}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def flight_task(aid: str = "task-a", page_h: int = 1400) -> tuple[list[dict[str, Any]], list[El]]:
    """Three steps (TYPE, SELECT, CLICK) with their targets low on a tall page and negatives
    both near the target and far above it. Returns the rows and the targets in step order."""
    reprs = ['[textbox]  From -> TYPE: São Paulo "Centro"', "[select]  Cabin -> SELECT: Business",
             "[button]  Search -> CLICK"]
    far = [El(f"{aid}-far{k}", "a", (10 + 60 * k, 30, 50, 20), f"Far link {k}") for k in range(3)]
    t0 = El(f"{aid}-from", "input", (20, 1100, 120, 24), attrs={"aria_label": "From"})
    t1 = El(f"{aid}-cabin", "select", (20, 1150, 120, 24), "Business Economy")
    t2 = El(f"{aid}-search", "button", (180, 1250, 90, 30), "Search")
    near = [El(f"{aid}-near{k}", "span", (160, 1080 + 30 * k, 100, 20), f"Near {k}", rgb=(255, 180, 0))
            for k in range(5)]
    rows = [
        row(aid, f"{aid}-s0", 0, reprs, t0, far + near + [t1, t2], "TYPE", 'São Paulo "Centro"', page_h),
        row(aid, f"{aid}-s1", 1, reprs, t1, far + near + [t0, t2], "SELECT", "Business", page_h),
        row(aid, f"{aid}-s2", 2, reprs, t2, far + near + [t0, t1], "CLICK", "", page_h),
    ]
    return rows, [t0, t1, t2]
