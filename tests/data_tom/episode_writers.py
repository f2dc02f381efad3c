"""Writers of small robot datasets and videos for the tests, from the published layouts
(LeRobotDataset v3.0 as documented by LeRobot, robomimic/LIBERO HDF5, mp4v video): the readers in
data_pipeline.robot / data_pipeline.tom are production code, these writers are not."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from data_pipeline.robot.episodes import RobotEpisode
from data_pipeline.robot.lerobot import LEROBOT_DATA_PATH, LEROBOT_INFO, LEROBOT_VIDEO_PATH
from magma.scheduling import normal_scheduling


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float) -> Path:
    """RGB frames -> mp4 (mp4v). For the tests."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot open an mp4v writer")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(f, dtype=np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_pyav(path: Path, frames: np.ndarray, codec: str, options: dict[str, str], fps: int) -> Path:
    """How LeRobot's encode_video_frames drives PyAV (add_stream(codec, fps, options), yuv420p).
    Under `normal_scheduling`: libsvtav1, run as root, leaves the thread on SCHED_FIFO 99."""
    import av

    with normal_scheduling(), av.open(str(path), "w") as out:
        stream = out.add_stream(codec, fps, options=options)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames.shape[2], frames.shape[1]
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path


def write_lerobot_v3(root: str | Path, episodes: Sequence[RobotEpisode], fps: float = 10.0,
                     camera: str = "observation.images.front") -> Path:
    """Writes `episodes` as a LeRobotDataset v3.0 (one data file, one video file per camera,
    episodes concatenated as the real layout does). For tests and small demos."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    if not episodes:
        raise ValueError("need at least one episode")
    tasks = sorted({ep.instruction for ep in episodes})
    task_index = {t: i for i, t in enumerate(tasks)}
    data_rows, episode_rows, frames = [], [], []
    offset = 0
    for e, ep in enumerate(episodes):
        t = len(ep.actions)
        for i in range(t):
            row = {"action": [float(v) for v in ep.actions[i]], "timestamp": i / fps,
                   "frame_index": i, "episode_index": e, "index": offset + i,
                   "task_index": task_index[ep.instruction]}
            if ep.proprio is not None:
                row["observation.state"] = [float(v) for v in ep.proprio[i]]
            data_rows.append(row)
        episode_rows.append({
            "episode_index": e, "tasks": [ep.instruction], "length": t,
            "data/chunk_index": 0, "data/file_index": 0,
            "dataset_from_index": offset, "dataset_to_index": offset + t,
            f"videos/{camera}/chunk_index": 0, f"videos/{camera}/file_index": 0,
            f"videos/{camera}/from_timestamp": offset / fps,
            f"videos/{camera}/to_timestamp": (offset + t) / fps,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        frames.append(ep.images)
        offset += t
    h, w = episodes[0].images.shape[1:3]
    dim = episodes[0].actions.shape[1]
    features = {
        camera: {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                 "info": {"video.fps": fps, "video.height": h, "video.width": w,
                          "video.codec": "mp4v"}},
        "action": {"dtype": "float32", "shape": [dim], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if episodes[0].proprio is not None:
        features["observation.state"] = {"dtype": "float32",
                                         "shape": [episodes[0].proprio.shape[1]], "names": None}
    info = {"codebase_version": "v3.0", "robot_type": None, "total_episodes": len(episodes),
            "total_frames": offset, "total_tasks": len(tasks), "chunks_size": 1000, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": LEROBOT_DATA_PATH,
            "video_path": LEROBOT_VIDEO_PATH, "features": features}
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (root / LEROBOT_INFO).write_text(json.dumps(info, indent=1))
    pq.write_table(pa.Table.from_pylist(data_rows), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(episode_rows),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": list(range(len(tasks))), "task": tasks}),
                   root / "meta/tasks.parquet")
    write_video(root / LEROBOT_VIDEO_PATH.format(video_key=camera, chunk_index=0, file_index=0),
                np.concatenate(frames, 0), fps)
    return root


def write_hdf5_episodes(path: str | Path, episodes: Sequence[RobotEpisode],
                        camera: str = "agentview_image", instruction: str | None = None) -> Path:
    """robomimic/LIBERO-style file: data/demo_i/{actions, obs/<camera>, obs/robot0_eef_pos}."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        text = instruction if instruction is not None else episodes[0].instruction
        data.attrs["problem_info"] = json.dumps({"language_instruction": text})
        for i, ep in enumerate(episodes):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=np.asarray(ep.actions, dtype=np.float64))
            g.attrs["num_samples"] = len(ep.actions)
            obs = g.create_group("obs")
            obs.create_dataset(camera, data=np.asarray(ep.images, dtype=np.uint8))
            if ep.proprio is not None:
                obs.create_dataset("robot0_eef_pos", data=np.asarray(ep.proprio, dtype=np.float64))
    return path
