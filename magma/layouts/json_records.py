"""Raw records of the JSON layouts: a JSON list in one file, or JSON Lines (one object a line).

Public instruction and grounding sets ship both ways (LLaVA's `llava_v1_5_mix665k.json` is a
list, many re-releases are `.jsonl`), so the reader decides by the first character, not the
suffix. A file that cannot be read at all is one `LayoutError`; in JSON Lines a bad line is a
`LayoutError` in its place and the other lines are kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magma.layouts.errors import LayoutError

JSON_SUFFIXES = (".json", ".jsonl")


@dataclass(frozen=True)
class RawRecord:
    """One record as parsed JSON (or the error that stood in its place), and where it was."""

    file: str
    index: int  # position among the file's records (0-based)
    where: str  # "FILE: record N" or "FILE: line N", for messages
    value: Any  # the parsed JSON value, or a LayoutError for a line that is not JSON


def json_files(path: str | Path, suffixes: tuple[str, ...] = JSON_SUFFIXES) -> list[Path]:
    """`path` itself when it is a file, else every file under it with one of `suffixes`
    (sorted). Raises LayoutError('path_not_found') when `path` does not exist."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LayoutError("path_not_found", f"{path} does not exist; give a JSON/JSON Lines file or "
                          "a folder of them")
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def read_json_records(file: str | Path) -> list[RawRecord]:
    """The records of one file. Raises LayoutError('bad_json') when the file is neither a JSON
    list nor JSON Lines (a JSON list is parsed whole, so any error in it is the file's)."""
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError("bad_json", f"{file}: cannot read it as UTF-8 text ({exc})") from None
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LayoutError("bad_json", f"{file}: not valid JSON ({exc}); expected a list of "
                              "records") from None
        return [RawRecord(str(file), i, f"{file}: record {i}", v) for i, v in enumerate(values)]
    records: list[RawRecord] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}: line {n}"
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            value = LayoutError("bad_json", f"{where}: not valid JSON ({exc}); expected one JSON "
                                "object per line (JSON Lines) or one JSON list")
        records.append(RawRecord(str(file), len(records), where, value))
    return records


def require_object(raw: RawRecord) -> dict[str, Any]:
    """The record as a dict; raises its own LayoutError (bad JSON line) or 'bad_record'."""
    if isinstance(raw.value, LayoutError):
        raise raw.value
    if not isinstance(raw.value, dict):
        raise LayoutError("bad_record", f"{raw.where}: expected a JSON object, got "
                          f"{type(raw.value).__name__}")
    return raw.value


def required_str(rec: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    """`rec[key]` as a string; raises LayoutError('bad_record') naming the key when it is
    missing, not a string, or (unless `allow_empty`) blank."""
    value = rec.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        got = "missing" if key not in rec else f"{type(value).__name__} {value!r}"[:80]
        raise LayoutError("bad_record", f"{where}: {key!r} must be a non-empty string, got {got}")
    return value


def four_numbers(value: Any, key: str, where: str) -> tuple[float, float, float, float]:
    """A 4-number list as floats; raises LayoutError('bad_record') otherwise."""
    ok = isinstance(value, (list, tuple)) and len(value) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
        for v in value)
    if not ok:
        raise LayoutError("bad_record", f"{where}: {key!r} must be 4 finite numbers, got {value!r}"[:200])
    a, b, c, d = (float(v) for v in value)
    return a, b, c, d
