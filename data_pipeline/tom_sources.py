"""Trace-of-Mark and robot-action source types for `magma data build`.

    video           folder of videos (+ captions) -> ToM trace samples per clip window
    robot_episodes  recorder-format episodes (magma.episode) -> ToM samples + action samples
    lerobot         a LeRobotDataset v3 folder -> the same samples as robot_episodes
    hdf5            robomimic / LIBERO HDF5 files -> the same samples as robot_episodes

Robot sources compute per-dataset action statistics in `prepare` (over every readable episode)
and return them as {"action_stats": {dataset: stats}}; `process` tokenises actions with them.
Params are validated by the pydantic models below (unknown keys are errors).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from magma.action_tokenizer import ActionStats, ActionTokenizer
from magma.prompts import robot_action_prompt, trace_prompt
from magma.schema import Sample, Turn

from data_pipeline.episodes_io import (HDF5_SUFFIXES, EpisodeError, RobotEpisode, action_stats,
                                       check_episode, list_hdf5_episodes, list_lerobot_episodes,
                                       list_recorder_episodes, read_hdf5_episode,
                                       read_lerobot_episode, read_recorder_episode)
from data_pipeline.sources import SkipItem, SourceConfig, SourceType, WorkItem, register_source
from data_pipeline.tom import TomParams, TomSkip, draw_point_marks, trace_of_mark
from data_pipeline.tracking import TrackerUnavailable, ensure_backend
from data_pipeline.video import VideoError, list_videos, read_video

ACTION_VOCAB = 1 << 20  # the rendered text does not depend on the vocabulary size


class TomOptions(BaseModel):
    """Clip windows and Trace-of-Mark settings shared by every ToM source."""

    model_config = ConfigDict(extra="forbid")

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


class RobotParams(TomOptions):
    path: str
    dataset: str | None = None  # action-statistics name (default: env / folder / file name)
    chunk: int = Field(default=1, ge=1)  # H actions per target
    action_stride: int = Field(default=1, ge=1)
    use_proprio: bool = False  # put the state vector in the prompt
    tom: bool = True  # also emit ToM trace samples on clip windows
    actions: bool = True  # emit the action samples (false: a ToM-only source of the same episodes)
    camera: str | None = None  # LeRobot video key / HDF5 image observation


def _params(model: type[BaseModel], cfg: SourceConfig) -> Any:
    try:
        return model.model_validate(cfg.params)
    except ValidationError as exc:
        raise ValueError(f"source {cfg.name!r} ({cfg.type}): bad params: {exc}") from None


def _require_backend(opts: TomOptions, cfg: SourceConfig) -> None:
    """Checked once in the parent: a missing tracker skips the source with its install hint
    instead of failing every item in the workers."""
    try:
        ensure_backend(opts.backend, opts.cotracker_checkpoint)
    except TrackerUnavailable as exc:
        raise SkipItem("tracker_unavailable", f"source {cfg.name!r}: {exc}") from None


def _existing(path: str, cfg: SourceConfig) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise SkipItem("path not found", f"source {cfg.name!r}: {p} does not exist")
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
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = _params(VideoParams, cfg)
        root = _existing(p.path, cfg)
        _require_backend(p, cfg)
        captions = json.loads(Path(p.captions).read_text()) if p.captions else {}
        items = []
        for v in list_videos(root):
            rel = v.relative_to(root) if root.is_dir() else Path(v.name)
            items.append(WorkItem(str(rel.with_suffix("")).replace("/", "__"),
                                  {"path": str(v), "caption": _caption_for(v, captions)}))
        return items

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p = _params(VideoParams, cfg)
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


# ---------------------------------------------------------------- robot episodes

class _RobotSource(SourceType):
    """Shared prepare/process; subclasses list items and read one episode."""

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        raise NotImplementedError

    def _episode(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        ep = self.read(item, p, load_images)
        if p.dataset:
            ep.dataset = p.dataset
        return check_episode(ep, need_images=load_images)

    def prepare(self, cfg: SourceConfig, items: list[WorkItem]) -> dict[str, Any]:
        p = _params(RobotParams, cfg)
        by_dataset: dict[str, list[np.ndarray]] = {}
        for item in items:
            try:
                ep = self._episode(item, p, load_images=False)
            except EpisodeError:
                continue  # counted when process() meets it
            by_dataset.setdefault(ep.dataset, []).append(ep.actions)
        return {"action_stats": {name: asdict(action_stats(acts))
                                 for name, acts in sorted(by_dataset.items())}}

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p = _params(RobotParams, cfg)
        try:
            ep = self._episode(item, p, load_images=True)
        except EpisodeError as exc:
            raise SkipItem(exc.reason, str(exc)) from None
        stats = context.get("action_stats", {}).get(ep.dataset)
        if stats is None:
            raise SkipItem("no_action_stats", f"dataset {ep.dataset!r} has no statistics")
        samples = robot_action_samples(ep, ActionStats(**stats), p) if p.actions else []
        if p.tom:
            tom, _ = tom_samples(ep.images, ep.instruction, p, f"tom/{ep.dataset}",
                                 dataset=ep.dataset, episode=ep.episode_id, split=ep.split)
            samples.extend(tom)
        return samples


def robot_action_samples(ep: RobotEpisode, stats: ActionStats, p: RobotParams) -> list[Sample]:
    """One sample per step t (every `action_stride`): frame t -> actions[t:t+chunk] as tokens."""
    tok = ActionTokenizer(ACTION_VOCAB, stats)
    out = []
    for t in range(0, len(ep.actions) - p.chunk + 1, p.action_stride):
        proprio = ep.proprio[t].tolist() if (p.use_proprio and ep.proprio is not None) else None
        out.append(Sample(
            id=f"act-{t}", images=[np.ascontiguousarray(ep.images[t])],
            conversation=[Turn("user", robot_action_prompt(ep.instruction, proprio)),
                          Turn("assistant", tok.render(ep.actions[t:t + p.chunk]), "action")],
            source=f"robot/{ep.dataset}", dataset=ep.dataset, episode=ep.episode_id, frame=t,
            meta={"split": ep.split, "chunk": p.chunk}))
    return out


@register_source("robot_episodes")
class RecorderEpisodesSource(_RobotSource):
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = _params(RobotParams, cfg)
        root = _existing(p.path, cfg)
        if p.tom:
            _require_backend(p, cfg)
        return [WorkItem(d.name, str(d)) for d in list_recorder_episodes(root)]

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        return read_recorder_episode(item.payload, load_images=load_images)


@register_source("lerobot")
class LeRobotSource(_RobotSource):
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = _params(RobotParams, cfg)
        root = _existing(p.path, cfg)
        if p.tom:
            _require_backend(p, cfg)
        try:
            return [WorkItem(f"episode_{i:06d}", (str(root), i))
                    for i in list_lerobot_episodes(root)]
        except EpisodeError as exc:
            raise SkipItem(exc.reason, str(exc)) from None

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        root, index = item.payload
        return read_lerobot_episode(root, index, camera=p.camera, load_images=load_images)


@register_source("hdf5")
class Hdf5Source(_RobotSource):
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = _params(RobotParams, cfg)
        root = _existing(p.path, cfg)
        if p.tom:
            _require_backend(p, cfg)
        files = [root] if root.is_file() else sorted(
            f for f in root.rglob("*") if f.suffix.lower() in HDF5_SUFFIXES)
        items = []
        for f in files:
            try:
                demos = list_hdf5_episodes(f)
            except EpisodeError:
                # An unreadable file becomes one item whose processing reports the reason.
                demos = ["__unreadable__"]
            items.extend(WorkItem(f"{f.stem}-{d}", (str(f), d)) for d in demos)
        return items

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        path, demo = item.payload
        return read_hdf5_episode(path, demo, camera=p.camera, load_images=load_images)
