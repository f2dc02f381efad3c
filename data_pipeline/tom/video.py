"""Video reading with OpenCV: whole files, frame sampling by fps/stride, and clip windows.

Frames are RGB uint8 arrays [T, H, W, 3]. A file OpenCV cannot open or decode raises
`VideoError` (a ValueError) with the path, so callers can count it as a skip reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class VideoError(ValueError):
    """An unreadable, truncated or empty video (the message names the file)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int  # as reported by the container; may overstate a truncated file
    width: int
    height: int


def probe_video(path: str | Path) -> VideoInfo:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open this video (missing, truncated or "
                             "unsupported codec)")
        return VideoInfo(path=str(path), fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                         num_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                         width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def sample_indices(num_frames: int, src_fps: float, target_fps: float | None = None,
                   stride: int = 1) -> list[int]:
    """Frame indices that resample `num_frames` at `src_fps` to `target_fps` (if given), then
    keep every `stride`-th one."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if target_fps and src_fps > 0 and target_fps < src_fps:
        step = src_fps / target_fps
        idx = sorted({int(round(i * step)) for i in range(int(num_frames / step) + 1)})
        idx = [i for i in idx if i < num_frames]
    else:
        idx = list(range(num_frames))
    return idx[::stride]


def read_video(path: str | Path, target_fps: float | None = None, stride: int = 1,
               max_frames: int | None = None, start_s: float = 0.0,
               end_s: float | None = None) -> tuple[np.ndarray, float]:
    """Decodes `path` sequentially (robust to bad seek tables) -> (frames [T,H,W,3] RGB, fps of
    the returned frames). Raises VideoError when nothing decodes."""
    info = probe_video(path)
    src_fps = info.fps if info.fps > 0 else 30.0
    cap = cv2.VideoCapture(str(path))
    decoded: list[np.ndarray] = []
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            t = i / src_fps
            i += 1
            if t + 1e-9 < start_s:
                continue
            if end_s is not None and t >= end_s - 1e-9:
                break
            decoded.append(bgr)
    finally:
        cap.release()
    if not decoded:
        raise VideoError(f"{path}: no frame could be decoded (truncated or corrupt file)")
    keep = sample_indices(len(decoded), src_fps, target_fps, stride)
    if max_frames is not None:
        keep = keep[:max_frames]
    frames = np.stack([cv2.cvtColor(decoded[k], cv2.COLOR_BGR2RGB) for k in keep])
    out_fps = src_fps if not target_fps or target_fps >= src_fps else target_fps
    return frames, out_fps / stride


def clip_windows(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) windows of `length` frames every `stride` frames (none if too short)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    return [(s, s + length) for s in range(0, num_frames - length + 1, stride)]


def list_videos(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def read_frame_range(path: str | Path, start: int, count: int) -> np.ndarray:
    """Frames [start, start+count) decoded sequentially (exact for concatenated episode videos
    whose seek tables are unreliable). Raises VideoError if fewer frames decode."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open this video (missing, truncated or "
                         "unsupported codec)")
    out: list[np.ndarray] = []
    try:
        i = 0
        while len(out) < count:
            ok, bgr = cap.read()
            if not ok:
                break
            if i >= start:
                out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    if len(out) < count:
        raise VideoError(f"{path}: wanted frames {start}..{start + count - 1} but only "
                         f"{start + len(out)} frames decode (truncated file?)")
    return np.stack(out)
