"""Point tracking behind one interface: `track(frames, queries) -> (tracks, visible)`.

Backends:
- "lk" (embedded default): OpenCV pyramidal Lucas-Kanade, frame to frame, with a
  forward-backward consistency check for visibility. No weights.
- "cotracker": the upstream CoTracker3 `cotracker` module (offline or online predictor) with a
  local checkpoint file. Missing package or checkpoint -> `TrackerUnavailable` saying how to
  get it; never a silent fallback to LK.

Shapes: frames [T, H, W, 3] RGB uint8; queries [N, 2] (x, y) pixels in frame 0;
tracks [T, N, 2] float32 pixels; visible [T, N] bool.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

Backend = Literal["lk", "cotracker"]
COTRACKER_CHECKPOINT_ENV = "MAGMA_COTRACKER_CHECKPOINT"
COTRACKER_INSTALL_HINT = (
    "install the CoTracker3 code with `pip install --no-deps autosegmentor==3.0.1` (it vendors "
    "the upstream `cotracker` module) or from github.com/facebookresearch/co-tracker, download a "
    "checkpoint (e.g. scaled_offline.pth) yourself, and pass it with --cotracker-checkpoint or "
    f"${COTRACKER_CHECKPOINT_ENV}; or use --backend lk")


class TrackerUnavailable(RuntimeError):
    """The requested tracking backend cannot run here (message says how to fix it)."""


@dataclass(frozen=True)
class LKParams:
    win_size: int = 21
    max_level: int = 3
    fb_threshold_px: float = 1.0  # forward-backward round-trip error above this -> not visible
    # Appearance check against the frame-0 patch: catches points that an occluder drags along
    # (LK happily follows the texture that slides over them, and the round trip agrees).
    patch_size: int = 9
    min_patch_ncc: float = 0.8
    iterations: int = 30
    epsilon: float = 0.01


def grid_queries(height: int, width: int, grid: int = 15, margin_frac: float = 0.05) -> np.ndarray:
    """`grid` x `grid` points (x, y) evenly spaced inside a margin, row-major: [grid*grid, 2]."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    xs = np.linspace(margin_frac * (width - 1), (1 - margin_frac) * (width - 1), grid)
    ys = np.linspace(margin_frac * (height - 1), (1 - margin_frac) * (height - 1), grid)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def _check_inputs(frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    queries = np.asarray(queries, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    if queries.ndim != 2 or queries.shape[1] != 2:
        raise ValueError(f"queries must be [N, 2] (x, y) in frame 0, got {queries.shape}")
    return frames.astype(np.uint8, copy=False), queries


def _patches(gray: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """[N, size*size] float patches centred at sub-pixel `points`."""
    return np.stack([cv2.getRectSubPix(gray, (size, size), (float(x), float(y))).ravel()
                     for x, y in points]).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(den > 1e-6, (a * b).sum(1) / np.maximum(den, 1e-6), 0.0)


def track_lk(frames: np.ndarray, queries: np.ndarray, params: LKParams = LKParams()
             ) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal LK from each frame to the next; a point that fails the forward-backward check
    (or leaves the image) stays invisible for the rest of the clip (no re-detection)."""
    frames, queries = _check_inputs(frames, queries)
    t_len, h, w = frames.shape[:3]
    n = len(queries)
    tracks = np.zeros((t_len, n, 2), np.float32)
    visible = np.zeros((t_len, n), bool)
    tracks[0] = queries
    visible[0] = True
    if n == 0:
        return tracks, visible
    lk = dict(winSize=(params.win_size, params.win_size), maxLevel=params.max_level,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, params.iterations,
                        params.epsilon))
    prev = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY)
    templates = _patches(prev, queries, params.patch_size) if params.min_patch_ncc > -1 else None
    alive = np.ones(n, bool)
    for t in range(1, t_len):
        cur = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
        p0 = tracks[t - 1].reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **lk)
        p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
        p1, p0b = p1.reshape(-1, 2), p0b.reshape(-1, 2)
        fb_err = np.linalg.norm(p0b - tracks[t - 1], axis=1)
        inside = (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb_err < params.fb_threshold_px) & inside
        ok &= np.isfinite(p1).all(axis=1)
        if templates is not None:
            now = _patches(cur, np.nan_to_num(p1), params.patch_size)
            ok &= _ncc(templates, now) >= params.min_patch_ncc
        alive &= ok
        # Lost points keep their last position so downstream code never sees garbage values.
        tracks[t] = np.where(alive[:, None], p1, tracks[t - 1])
        visible[t] = alive
        prev = cur
    return tracks, visible


def _cotracker_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    path = checkpoint or os.environ.get(COTRACKER_CHECKPOINT_ENV)
    if not path:
        raise TrackerUnavailable(f"cotracker backend needs a local checkpoint file; "
                                 f"{COTRACKER_INSTALL_HINT}")
    if not Path(path).is_file():
        raise TrackerUnavailable(f"cotracker checkpoint {path} does not exist; "
                                 f"{COTRACKER_INSTALL_HINT}")
    return Path(path)


def _set_resolution(predictor: object, resolution: tuple[int, int] | None) -> None:
    if resolution is not None:
        predictor.interp_shape = tuple(resolution)  # type: ignore[attr-defined]
        predictor.model.model_resolution = tuple(resolution)  # type: ignore[attr-defined]


def track_cotracker(frames: np.ndarray, queries: np.ndarray,
                    checkpoint: str | os.PathLike | None = None, online: bool = False,
                    device: str = "cpu", window_len: int | None = None,
                    model_resolution: tuple[int, int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """CoTracker3 (offline: whole clip at once; online: sliding windows) on a local checkpoint.

    `model_resolution` (H, W) overrides the resolution frames are resized to (the checkpoints'
    default is 384x512); smaller is faster and less accurate."""
    frames, queries = _check_inputs(frames, queries)
    try:
        import torch
        from cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor
    except ImportError as exc:
        raise TrackerUnavailable(f"cotracker backend: cannot import the `cotracker` module "
                                 f"({exc}); {COTRACKER_INSTALL_HINT}") from exc
    ckpt = str(_cotracker_checkpoint(checkpoint))
    t_len = len(frames)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(device)  # B T C H W
    q = torch.cat([torch.zeros(len(queries), 1), torch.from_numpy(queries)], 1)[None].to(device)
    if not online:
        model = CoTrackerPredictor(checkpoint=ckpt, offline=True,
                                   window_len=window_len or 60).to(device)
        _set_resolution(model, model_resolution)
        tracks, vis = model(video, queries=q)
    else:
        model = CoTrackerOnlinePredictor(checkpoint=ckpt, window_len=window_len or 16).to(device)
        _set_resolution(model, model_resolution)
        step = model.step
        # The online model consumes windows of 2*step frames every step: pad with the last frame.
        need = max(2 * step, int(np.ceil(t_len / step)) * step + step)
        pad = video[:, -1:].expand(-1, need - t_len, -1, -1, -1)
        video = torch.cat([video, pad], 1)
        model(video_chunk=video, is_first_step=True, queries=q)
        tracks = vis = None
        for start in range(0, video.shape[1] - step, step):
            tracks, vis = model(video_chunk=video[:, start:start + 2 * step])
    tracks_np = tracks[0, :t_len].detach().cpu().numpy().astype(np.float32)
    vis_np = vis[0, :t_len].detach().cpu().numpy().astype(bool)
    return tracks_np, vis_np


def ensure_backend(backend: Backend, checkpoint: str | os.PathLike | None = None) -> None:
    """Raises TrackerUnavailable (with how to fix it) before any work starts."""
    if backend == "lk":
        return
    if backend != "cotracker":
        raise ValueError(f"unknown tracking backend {backend!r}; choose 'lk' or 'cotracker'")
    try:
        import cotracker.predictor  # noqa: F401
    except ImportError as exc:
        raise TrackerUnavailable(f"cotracker backend: cannot import the `cotracker` module "
                                 f"({exc}); {COTRACKER_INSTALL_HINT}") from exc
    _cotracker_checkpoint(checkpoint)


def track(frames: np.ndarray, queries: np.ndarray, backend: Backend = "lk",
          **options: object) -> tuple[np.ndarray, np.ndarray]:
    """Tracks `queries` (frame-0 points) through `frames` -> (tracks [T,N,2], visible [T,N])."""
    if backend == "lk":
        return track_lk(frames, queries, **options)  # type: ignore[arg-type]
    if backend == "cotracker":
        return track_cotracker(frames, queries, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown tracking backend {backend!r}; choose 'lk' or 'cotracker'")
