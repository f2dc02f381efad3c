"""Trace-of-Mark: from point tracks over a clip to marks and their future traces.

Recipe (Magma): track a grid; if most tracks move, the camera moved, so fit a homography per
frame with RANSAC (frame t -> frame 0) and remove it; split tracks into foreground/background
by mean motion; K-means each group (a few foreground clusters, about twice as many background);
one representative track per cluster becomes a mark; the target is the foreground marks'
next positions as text (`magma.codecs.render_traces`, normalised points).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from magma.codecs import MarkTrace, normalize_point, render_traces
from magma.marks import Mark

from data_pipeline.build.skips import SkipItem
from data_pipeline.tom.tracking import Backend, grid_queries, track


@dataclass(frozen=True)
class TomParams:
    grid: int = 15
    n_future: int = 8  # positions after frame 0 rendered in the target
    fg_clusters: int = 3
    bg_clusters: int = 6  # about twice the foreground clusters
    moving_px: float = 2.0  # a track "moves" if its mean displacement exceeds this
    global_motion_fraction: float = 0.5  # more moving tracks than this -> camera motion
    ransac_reproj_px: float = 2.0
    min_cluster_fraction: float = 0.1  # smaller clusters (of their group) are outliers, no mark
    static_px: float = 0.5  # max motion of every track below this -> static clip
    black_level: float = 8.0  # mean intensity below this -> black clip
    seed: int = 0
    mark_radius: int = 6


class TomSkip(SkipItem):
    """A clip that yields no trustworthy target; `reason` is a short counted key."""


@dataclass
class TomResult:
    tracks: np.ndarray  # [T, N, 2] pixels
    visible: np.ndarray  # [T, N] bool
    tracks_compensated: np.ndarray  # [T, N, 2], camera motion removed (frame 0 as reference)
    foreground: np.ndarray  # [N] bool
    camera_moving: bool
    homographies: np.ndarray  # [T, 3, 3] frame t -> frame 0 (identity when no camera motion)
    marks: list[Mark] = field(default_factory=list)  # all marks, ids 1.. in reading order
    mark_tracks: dict[int, int] = field(default_factory=dict)  # mark id -> track index
    foreground_marks: list[int] = field(default_factory=list)  # mark ids on moving things
    width: int = 0
    height: int = 0

    def traces(self, n_future: int, include_background: bool = False) -> list[MarkTrace]:
        """Marks' positions at frames 1..n_future, normalised, from the compensated tracks."""
        ids = [m.id for m in self.marks] if include_background else self.foreground_marks
        out = []
        for mid in ids:
            tr = self.tracks_compensated[1:n_future + 1, self.mark_tracks[mid]]
            out.append(MarkTrace(mid, tuple(normalize_point(float(x), float(y), self.width,
                                                            self.height) for x, y in tr)))
        return out

    def target_text(self, n_future: int, include_background: bool = False) -> str:
        return render_traces(self.traces(n_future, include_background))


def _apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), h).reshape(-1, 2)


def _displacement(tracks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[N] mean distance from the frame-0 position over the frames where a track is visible."""
    d = np.linalg.norm(tracks - tracks[:1], axis=2)
    return (d * visible).sum(0) / np.maximum(visible.sum(0), 1)


def compensate_camera(tracks: np.ndarray, visible: np.ndarray, params: TomParams
                      ) -> tuple[np.ndarray, np.ndarray, bool]:
    """-> (compensated tracks, homographies t->0, camera_moving). Compensation runs only when
    most tracks move; RANSAC then treats the (moving) foreground as outliers."""
    t_len, n = tracks.shape[:2]
    eye = np.repeat(np.eye(3)[None], t_len, 0)
    moving = _displacement(tracks, visible) > params.moving_px
    if n < 8 or moving.mean() <= params.global_motion_fraction:
        return tracks.copy(), eye, False
    comp = tracks.astype(np.float64).copy()
    homs = eye.copy()
    for t in range(1, t_len):
        ok = visible[t] & visible[0]
        if ok.sum() < 8:
            # Too few points to fit: reuse the previous frame's model rather than guess anew.
            homs[t] = homs[t - 1]
        else:
            h, _ = cv2.findHomography(tracks[t, ok].astype(np.float64),
                                      tracks[0, ok].astype(np.float64), cv2.RANSAC,
                                      params.ransac_reproj_px)
            homs[t] = h if h is not None else homs[t - 1]
        comp[t] = _apply_homography(homs[t], tracks[t])
    return comp.astype(np.float32), homs, True


def _kmeans_representatives(features: np.ndarray, idx: np.ndarray, k: int, seed: int,
                            min_fraction: float = 0.0) -> list[int]:
    """Cluster rows `idx` of `features` into k groups; return the track closest to each centre
    of every cluster holding at least `min_fraction` of the rows (tiny ones are outliers)."""
    k = min(k, len(idx))
    if k <= 0:
        return []
    data = features[idx].astype(np.float32)
    if k == len(idx):
        return [int(i) for i in idx]
    min_size = max(1, int(np.ceil(min_fraction * len(idx))))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 50, 0.1)
    _, labels, centres = cv2.kmeans(data, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    reps = []
    for c in range(k):
        members = np.flatnonzero(labels.ravel() == c)
        if len(members) < min_size:
            continue
        dist = np.linalg.norm(data[members] - centres[c], axis=1)
        reps.append(int(idx[members[np.argmin(dist)]]))
    return reps


@dataclass
class MotionAnalysis:
    tracks_compensated: np.ndarray  # [T, N, 2]
    homographies: np.ndarray  # [T, 3, 3] frame t -> frame 0
    camera_moving: bool
    motion: np.ndarray  # [N] mean compensated displacement (px)
    foreground: np.ndarray  # [N] bool


def analyse_motion(tracks: np.ndarray, visible: np.ndarray, params: TomParams = TomParams()
                   ) -> MotionAnalysis:
    """Camera compensation plus the foreground/background split by mean motion."""
    comp, homs, camera_moving = compensate_camera(tracks, visible, params)
    motion = _displacement(comp, visible)
    return MotionAnalysis(comp.astype(np.float32), homs, camera_moving, motion,
                          motion > params.moving_px)


def check_clip(frames: np.ndarray, params: TomParams, n_needed: int) -> None:
    """Raises TomSkip for clips that cannot give a target: wrong shape, too short, black."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TomSkip("bad_frames", f"frames must be [T, H, W, 3], got {frames.shape}")
    if len(frames) < n_needed:
        raise TomSkip("too_short", f"{len(frames)} frames, need {n_needed}")
    if float(frames.mean()) < params.black_level:
        raise TomSkip("black_clip", "mean intensity below the black level")


def trace_of_mark(frames: np.ndarray, params: TomParams = TomParams(), backend: Backend = "lk",
                  tracks: tuple[np.ndarray, np.ndarray] | None = None,
                  **track_options: object) -> TomResult:
    """Frames [T, H, W, 3] -> marks on frame 0 and their tracks. Raises TomSkip on clips that give
    no trustworthy target (too short, black, static, nothing tracked)."""
    frames = np.asarray(frames)
    check_clip(frames, params, params.n_future + 1)
    h, w = frames.shape[1:3]
    if tracks is None:
        tracks_px, visible = track(frames, grid_queries(h, w, params.grid), backend,
                                   **track_options)
    else:
        tracks_px, visible = tracks
    analysis = analyse_motion(tracks_px, visible, params)
    comp, motion, foreground = analysis.tracks_compensated, analysis.motion, analysis.foreground
    raw_motion = _displacement(tracks_px, visible)
    if raw_motion.max(initial=0.0) < params.static_px:
        raise TomSkip("static_clip", "no tracked point moves")
    # A mark needs a known position in every target frame.
    reliable = visible[:params.n_future + 1].all(0)
    if not reliable.any():
        raise TomSkip("no_tracks", "no point stays visible over the target frames")
    # K-means on whole compensated trajectories groups points that sit and move together.
    features = comp.transpose(1, 0, 2).reshape(len(motion), -1)
    fg_idx = np.flatnonzero(foreground & reliable)
    bg_idx = np.flatnonzero(~foreground & reliable)
    fg_reps = _kmeans_representatives(features, fg_idx, params.fg_clusters, params.seed,
                                      params.min_cluster_fraction)
    bg_reps = _kmeans_representatives(features, bg_idx, params.bg_clusters, params.seed + 1,
                                      params.min_cluster_fraction)
    reps = fg_reps + bg_reps
    # Number marks in reading order so that an id says nothing about foreground/background.
    order = sorted(reps, key=lambda i: (round(float(tracks_px[0, i, 1]) / 16),
                                        float(tracks_px[0, i, 0])))
    r = params.mark_radius
    marks, mark_tracks, fg_marks = [], {}, []
    for mid, ti in enumerate(order, start=1):
        x, y = (float(v) for v in tracks_px[0, ti])
        role = "foreground" if ti in fg_reps else "background"
        marks.append(Mark(mid, (x - r, y - r, x + r, y + r), text="", role=role))
        mark_tracks[mid] = int(ti)
        if role == "foreground":
            fg_marks.append(mid)
    return TomResult(tracks_px.astype(np.float32), visible, comp, foreground,
                     analysis.camera_moving, analysis.homographies, marks, mark_tracks, fg_marks,
                     w, h)


# ---------------------------------------------------------------- drawing

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def draw_point_marks(image: np.ndarray, marks: list[Mark], radius: int = 5) -> np.ndarray:
    """Numbered dots at mark centres (ToM marks are points, not boxes)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    for m in marks:
        cx, cy = (int(round(v)) for v in m.centre)
        colour = _PALETTE[m.id % len(_PALETTE)]
        cv2.circle(out, (cx, cy), radius, colour, -1, cv2.LINE_AA)
        cv2.circle(out, (cx, cy), radius, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(out, str(m.id), (cx + radius + 1, cy - radius), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(out, str(m.id), (cx + radius + 1, cy - radius), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, colour, 1, cv2.LINE_AA)
    return out


def render_trace_overlay(image: np.ndarray, tracks: np.ndarray, marks: list[Mark],
                         mark_tracks: dict[int, int] | None = None, n_future: int | None = None
                         ) -> np.ndarray:
    """Marks plus their traces (polylines over `tracks` [T, N, 2]) drawn on `image` for
    inspection. `mark_tracks` maps mark id -> track column (default: column = position in
    `marks`)."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    stop = None if n_future is None else n_future + 1
    for k, m in enumerate(marks):
        col = mark_tracks[m.id] if mark_tracks is not None else k
        pts = np.round(tracks[:stop, col]).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], False, _PALETTE[m.id % len(_PALETTE)], 2, cv2.LINE_AA)
        cv2.circle(out, tuple(int(v) for v in pts[-1, 0]), 3, (255, 255, 255), -1, cv2.LINE_AA)
    return draw_point_marks(out, marks)


def tom_overlay(frames: np.ndarray, result: TomResult, n_future: int | None = None) -> np.ndarray:
    """First frame with all marks and the foreground marks' compensated traces."""
    fg = [m for m in result.marks if m.id in result.foreground_marks]
    bg = [m for m in result.marks if m.id not in result.foreground_marks]
    img = render_trace_overlay(frames[0], result.tracks_compensated, fg, result.mark_tracks,
                               n_future)
    return draw_point_marks(img, bg)
