"""Multimodal-Mind2Web, read as published (HF dataset `osunlp/Multimodal-Mind2Web`).

Layout (dataset card https://huggingface.co/datasets/osunlp/Multimodal-Mind2Web; the candidate
and operation records as in the Mind2Web repo, github.com/OSU-NLP-Group/Mind2Web): parquet
files, one row per action step, with the columns

    annotation_id        str   the task; its rows are its steps
    action_uid           str   the step
    confirmed_task       str   the instruction
    website, domain, subdomain  str
    action_reprs         list[str]  every step of the task, e.g. "[button]  Search -> CLICK"
    target_action_index  str   this step's index in action_reprs ("0", "1", ...)
    operation            str   JSON {"op": "CLICK"|"TYPE"|"SELECT", "original_op", "value"}
    pos_candidates       list[str]  JSON {"tag", "attributes", "backend_node_id",
                                    "is_original_target", "is_top_level_target"}
    neg_candidates       list[str]  JSON {"tag", "attributes", "backend_node_id"}
    cleaned_html, raw_html  str  the page before the action (elements carry backend_node_id)
    screenshot           image struct {"bytes": PNG/JPEG, "path": str|null}: the full page

A candidate's `attributes` is itself a JSON string whose "bounding_box_rect" is "x,y,w,h" in
screenshot pixels ("-1,-1,-1,-1": not rendered). Screenshots are full pages (1280 x several
thousand px), so a step is shown as a viewport cut around its target (`step_view`), with the
target and the negative candidates inside that viewport as marks, in a shuffled order.

The data pipeline (`data_pipeline/public/mind2web.py`) and the benchmark
(`eval/benchmarks/mind2web.py`) both walk a task through `prepare_task`, so the viewport, the
marks, the gold action and the history of a step are the same in training and in evaluation.
A row that does not follow the layout is a `LayoutError` naming the file and the row.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import random
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from magma.codecs import UIAction
from magma.config_io import StrictModel
from magma.layouts.errors import LayoutError
from magma.marks import Mark, box_iou
from magma.prompts import LEGEND_MAX_MARKS, history_entry, mark_label

OPS: tuple[str, ...] = ("CLICK", "TYPE", "SELECT")
# Columns a step needs; raw_html is never read (the largest column, not needed).
REQUIRED_COLUMNS: tuple[str, ...] = ("annotation_id", "action_uid", "confirmed_task", "action_reprs",
                                     "target_action_index", "operation", "pos_candidates",
                                     "neg_candidates", "screenshot")
OPTIONAL_COLUMNS: tuple[str, ...] = ("website", "domain", "subdomain", "cleaned_html")
NOT_RENDERED = (-1.0, -1.0, -1.0, -1.0)  # bounding_box_rect of an element that was not drawn
# Attributes (Mind2Web's attribute names) that name an element without visible text, in order.
NAME_ATTRIBUTES: tuple[str, ...] = ("aria_label", "title", "placeholder", "alt", "input_value",
                                    "value", "text_value", "label", "name")
TEXT_MAX = 200  # characters of a candidate's text kept (legends show fewer)
_VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                        "param", "source", "track", "wbr"})

Box = tuple[float, float, float, float]  # x0, y0, x1, y1


# ---------------------------------------------------------------- records

class Candidate(BaseModel):
    """An element of the page: a positive (the step's target) or a negative candidate."""

    model_config = ConfigDict(frozen=True)
    backend_node_id: str
    tag: str
    box: Box | None  # page pixels; None when the element was not rendered or has no size
    text: str = ""  # visible text (cleaned_html) or the first naming attribute
    positive: bool = False
    is_original_target: bool = False
    is_top_level_target: bool = False


class Mind2WebStep(BaseModel):
    """One row: an action step of a task, with where it came from (`file`, `row`)."""

    model_config = ConfigDict(frozen=True)
    file: str
    row: int
    annotation_id: str
    action_uid: str
    task: str  # confirmed_task
    website: str = ""
    domain: str = ""
    subdomain: str = ""
    index: int  # target_action_index
    action_repr: str
    op: Literal["CLICK", "TYPE", "SELECT"]
    original_op: str
    value: str
    positives: list[Candidate]
    negatives: list[Candidate]
    screenshot: bytes = Field(repr=False)

    @property
    def where(self) -> str:
        return f"{self.file} row {self.row} (action_uid {self.action_uid})"

    @property
    def target(self) -> Candidate:
        """The positive the step is shown around: a rendered one, top-level targets first."""
        visible = [c for c in self.positives if c.box is not None]
        if not visible:
            raise LayoutError("target_not_visible", f"{self.where}: no positive candidate has a "
                              "bounding_box_rect with a size (all '-1,-1,-1,-1' or zero); the step "
                              "cannot be shown")
        return sorted(visible, key=lambda c: (not c.is_top_level_target, not c.is_original_target))[0]

    @property
    def gold_operation(self) -> str:
        return operation_string(self.op, self.value)


class Mind2WebTask(BaseModel):
    annotation_id: str
    task: str
    website: str = ""
    domain: str = ""
    steps: list[Mind2WebStep]  # by target_action_index


class ViewportOptions(StrictModel):
    """How a step is shown: shared by the source type's params and the benchmark's flags."""

    viewport_height: int = Field(default=800, ge=64)  # px of the page shown (the full width is kept)
    max_marks: int = Field(default=16, ge=1, le=LEGEND_MAX_MARKS)  # target + negatives; the legend shows all
    min_mark_size: float = Field(default=4.0, ge=1.0)  # px: smaller (clipped) candidates are not marked
    # negatives whose box overlaps a positive this much (IoU) are left out: two marks on one element
    max_overlap: float = Field(default=0.5, ge=0.0, le=1.0)


@dataclass(frozen=True)
class StepView:
    """What a step shows: a window of the page and its marks (viewport pixels, ids 0..n-1)."""

    window: tuple[int, int, int, int]  # x0, y0, x1, y1 in page pixels
    marks: list[Mark]  # sorted by id
    target_mark: int
    mark_nodes: list[str]  # backend_node_id of each mark id
    positive_boxes: list[Box]  # every rendered positive, clipped to the viewport

    @property
    def size(self) -> tuple[int, int]:
        return self.window[2] - self.window[0], self.window[3] - self.window[1]


@dataclass
class PreparedStep:
    """A step ready to be shown: the viewport cut (unmarked), its marks, the gold action and
    the history entries of the task's earlier prepared steps (oldest first)."""

    step: Mind2WebStep
    view: StepView
    image: Any  # np.ndarray [H, W, 3] uint8, the viewport cut
    action: UIAction
    history: list[str] = field(default_factory=list)


def operation_string(op: str, value: str = "") -> str:
    """The operation as Mind2Web scores it: "CLICK", "TYPE <value>", "SELECT <value>"."""
    return f"{op} {value}".strip() if op != "CLICK" else "CLICK"


# ---------------------------------------------------------------- files and rows

def parquet_files(path: str | Path) -> list[Path]:
    """A parquet file, or the parquet files under a folder (sorted)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LayoutError("path_not_found", f"{path} does not exist; give a Multimodal-Mind2Web "
                          "parquet file or a folder of them")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise LayoutError("no_parquet_files", f"{path} holds no .parquet files")
    return files


def _open(file: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise LayoutError("unreadable_parquet", f"{file}: not a readable parquet file "
                          f"({type(exc).__name__}: {exc})") from None


def _check_columns(pf, file: Path) -> None:
    names = set(pf.schema_arrow.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise LayoutError("missing_field", f"{file}: no column(s) {', '.join(missing)}; a "
                          f"Multimodal-Mind2Web file has {', '.join(REQUIRED_COLUMNS)}")


TaskRef = tuple[str, list[tuple[str, int]]]  # (annotation_id, [(file, row), ...])


def index_tasks(files: list[Path]) -> tuple[list[TaskRef], dict[str, LayoutError]]:
    """The tasks in `files` (first-seen order; a task split over files is one task) from the
    annotation_id column alone, and the LayoutError of each file that cannot be read."""
    rows: dict[str, list[tuple[str, int]]] = {}
    errors: dict[str, LayoutError] = {}
    for file in files:
        try:
            pf = _open(file)
            _check_columns(pf, file)
            ids = pf.read(columns=["annotation_id"]).column("annotation_id").to_pylist()
        except LayoutError as exc:
            errors[str(file)] = exc
            continue
        for n, aid in enumerate(ids):
            rows.setdefault(str(aid), []).append((str(file), n))
    return list(rows.items()), errors


def read_rows(file: str | Path, rows: list[int]) -> list[dict[str, Any]]:
    """The given rows of one file as dicts (only the row groups holding them are read)."""
    file = Path(file)
    pf = _open(file)
    _check_columns(pf, file)
    columns = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in pf.schema_arrow.names]
    starts, total = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(total)
        total += pf.metadata.row_group(g).num_rows
    out: dict[int, dict[str, Any]] = {}
    for g in range(pf.metadata.num_row_groups):
        lo, hi = starts[g], starts[g] + pf.metadata.row_group(g).num_rows
        local = [r - lo for r in rows if lo <= r < hi]
        if local:
            table = pf.read_row_group(g, columns=columns).take(local)
            for r, rec in zip(local, table.to_pylist()):
                out[r + lo] = rec
    bad = [r for r in rows if r not in out]
    if bad:
        raise LayoutError("missing_row", f"{file}: rows {bad[:5]} not in the file ({total} rows)")
    return [out[r] for r in rows]


# ---------------------------------------------------------------- one row

def _json(value: Any, what: str, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise LayoutError("missing_field", f"{where}: {what} is {type(value).__name__}, expected a JSON string")
    try:
        out = json.loads(value)
    except json.JSONDecodeError as exc:
        raise LayoutError("bad_json", f"{where}: {what} is not JSON ({exc})") from None
    if not isinstance(out, dict):
        raise LayoutError("bad_json", f"{where}: {what} is a JSON {type(out).__name__}, expected an object")
    return out


def parse_rect(rect: Any, where: str) -> Box | None:
    """"x,y,w,h" -> (x0, y0, x1, y1); "-1,-1,-1,-1" or a zero size -> None (not rendered)."""
    try:
        x, y, w, h = (float(v) for v in str(rect).split(","))
    except ValueError:
        raise LayoutError("bad_bounding_box", f"{where}: bounding_box_rect {rect!r} is not 'x,y,w,h'") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise LayoutError("bad_bounding_box", f"{where}: bounding_box_rect {rect!r} is not finite")
    if (x, y, w, h) == NOT_RENDERED or w == 0 or h == 0:
        return None
    if w < 0 or h < 0:
        raise LayoutError("bad_bounding_box", f"{where}: bounding_box_rect {rect!r} has a negative size")
    return x, y, x + w, y + h


def _candidate(rec: dict[str, Any], positive: bool, texts: dict[str, str], where: str) -> Candidate:
    attrs = _json(rec.get("attributes", "{}"), "candidate attributes", where)
    node = rec.get("backend_node_id", attrs.get("backend_node_id"))
    if node is None or "bounding_box_rect" not in attrs:
        raise LayoutError("missing_field", f"{where}: candidate needs backend_node_id and "
                          "attributes.bounding_box_rect")
    node = str(node)
    text = texts.get(node, "")
    if not text:
        text = next((" ".join(str(attrs[k]).split()) for k in NAME_ATTRIBUTES
                     if str(attrs.get(k) or "").strip()), "")
    return Candidate(backend_node_id=node, tag=str(rec.get("tag", "")), positive=positive,
                     box=parse_rect(attrs["bounding_box_rect"], f"{where}, candidate {node}"),
                     text=text[:TEXT_MAX], is_original_target=bool(rec.get("is_original_target", False)),
                     is_top_level_target=bool(rec.get("is_top_level_target", False)))


def _screenshot_bytes(value: Any, file: str, where: str) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):  # `datasets` stores a path when the image lives beside the file
            p = Path(value["path"])
            p = p if p.is_absolute() else Path(file).parent / p
            if p.is_file():
                return p.read_bytes()
    raise LayoutError("missing_screenshot", f"{where}: screenshot has no image bytes (nor a "
                      "readable path)")


def _step_index(value: Any, n_actions: int, where: str) -> int:
    if isinstance(value, list) and len(value) == 1:  # an early revision of the card: a sequence
        value = value[0]
    try:
        index = int(str(value).strip())
    except ValueError:
        raise LayoutError("bad_step_index", f"{where}: target_action_index {value!r} is not an integer") from None
    if not 0 <= index < n_actions:
        raise LayoutError("bad_step_index", f"{where}: target_action_index {index} outside the "
                          f"task's {n_actions} action_reprs")
    return index


def parse_step(rec: dict[str, Any], file: str, row: int) -> Mind2WebStep:
    """One row -> a step; LayoutError (reason, file, row) for anything off the layout."""
    where = f"{file} row {row}"
    for col in REQUIRED_COLUMNS:
        if rec.get(col) is None:
            raise LayoutError("missing_field", f"{where}: {col} is missing or null")
    where = f"{where} (action_uid {rec['action_uid']})"
    reprs = rec["action_reprs"]
    if not isinstance(reprs, list) or not all(isinstance(r, str) for r in reprs):
        raise LayoutError("missing_field", f"{where}: action_reprs is not a list of strings")
    index = _step_index(rec["target_action_index"], len(reprs), where)
    operation = _json(rec["operation"], "operation", where)
    op = str(operation.get("op", ""))
    if op not in OPS:
        raise LayoutError("unknown_operation", f"{where}: operation op {op!r}; Mind2Web ops are "
                          f"{', '.join(OPS)} (HOVER/ENTER are CLICK with that original_op)")
    for col in ("pos_candidates", "neg_candidates"):
        if not isinstance(rec[col], list):
            raise LayoutError("missing_field", f"{where}: {col} is not a list")
    if not rec["pos_candidates"]:
        raise LayoutError("no_positive_candidate", f"{where}: pos_candidates is empty (the step has "
                          "no target element)")
    pos = [_json(c, "candidate", where) for c in rec["pos_candidates"]]
    neg = [_json(c, "candidate", where) for c in rec["neg_candidates"]]
    html = rec.get("cleaned_html") or ""
    texts = element_texts(html, {str(c.get("backend_node_id")) for c in pos + neg}) if html else {}
    return Mind2WebStep(
        file=file, row=row, annotation_id=str(rec["annotation_id"]), action_uid=str(rec["action_uid"]),
        task=str(rec["confirmed_task"]), website=str(rec.get("website") or ""),
        domain=str(rec.get("domain") or ""), subdomain=str(rec.get("subdomain") or ""),
        index=index, action_repr=reprs[index], op=op,  # type: ignore[arg-type]
        original_op=str(operation.get("original_op") or op), value=str(operation.get("value") or ""),
        positives=[_candidate(c, True, texts, where) for c in pos],
        negatives=[_candidate(c, False, texts, where) for c in neg],
        screenshot=_screenshot_bytes(rec["screenshot"], file, where))


class _TextCollector(HTMLParser):
    """Text inside the elements whose backend_node_id is wanted (nested ones included)."""

    def __init__(self, wanted: set[str]):
        super().__init__(convert_charrefs=True)
        self.wanted = wanted
        self.stack: list[tuple[str, str | None]] = []
        self.texts: dict[str, list[str]] = {}
        self.open = 0  # wanted elements on the stack

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_TAGS:
            return
        node = next((v for k, v in attrs if k == "backend_node_id"), None)
        node = node if node in self.wanted else None
        self.stack.append((tag, node))
        if node is not None:
            self.open += 1
            self.texts.setdefault(node, [])

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _ in self.stack):
            return  # a stray end tag
        while self.stack:
            t, node = self.stack.pop()
            self.open -= node is not None
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.open and data.strip():
            for _, node in self.stack:
                if node is not None and sum(map(len, self.texts[node])) < TEXT_MAX:
                    self.texts[node].append(data)


def element_texts(html: str, nodes: set[str]) -> dict[str, str]:
    """backend_node_id -> whitespace-collapsed text of that element in `html` (cleaned_html)."""
    parser = _TextCollector(nodes)
    parser.feed(html)
    parser.close()
    return {n: " ".join(" ".join(parts).split())[:TEXT_MAX] for n, parts in parser.texts.items()}


# ---------------------------------------------------------------- tasks

def load_task(ref: TaskRef) -> tuple[Mind2WebTask | None, list[LayoutError]]:
    """A task's steps in step order, and a LayoutError per row left out (None: no step left)."""
    aid, refs = ref
    by_file: dict[str, list[int]] = {}
    for file, row in refs:
        by_file.setdefault(file, []).append(row)
    steps: list[Mind2WebStep] = []
    errors: list[LayoutError] = []
    for file, rows in by_file.items():
        try:
            recs = read_rows(file, rows)
        except LayoutError as exc:
            errors.append(exc)
            continue
        for row, rec in zip(rows, recs):
            try:
                steps.append(parse_step(rec, file, row))
            except LayoutError as exc:
                errors.append(exc)
    steps.sort(key=lambda s: s.index)
    kept: list[Mind2WebStep] = []
    for s in steps:
        if kept and kept[-1].index == s.index:
            errors.append(LayoutError("duplicate_step", f"{s.where}: task {aid} has two rows with "
                                      f"target_action_index {s.index} (the first, {kept[-1].where}, is kept)"))
            continue
        kept.append(s)
    if not kept:
        return None, errors
    first = kept[0]
    return Mind2WebTask(annotation_id=aid, task=first.task, website=first.website, domain=first.domain,
                        steps=kept), errors


def iter_tasks(path: str | Path) -> Iterator[Mind2WebTask | LayoutError]:
    """Every task under `path`, file order; unreadable files and rows come as LayoutErrors."""
    refs, errors = index_tasks(parquet_files(path))
    yield from errors.values()
    for ref in refs:
        task, errs = load_task(ref)
        yield from errs
        if task is not None:
            yield task


# ---------------------------------------------------------------- viewport and marks

def _rng(*keys: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, ("mind2web",) + keys)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def _clip(box: Box, window: tuple[int, int, int, int]) -> Box:
    x0, y0, x1, y1 = window
    return (min(max(box[0], x0), x1), min(max(box[1], y0), y1),
            min(max(box[2], x0), x1), min(max(box[3], y0), y1))


def _inside(point: tuple[float, float], window: tuple[int, int, int, int]) -> bool:
    return window[0] <= point[0] < window[2] and window[1] <= point[1] < window[3]


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def viewport_window(step: Mind2WebStep, page_size: tuple[int, int], height: int,
                    rng: random.Random) -> tuple[int, int, int, int]:
    """The window of the page shown for `step`: the full width, `height` px (or the page), at a
    seeded offset that keeps the whole target inside (its centre when it is taller), so the
    target's place in the viewport varies."""
    page_w, page_h = page_size
    target = step.target
    tx0, ty0, tx1, ty1 = _clip(target.box, (0, 0, page_w, page_h))  # type: ignore[arg-type]
    cx, cy = _centre(target.box)  # type: ignore[arg-type]
    if not (0 <= cx < page_w and 0 <= cy < page_h):
        raise LayoutError("target_outside_screenshot", f"{step.where}: target box {target.box} "
                          f"lies outside the {page_w}x{page_h} screenshot")
    h = min(height, page_h)
    if ty1 - ty0 <= h:
        lo, hi = max(0, math.ceil(ty1) - h), min(math.floor(ty0), page_h - h)
        top = rng.randint(lo, hi) if lo <= hi else min(lo, page_h - h)
    else:  # taller than the viewport: centred on it
        top = min(max(0, int(cy - h / 2)), page_h - h)
    return 0, top, page_w, top + h


def step_view(step: Mind2WebStep, page_size: tuple[int, int], opts: ViewportOptions = ViewportOptions()
              ) -> StepView:
    """The viewport and marks of a step (deterministic in the step's action_uid): the target and
    up to `max_marks - 1` negatives whose centre lies in the viewport, shuffled, so a mark's id
    says nothing of where it is or whether it is the target."""
    rng = _rng(step.action_uid)
    window = viewport_window(step, page_size, opts.viewport_height, rng)
    target = step.target
    positives = [c.box for c in step.positives if c.box is not None]
    pool: list[tuple[Candidate, Box]] = []
    seen: set[tuple[int, int, int, int]] = set()
    for c in step.negatives:
        if c.box is None or not _inside(_centre(c.box), window):
            continue
        clipped = _clip(c.box, window)
        key = tuple(int(round(v)) for v in clipped)
        if (clipped[2] - clipped[0] < opts.min_mark_size or clipped[3] - clipped[1] < opts.min_mark_size
                or key in seen or any(box_iou(c.box, p) > opts.max_overlap for p in positives)):
            continue
        seen.add(key)  # type: ignore[arg-type]
        pool.append((c, clipped))
    chosen = rng.sample(pool, min(len(pool), opts.max_marks - 1))
    entries = [(target, _clip(target.box, window))] + chosen  # type: ignore[arg-type]
    rng.shuffle(entries)
    ox, oy = window[0], window[1]
    marks = [Mark(i, (b[0] - ox, b[1] - oy, b[2] - ox, b[3] - oy), c.text, c.tag)
             for i, (c, b) in enumerate(entries)]
    target_mark = next(i for i, (c, _) in enumerate(entries) if c is target)
    pos_boxes = []
    for p in positives:
        b = _clip(p, window)
        if b[2] > b[0] and b[3] > b[1]:
            pos_boxes.append((b[0] - ox, b[1] - oy, b[2] - ox, b[3] - oy))
    return StepView(window, marks, target_mark, [c.backend_node_id for c, _ in entries], pos_boxes)


def gold_action(step: Mind2WebStep, view: StepView) -> UIAction:
    """The step's action on its view: `click "label" Mark k` (the label as clicks name it),
    `type "value" Mark k`, `select "value" Mark k` (values verbatim)."""
    mark = view.marks[view.target_mark]
    if step.op == "CLICK":
        return UIAction("click", mark=mark.id, text=mark_label(mark) or None).validate()
    return UIAction("type" if step.op == "TYPE" else "select", mark=mark.id, text=step.value).validate()


def _open_image(step: Mind2WebStep):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(step.screenshot))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise LayoutError("unreadable_screenshot", f"{step.where}: screenshot does not decode "
                          f"({type(exc).__name__}: {exc})") from None
    return img


def prepare_step(step: Mind2WebStep, opts: ViewportOptions = ViewportOptions(),
                 history: list[str] | None = None) -> PreparedStep:
    """Decodes the screenshot, cuts the step's viewport and builds its marks and gold action."""
    import numpy as np

    img = _open_image(step)
    view = step_view(step, img.size, opts)
    cut = np.asarray(img.crop(view.window).convert("RGB"), dtype=np.uint8)
    return PreparedStep(step, view, np.ascontiguousarray(cut), gold_action(step, view), list(history or []))


def prepare_task(task: Mind2WebTask, opts: ViewportOptions = ViewportOptions()
                 ) -> Iterator[PreparedStep | LayoutError]:
    """The task's steps in order, each with the history of the steps before it (their gold
    actions as `magma.prompts.history_entry` writes them); a step that cannot be shown comes
    as its LayoutError and is not in later steps' history."""
    history: list[str] = []
    for step in task.steps:
        try:
            prepared = prepare_step(step, opts, history)
        except LayoutError as exc:
            yield exc
            continue
        yield prepared
        history.append(history_entry(prepared.action))
