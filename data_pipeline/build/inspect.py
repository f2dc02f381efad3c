"""`magma data inspect`: print a few samples and write a contact sheet of their images."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from magma.schema import Sample
from magma.shards import MANIFEST, iter_shard, shard_paths


def _shards_under(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such shard or folder")
    if (path / MANIFEST).exists():  # a build folder or a source folder: the shards it lists
        return shard_paths(path)
    shards = sorted(path.rglob("shard-*.tar"))
    if not shards:
        raise FileNotFoundError(f"{path}: no shard-*.tar files; build some with `magma data build`")
    return shards


def contact_sheet(images: list[np.ndarray], titles: list[str], cell: int = 256,
                  cols: int = 4) -> np.ndarray:
    """Images fitted into cell x cell tiles with a caption strip, on a grid."""
    rows = max(1, math.ceil(len(images) / cols))
    cap = 18
    sheet = np.full((rows * (cell + cap), cols * cell, 3), 255, np.uint8)
    for i, (img, title) in enumerate(zip(images, titles)):
        r, c = divmod(i, cols)
        scale = min(cell / img.shape[1], cell / img.shape[0])
        w, h = max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))
        y, x = r * (cell + cap), c * cell
        sheet[y:y + h, x:x + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, title[:36], (x + 2, y + cell + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def _describe(s: Sample) -> str:
    lines = [f"== {s.id}  source={s.source} dataset={s.dataset or '-'} images="
             + ",".join(f"{im.shape[1]}x{im.shape[0]}" for im in s.images)]
    for t in s.conversation:
        kind = f"[{t.kind}]" if t.kind else ""
        lines.append(f"  {t.role}{kind}: " + t.content.replace("\n", "\n    "))
    return "\n".join(lines)


def inspect_path(path: Path, num: int = 4, sheet: Path | None = None) -> int:
    shards = _shards_under(path)
    samples: list[Sample] = []
    for shard in shards:
        for s in iter_shard(shard):
            samples.append(s)
            if len(samples) >= num:
                break
        if len(samples) >= num:
            break
    for s in samples:
        print(_describe(s))
    images = [s.images[0] for s in samples if s.images]
    if images:
        sheet = sheet or (path.with_suffix(".contact.png") if path.is_file()
                          else path / "contact.png")
        Image.fromarray(contact_sheet(images, [s.id for s in samples if s.images])).save(sheet)
        print(f"contact sheet: {sheet}")
    print(f"{len(shards)} shard(s) under {path}")
    return 0
