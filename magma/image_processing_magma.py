"""Image preprocessing on PIL/NumPy (no torchvision): views of fixed size, optional crops.

Every view is resized (stretched) to image_size x image_size so that normalised coordinates
[0, 1000) in text map onto the feature grid the same way for every screen shape. With
`max_crops > 0`, an image larger than one view is also cut into a rows x cols grid of crops
(chosen to match its aspect ratio, rows * cols <= max_crops); the global view comes first.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

# Per-channel normalisation; the vision tower's own (a CLIP tower was trained with CLIP's).
# Saved in preprocessor_config.json, so a checkpoint keeps the statistics its tower expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pil_rgb(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image must be PIL or an [H, W, 3] array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., :3])


def crop_grid(width: int, height: int, view: int, max_crops: int) -> tuple[int, int]:
    """(rows, cols) of crops for an image; (0, 0) when it fits in one view or crops are off."""
    if max_crops <= 0 or (width <= view and height <= view):
        return 0, 0
    best, best_err = (1, 1), float("inf")
    for rows in range(1, max_crops + 1):
        for cols in range(1, max_crops // rows + 1):
            err = abs(math.log((cols / rows) / (width / height)))
            # Prefer the grid that matches the aspect ratio, then the one with more pixels.
            key = (round(err, 3), -(rows * cols))
            if key < (round(best_err, 3), -(best[0] * best[1])):
                best, best_err = (rows, cols), err
    return best


class MagmaImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values", "image_num_views"]

    def __init__(self, image_size: int = 224, max_crops: int = 0,
                 image_mean: tuple[float, ...] = IMAGENET_MEAN,
                 image_std: tuple[float, ...] = IMAGENET_STD, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.max_crops = max_crops
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean/image_std must be 3 values each (std > 0), got "
                             f"{list(image_mean)} / {list(image_std)}")
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]

    def num_views(self, width: int, height: int) -> int:
        rows, cols = crop_grid(width, height, self.image_size, self.max_crops)
        return 1 + rows * cols

    def views(self, image: Image.Image) -> list[Image.Image]:
        s = self.image_size
        out = [image.resize((s, s), Image.BICUBIC)]
        rows, cols = crop_grid(image.width, image.height, s, self.max_crops)
        if rows:
            big = image.resize((cols * s, rows * s), Image.BICUBIC)
            for r in range(rows):
                for c in range(cols):
                    out.append(big.crop((c * s, r * s, (c + 1) * s, (r + 1) * s)))
        return out

    def _normalize(self, view: Image.Image) -> np.ndarray:
        arr = np.asarray(view, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return arr.transpose(2, 0, 1)

    def preprocess(self, images: Any, return_tensors: str | None = None, **kwargs: Any) -> BatchFeature:
        if images is None:
            images = []
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values, counts = [], []
        for image in images:
            views = self.views(to_pil_rgb(image))
            counts.append(len(views))
            pixel_values.extend(self._normalize(v) for v in views)
        s = self.image_size
        data = {"pixel_values": np.stack(pixel_values) if pixel_values
                else np.zeros((0, 3, s, s), np.float32),
                "image_num_views": np.asarray(counts, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)
