"""Synthetic clips with known motion: textured squares moving on a textured background, seen by
a camera that may pan and zoom. Ground truth is exact because objects move by whole pixels in
world space and the camera is an affine map applied to the whole world."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

WORLD = 384  # world canvas side; the 256x256 view starts centred in it


def _texture(rng: np.random.Generator, h: int, w: int, sigma: float = 1.5) -> np.ndarray:
    noise = rng.uniform(0, 255, size=(h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), sigma) * 1.6 - 70, 0, 255).astype(np.uint8)


@dataclass
class SyntheticClip:
    frames: np.ndarray  # [T, H, W, 3]
    cameras: np.ndarray  # [T, 2, 3] world -> image affine maps
    boxes: list[tuple[int, int, int, int]]  # object boxes (x0, y0, x1, y1) in world at t = 0
    velocities: list[tuple[int, int]]  # world pixels per frame

    def object_of(self, points: np.ndarray) -> np.ndarray:
        """Index of the object under each frame-0 image point, -1 for background."""
        world = self.to_world(points, 0)
        out = np.full(len(points), -1)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            inside = (world[:, 0] >= x0) & (world[:, 0] < x1) & (world[:, 1] >= y0) & (world[:, 1] < y1)
            out[inside] = i
        return out

    def to_world(self, points: np.ndarray, t: int) -> np.ndarray:
        inv = cv2.invertAffineTransform(self.cameras[t])
        return points @ inv[:, :2].T + inv[:, 2]

    def ground_truth(self, queries: np.ndarray) -> np.ndarray:
        """[T, N, 2] true image positions of frame-0 queries."""
        world0 = self.to_world(queries, 0)
        owner = self.object_of(queries)
        out = []
        for t in range(len(self.frames)):
            shift = np.array([self.velocities[o] if o >= 0 else (0, 0) for o in owner], float) * t
            w = world0 + shift
            out.append(w @ self.cameras[t][:, :2].T + self.cameras[t][:, 2])
        return np.stack(out).astype(np.float32)

    def object_masks(self, t: int, dilate: int = 0) -> np.ndarray:
        """[H, W] int map of the object index in frame t (-1 = background)."""
        h, w = self.frames.shape[1:3]
        ys, xs = np.mgrid[0:h, 0:w]
        pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
        world = self.to_world(pts, t)
        out = np.full(h * w, -1)
        for i, (x0, y0, x1, y1) in enumerate(self.boxes):
            vx, vy = self.velocities[i]
            x0, x1 = x0 + vx * t - dilate, x1 + vx * t + dilate
            y0, y1 = y0 + vy * t - dilate, y1 + vy * t + dilate
            inside = (world[:, 0] >= x0) & (world[:, 0] < x1) & (world[:, 1] >= y0) & (world[:, 1] < y1)
            out[inside] = i
        return out.reshape(h, w)


def synthetic_clip(seed: int = 0, frames: int = 16, size: int = 256, pan: tuple[float, float] = (0, 0),
                   zoom: float = 0.0, velocities: list[tuple[int, int]] | None = None) -> SyntheticClip:
    """`pan` image pixels per frame, `zoom` relative scale change per frame about the centre."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, WORLD, WORLD, sigma=2.0)
    velocities = velocities if velocities is not None else [(3, 1), (-2, 2)]
    origin = (WORLD - size) // 2
    side = max(16, 56 * size // 256)
    boxes = []
    for i in range(len(velocities)):
        x0 = origin + (40 + 110 * i) * size // 256
        y0 = origin + (50 + 70 * i) * size // 256
        boxes.append((x0, y0, x0 + side, y0 + side))
    sprites = [_texture(rng, side, side, sigma=1.2) for _ in boxes]
    out, cams = [], []
    c = size / 2.0
    for t in range(frames):
        world = background.copy()
        for (x0, y0, x1, y1), (vx, vy), spr in zip(boxes, velocities, sprites):
            world[y0 + vy * t:y1 + vy * t, x0 + vx * t:x1 + vx * t] = spr
        s = (1.0 + zoom) ** t
        tx, ty = -origin - pan[0] * t, -origin - pan[1] * t
        # world -> view: translate by the camera position, then zoom about the view centre
        cam = np.array([[s, 0, s * tx + c * (1 - s)], [0, s, s * ty + c * (1 - s)]], np.float64)
        out.append(cv2.warpAffine(world, cam, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT))
        cams.append(cam)
    return SyntheticClip(np.stack(out), np.stack(cams), boxes, velocities)
