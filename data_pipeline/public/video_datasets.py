"""Trace-of-Mark source types for three public video datasets, read as published:

    ssv2            Something-Something v2 labels JSON + <id>.webm -> ToM samples on each whole clip
    epic_kitchens   EPIC-KITCHENS-100 segments CSV + videos -> ToM samples on each action segment
    ego4d           Ego4D narration.json + <video_uid>.mp4 -> ToM samples on a window around each
                    narration's timestamp

The layouts are parsed by `data_pipeline.public.video_layouts` (one entry per record); here each
annotated window is decoded through `data_pipeline.tom.video` and turned into trace samples by
the shared ToM builder (`tom_samples`), with the label / narration as the instruction.

One work item per annotated window. Skips, counted per reason in the manifest, with a message
naming the annotation file's record and the video: `missing_video`, `unreadable_video`,
`window_outside_video`, `too_short` (fewer than `window` frames after resampling), `bad_record`,
`duplicate_record`, `unsure_narration` (Ego4D), and the ToM reasons (`static_clip`,
`no_foreground`, ...) when no clip of the window gives a trustworthy target. A window longer than
`max_frames` (after resampling) keeps its first `max_frames` frames and is counted under
`dropped: window_truncated`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from magma.layouts.errors import LayoutError
from magma.schema import Sample

from data_pipeline.build.registry import SkipItem, SourceConfig, SourceType, WorkItem, register_source
from data_pipeline.public.video_layouts import (BadRecord, Entry, VideoWindow, read_ego4d, read_epic_kitchens,
                                                read_ssv2)
from data_pipeline.tom.sources import TomOptions, existing_path, require_backend, tom_samples
from data_pipeline.tom.video import (VideoError, VideoInfo, probe_video, read_frames_at, read_video,
                                     sample_indices)

_EPS = 1e-6


class PublicVideoParams(TomOptions):
    path: str  # the annotation file as published (JSON / CSV)
    video_root: str  # folder holding the videos in the dataset's layout
    fps: float | None = Field(default=None, gt=0)  # resample each window to this rate first
    stride: int = Field(default=1, ge=1)  # then keep every stride-th frame
    max_frames: int | None = Field(default=256, ge=1)  # per window, after resampling (memory bound)
    split: str = "train"


class SSv2Params(PublicVideoParams):
    pass


class EpicKitchensParams(PublicVideoParams):
    pass


class Ego4dParams(PublicVideoParams):
    window_s: float = Field(default=2.0, gt=0)  # seconds around each narration timestamp
    passes: list[str] | None = None  # e.g. ["narration_pass_1"]; default every pass in the file


# ---------------------------------------------------------------- windows -> frames

def find_video(root: Path, window: VideoWindow, annotations: str) -> Path:
    """The first of the window's candidate files that exists under `root`."""
    for name in window.videos:
        if (root / name).is_file():
            return root / name
    raise SkipItem("missing_video", f"{annotations}: record {window.item_id!r}: none of {list(window.videos)} "
                   f"under {root}")


def frame_span(window: VideoWindow, info: VideoInfo, window_s: float | None = None,
               where: str = "") -> tuple[int, int]:
    """[first, end) source frames of the annotated window: the frames whose time i/fps lies in
    [start_s, end_s) (a centred window of `window_s` for point annotations, cut at the video's
    ends). Raises SkipItem('window_outside_video')."""
    fps, n = info.fps, info.num_frames  # n == 0: the container does not say; decoding will tell
    where = where or f"record {window.item_id!r} ({info.path})"
    if window.centre_s is not None:
        if window_s is None:
            raise ValueError("a point-in-time annotation needs window_s")
        if n and window.centre_s * fps > n + _EPS:
            raise SkipItem("window_outside_video", f"{where}: timestamp {window.centre_s:.3f}s is past the "
                           f"video's end ({n} frames at {fps:g} fps = {n / fps:.3f}s)")
        start, end = max(0.0, window.centre_s - window_s / 2), window.centre_s + window_s / 2
        first, stop = math.floor(start * fps + _EPS), math.floor(end * fps + _EPS)
        return first, min(stop, n) if n else stop
    if window.start_s is None or window.end_s is None:
        raise ValueError("a whole-clip window has no frame span; decode the clip (read_video)")
    first, stop = math.floor(window.start_s * fps + _EPS), math.floor(window.end_s * fps + _EPS)
    if n and stop > n + 1:  # one frame of slack: the last timestamp may round past the end
        raise SkipItem("window_outside_video", f"{where}: window {window.start_s:.3f}s..{window.end_s:.3f}s = "
                       f"frames {first}..{stop - 1}, but the video has {n} frames at {fps:g} fps "
                       f"({n / fps:.3f}s); is the annotation for another video or a trimmed copy?")
    return first, min(stop, n) if n else stop


def read_window(path: Path, info: VideoInfo, first: int, indices: list[int]) -> np.ndarray:
    """Frames first+i for i in `indices`: one seek to the keyframe before the first of them, and
    only the kept frames are held (a long, subsampled window costs its span, not the file)."""
    times = info.start_s + (first + np.asarray(indices, dtype=np.float64)) / info.fps
    return read_frames_at(path, times)


# ---------------------------------------------------------------- the source types

class _VideoLayoutSource(SourceType):
    """Lists one item per record of the annotation file; `process` decodes the record's window
    and builds ToM samples on it."""

    layout = ""

    def entries(self, p: PublicVideoParams, path: Path) -> list[Entry]:
        raise NotImplementedError

    def window_seconds(self, p: PublicVideoParams) -> float | None:
        return None

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = self.params(cfg)
        path = existing_path(p.path, cfg)
        root = existing_path(p.video_root, cfg)
        if not root.is_dir():
            raise SkipItem("path_not_found", f"source {cfg.name!r}: video_root {root} is not a folder")
        require_backend(p, cfg)
        try:
            entries = self.entries(p, path)
        except LayoutError as exc:
            raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc}") from None
        return [WorkItem(e.item_id, {"bad" if isinstance(e, BadRecord) else "window": e.model_dump()})
                for e in entries]

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p = self.params(cfg)
        if "bad" in item.payload:
            bad = BadRecord(**item.payload["bad"])
            raise SkipItem(bad.reason, bad.message)
        window = VideoWindow(**item.payload["window"])
        root = Path(p.video_root).expanduser()
        video = find_video(root, window, p.path)
        where = f"{p.path}: record {window.item_id!r} ({video})"
        try:
            info = probe_video(video)
        except VideoError as exc:
            raise SkipItem("unreadable_video", f"{where}: {exc}") from None
        if info.fps <= 0:
            raise SkipItem("unreadable_video", f"{where}: the container reports no frame rate")
        try:
            first, stop, keep, frames, truncated = self._decode(window, video, info, p, where)
        except VideoError as exc:
            raise SkipItem("unreadable_video", f"{where}: {exc}") from None
        samples, skipped = tom_samples(frames, window.instruction, p, f"tom/{self.layout}", dataset=self.layout,
                                       episode=window.episode, split=p.split)
        if not samples:
            reason = skipped.most_common(1)[0][0] if skipped else "no_clips"
            raise SkipItem(reason, f"{where}: no clip gave a trace target {dict(skipped)}")
        provenance = {"layout": self.layout, "record": window.item_id, "video": str(video.relative_to(root)),
                      "window_frames": [first, stop], "video_fps": info.fps, **window.meta}
        for s in samples:
            s.frame = first + keep[s.frame or 0]  # tom_samples counted frames of the resampled window
            s.meta.update(provenance)
        if truncated:
            samples[0].meta["_dropped"] = {"window_truncated": 1}
        return samples

    def _decode(self, window: VideoWindow, video: Path, info: VideoInfo, p: PublicVideoParams,
                where: str) -> tuple[int, int, list[int], np.ndarray, bool]:
        """-> (first, end) source frames of the window, the kept offsets in it, their frames, and
        whether max_frames cut the window. Whole clips (SSv2: a few seconds) decode in one pass,
        which needs no frame count from the container (WebM often has none)."""
        whole = window.start_s is None and window.centre_s is None
        if whole:
            all_frames, _ = read_video(video)
            first, stop = 0, len(all_frames)
        else:
            first, stop = frame_span(window, info, self.window_seconds(p), where)
        keep = sample_indices(max(0, stop - first), info.fps, p.fps, p.stride)
        truncated = p.max_frames is not None and len(keep) > p.max_frames
        keep = keep[:p.max_frames] if truncated else keep
        if len(keep) < p.window:
            raise SkipItem("too_short", f"{where}: the window gives {len(keep)} frames (frames {first}..{stop - 1} "
                           f"at {info.fps:g} fps, fps={p.fps}, stride={p.stride}); window needs {p.window}")
        frames = all_frames[keep] if whole else read_window(video, info, first, keep)
        return first, stop, keep, frames, truncated


@register_source("ssv2")
class SSv2Source(_VideoLayoutSource):
    params_model = SSv2Params
    layout = "ssv2"

    def entries(self, p: PublicVideoParams, path: Path) -> list[Entry]:
        return read_ssv2(path)


@register_source("epic_kitchens")
class EpicKitchensSource(_VideoLayoutSource):
    params_model = EpicKitchensParams
    layout = "epic_kitchens"

    def entries(self, p: PublicVideoParams, path: Path) -> list[Entry]:
        return read_epic_kitchens(path)


@register_source("ego4d")
class Ego4dSource(_VideoLayoutSource):
    params_model = Ego4dParams
    layout = "ego4d"

    def entries(self, p: PublicVideoParams, path: Path) -> list[Entry]:
        assert isinstance(p, Ego4dParams)
        return read_ego4d(path, p.passes)

    def window_seconds(self, p: PublicVideoParams) -> float | None:
        assert isinstance(p, Ego4dParams)
        return p.window_s
