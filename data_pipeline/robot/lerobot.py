"""LeRobotDataset v3.0 as LeRobot writes it -> `RobotEpisode`s.

The layout (huggingface/lerobot `src/lerobot/datasets/utils.py` path templates,
`lerobot_dataset.py` writers, `video_utils.py` encoder; codebase_version "v3.0"):

    meta/info.json      codebase_version, fps, features {key: {dtype, shape, names, info}},
                        data_path / video_path templates with {chunk_index}, {file_index}
                        (and {video_key}), chunks_size, data_files_size_in_mb, ...
    meta/tasks.parquet  one row per task: `task_index` column; the task string is the pandas
                        index (`pd.DataFrame({"task_index": ...}, index=tasks).to_parquet()`), so
                        it is stored as column `__index_level_0__` (unnamed index, datasets
                        recorded with LeRobotDataset.create) or `task` (the v2.1 -> v3.0
                        converter names the index "task"); the pandas metadata says which
    meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode: episode_index, tasks (list),
                        length, data/chunk_index, data/file_index, dataset_from_index,
                        dataset_to_index, videos/<key>/{chunk_index, file_index, from_timestamp,
                        to_timestamp}, stats/<feature>/<stat>, meta/episodes/{chunk,file}_index
    data/chunk-XXX/file-XXX.parquet            many episodes per file: index, episode_index,
                        frame_index, timestamp, task_index, action, observation.state, ...
    videos/<key>/chunk-XXX/file-XXX.mp4        many episodes per file (concatenated), AV1
                        (libsvtav1, yuv420p) by default; frame `timestamp` of an episode is at
                        `videos/<key>/from_timestamp + timestamp` in the file

Frames are fetched by those timestamps (nearest frame, seeking to the keyframe before the
episode), as LeRobot's own decoders do. Bad input -> `EpisodeError` with a counted reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from data_pipeline.robot.episodes import EpisodeError, RobotEpisode
from data_pipeline.tom.video import VideoDecoderMissing, VideoError, VideoTimestampError, read_frames_at

LEROBOT_INFO = "meta/info.json"
LEROBOT_TASKS = "meta/tasks.parquet"
LEROBOT_EPISODES_DIR = "meta/episodes"
LEROBOT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
LEROBOT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
LEROBOT_STATE = "observation.state"
LEROBOT_ACTION = "action"


@dataclass(frozen=True)
class LeRobotMeta:
    """The metadata of one dataset (everything but the frame data and the videos)."""

    root: Path
    info: dict[str, Any]
    tasks: dict[int, str]  # task_index -> task string
    episodes: dict[int, dict[str, Any]]  # episode_index -> its meta/episodes row (no stats/ columns)

    @property
    def fps(self) -> float:
        return float(self.info.get("fps") or 0.0)

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.info.get("features") or {}

    @property
    def video_keys(self) -> list[str]:
        """Camera keys stored as video, in info.json order (the default camera is the first)."""
        return [k for k, v in self.features.items() if v.get("dtype") == "video"]

    def video_codec(self, key: str) -> str:
        return str(self.features.get(key, {}).get("info", {}).get("video.codec", "?"))

    def data_file(self, row: dict[str, Any]) -> Path:
        return self.root / self.info.get("data_path", LEROBOT_DATA_PATH).format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))

    def video_file(self, row: dict[str, Any], key: str) -> Path:
        return self.root / self.info.get("video_path", LEROBOT_VIDEO_PATH).format(
            video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]))


def is_lerobot_dataset(root: str | Path) -> bool:
    return (Path(root) / LEROBOT_INFO).is_file()


def _read_info(root: Path) -> dict[str, Any]:
    path = root / LEROBOT_INFO
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise EpisodeError("unreadable_dataset", f"{root}: no {LEROBOT_INFO}; not a LeRobot dataset "
                           "folder (point `path` at the folder holding meta/, data/ and videos/)") from None
    except (OSError, ValueError) as exc:
        raise EpisodeError("unreadable_dataset", f"{path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(info, dict):
        raise EpisodeError("unreadable_dataset", f"{path}: a JSON object expected")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise EpisodeError("unsupported_version", f"{path}: codebase_version {version!r}; this reader "
                           "handles LeRobotDataset v3.x (convert a v2.1 dataset with LeRobot's "
                           "`lerobot/datasets/v30/convert_dataset_v21_to_v30.py`)")
    return info


def read_lerobot_tasks(path: str | Path) -> dict[int, str]:
    """`meta/tasks.parquet` -> {task_index: task}. The task string is the pandas index: found through
    the file's pandas metadata (`index_columns`), else a `task` or `__index_level_0__` column."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise EpisodeError("unreadable_dataset", f"{path}: missing (LeRobot v3 keeps the task strings "
                           "there)") from None
    except Exception as exc:
        raise EpisodeError("unreadable_dataset", f"{path}: {type(exc).__name__}: {exc}") from None
    pandas_meta = table.schema.pandas_metadata or {}
    candidates = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
    candidates += ["task", "__index_level_0__"]
    column = next((c for c in candidates if c in table.column_names), None)
    if column is None or "task_index" not in table.column_names:
        raise EpisodeError("unreadable_dataset", f"{path}: columns {table.column_names}; expected "
                           "`task_index` and the task strings as the pandas index (`task` or "
                           "`__index_level_0__`)")
    tasks = {int(i): str(t) for i, t in zip(table["task_index"].to_pylist(), table[column].to_pylist())}
    if len(tasks) != table.num_rows:
        raise EpisodeError("unreadable_dataset", f"{path}: task_index values repeat")
    return tasks


def _read_episode_rows(root: Path) -> dict[int, dict[str, Any]]:
    import pyarrow.parquet as pq

    files = sorted((root / LEROBOT_EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise EpisodeError("unreadable_dataset", f"{root / LEROBOT_EPISODES_DIR}: no chunk-*/file-*.parquet "
                           "episode metadata")
    rows: dict[int, dict[str, Any]] = {}
    for f in files:
        try:
            schema = pq.read_schema(f)
            keep = [c for c in schema.names if not c.startswith("stats/")]
            for row in pq.read_table(f, columns=keep).to_pylist():
                rows[int(row["episode_index"])] = row
        except Exception as exc:
            raise EpisodeError("unreadable_dataset", f"{f}: {type(exc).__name__}: {exc}") from None
    return dict(sorted(rows.items()))


@lru_cache(maxsize=8)
def _cached_meta(root: str, stamp: float) -> LeRobotMeta:
    path = Path(root)
    info = _read_info(path)
    return LeRobotMeta(root=path, info=info, tasks=read_lerobot_tasks(path / LEROBOT_TASKS),
                       episodes=_read_episode_rows(path))


def load_lerobot_meta(root: str | Path) -> LeRobotMeta:
    """The dataset's metadata, read once per process (keyed by info.json's modification time)."""
    root = Path(root).expanduser().resolve()
    try:
        stamp = (root / LEROBOT_INFO).stat().st_mtime
    except OSError:
        stamp = 0.0
    return _cached_meta(str(root), stamp)


def list_lerobot_episodes(root: str | Path) -> list[int]:
    return list(load_lerobot_meta(root).episodes)


def resolve_camera(meta: LeRobotMeta, camera: str | None) -> str:
    """`camera` (a video feature key), or the first video key; EpisodeError naming the keys."""
    keys = meta.video_keys
    if not keys:
        raise EpisodeError("no_camera", f"{meta.root / LEROBOT_INFO}: no feature of dtype 'video' (this "
                           "reader takes frames from the videos, not from image columns of the parquet)")
    if camera is None:
        return keys[0]
    if camera not in keys:
        raise EpisodeError("no_camera", f"{meta.root / LEROBOT_INFO}: camera {camera!r} is not among the "
                           f"video features {keys}")
    return camera  # type: ignore[return-value]


def check_camera_decodes(meta: LeRobotMeta, camera: str) -> None:
    """Decodes the first frame of the first episode of `camera`, so that a codec nothing here
    decodes is one clear error for the dataset (EpisodeError unreadable_video), not one per
    episode. Any other problem of that file is left to its episodes to report."""
    if not meta.episodes:
        return
    row = next(iter(meta.episodes.values()))
    try:
        path = meta.video_file(row, camera)
        start = float(row[f"videos/{camera}/from_timestamp"])
    except KeyError as exc:
        raise EpisodeError("unreadable_dataset", f"{meta.root}: episode metadata has no {exc} column for "
                           f"camera {camera!r}") from None
    try:
        read_frames_at(path, [start])
    except VideoDecoderMissing as exc:
        raise EpisodeError("unreadable_video", f"{exc} (info.json: {camera} is "
                           f"{meta.video_codec(camera)}; every episode of this camera is skipped)") from None
    except VideoError:
        pass


def _vectors(table: Any, column: str, where: Path) -> np.ndarray:
    """A list / fixed-size-list column -> float64 [T, D] (EpisodeError if rows differ in length)."""
    import pyarrow as pa

    col = table[column].combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(
            len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        lengths = set(col.value_lengths().to_pylist())
        if len(lengths) > 1:
            raise EpisodeError("bad_vectors", f"{where}: column {column!r} rows have lengths {sorted(lengths)}")
        dim = lengths.pop() if lengths else 0
        return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(col), dim)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(col), 1)


def read_lerobot_episode(root: str | Path, episode_index: int, camera: str | None = None,
                         load_images: bool = True, dataset: str | None = None) -> RobotEpisode:
    """One episode: actions / state from its data file, the instruction from meta/tasks.parquet
    (the task of its first frame), frames of `camera` (default: the first video key) from its
    video file at `from_timestamp + timestamp`."""
    import pyarrow.parquet as pq

    meta = load_lerobot_meta(root)
    row = meta.episodes.get(int(episode_index))
    if row is None:
        raise EpisodeError("missing_episode", f"{meta.root}: no episode {episode_index} in {LEROBOT_EPISODES_DIR}")
    eid = f"episode_{int(episode_index):06d}"
    data_file = meta.data_file(row)
    columns = ["episode_index", "frame_index", "timestamp", "task_index", LEROBOT_ACTION]
    if LEROBOT_STATE in meta.features:
        columns.append(LEROBOT_STATE)
    try:
        table = pq.read_table(data_file, columns=columns, filters=[("episode_index", "=", int(episode_index))])
        table = table.sort_by("frame_index")
        actions = _vectors(table, LEROBOT_ACTION, data_file)
        proprio = _vectors(table, LEROBOT_STATE, data_file) if LEROBOT_STATE in columns else None
        timestamps = np.asarray(table["timestamp"].to_numpy(), dtype=np.float64)
        first_task = int(table["task_index"][0].as_py()) if table.num_rows else None
    except EpisodeError:
        raise
    except Exception as exc:
        raise EpisodeError("unreadable_episode", f"{data_file} (episode {episode_index}): "
                           f"{type(exc).__name__}: {exc}") from None
    length = int(row["length"])
    if len(actions) != length:
        raise EpisodeError("length_mismatch", f"{data_file}: episode {episode_index} has {len(actions)} "
                           f"frames of data, meta/episodes says length {length}")
    if first_task is None:
        instruction = ""
    elif first_task in meta.tasks:
        instruction = meta.tasks[first_task]
    else:
        raise EpisodeError("unknown_task", f"{data_file}: episode {episode_index} has task_index "
                           f"{first_task}, which {LEROBOT_TASKS} does not list ({sorted(meta.tasks)[:10]})")
    images = None
    if load_images:
        key = resolve_camera(meta, camera)
        try:
            video_file = meta.video_file(row, key)
            start = float(row[f"videos/{key}/from_timestamp"])
        except KeyError as exc:
            raise EpisodeError("unreadable_dataset", f"{meta.root}: episode {episode_index} has no {exc} "
                               "in its episode metadata") from None
        try:
            images = read_frames_at(video_file, start + timestamps)
        except VideoTimestampError as exc:
            raise EpisodeError("missing_video_frames", f"episode {episode_index}, camera {key}: {exc}") from None
        except VideoError as exc:
            raise EpisodeError("unreadable_video", f"episode {episode_index}, camera {key}: {exc}") from None
    return RobotEpisode(episode_id=eid, instruction=instruction,
                        actions=actions, images=images, proprio=proprio,
                        dataset=dataset or meta.root.name, fps=meta.fps or 10.0, num_frames=length)
