"""Image preprocessing on PIL/NumPy (no torchvision): views of fixed size, optional crops.

Every view is resized (stretched) to image_size x image_size so that normalised coordinates
[0, 1000) in text map onto the feature grid the same way for every screen shape. With
`max_crops > 0`, an image larger than one view is also cut into a rows x cols grid of crops
(chosen to match its aspect ratio, rows * cols <= max_crops); the global view comes first.

`crop_strategy="grid"` is the public Magma-8B release's preprocessing instead: no global view;
every image is normalised, resized (bilinear, on the normalised tensor) to the crop grid that
keeps most of its pixels (`release_crop_grid`) and cut into rows x cols crops, row-major. The
grid of each image is returned as `image_grid` [N, 2] (rows, cols): the model reads the crops as
one feature map (magma.modeling_magma.place_image_tokens).
"""
from __future__ import annotations

import math
from typing import Any, Literal

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


CropStrategy = Literal["views", "grid"]
CROP_STRATEGIES: tuple[str, ...] = ("views", "grid")


def release_crop_grid(width: int, height: int, view: int, max_crops: int) -> tuple[int, int]:
    """(rows, cols) of the Magma-8B release's crop grid for a width x height image.

    Candidates are the canvases (cols * view) x (rows * view) with cols * rows <= max_crops,
    cols in the outer loop; the image is scaled to fit each; the winner keeps the most image
    pixels (truncated to whole pixels, capped at the original count), then wastes the least
    canvas; the first candidate wins a tie. Small images are scaled up, never left smaller."""
    if max_crops < 1:
        raise ValueError(f"the grid crop strategy needs max_crops >= 1, got {max_crops}")
    best, kept, wasted = (1, 1), -1, float("inf")
    for cols in range(1, max_crops + 1):
        for rows in range(1, max_crops // cols + 1):
            w, h = cols * view, rows * view
            scale = min(w / width, h / height)
            effective = min(int(width * scale) * int(height * scale), width * height)
            waste = w * h - effective
            if effective > kept or (effective == kept and waste < wasted):
                best, kept, wasted = (rows, cols), effective, waste
    return best


def count_image_tokens(grids: list[tuple[int, int]], side: int, row_separator: bool) -> int:
    """Image tokens of an image whose crops form `grids` ((rows, cols) each; the views layout is
    one (1, 1) per view) when a crop gives side x side feature cells; a row separator adds one
    token per feature row. Matches magma.modeling_magma.place_image_tokens."""
    return sum(r * side * (c * side + int(row_separator)) for r, c in grids)


class MagmaImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values", "image_num_views", "image_grid"]

    def __init__(self, image_size: int = 224, max_crops: int = 0,
                 image_mean: tuple[float, ...] = IMAGENET_MEAN,
                 image_std: tuple[float, ...] = IMAGENET_STD,
                 crop_strategy: CropStrategy = "views", **kwargs: Any):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.max_crops = max_crops
        if crop_strategy not in CROP_STRATEGIES:
            raise ValueError(f"crop_strategy {crop_strategy!r}: choose one of {CROP_STRATEGIES}")
        if crop_strategy == "grid" and max_crops < 1:
            raise ValueError(f"crop_strategy 'grid' needs max_crops >= 1 (the largest crop grid), "
                             f"got {max_crops}")
        self.crop_strategy = crop_strategy
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean/image_std must be 3 values each (std > 0), got "
                             f"{list(image_mean)} / {list(image_std)}")
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]

    def num_views(self, width: int, height: int) -> int:
        if self.crop_strategy == "grid":
            rows, cols = release_crop_grid(width, height, self.image_size, self.max_crops)
            return rows * cols
        rows, cols = crop_grid(width, height, self.image_size, self.max_crops)
        return 1 + rows * cols

    def token_grids(self, width: int, height: int) -> list[tuple[int, int]]:
        """The crop grids whose feature maps an image's tokens come from (count_image_tokens)."""
        if self.crop_strategy == "grid":
            return [release_crop_grid(width, height, self.image_size, self.max_crops)]
        return [(1, 1)] * self.num_views(width, height)

    def grid_crops(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int]]:
        """The release's crops of one image: [rows*cols, 3, S, S] normalised, row-major, and
        (rows, cols). Normalises first, then resizes the normalised tensor bilinearly
        (torch, align_corners=False, no antialiasing), as the release does."""
        import torch
        import torch.nn.functional as F

        s = self.image_size
        rows, cols = release_crop_grid(image.width, image.height, s, self.max_crops)
        full = torch.from_numpy(np.ascontiguousarray(self._normalize(image)))
        big = F.interpolate(full[None], size=(rows * s, cols * s), mode="bilinear", align_corners=False)[0]
        crops = big.reshape(3, rows, s, cols, s).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, s, s)
        return crops.numpy(), (rows, cols)

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
        pixel_values, counts, grids = [], [], []
        for image in images:
            if self.crop_strategy == "grid":
                crops, grid = self.grid_crops(to_pil_rgb(image))
                counts.append(len(crops))
                grids.append(grid)
                pixel_values.extend(crops)
                continue
            views = self.views(to_pil_rgb(image))
            counts.append(len(views))
            pixel_values.extend(self._normalize(v) for v in views)
        s = self.image_size
        data = {"pixel_values": np.stack(pixel_values) if pixel_values
                else np.zeros((0, 3, s, s), np.float32),
                "image_num_views": np.asarray(counts, dtype=np.int64)}
        if self.crop_strategy == "grid":
            data["image_grid"] = np.asarray(grids, dtype=np.int64).reshape(-1, 2)
        return BatchFeature(data=data, tensor_type=return_tensors)
