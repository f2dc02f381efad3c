"""Robot-episode source types for `magma data build`.

    robot_episodes  recorder-format episodes (magma.episode) -> ToM samples + action samples
    lerobot         a LeRobotDataset v3 folder -> the same samples as robot_episodes
    hdf5            robomimic / LIBERO HDF5 files -> the same samples as robot_episodes

Robot sources compute per-dataset action statistics in `prepare` (over every readable episode)
and return them as {"action_stats": {dataset: stats}}; `process` tokenises actions with them.
A source that emits action samples also returns {"inference": {dataset: {"chunk", "use_proprio",
"action_dim", "proprio_dim"}}} (magma.inference_settings.ActionSettings): what its prompts and
targets were built with, which the manifest carries into every checkpoint trained on it.
Params are validated by `RobotParams` (unknown keys are errors). `unnormalized_dims` (e.g. [6] or
[-1], the gripper) leaves those action dimensions unnormalised, as OpenVLA's
`action_normalization_mask` and Magma do; the statistics record it as `mask` (ActionStats.mask),
which the action tokenizer, the checkpoint and serving apply.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from magma.action_tokenizer import ActionStats, ActionTokenizer
from magma.config_io import ConfigError
from magma.prompts import robot_action_prompt
from magma.schema import Sample, Turn

from data_pipeline.build.registry import (SkipItem, SourceConfig, SourceType, WorkItem, parse_params,
                                          register_source)
from data_pipeline.robot.episodes import (HDF5_SUFFIXES, EpisodeError, RobotEpisode, action_stats,
                                          check_episode, list_hdf5_episodes, list_recorder_episodes,
                                          read_hdf5_episode, read_recorder_episode)
from data_pipeline.robot.lerobot import (check_camera_decodes, load_lerobot_meta, read_lerobot_episode,
                                         resolve_camera)
from data_pipeline.tom.sources import (ACTION_VOCAB, TomOptions, existing_path, require_backend,
                                       tom_samples)


class RobotParams(TomOptions):
    path: str
    dataset: str | None = None  # action-statistics name (default: env / folder / file name)
    chunk: int = Field(default=1, ge=1)  # H actions per target
    action_stride: int = Field(default=1, ge=1)
    use_proprio: bool = False  # put the state vector in the prompt
    tom: bool = True  # also emit ToM trace samples on clip windows
    actions: bool = True  # emit the action samples (false: a ToM-only source of the same episodes)
    camera: str | None = None  # LeRobot video key (default: the first) / HDF5 image observation
    # Action dimensions left unnormalised (negative counts from the end: [-1] is the last).
    unnormalized_dims: list[int] = Field(default_factory=list)


# ---------------------------------------------------------------- robot episodes

class _RobotSource(SourceType):
    """Shared prepare/process; subclasses list items and read one episode."""

    params_model = RobotParams

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        raise NotImplementedError

    def checked_root(self, cfg: SourceConfig) -> Path:
        """The source's `path`, checked to exist, with the tracker checked when ToM samples are asked for."""
        p = parse_params(RobotParams, cfg)
        root = existing_path(p.path, cfg)
        if p.tom:
            require_backend(p, cfg)
        return root

    def _episode(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        ep = self.read(item, p, load_images)
        if p.dataset:
            ep.dataset = p.dataset
        return check_episode(ep, need_images=load_images)

    def prepare(self, cfg: SourceConfig, items: list[WorkItem]) -> dict[str, Any]:
        p = parse_params(RobotParams, cfg)
        by_dataset: dict[str, list[np.ndarray]] = {}
        proprio_dims: dict[str, set[int]] = {}
        for item in items:
            try:
                ep = self._episode(item, p, load_images=False)
            except EpisodeError:
                continue  # counted when process() meets it
            by_dataset.setdefault(ep.dataset, []).append(ep.actions)
            dims = proprio_dims.setdefault(ep.dataset, set())
            if ep.proprio is not None:
                dims.add(int(ep.proprio.shape[1]))
        context: dict[str, Any] = {"action_stats": {
            name: asdict(action_stats(acts, normalize_mask(p, acts[0].shape[1], name, cfg)))
            for name, acts in sorted(by_dataset.items())}}
        if p.actions:
            context["inference"] = {name: inference_entry(p, by_dataset[name][0].shape[1], proprio_dims[name])
                                    for name in sorted(by_dataset)}
        return context

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        p = parse_params(RobotParams, cfg)
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


def normalize_mask(p: RobotParams, action_dim: int, dataset: str, cfg: SourceConfig) -> list[bool] | None:
    """ActionStats.mask from `unnormalized_dims` (None when every dimension is normalised)."""
    if not p.unnormalized_dims:
        return None
    bad = [d for d in p.unnormalized_dims if not -action_dim <= d < action_dim]
    if bad:
        raise ConfigError(f"params.unnormalized_dims: {bad} outside the {action_dim} action dimensions of "
                          f"dataset {dataset!r}", key=f"source {cfg.name!r} ({cfg.type})",
                          fix=f"use indices in [0, {action_dim}) or negative ones from the end")
    off = {d % action_dim for d in p.unnormalized_dims}
    return [i not in off for i in range(action_dim)]


def inference_entry(p: RobotParams, action_dim: int, proprio_dims: set[int]) -> dict[str, Any]:
    """ActionSettings of one dataset: the state is in the prompt when asked for and episodes carry it
    (robot_action_samples leaves it out otherwise)."""
    use_proprio = p.use_proprio and bool(proprio_dims)
    return {"chunk": p.chunk, "use_proprio": use_proprio, "action_dim": int(action_dim),
            "proprio_dim": next(iter(proprio_dims)) if use_proprio and len(proprio_dims) == 1 else None}


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
        root = self.checked_root(cfg)
        return [WorkItem(d.name, str(d)) for d in list_recorder_episodes(root)]

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        return read_recorder_episode(item.payload, load_images=load_images)


@register_source("lerobot")
class LeRobotSource(_RobotSource):
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        """Episodes of the dataset; a camera it lacks is a ConfigError, a video codec nothing here
        decodes skips the whole source under `unreadable_video` (one message, not one per episode)."""
        root = self.checked_root(cfg)
        p = parse_params(RobotParams, cfg)
        try:
            meta = load_lerobot_meta(root)
        except EpisodeError as exc:
            raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc.detail}") from None
        try:
            camera = resolve_camera(meta, p.camera)
        except EpisodeError as exc:
            raise ConfigError(f"params.camera: {exc.detail}", key=f"source {cfg.name!r} ({cfg.type})",
                              fix=f"choose one of {meta.video_keys}") from None
        try:
            check_camera_decodes(meta, camera)
        except EpisodeError as exc:
            raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc.detail}") from None
        return [WorkItem(f"episode_{i:06d}", (str(root), i)) for i in meta.episodes]

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        root, index = item.payload
        return read_lerobot_episode(root, index, camera=p.camera, load_images=load_images)


@register_source("hdf5")
class Hdf5Source(_RobotSource):
    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        root = self.checked_root(cfg)
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
