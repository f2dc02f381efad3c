"""Robot episode readers behind one record, plus per-dataset action statistics.

Formats:
- recorder: the project's own folders (`magma.episode`: episode.json + frames.npz + steps.jsonl).
- LeRobotDataset v3.0: `meta/info.json`, `meta/episodes/chunk-*/file-*.parquet`,
  `meta/tasks.parquet`, `data/chunk-XXX/file-XXX.parquet` (many episodes per file) and
  `videos/<camera>/chunk-XXX/file-XXX.mp4` (many episodes per video, located by
  from/to timestamps).
- HDF5 robomimic / LIBERO: `data/demo_N/actions [T, D]`, `data/demo_N/obs/<camera> [T, H, W, 3]`,
  low-dimensional obs as proprio, instruction from `data.attrs["problem_info"]` (LIBERO) or
  the file name.

Every reader returns a `RobotEpisode`; `check_episode` turns bad input into `EpisodeError`
with a short `reason` (length_mismatch, nonfinite_actions, empty_episode, ...).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from magma.action_tokenizer import ActionStats
from magma.episode import EPISODE_FRAMES, EPISODE_META, EpisodeMeta, iter_episode_dirs

from data_pipeline.build.skips import SkipItem
from data_pipeline.tom.video import VideoError, read_frame_range


class EpisodeError(SkipItem):
    """An episode that cannot give trustworthy samples; `reason` is a short counted key."""


@dataclass
class RobotEpisode:
    episode_id: str
    instruction: str
    actions: np.ndarray  # [T, D] float
    images: np.ndarray | None = None  # [T, H, W, 3] uint8 (None when read without images)
    proprio: np.ndarray | None = None  # [T, P]
    dataset: str = ""
    fps: float = 10.0
    split: str = "train"
    # Frame count known without decoding images (read with load_images=False); lets the
    # statistics pass reject length mismatches exactly as sample building does.
    num_frames: int | None = None

    @property
    def frame_count(self) -> int | None:
        return len(self.images) if self.images is not None else self.num_frames


def check_episode(ep: RobotEpisode, need_images: bool = True) -> RobotEpisode:
    """Raises EpisodeError on episodes that would give wrong targets."""
    a = np.asarray(ep.actions)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise EpisodeError("empty_episode", f"{ep.episode_id}: actions shape {a.shape}")
    if not np.isfinite(a).all():
        raise EpisodeError("nonfinite_actions", f"{ep.episode_id}: NaN/inf in actions")
    t = a.shape[0]
    if need_images:
        if ep.images is None or ep.images.ndim != 4 or ep.images.shape[-1] != 3:
            raise EpisodeError("bad_images", f"{ep.episode_id}: images "
                               f"{None if ep.images is None else ep.images.shape}")
    if ep.frame_count is not None and ep.frame_count != t:
        raise EpisodeError("length_mismatch", f"{ep.episode_id}: {ep.frame_count} frames "
                           f"vs {t} actions")
    if ep.proprio is not None and (ep.proprio.ndim != 2 or ep.proprio.shape[0] != t):
        raise EpisodeError("length_mismatch", f"{ep.episode_id}: proprio {ep.proprio.shape} vs "
                           f"{t} actions")
    return ep


def action_stats(episodes_actions: Iterable[np.ndarray]) -> ActionStats:
    """Statistics over all steps of the (already checked) episodes of one dataset."""
    arrays = [np.asarray(a, dtype=np.float64) for a in episodes_actions]
    if not arrays:
        raise ValueError("no episodes to compute action statistics from")
    return ActionStats.from_actions(np.concatenate(arrays, 0))


# ---------------------------------------------------------------- recorder format

def _npz_array_shape(path: Path, name: str) -> tuple[int, ...]:
    """Shape of one array in an .npz without decompressing it."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        return tuple(read(f)[0])


def list_recorder_episodes(root: str | Path) -> list[Path]:
    return list(iter_episode_dirs(root))


def read_recorder_episode(folder: str | Path, load_images: bool = True,
                          dataset: str | None = None) -> RobotEpisode:
    """Reads a `magma.episode` folder without its strict validation, so that a length mismatch
    becomes a counted reason rather than a generic load failure."""
    folder = Path(folder)
    try:
        meta = EpisodeMeta(**json.loads((folder / EPISODE_META).read_text()))
        with np.load(folder / EPISODE_FRAMES) as z:
            actions = z["actions"] if "actions" in z.files else None
            proprio = z["proprio"] if "proprio" in z.files else None
            images = z["images"] if load_images else None
        num_frames = None if load_images else _npz_array_shape(folder / EPISODE_FRAMES, "images")[0]
    except Exception as exc:  # corrupt JSON/npz, missing files
        raise EpisodeError("unreadable_episode", f"{folder}: {type(exc).__name__}: {exc}") from exc
    if actions is None:
        raise EpisodeError("no_actions", f"{folder}: not a robot episode (no actions)")
    return RobotEpisode(episode_id=meta.episode_id, instruction=meta.instruction, actions=actions,
                        images=images, proprio=proprio, dataset=dataset or meta.env, fps=meta.fps,
                        split=meta.split, num_frames=num_frames)


# ---------------------------------------------------------------- LeRobotDataset v3.0

LEROBOT_INFO = "meta/info.json"
LEROBOT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
LEROBOT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def is_lerobot_dataset(root: str | Path) -> bool:
    return (Path(root) / LEROBOT_INFO).is_file()


def _lerobot_info(root: Path) -> dict:
    try:
        info = json.loads((root / LEROBOT_INFO).read_text())
    except Exception as exc:
        raise EpisodeError("unreadable_dataset", f"{root / LEROBOT_INFO}: {exc}") from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise EpisodeError("unsupported_version", f"{root}: codebase_version {version!r}; this "
                           "reader handles LeRobotDataset v3.x (convert older sets with LeRobot's "
                           "conversion script)")
    return info


def _lerobot_episode_table(root: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise EpisodeError("unreadable_dataset", f"{root}/meta/episodes: no episode metadata")
    rows: list[dict] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return sorted(rows, key=lambda r: int(r["episode_index"]))


def _lerobot_video_keys(info: dict) -> list[str]:
    return [k for k, v in info.get("features", {}).items() if v.get("dtype") == "video"]


def list_lerobot_episodes(root: str | Path) -> list[int]:
    root = Path(root)
    _lerobot_info(root)
    return [int(r["episode_index"]) for r in _lerobot_episode_table(root)]


def read_lerobot_episode(root: str | Path, episode_index: int, camera: str | None = None,
                         load_images: bool = True, dataset: str | None = None) -> RobotEpisode:
    """One episode of a LeRobot v3 dataset: actions/state from parquet, frames from the mp4."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(root)
    info = _lerobot_info(root)
    rows = [r for r in _lerobot_episode_table(root) if int(r["episode_index"]) == episode_index]
    if not rows:
        raise EpisodeError("missing_episode", f"{root}: no episode {episode_index}")
    row = rows[0]
    fps = float(info.get("fps", 10))
    data_file = root / info.get("data_path", LEROBOT_DATA_PATH).format(
        chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
    try:
        table = pq.read_table(data_file)
        table = table.filter(pc.equal(table["episode_index"], episode_index))
        table = table.sort_by("frame_index")
        actions = np.asarray(table["action"].to_pylist(), dtype=np.float64)
        proprio = (np.asarray(table["observation.state"].to_pylist(), dtype=np.float64)
                   if "observation.state" in table.column_names else None)
    except Exception as exc:
        raise EpisodeError("unreadable_episode",
                           f"{data_file}: {type(exc).__name__}: {exc}") from exc
    tasks = row.get("tasks") or []
    instruction = str(tasks[0]) if tasks else ""
    images = None
    if load_images:
        keys = _lerobot_video_keys(info)
        key = camera or (keys[0] if keys else None)
        if key is None or key not in keys:
            raise EpisodeError("no_camera", f"{root}: camera {camera!r} not among video "
                               f"features {keys}")
        video_file = root / info.get("video_path", LEROBOT_VIDEO_PATH).format(
            video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]))
        video_fps = float(info["features"][key].get("info", {}).get("video.fps", fps))
        start = int(round(float(row[f"videos/{key}/from_timestamp"]) * video_fps))
        try:
            images = read_frame_range(video_file, start, int(row["length"]))
        except VideoError as exc:
            raise EpisodeError("unreadable_video", str(exc)) from exc
    return RobotEpisode(episode_id=f"episode_{episode_index:06d}", instruction=instruction,
                        actions=actions, images=images, proprio=proprio,
                        dataset=dataset or root.name, fps=fps, num_frames=int(row["length"]))


# ---------------------------------------------------------------- HDF5 (robomimic / LIBERO)

HDF5_SUFFIXES = (".hdf5", ".h5")
# Low-dimensional observations used as proprio, in this order, when present.
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                "ee_states", "gripper_states", "joint_states", "state", "proprio")


def _demo_sort_key(name: str) -> tuple[int, str]:
    tail = name.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, name)


def list_hdf5_episodes(path: str | Path) -> list[str]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return sorted(f["data"].keys(), key=_demo_sort_key)
    except Exception as exc:
        raise EpisodeError("unreadable_dataset", f"{path}: {type(exc).__name__}: {exc}") from exc


def _hdf5_instruction(f: object, path: Path) -> str:
    attrs = f["data"].attrs  # type: ignore[index]
    for key in ("problem_info", "env_args"):
        if key in attrs:
            try:
                meta = json.loads(attrs[key])
                text = meta.get("language_instruction") or meta.get("instruction")
                if text:
                    return " ".join(text) if isinstance(text, list) else str(text)
            except (TypeError, ValueError):
                pass
    # LIBERO file names are the instruction: "pick_up_the_book_demo.hdf5"
    return path.stem.removesuffix("_demo").replace("_", " ")


def read_hdf5_episode(path: str | Path, demo: str, camera: str | None = None,
                      load_images: bool = True, dataset: str | None = None,
                      fps: float = 20.0) -> RobotEpisode:
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            g = f["data"][demo]
            actions = np.asarray(g["actions"], dtype=np.float64)
            obs = g["obs"] if "obs" in g else {}
            cams = [k for k in obs if obs[k].ndim == 4 and obs[k].shape[-1] == 3]
            pro = [np.asarray(obs[k], dtype=np.float64).reshape(len(obs[k]), -1)
                   for k in PROPRIO_KEYS if k in obs]
            proprio = np.concatenate(pro, 1) if pro and len({len(p) for p in pro}) == 1 else None
            images, num_frames = None, None
            key = camera or next((k for k in ("agentview_image", "agentview_rgb") if k in cams),
                                 cams[0] if cams else None)
            if key is None or key not in cams:
                raise EpisodeError("no_camera", f"{path}:{demo}: camera {camera!r} not among "
                                   f"image observations {cams}")
            if load_images:
                images = np.asarray(obs[key], dtype=np.uint8)
            else:
                num_frames = int(obs[key].shape[0])
            instruction = _hdf5_instruction(f, path)
    except EpisodeError:
        raise
    except Exception as exc:
        raise EpisodeError("unreadable_episode",
                           f"{path}:{demo}: {type(exc).__name__}: {exc}") from exc
    return RobotEpisode(episode_id=f"{path.stem}-{demo}", instruction=instruction, actions=actions,
                        images=images, proprio=proprio, dataset=dataset or path.stem, fps=fps,
                        num_frames=num_frames)
