"""Robot episode readers behind one record, plus per-dataset action statistics.

Formats:
- recorder: the project's own folders (`magma.episode`: episode.json + frames.npz + steps.jsonl).
- LeRobotDataset v3.0: in `data_pipeline.robot.lerobot` (its names are re-exported here).
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
from typing import Iterable, Sequence

import numpy as np

from magma.action_tokenizer import ActionStats
from magma.episode import EPISODE_FRAMES, EPISODE_META, EpisodeMeta, iter_episode_dirs

from data_pipeline.build.skips import SkipItem

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


def action_stats(episodes_actions: Iterable[np.ndarray], mask: Sequence[bool] | None = None) -> ActionStats:
    """Statistics over all steps of the (already checked) episodes of one dataset; `mask`: the
    normalised dimensions (ActionStats.mask)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in episodes_actions]
    if not arrays:
        raise ValueError("no episodes to compute action statistics from")
    return ActionStats.from_actions(np.concatenate(arrays, 0), mask=mask)


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
