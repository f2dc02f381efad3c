"""Reading images robustly: bad files become `SkipItem` reasons, never crashes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_pipeline.build.registry import SkipItem


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3]; raises SkipItem('missing_image' | 'empty_image' | 'unreadable_image')."""
    path = Path(path)
    if not path.is_file():
        raise SkipItem("missing_image", str(path))
    if path.stat().st_size == 0:
        raise SkipItem("empty_image", str(path))
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SkipItem("unreadable_image", f"{path}: {exc}") from None
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SkipItem("empty_image", str(path))
    return np.ascontiguousarray(arr)
