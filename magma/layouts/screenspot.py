"""ScreenSpot (the SeeClick paper's GUI grounding benchmark), as published.

Layout (github.com/njucckevin/SeeClick: the ScreenSpot download and pretrain/screenspot_test.py):

    DIR/screenspot_mobile.json    [{"img_filename": "mobile_....png", "bbox": [x, y, w, h],
    DIR/screenspot_desktop.json     "instruction": "open the menu", "data_type": "text" | "icon",
    DIR/screenspot_web.json         "data_source": "ios" | "android" | "windows" | "macos" | "shop" | ...}]
    DIR/screenspot_imgs/<img_filename>

`bbox` is left, top, width, height in image pixels; the records here carry it converted once to
pixel corners `box = (x0, y0, x1, y1)` = (x, y, x + w, y + h). The published metric (which
eval/benchmarks/screenspot.py computes) counts a prediction when the point lies inside that box,
edges included. A folder may hold any of the three files; the split is the file's.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from magma.layouts.errors import LayoutError
from magma.layouts.json_records import RawRecord, four_numbers, read_json_records, require_object, required_str

SCREENSPOT_SPLITS: tuple[str, ...] = ("mobile", "desktop", "web")
SCREENSPOT_TYPES: tuple[str, ...] = ("text", "icon")
IMAGES_DIR = "screenspot_imgs"


def split_file(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"screenspot_{split}.json"


class ScreenSpotRecord(BaseModel):
    model_config = ConfigDict(frozen=True)
    split: str  # mobile | desktop | web (the file it came from)
    file: str
    index: int
    img_filename: str
    instruction: str
    data_type: str  # text | icon
    data_source: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels

    @property
    def where(self) -> str:
        return f"{self.file}: record {self.index} ({self.img_filename})"

    def image_path(self, folder: str | Path) -> Path:
        return Path(folder) / IMAGES_DIR / self.img_filename

    def contains(self, x: float, y: float) -> bool:
        """The published hit test: the point lies in the box, edges included."""
        return self.box[0] <= x <= self.box[2] and self.box[1] <= y <= self.box[3]


def parse_screenspot_record(raw: RawRecord, split: str) -> ScreenSpotRecord:
    """One raw record of `screenspot_<split>.json`; raises LayoutError ('bad_record',
    'bad_box', 'box_outside_image', 'unknown_data_type') naming the file and the record."""
    rec = require_object(raw)
    where = raw.where
    img = required_str(rec, "img_filename", where)
    where = f"{where} ({img})"
    x, y, w, h = four_numbers(rec.get("bbox"), "bbox", where)
    if w <= 0 or h <= 0:
        raise LayoutError("bad_box", f"{where}: bbox {rec['bbox']} must be [x, y, width, height] in "
                          "pixels with a positive width and height")
    if x < 0 or y < 0:
        raise LayoutError("box_outside_image", f"{where}: bbox {rec['bbox']} starts left of or above "
                          "the image")
    data_type = rec.get("data_type")
    if data_type not in SCREENSPOT_TYPES:
        raise LayoutError("unknown_data_type", f"{where}: data_type {data_type!r}; ScreenSpot's are "
                          f"{', '.join(SCREENSPOT_TYPES)}")
    source = rec.get("data_source", "")
    return ScreenSpotRecord(split=split, file=raw.file, index=raw.index, img_filename=img,
                            instruction=required_str(rec, "instruction", where), data_type=data_type,
                            data_source=source if isinstance(source, str) else str(source),
                            box=(x, y, x + w, y + h))


def screenspot_files(folder: str | Path, splits: tuple[str, ...] = SCREENSPOT_SPLITS) -> dict[str, Path]:
    """{split: its JSON file} for the splits present; raises LayoutError('path_not_found') when
    the folder has none of them."""
    folder = Path(folder).expanduser()
    unknown = [s for s in splits if s not in SCREENSPOT_SPLITS]
    if unknown:
        raise ValueError(f"unknown ScreenSpot split(s) {unknown}; choose from {SCREENSPOT_SPLITS}")
    found = {s: split_file(folder, s) for s in splits if split_file(folder, s).is_file()}
    if not found:
        names = ", ".join(split_file(folder, s).name for s in splits)
        raise LayoutError("path_not_found", f"{folder}: none of {names} found; give the ScreenSpot folder "
                          f"(the JSON files beside {IMAGES_DIR}/)")
    return found


def read_screenspot(folder: str | Path, splits: tuple[str, ...] = SCREENSPOT_SPLITS
                    ) -> tuple[list[ScreenSpotRecord], list[LayoutError]]:
    """Every record of the splits present (in split order, then file order), and the errors of
    the records that could not be read. Raises LayoutError when no split file is present or a
    whole file is unreadable."""
    records: list[ScreenSpotRecord] = []
    problems: list[LayoutError] = []
    for split, file in screenspot_files(folder, splits).items():
        for raw in read_json_records(file):
            try:
                records.append(parse_screenspot_record(raw, split))
            except LayoutError as exc:
                problems.append(exc)
    return records, problems
