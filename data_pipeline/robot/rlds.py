"""Open X-Embodiment RLDS builder folders -> `RobotEpisode`, and the `rlds` source type.

Layout, as `tfds build` writes an RLDS dataset and as the OXE bucket publishes them
(gs://gresearch/robotics/<dataset>/<version>/):

    <dataset>/<version>/dataset_info.json                     splits, episodes per shard
    <dataset>/<version>/features.json                         the feature tree
    <dataset>/<version>/<dataset>-<split>.tfrecord-00000-of-000NN   one record per episode

An episode is {"steps": Dataset(step), <episode metadata>}; a step (RLDS,
github.com/google-research/rlds#dataset-format) holds `observation` (cameras as Image features
under dataset-specific keys such as `image`, `wrist_image`, `rgb_static`, plus state tensors),
`action` (a tensor, or a dict such as RT-1's world_vector / rotation_delta /
gripper_closedness_action), `reward`, `discount`, `is_first`, `is_last`, `is_terminal`, and the
instruction, repeated on every step: `language_instruction` (datasets converted with the OXE
template) or `observation/natural_language_instruction` (RT-1 style datasets).

Like OpenVLA's and Octo's per-dataset configs, the keys a dataset uses are declared per source
(`RldsParams`): `camera`, `state_keys`, `instruction_key`, `action_keys` (dict entries
concatenated in order), `action_dims` (indices kept). Unset keys default to what the folder
declares; a key the folder does not have is a ConfigError listing the ones it has.

tensorflow and tensorflow-datasets are an optional extra, imported only when a folder is read
(never at module import: the registry imports every source module); without them the source
fails the build with one error naming the pip command (`RLDS_INSTALL`).

A process forked after TensorFlow has run deadlocks in its first TensorFlow call (measured: the
pool's workers hang), and the build forks its workers from the parent. So the source's parent-side
steps (reading the folder's layout, the statistics pass) run in a spawned helper process and the
parent never starts TensorFlow; a worker forked from a process that had loaded it refuses to read
(`forked_after_tensorflow`) instead of hanging.
"""
from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from pydantic import ConfigDict, Field

from magma.config_io import ConfigError, StrictModel
from magma.schema import Sample

from data_pipeline.build.registry import SkipItem, SourceConfig, WorkItem, parse_params, register_source
from data_pipeline.robot.episodes import EpisodeError, RobotEpisode
from data_pipeline.robot.sources import RobotParams, _RobotSource

RLDS_INSTALL = 'pip install "tensorflow-cpu>=2.21" "tensorflow-datasets>=4.9.10"'
BUILDER_FILES = ("dataset_info.json", "features.json")
# Where the instruction lives when `instruction_key` is unset, in the order tried.
INSTRUCTION_KEYS = ("language_instruction", "observation/natural_language_instruction",
                    "observation/instruction")
DEFAULT_CAMERA = "image"
DEFAULT_STATE_KEY = "state"
# A reader skips at most this many episodes forward before reopening the split at the episode.
_MAX_FORWARD_SKIP = 64
_ALL_STEPS = 1 << 30


class RldsUnavailable(ImportError):
    """tensorflow / tensorflow-datasets are missing; the message says how to install them."""

    def __init__(self, missing: str) -> None:
        self.missing = missing
        self.problem = (f"reading RLDS builder folders needs tensorflow and tensorflow-datasets, which are "
                        f"not installed here ({missing})")
        super().__init__(f"{self.problem}; install them with: {RLDS_INSTALL}")


class RldsKeyError(ValueError):
    """A declared key that the builder folder does not have (the message lists the ones it has)."""


def missing_tfds() -> str | None:
    """What is missing of the extra, found without importing it (None: both are installed)."""
    for name in ("tensorflow", "tensorflow_datasets"):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"No module named {name!r}"
    return None


def import_tfds() -> Any:
    """`tensorflow_datasets`, imported now, with TensorFlow quiet and kept off the GPUs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise RldsUnavailable(str(exc)) from None
    try:  # TF takes all GPU memory on first use: data workers must leave it to training
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialised in this process
        pass
    return tfds


# ---------------------------------------------------------------- the folder's layout

def find_builder_dir(path: str | Path) -> Path:
    """`path` when it holds dataset_info.json and features.json, else its only version subfolder
    that does (`<dataset>/` given for `<dataset>/<version>/`); EpisodeError otherwise."""
    root = Path(path)
    if all((root / f).is_file() for f in BUILDER_FILES):
        return root
    found = sorted(d for d in root.iterdir() if d.is_dir() and all((d / f).is_file() for f in BUILDER_FILES)
                   ) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    if found:
        raise EpisodeError("ambiguous_dataset", f"{root}: several versions ({', '.join(d.name for d in found)});"
                           " set path to one of them")
    raise EpisodeError("unreadable_dataset", f"{root}: not an RLDS builder folder (no dataset_info.json and "
                       "features.json here or in a version subfolder, as `tfds build` and the OXE bucket "
                       "lay out <dataset>/<version>/)")


@dataclass(frozen=True)
class Leaf:
    """One feature of a step: its key path, shape, NumPy dtype and kind."""

    path: tuple[str, ...]
    shape: tuple[int | None, ...]
    dtype: str
    kind: str  # "image" | "text" | "tensor"

    @property
    def size(self) -> int:
        return int(np.prod([d or 0 for d in self.shape])) if self.shape else 1


@dataclass(frozen=True)
class RldsLayout:
    """What a builder folder declares: name, episodes per split, and every step feature by its
    '/'-joined path ("observation/image", "action/world_vector", "language_instruction")."""

    name: str
    splits: dict[str, int]
    leaves: dict[str, Leaf]

    def under(self, prefix: str, kind: str | None = None) -> list[str]:
        """Keys below `prefix` (relative to it), in the folder's order, optionally of one kind."""
        head = prefix + "/"
        return [k[len(head):] for k, leaf in self.leaves.items()
                if k.startswith(head) and (kind is None or leaf.kind == kind)]

    @property
    def cameras(self) -> list[str]:
        return [k for k in self.under("observation", "image")
                if self.leaves[f"observation/{k}"].shape[-1:] == (3,)]

    @property
    def dict_action(self) -> bool:
        return "action" not in self.leaves


def _feature_leaves(tfds: Any, feature: Any, path: tuple[str, ...] = ()) -> Iterator[Leaf]:
    if isinstance(feature, tfds.features.FeaturesDict):
        for key, sub in feature.items():
            yield from _feature_leaves(tfds, sub, path + (key,))
        return
    dtype = np.dtype(feature.np_dtype)
    kind = ("image" if isinstance(feature, tfds.features.Image) else
            "text" if isinstance(feature, tfds.features.Text) or dtype.kind == "O" else "tensor")
    yield Leaf(path, tuple(feature.shape), dtype.name, kind)


@lru_cache(maxsize=16)
def describe_rlds(builder_dir: str) -> RldsLayout:
    """The layout of one builder folder (reads its JSON through tfds; no episode is read)."""
    tfds = import_tfds()
    try:
        builder = tfds.builder_from_directory(str(builder_dir))
        features = builder.info.features
        steps = features["steps"] if "steps" in features.keys() else None
    except Exception as exc:  # unparsable JSON, unknown feature types
        raise EpisodeError("unreadable_dataset", f"{builder_dir}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(steps, tfds.features.Dataset):
        raise EpisodeError("not_rlds", f"{builder_dir}: no `steps` Dataset feature (top-level features: "
                           f"{sorted(features.keys())}); RLDS episodes keep their steps there")
    leaves = {"/".join(leaf.path): leaf for leaf in _feature_leaves(tfds, steps.feature)}
    return RldsLayout(name=builder.info.name,
                      splits={k: int(v.num_examples) for k, v in builder.info.splits.items()},
                      leaves=leaves)


# ---------------------------------------------------------------- per-dataset keys

class RldsKeys(StrictModel):
    """The resolved keys one dataset is read with (every key checked against the folder)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str  # under observation/
    state_keys: tuple[str, ...] = ()  # under observation/, concatenated
    instruction_key: str | None = None  # under the step
    action_keys: tuple[str, ...] = ()  # under action/, concatenated; () = the action is a tensor
    action_dims: tuple[int, ...] | None = None  # kept indices of the concatenated action
    drop_last: bool = False


def _choose(what: str, key: str, choices: list[str]) -> str:
    if key not in choices:
        raise RldsKeyError(f"{what} {key!r} is not in the folder; it has: {', '.join(choices) or 'none'}")
    return key


def resolve_keys(layout: RldsLayout, camera: str | None = None, state_keys: list[str] | None = None,
                 instruction_key: str | None = None, action_keys: list[str] | None = None,
                 action_dims: list[int] | None = None, drop_last: bool = False) -> RldsKeys:
    """Fills unset keys from the folder (camera `image` else the first RGB camera; state
    `state` when present; the first of INSTRUCTION_KEYS present) and checks the set ones."""
    cameras = layout.cameras
    if not cameras:
        raise RldsKeyError(f"no RGB camera under steps/observation (observation keys: "
                           f"{', '.join(layout.under('observation')) or 'none'})")
    camera = _choose("camera", camera, cameras) if camera else (
        DEFAULT_CAMERA if DEFAULT_CAMERA in cameras else cameras[0])
    tensors = layout.under("observation", "tensor")
    if state_keys is None:
        state_keys = [DEFAULT_STATE_KEY] if DEFAULT_STATE_KEY in tensors else []
    state = tuple(_choose("state key", k, tensors) for k in state_keys)
    if instruction_key is None:
        instruction_key = next((k for k in INSTRUCTION_KEYS if k in layout.leaves), None)
    else:
        _choose("instruction key", instruction_key, [k for k, leaf in layout.leaves.items()
                                                     if leaf.kind == "text" or k in INSTRUCTION_KEYS])
    if layout.dict_action:
        entries = layout.under("action", "tensor")
        if not entries:
            raise RldsKeyError("the steps hold no action (no steps/action feature): not a robot dataset")
        if not action_keys:
            raise RldsKeyError(f"the action is a dict ({', '.join(entries)}): set action_keys to the entries "
                               "to concatenate, in order (e.g. world_vector, rotation_delta, "
                               "gripper_closedness_action)")
        actions = tuple(_choose("action key", k, entries) for k in action_keys)
        dim = sum(layout.leaves[f"action/{k}"].size for k in actions)
    else:
        if action_keys:
            raise RldsKeyError(f"action_keys {action_keys} given but the action is a tensor "
                               f"{layout.leaves['action'].shape}; use action_dims to pick entries")
        actions, dim = (), layout.leaves["action"].size
    if action_dims is not None and (not action_dims or any(not -dim <= d < dim for d in action_dims)):
        raise RldsKeyError(f"action_dims {action_dims} must be non-empty indices into the {dim}-dim action")
    return RldsKeys(camera=camera, state_keys=state, instruction_key=instruction_key, action_keys=actions,
                    action_dims=tuple(action_dims) if action_dims is not None else None, drop_last=drop_last)


# ---------------------------------------------------------------- reading episodes

class _Cursor:
    """Episodes of one split in file order from `start`; serves increasing indices without
    reopening (tfrecord has no index: reopening at episode i scans its shard up to i)."""

    def __init__(self, tfds: Any, builder_dir: str, split: str, start: int,
                 skip_images: tuple[tuple[str, ...], ...]):
        decoders = _skip_decoding(tfds, skip_images)
        builder = tfds.builder_from_directory(builder_dir)
        dataset = builder.as_dataset(split=f"{split}[{start}:]", decoders=decoders, shuffle_files=False)
        self._episodes = iter(dataset)
        self.next_index = start

    def take(self, index: int) -> dict[str, np.ndarray]:
        """Episode `index`'s steps as {'/'-joined key: array [T, ...]}."""
        import tensorflow as tf

        while self.next_index < index:
            next(self._episodes)  # its steps are never decoded: skipping costs the parse only
            self.next_index += 1
        self.next_index += 1
        steps = next(self._episodes)["steps"]
        if int(steps.cardinality()) == 0:
            return {}
        # All steps in one batch: ~6x faster than converting them one by one.
        batch = steps.batch(_ALL_STEPS).get_single_element()
        return _flatten(tf.nest.map_structure(lambda x: x.numpy(), batch))


def _skip_decoding(tfds: Any, image_paths: tuple[tuple[str, ...], ...]) -> dict[str, Any] | None:
    """tfds decoders that leave these step images (key paths) encoded: bytes, never decoded."""
    if not image_paths:
        return None
    step: dict[str, Any] = {}
    for path in image_paths:
        node = step
        *parents, last = path
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = tfds.decode.SkipDecoding()
    return {"steps": step}


_CURSORS: dict[tuple[str, str, str | None], _Cursor] = {}
_FORKED_AFTER_TF = False  # this process was forked from one that had imported TensorFlow


def _after_fork_in_child() -> None:
    global _FORKED_AFTER_TF
    _FORKED_AFTER_TF = _FORKED_AFTER_TF or "tensorflow" in sys.modules


os.register_at_fork(after_in_child=_after_fork_in_child)


def _episode_record(builder_dir: str, split: str, index: int, camera: str | None,
                    layout_images: tuple[tuple[str, ...], ...]) -> dict[str, np.ndarray]:
    if _FORKED_AFTER_TF:
        raise EpisodeError("forked_after_tensorflow", f"{builder_dir}: this worker was forked from a process "
                           "that had already loaded TensorFlow, where TensorFlow deadlocks; build with "
                           "--workers 0 or --backend ray, or start the build from a fresh process")
    tfds = import_tfds()
    key = (builder_dir, split, camera)
    cursor = _CURSORS.get(key)
    if cursor is None or not 0 <= index - cursor.next_index <= _MAX_FORWARD_SKIP:
        keep = f"observation/{camera}" if camera else None
        skip = tuple(p for p in layout_images if "/".join(p) != keep)
        cursor = _CURSORS[key] = _Cursor(tfds, builder_dir, split, index, skip)
    try:
        return cursor.take(index)
    except BaseException:
        _CURSORS.pop(key, None)  # its position is unknown now
        raise


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _text(value: Any) -> str:
    """A step's instruction: UTF-8 bytes, or (Language-Table) a zero-padded array of code points."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip()
    a = np.asarray(value)
    if a.dtype.kind in "iu":
        return "".join(chr(int(c)) for c in a.reshape(-1) if c > 0).strip()
    return str(a.item() if a.ndim == 0 else a).strip()


def _numbers(steps: dict[str, np.ndarray], keys: list[str], n: int, where: str, reason: str) -> np.ndarray:
    """The first `n` steps of these entries as one float64 [n, D] (each entry flattened per step)."""
    parts = []
    for k in keys:
        a = np.asarray(steps[k])
        if a.dtype.kind not in "biuf":
            raise EpisodeError(reason, f"{where}: {k} is {a.dtype}, not numbers")
        parts.append(a[:n].astype(np.float64).reshape(n, -1))
    return np.concatenate(parts, 1)


def read_rlds_episode(builder_dir: str | Path, index: int, keys: RldsKeys, split: str = "train",
                      load_images: bool = True, dataset: str | None = None) -> RobotEpisode:
    """Episode `index` (file order) of `split`: actions [T, D] from `keys.action_keys` (or the
    action tensor), kept `keys.action_dims`; proprio from `keys.state_keys`; the first non-empty
    instruction; frames of `keys.camera` when `load_images` (else only their count). Consecutive
    calls with increasing indices stream through the split. Raises EpisodeError."""
    builder_dir = str(builder_dir)
    layout = describe_rlds(builder_dir)
    where = f"{builder_dir} [{split}] episode {index}"
    images_all = tuple(leaf.path for leaf in layout.leaves.values() if leaf.kind == "image")
    try:
        steps = _episode_record(builder_dir, split, index, keys.camera if load_images else None, images_all)
    except StopIteration:
        raise EpisodeError("missing_episode", f"{where}: the split has fewer episodes") from None
    except EpisodeError:
        raise
    except Exception as exc:  # truncated or corrupt tfrecord, undecodable image
        raise EpisodeError("unreadable_episode", f"{where}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    n = len(steps["is_last"]) if "is_last" in steps else len(next(iter(steps.values()), []))
    if keys.drop_last and n and bool(steps["is_last"][-1]):
        n -= 1  # RLDS: on the is_last step the action is not valid
    if n == 0:
        raise EpisodeError("empty_episode", f"{where}: no steps")
    action_paths = [f"action/{k}" for k in keys.action_keys] or ["action"]
    actions = _numbers(steps, action_paths, n, where, "bad_action")
    if keys.action_dims is not None:
        actions = actions[:, list(keys.action_dims)]
    proprio = None
    if keys.state_keys:
        proprio = _numbers(steps, [f"observation/{k}" for k in keys.state_keys], n, where, "bad_state")
    instruction = ""
    if keys.instruction_key:
        instruction = next((t for t in (_text(v) for v in steps[keys.instruction_key][:n]) if t), "")
    images = np.asarray(steps[f"observation/{keys.camera}"][:n], dtype=np.uint8) if load_images else None
    return RobotEpisode(episode_id=f"episode_{index:06d}", instruction=instruction, actions=actions,
                        images=images, proprio=proprio, dataset=dataset or layout.name, split=split,
                        num_frames=n)


# ---------------------------------------------------------------- TensorFlow out of the parent

def _tagged(fn: Callable[..., Any], *args: Any) -> tuple:
    """fn(*args) with the reader's errors as plain tuples (EpisodeError does not unpickle)."""
    try:
        return ("ok", fn(*args))
    except RldsUnavailable as exc:
        return ("unavailable", exc.missing)
    except EpisodeError as exc:
        return ("episode", exc.reason, exc.detail)
    except RldsKeyError as exc:
        return ("keys", str(exc))


_HELPER: ProcessPoolExecutor | None = None


def _stop_helper() -> None:
    """Runs before this process forks: no helper thread may be alive across a fork."""
    global _HELPER
    if _HELPER is not None:
        _HELPER.shutdown(wait=True)
        _HELPER = None


os.register_at_fork(before=_stop_helper)


def in_helper_process(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a spawned helper interpreter (started on first use, reused until this process
    forks), so that this process never runs TensorFlow and can still fork workers; the reader's
    errors are raised here as they were there. Spawning re-imports the main module: a script that
    builds an rlds source needs the usual `if __name__ == "__main__":` guard (`magma` has it)."""
    global _HELPER
    if _HELPER is None:
        _HELPER = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
    try:
        kind, *rest = _HELPER.submit(_tagged, fn, *args).result()
    except BrokenProcessPool:
        _HELPER = None  # the helper died (e.g. out of memory): the next call starts another
        raise
    if kind == "ok":
        return rest[0]
    if kind == "unavailable":
        raise RldsUnavailable(rest[0])
    if kind == "episode":
        raise EpisodeError(rest[0], rest[1])
    raise RldsKeyError(rest[0])


def _layout_and_keys(builder_dir: str, p: "RldsParams") -> tuple[RldsLayout, RldsKeys | None]:
    """The folder's layout and the source's resolved keys (None: the split is not there)."""
    layout = describe_rlds(builder_dir)
    if p.split not in layout.splits:
        return layout, None
    return layout, resolve_keys(layout, p.camera, p.state_keys, p.instruction_key, p.action_keys,
                                p.action_dims, p.drop_last)


def _prepare(cfg_json: str, items: list[WorkItem]) -> dict[str, Any]:
    cfg = SourceConfig.model_validate_json(cfg_json)
    return _RobotSource.prepare(RldsSource(), cfg, items)


# ---------------------------------------------------------------- the source type

class RldsParams(RobotParams):
    """`rlds` params: the robot options (`camera` = the observation image key) plus the split
    and the dataset's keys (unset: what the folder declares, see `resolve_keys`)."""

    split: str = Field(default="train", pattern=r"^[A-Za-z0-9_-]+$")
    max_episodes: int | None = Field(default=None, ge=1)  # the first N episodes of the split
    state_keys: list[str] | None = None
    instruction_key: str | None = None
    action_keys: list[str] | None = None
    action_dims: list[int] | None = None
    drop_last: bool = False  # drop each episode's is_last step (RLDS: its action is not valid)


def _robot_view(cfg: SourceConfig) -> SourceConfig:
    """`cfg` with RobotParams' keys only: the shared robot code parses its params as RobotParams
    (extra keys are errors there); the RLDS keys travel resolved in every item's payload."""
    keep = RobotParams.model_fields
    return cfg.model_copy(update={"params": {k: v for k, v in cfg.params.items() if k in keep}})


@register_source("rlds")
class RldsSource(_RobotSource):
    """One split of one RLDS builder folder -> robot action samples (+ ToM samples when `tom`)."""

    params_model = RldsParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p = parse_params(RldsParams, cfg)
        root = self.checked_root(_robot_view(cfg))
        where = f"source {cfg.name!r} (rlds)"
        try:
            builder_dir = str(find_builder_dir(root))
            missing = missing_tfds()
            if missing:
                raise RldsUnavailable(missing)
            layout, keys = in_helper_process(_layout_and_keys, builder_dir, p)
        except RldsUnavailable as exc:
            # A build must not report success without this source's data: fail it, say the fix.
            raise ConfigError(exc.problem, key=where, fix=f"install them with: {RLDS_INSTALL}") from None
        except EpisodeError as exc:
            raise SkipItem(exc.reason, str(exc)) from None
        except RldsKeyError as exc:
            raise ConfigError(f"{builder_dir}: {exc}", key=where) from None
        if keys is None:
            raise ConfigError(f"split {p.split!r} is not in {builder_dir}", key=where,
                              fix=f"choose one of: {', '.join(sorted(layout.splits))}")
        n = layout.splits[p.split] if p.max_episodes is None else min(p.max_episodes, layout.splits[p.split])
        return [WorkItem(f"episode_{i:06d}", (builder_dir, p.split, i, keys)) for i in range(n)]

    def read(self, item: WorkItem, p: RobotParams, load_images: bool) -> RobotEpisode:
        builder_dir, split, index, keys = item.payload
        return read_rlds_episode(builder_dir, index, keys, split=split, load_images=load_images)

    def prepare(self, cfg: SourceConfig, items: list[WorkItem]) -> dict[str, Any]:
        """The shared statistics pass, run where TensorFlow may start (see the module docstring)."""
        return in_helper_process(_prepare, _robot_view(cfg).model_dump_json(), items)

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        return super().process(item, _robot_view(cfg), context)
