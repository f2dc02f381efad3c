"""Decode client images (base64 PNG/JPEG or raw bytes) with size limits, into RGB PIL images."""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from serve.errors import ServeError


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_side: int = 8192


def decode_image(data: str | bytes, limits: ImageLimits = ImageLimits(), field: str = "image") -> Image.Image:
    """base64 text (optionally a data: URL) or raw bytes -> RGB image; ServeError(400/413) if bad."""
    if isinstance(data, str):
        text = data.split(",", 1)[1] if data.startswith("data:") else data
        if len(text) > limits.max_bytes * 4 // 3 + 8:
            raise ServeError(413, "image_too_large", f"{field}: more than {limits.max_bytes} bytes")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ServeError(400, "bad_image", f"{field}: not valid base64") from None
    elif isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
    else:
        raise ServeError(400, "bad_image", f"{field}: expected base64 text or bytes")
    if len(raw) > limits.max_bytes:
        raise ServeError(413, "image_too_large", f"{field}: more than {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            if img.format not in ("PNG", "JPEG"):
                raise ServeError(400, "bad_image", f"{field}: {img.format} is not PNG or JPEG")
            w, h = img.size
            if w * h > limits.max_pixels or max(w, h) > limits.max_side:
                raise ServeError(413, "image_too_large",
                                 f"{field}: {w}x{h} exceeds {limits.max_pixels} pixels or side {limits.max_side}")
            if w < 1 or h < 1:
                raise ServeError(400, "bad_image", f"{field}: empty image")
            img.load()
            return img.convert("RGB")
    except ServeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServeError(413, "image_too_large", f"{field}: decompression bomb") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise ServeError(400, "bad_image", f"{field}: cannot decode ({type(exc).__name__})") from None


def encode_png_b64(image) -> str:
    """PIL image or [H, W, 3] uint8 array -> base64 PNG (used by tests, the client, the agent)."""
    import numpy as np

    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
