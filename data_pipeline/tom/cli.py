"""`magma data track` and `magma data tom` (Trace-of-Mark).

    magma data track --input VIDEO_OR_FOLDER --out DIR [--grid 15] [--backend lk|cotracker]
        -> DIR/<name>.tracks.npz: tracks [T,N,2], visible [T,N], tracks_compensated [T,N,2],
           foreground [N] (+ DIR/<name>.overlay.png with --overlay)
    magma data tom --input VIDEO_OR_EPISODES --out DIR [--chunk H] [--workers N]
        -> WebDataset shards + manifest.json through the shared writer (data_pipeline.build.writer)
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

from magma.cli import fail, subcommand
from data_pipeline.tom.tracking import TrackerUnavailable, ensure_backend


def _add_track(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "track", run_track,
                   "track a grid of points through videos (Trace-of-Mark)")
    p.add_argument("--input", required=True, type=Path, help="a video file or a folder of videos")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--grid", type=int, default=15, help="grid side: grid x grid query points")
    p.add_argument("--backend", choices=("lk", "cotracker"), default="lk")
    p.add_argument("--cotracker-checkpoint", default=None,
                   help="local CoTracker3 checkpoint file (backend cotracker)")
    p.add_argument("--fps", type=float, default=None, help="resample the video to this rate")
    p.add_argument("--max-frames", type=int, default=None, help="track at most this many frames")
    p.add_argument("--overlay", action="store_true", help="also write <name>.overlay.png")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_track(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from data_pipeline.tom.traces import (TomParams, TomSkip, analyse_motion, check_clip, tom_overlay,
                                   trace_of_mark)
    from data_pipeline.tom.tracking import grid_queries, track
    from data_pipeline.tom.video import VideoError, list_videos, read_video

    _error = partial(fail, "magma data track")
    if not args.input.exists():
        return _error(f"--input {args.input} does not exist; give a video file or folder")
    if args.grid < 2:
        return _error(f"--grid must be >= 2, got {args.grid}")
    try:
        ensure_backend(args.backend, args.cotracker_checkpoint)
    except TrackerUnavailable as exc:
        return _error(str(exc), 3)
    videos = list_videos(args.input)
    if not videos:
        return _error(f"no videos under {args.input} (looked for .mp4/.avi/.mov/.mkv/.webm)")
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"checkpoint": args.cotracker_checkpoint} if args.backend == "cotracker" else {}
    params = TomParams(grid=args.grid, n_future=1)
    failures = 0
    for video in tqdm(videos, desc="track", unit="video", disable=args.quiet):
        try:
            frames, fps = read_video(video, target_fps=args.fps, max_frames=args.max_frames)
            check_clip(frames, params, 2)
            h, w = frames.shape[1:3]
            tracks, visible = track(frames, grid_queries(h, w, args.grid), args.backend, **options)
            motion = analyse_motion(tracks, visible, params)
        except TrackerUnavailable as exc:
            return _error(str(exc), 3)
        except (VideoError, TomSkip) as exc:
            print(f"magma data track: skipped {video}: {exc}", file=sys.stderr)
            failures += 1
            continue
        out = args.out / f"{video.stem}.tracks.npz"
        np.savez_compressed(out, tracks=tracks, visible=visible,
                            tracks_compensated=motion.tracks_compensated,
                            foreground=motion.foreground, homographies=motion.homographies,
                            fps=np.float32(fps))
        if args.overlay:
            import cv2
            try:
                result = trace_of_mark(frames, params, tracks=(tracks, visible))
            except TomSkip:
                continue  # a static clip has tracks but no marks worth drawing
            cv2.imwrite(str(args.out / f"{video.stem}.overlay.png"),
                        cv2.cvtColor(tom_overlay(frames, result), cv2.COLOR_RGB2BGR))
    if failures == len(videos):
        return _error(f"no video could be tracked ({failures} skipped, reasons above)", 1)
    return 0


# ---------------------------------------------------------------- tom

def _add_tom(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "tom", run_tom,
                   "Trace-of-Mark (and robot action) samples to shards + manifest.json")
    p.add_argument("--input", required=True, type=Path,
                   help="a video, a folder of videos, a folder of recorded episodes, a LeRobot v3 "
                        "dataset folder, or an HDF5 file/folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (reruns resume)")
    p.add_argument("--type", choices=("auto", "video", "robot_episodes", "lerobot", "hdf5"),
                   default="auto", help="input kind (default: detected)")
    p.add_argument("--name", default="tom", help="source name in the manifest")
    p.add_argument("--window", type=int, default=16, help="frames per clip")
    p.add_argument("--window-stride", type=int, default=16)
    p.add_argument("--n-future", type=int, default=8, help="future positions per trace")
    p.add_argument("--grid", type=int, default=15)
    p.add_argument("--backend", choices=("lk", "cotracker"), default="lk")
    p.add_argument("--cotracker-checkpoint", default=None)
    p.add_argument("--chunk", type=int, default=1, help="robot: actions per target (H)")
    p.add_argument("--dataset", default=None, help="robot: action-statistics dataset name")
    p.add_argument("--samples-per-shard", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="process pool size (0 = inline)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`track` and `tom` in `magma data` (see data_pipeline.cli)."""
    _add_track(sub)
    _add_tom(sub)


def detect_input_type(path: Path) -> str | None:
    from data_pipeline.robot.episodes import HDF5_SUFFIXES
    from data_pipeline.robot.lerobot import is_lerobot_dataset
    from data_pipeline.tom.video import VIDEO_SUFFIXES, list_videos
    from magma.episode import EPISODE_META

    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES:
            return "hdf5"
        return "video" if path.suffix.lower() in VIDEO_SUFFIXES else None
    if not path.is_dir():
        return None
    if is_lerobot_dataset(path):
        return "lerobot"
    if any(p.is_dir() and (p / EPISODE_META).exists() for p in path.iterdir()):
        return "robot_episodes"
    if any(p.suffix.lower() in HDF5_SUFFIXES for p in path.rglob("*")):
        return "hdf5"
    return "video" if list_videos(path) else None


def run_tom(args: argparse.Namespace) -> int:
    from data_pipeline.build.mix_config import MixConfig
    from data_pipeline.build.writer import BuildError, build_mix
    from data_pipeline.build.registry import SourceConfig

    _error = partial(fail, "magma data tom")
    if not args.input.exists():
        return _error(f"--input {args.input} does not exist")
    try:
        ensure_backend(args.backend, args.cotracker_checkpoint)
    except TrackerUnavailable as exc:
        return _error(str(exc), 3)
    kind = detect_input_type(args.input) if args.type == "auto" else args.type
    if kind is None:
        return _error(f"cannot tell what {args.input} holds (no videos, episode folders, "
                      "meta/info.json or .hdf5 files); pass --type")
    params: dict = {"path": str(args.input.resolve()), "window": args.window,
                    "window_stride": args.window_stride, "n_future": args.n_future,
                    "grid": args.grid, "backend": args.backend}
    if args.cotracker_checkpoint:
        params["cotracker_checkpoint"] = args.cotracker_checkpoint
    if kind != "video":
        params["chunk"] = args.chunk
        if args.dataset:
            params["dataset"] = args.dataset
    mix = MixConfig(name=f"tom-{args.name}", samples_per_shard=args.samples_per_shard,
                    workers=args.workers,
                    sources=[SourceConfig(name=args.name, type=kind, params=params)])
    try:
        manifest = build_mix(mix, args.out, workers=args.workers, overwrite=args.overwrite,
                             progress=not args.quiet)
    except (BuildError, ValueError) as exc:
        return _error(str(exc))
    print(f"{args.out}/manifest.json: {manifest['num_samples']} samples "
          f"{manifest['counts_by_kind']}; skipped {manifest['skipped'] or 'none'}")
    if manifest["num_samples"] == 0:
        return _error("nothing usable was produced (see the skipped reasons above)", 1)
    return 0
