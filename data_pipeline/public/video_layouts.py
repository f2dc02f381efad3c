"""The annotation files of three video datasets, read as published, into annotated windows.

    Something-Something v2   labels JSON: a list of {"id", "label", "template", "placeholders"}
                             (something-something-v2-{train,validation}.json; the 20BN/Qualcomm
                             release, paper arXiv:1706.04261); videos `<id>.webm` (VP9, 12 fps)
    EPIC-KITCHENS-100        action segments CSV (EPIC_100_{train,validation}.csv, columns as in
                             github.com/epic-kitchens/epic-kitchens-100-annotations README);
                             videos `<participant_id>/videos/<video_id>.MP4`
    Ego4D                    narrations JSON (v1/annotations/narration.json: {video_uid:
                             {"narration_pass_1": {"narrations": [{"timestamp_sec",
                             "timestamp_frame", "narration_text", "annotation_uid"}], "summaries":
                             [...]}, "narration_pass_2": ...}}, ego4d-data.org docs and
                             facebookresearch/Ego4d); videos `<video_uid>.mp4` (full-scale videos)

Each reader returns one entry per record: a `VideoWindow` (which video, which seconds, the
instruction) or a `BadRecord` (the reason and a message naming the file and the record), so a
bad record is counted and the others go on. A file that is not the layout at all raises
`LayoutError`. Nothing here decodes video.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from magma.layouts.errors import LayoutError


class VideoWindow(BaseModel):
    """One annotated window: `videos` are the candidate file names (relative to the video root,
    first existing wins); `start_s`/`end_s` None = the whole clip; `centre_s` is set instead
    for point-in-time annotations (Ego4D), whose window length is the source's choice."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    videos: tuple[str, ...]
    instruction: str
    start_s: float | None = None
    end_s: float | None = None
    centre_s: float | None = None
    episode: str
    meta: dict[str, Any] = {}


class BadRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    reason: str
    message: str


Entry = VideoWindow | BadRecord


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError("bad_layout", f"{path}: not readable as JSON ({exc})") from None


def _item_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def unique_ids(entries: list[Entry]) -> list[Entry]:
    """A repeated id (after sanitising) becomes a `duplicate_record` BadRecord under a fresh id:
    a build refuses colliding item ids, and the first record with an id is the one kept."""
    seen: set[str] = set()
    out: list[Entry] = []
    for e in entries:
        if e.item_id not in seen:
            seen.add(e.item_id)
            out.append(e)
            continue
        k = 1
        while f"{e.item_id}-dup{k}" in seen:
            k += 1
        new_id = f"{e.item_id}-dup{k}"
        seen.add(new_id)
        out.append(BadRecord(item_id=new_id, reason="duplicate_record",
                             message=f"record {e.item_id!r} appears more than once; the first is kept"))
    return out


# ---------------------------------------------------------------- Something-Something v2

def fill_template(template: str, placeholders: list[str]) -> str:
    """'Holding [something] next to [something]' + ['potato', 'a bottle'] -> 'Holding potato
    next to a bottle'; raises ValueError when the counts differ."""
    slots = re.findall(r"\[[^\]]*\]", template)
    if len(slots) != len(placeholders):
        raise ValueError(f"template has {len(slots)} [slots] but {len(placeholders)} placeholders")
    parts = iter(placeholders)
    return re.sub(r"\[[^\]]*\]", lambda _: next(parts), template)


def _ssv2_entry(path: Path, n: int, rec: Any) -> Entry:
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), (str, int)):
        return BadRecord(item_id=f"record{n}", reason="bad_record",
                         message=f"{path}: record {n} has no 'id' (want {{'id': '78687', 'label': ...}})")
    vid = str(rec["id"])
    where = f"{path}: record {n} (id {vid!r})"
    label = rec.get("label")
    if isinstance(label, str) and label.strip():
        instruction = label.strip()
    elif isinstance(rec.get("template"), str) and isinstance(rec.get("placeholders"), list):
        try:
            instruction = fill_template(rec["template"], [str(p) for p in rec["placeholders"]])
        except ValueError as exc:
            return BadRecord(item_id=_item_id(vid), reason="bad_record", message=f"{where}: {exc}")
    else:
        return BadRecord(item_id=_item_id(vid), reason="bad_record",
                         message=f"{where}: no 'label' nor 'template' + 'placeholders' (the test split "
                                 "publishes ids only; use the train or validation file)")
    meta = {k: rec[k] for k in ("template", "placeholders") if k in rec}
    return VideoWindow(item_id=_item_id(vid), videos=(f"{vid}.webm",), instruction=instruction,
                       episode=vid, meta={"ssv2_id": vid, **meta})


def read_ssv2(path: str | Path) -> list[Entry]:
    """Instruction = the record's `label` verbatim (the template with its placeholders filled in,
    as the dataset publishes it); a record without a label falls back to filling `template` with
    `placeholders`. The whole clip is the window."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, list):
        raise LayoutError("bad_layout", f"{path}: Something-Something v2 labels are a JSON list of "
                          f"records, got {type(data).__name__}")
    return unique_ids([_ssv2_entry(path, n, rec) for n, rec in enumerate(data)])


# ---------------------------------------------------------------- EPIC-KITCHENS-100

EPIC_REQUIRED = ("narration_id", "video_id", "start_timestamp", "stop_timestamp", "narration")
_TIMESTAMP = re.compile(r"^(\d+):([0-5]?\d):(\d+(?:\.\d*)?)$")


def parse_timestamp(text: str) -> float:
    """'HH:MM:SS.ff' (EPIC writes 2 decimals for segments, 3 for narration times) -> seconds."""
    m = _TIMESTAMP.match(text.strip())
    if not m:
        raise ValueError(f"timestamp {text!r} is not HH:MM:SS.ff")
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _epic_entry(path: Path, line: int, row: dict[str, str]) -> Entry:
    nid = (row.get("narration_id") or "").strip()
    item_id = _item_id(nid) if nid else f"line{line}"
    where = f"{path}: line {line} (narration_id {nid!r})"
    missing = [c for c in EPIC_REQUIRED if not (row.get(c) or "").strip()]
    if missing:
        return BadRecord(item_id=item_id, reason="bad_record", message=f"{where}: empty or missing {missing}")
    try:
        start, stop = parse_timestamp(row["start_timestamp"]), parse_timestamp(row["stop_timestamp"])
    except ValueError as exc:
        return BadRecord(item_id=item_id, reason="bad_record", message=f"{where}: {exc}")
    if stop <= start:
        return BadRecord(item_id=item_id, reason="bad_record",
                         message=f"{where}: stop_timestamp {row['stop_timestamp']} is not after "
                                 f"start_timestamp {row['start_timestamp']}")
    video_id = row["video_id"].strip()
    participant = (row.get("participant_id") or "").strip() or video_id.split("_")[0]
    # The published tree (epic-kitchens download-scripts-100) is <participant>/videos/<video>.MP4;
    # a flat folder of <video>.MP4 is accepted too, and .mp4 for re-encoded copies.
    videos = tuple(f"{d}{video_id}{ext}" for d in (f"{participant}/videos/", "") for ext in (".MP4", ".mp4"))
    meta = {"narration_id": nid, "participant_id": participant, "video_id": video_id,
            "start_timestamp": row["start_timestamp"], "stop_timestamp": row["stop_timestamp"]}
    meta.update({k: row[k] for k in ("verb", "noun", "verb_class", "noun_class", "start_frame", "stop_frame")
                 if row.get(k) not in (None, "")})
    return VideoWindow(item_id=item_id, videos=videos, instruction=row["narration"].strip(),
                       start_s=start, end_s=stop, episode=video_id, meta=meta)


def read_epic_kitchens(path: str | Path) -> list[Entry]:
    """Instruction = `narration` verbatim ('open door'); window = start_timestamp..stop_timestamp
    (seconds, so re-encoded videos at another frame rate still line up; `start_frame` and
    `stop_frame` count frames of the original 50/60 fps videos and are kept as provenance)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in EPIC_REQUIRED if c not in header]
            if missing:
                raise LayoutError("bad_layout", f"{path}: not an EPIC-KITCHENS-100 segments CSV: missing "
                                  f"columns {missing} (header {header[:16]})")
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError("bad_layout", f"{path}: not readable as CSV ({exc})") from None
    return unique_ids([_epic_entry(path, line, row) for line, row in rows])


# ---------------------------------------------------------------- Ego4D narrations

_TAG = re.compile(r"#\s*[CO]\b\s*", re.IGNORECASE)
_UNSURE = re.compile(r"#\s*unsure", re.IGNORECASE)


def clean_narration(text: str) -> str:
    """Drops Ego4D's '#C' / '#O' speaker tags and keeps the words: '#C C picks up the knife' ->
    'C picks up the knife' ('C' is the camera wearer, as the narrators write it); '#O man X
    opens the door' -> 'man X opens the door'. Whitespace is collapsed."""
    return " ".join(_TAG.sub(" ", text).split())


def _ego4d_entry(path: Path, uid: str, pass_name: str, i: int, rec: Any) -> Entry:
    item_id = _item_id(f"{uid}_{pass_name.removeprefix('narration_')}_{i}")
    where = f"{path}: video {uid!r} {pass_name} narration {i}"
    if not isinstance(rec, dict):
        return BadRecord(item_id=item_id, reason="bad_record", message=f"{where}: not an object")
    t, text = rec.get("timestamp_sec"), rec.get("narration_text")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
        return BadRecord(item_id=item_id, reason="bad_record",
                         message=f"{where}: timestamp_sec must be a number >= 0, got {t!r}")
    if not isinstance(text, str) or not clean_narration(text):
        return BadRecord(item_id=item_id, reason="bad_record", message=f"{where}: empty narration_text")
    if _UNSURE.search(text):
        # '#unsure' marks words the narrator could not name: no instruction to train on
        return BadRecord(item_id=item_id, reason="unsure_narration", message=f"{where}: {text!r}")
    meta = {"video_uid": uid, "pass": pass_name, "timestamp_sec": float(t), "narration_text": text}
    meta.update({k: rec[k] for k in ("timestamp_frame", "annotation_uid") if k in rec})
    return VideoWindow(item_id=item_id, videos=(f"{uid}.mp4", f"{uid}.MP4"),
                       instruction=clean_narration(text), centre_s=float(t), episode=uid, meta=meta)


def read_ego4d(path: str | Path, passes: list[str] | None = None) -> list[Entry]:
    """One entry per narration of each `narration_pass_*` (or only those in `passes`); the
    instruction is `clean_narration(narration_text)`; `centre_s` = timestamp_sec."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise LayoutError("bad_layout", f"{path}: Ego4D narrations are a JSON object "
                          f"{{video_uid: {{'narration_pass_1': ...}}}}, got {type(data).__name__}")
    entries: list[Entry] = []
    for uid, video in data.items():
        if not isinstance(video, dict):
            entries.append(BadRecord(item_id=_item_id(uid), reason="bad_record",
                                     message=f"{path}: video {uid!r} is not an object of narration passes"))
            continue
        for pass_name in sorted(k for k in video if k.startswith("narration_pass_")):
            if passes is not None and pass_name not in passes:
                continue
            narrations = video[pass_name].get("narrations") if isinstance(video[pass_name], dict) else None
            if not isinstance(narrations, list):
                entries.append(BadRecord(item_id=_item_id(f"{uid}_{pass_name}"), reason="bad_record",
                                         message=f"{path}: video {uid!r} {pass_name} has no 'narrations' list"))
                continue
            entries.extend(_ego4d_entry(path, uid, pass_name, i, rec) for i, rec in enumerate(narrations))
    return unique_ids(entries)
