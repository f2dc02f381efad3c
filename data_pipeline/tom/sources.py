"""Trace-of-Mark source types for `magma data build`, and the ToM options and sample builder
that the robot-episode sources (data_pipeline.robot.sources) share.

    video           folder of videos (+ captions) -> ToM trace samples per clip window

Params are validated by the pydantic models below (unknown keys are errors).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from magma.config_io import StrictModel
from magma.prompts import trace_prompt
from magma.schema import Sample, Turn

from data_pipeline.build.registry import (SkipItem, SourceConfig, SourceType, WorkItem, parse_params,
                                          register_source)
from data_pipeline.tom.traces import TomParams, TomSkip, draw_point_marks, trace_of_mark
from data_pipeline.tom.tracking import TrackerUnavailable, ensure_backend
from data_pipeline.tom.video import VideoError, list_videos, read_video

ACTION_VOCAB = 1 << 20  # the rendered text does not depend on the vocabulary size


class TomOptions(StrictModel):
    """Clip windows and Trace-of-Mark settings shared by every ToM source."""

    window: int = Field(default=16, ge=2)  # frames per clip
    window_stride: int = Field(default=16, ge=1)
    n_future: int = Field(default=8, ge=1)
    grid: int = Field(default=15, ge=2)
    fg_clusters: int = Field(default=3, ge=1)
    bg_clusters: int = Field(default=6, ge=0)
    backend: Literal["lk", "cotracker"] = "lk"
    cotracker_checkpoint: str | None = None
    max_clips: int | None = Field(default=None, ge=1)  # per video / episode

    def tom_params(self) -> TomParams:
        return TomParams(grid=self.grid, n_future=min(self.n_future, self.window - 1),
                         fg_clusters=self.fg_clusters, bg_clusters=self.bg_clusters)

    def track_options(self) -> dict[str, Any]:
        return {"checkpoint": self.cotracker_checkpoint} if self.backend == "cotracker" else {}


class VideoParams(TomOptions):
    path: str
    captions: str | None = None  # JSON {video file stem: caption}; else <stem>.txt beside it
    fps: float | None = Field(default=None, gt=0)  # resample to this rate before windows
    stride: int = Field(default=1, ge=1)
    max_frames: int | None = Field(default=None, ge=1)  # bound memory on long videos


def require_backend(opts: TomOptions, cfg: SourceConfig) -> None:
    """Checked once in the parent: a missing tracker skips the source with its install hint
    instead of failing every item in the workers."""
    try:
        ensure_backend(opts.backend, opts.cotracker_checkpoint)
    except TrackerUnavailable as exc:
        raise SkipItem("tracker_unavailable", f"source {cfg.name!r}: {exc}") from None


def existing_path(path: str, cfg: SourceConfig) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SkipItem("path_not_found", f"source {cfg.name!r}: {p} does not exist")
    return p


# ---------------------------------------------------------------- ToM samples

def tom_samples(frames: np.ndarray, instruction: str, opts: TomOptions, source: str,
                dataset: str = "", episode: str | None = None, split: str = "train",
                frame_offset: int = 0) -> tuple[list[Sample], Counter]:
    """ToM samples over the clip windows of `frames`; returns (samples, skip reasons of
    windows that gave no trustworthy target)."""
    samples: list[Sample] = []
    skipped: Counter = Counter()
    params = opts.tom_params()
    starts = range(0, len(frames) - opts.window + 1, opts.window_stride)
    if len(frames) < opts.window:
        skipped["too_short"] += 1
    for s in starts:
        if opts.max_clips is not None and len(samples) >= opts.max_clips:
            break
        clip = frames[s:s + opts.window]
        try:
            result = trace_of_mark(clip, params, opts.backend, **opts.track_options())
            if not result.foreground_marks:
                raise TomSkip("no_foreground", "nothing moves against the background")
            target = result.target_text(params.n_future)
        except TomSkip as exc:
            skipped[exc.reason] += 1
            continue
        image = draw_point_marks(clip[0], result.marks)
        samples.append(Sample(
            id=f"tom-{s}", images=[image],
            conversation=[Turn("user", trace_prompt(instruction, params.n_future)),
                          Turn("assistant", target, "spatial")],
            source=source, dataset=dataset, episode=episode, frame=frame_offset + s,
            meta={"split": split, "marks": [m.to_dict() for m in result.marks],
                  "foreground_marks": result.foreground_marks,
                  "camera_moving": result.camera_moving, "n_future": params.n_future}))
    return samples, skipped


# ---------------------------------------------------------------- videos

def _caption_for(video: Path, captions: dict[str, str]) -> str:
    if video.stem in captions:
        return captions[video.stem]
    side = video.with_suffix(".txt")
    return side.read_text().strip() if side.is_file() else ""


@register_source("video")
class VideoSource(SourceType):
    params_model = VideoParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = parse_params(VideoParams, cfg)
        root = existing_path(p.path, cfg)
        require_backend(p, cfg)
        captions = json.loads(Path(p.captions).read_text()) if p.captions else {}
        items = []
        for v in list_videos(root):
            rel = v.relative_to(root) if root.is_dir() else Path(v.name)
            items.append(WorkItem(str(rel.with_suffix("")).replace("/", "__"),
                                  {"path": str(v), "caption": _caption_for(v, captions)}))
        return items

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p = parse_params(VideoParams, cfg)
        try:
            frames, _ = read_video(item.payload["path"], target_fps=p.fps, stride=p.stride,
                                   max_frames=p.max_frames)
        except VideoError as exc:
            raise SkipItem("unreadable_video", str(exc)) from None
        samples, skipped = tom_samples(frames, item.payload["caption"], p, "tom/video",
                                       episode=item.item_id)
        if not samples:
            reason = skipped.most_common(1)[0][0] if skipped else "no_clips"
            raise SkipItem(reason, f"{item.payload['path']}: {dict(skipped)}")
        return samples


