"""The `lerobot` source on a LeRobotDataset v3.0 written the way LeRobot writes one.

The fixture follows huggingface/lerobot (`src/lerobot/datasets/`, codebase_version "v3.0"):
- `utils.py`: INFO_PATH meta/info.json, DEFAULT_TASKS_PATH meta/tasks.parquet, DEFAULT_EPISODES_PATH /
  DEFAULT_DATA_PATH / DEFAULT_VIDEO_PATH = {meta/episodes,data,videos/{video_key}}/chunk-{chunk_index:03d}/
  file-{file_index:03d}, DEFAULT_FEATURES (timestamp float32, frame_index / episode_index / index /
  task_index int64), create_empty_dataset_info (chunks_size, data_files_size_in_mb, ...),
  `update_chunk_file_indices` (file_index rolls over into the next chunk at chunks_size), write_json
  with indent=4;
- `lerobot_dataset.py`: tasks as `pd.DataFrame({"task_index": ...}, index=tasks).to_parquet()`
  (an unnamed index, stored as `__index_level_0__` with pandas metadata), episode rows (episode_index,
  tasks, length, data/..., dataset_from_index/to_index, videos/<key>/{chunk_index, file_index,
  from_timestamp, to_timestamp}, stats/<feature>/<stat>, meta/episodes/...) written with
  `pa.Table.from_pydict` and a ParquetWriter; a video file's next episode starts at the summed durations
  (`get_video_duration_in_s`: stream.duration * time_base) of the ones before it;
- `video_utils.py` `encode_video_frames`: PyAV `add_stream("libsvtav1", fps, options={"g": "2", "crf":
  "30"})`, pix_fmt yuv420p; episodes of one file joined by FFmpeg's concat demuxer with stream copy;
  `get_video_info` for features[key]["info"];
- `compute_stats.py`: per-feature min / max / mean / std / count.
Data files: LeRobot 0.3 wrote them through pandas (list<float> columns), 0.4 through the Hugging Face
datasets arrow table (fixed_size_list<float>[D] for `Sequence(length=D)`); file-000 is the first kind,
file-001 the second.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from magma.action_tokenizer import (ActionStats, ActionTokenizer, load_action_stats, save_action_stats,
                                   values_to_bins)
from data_pipeline.build.mix_config import MixConfig
from data_pipeline.build.registry import SourceConfig
from data_pipeline.build.writer import build_mix, iter_shard
from data_pipeline.robot.lerobot import list_lerobot_episodes, read_lerobot_episode, read_lerobot_tasks
from magma.config_io import ConfigError

from episode_writers import write_pyav

os.environ.setdefault("SVT_LOG", "1")

FPS, SIZE, DIM, CHUNK = 10, 64, 7, 2
LENGTHS = (10, 7, 12)
TASKS = ("pick up the red cube", "open the top drawer")
EPISODE_TASK = (0, 1, 0)
CAMERAS = ("observation.images.front", "observation.images.wrist")
# (chunk_index, file_index) of each episode; chunks_size 2, so (0, 1) is followed by (1, 0).
DATA_FILES = ((0, 0), (0, 0), (0, 1))
VIDEO_FILES = {CAMERAS[0]: ((0, 0), (0, 0), (0, 1)), CAMERAS[1]: ((0, 0), (0, 1), (1, 0))}
CHUNKS_SIZE = 2
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
MOTORS = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]


def camera_frames(camera: int, episode: int, n: int) -> np.ndarray:
    """A bar moving 3 px per frame over a gradient whose colour depends on camera and episode."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([xx * 3, yy * 3, np.full_like(xx, 60 + 60 * episode + 25 * camera)], -1).clip(0, 255)
    frames = np.repeat(base[None].astype(np.uint8), n, 0)
    for t in range(n):
        x = (3 * t + 9 * camera) % (SIZE - 8)
        frames[t, :, x:x + 8] = (250, 250 - 100 * camera, 30)
    return frames


def episode_arrays(e: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(e)
    n = LENGTHS[e]
    action = rng.normal(0, [0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0], size=(n, DIM)).astype(np.float32)
    action[:, 6] = (np.arange(n) >= n // 2).astype(np.float32)  # absolute gripper: 0 closed, 1 open
    state = rng.normal(size=(n, DIM)).astype(np.float32)
    return action, state


def encode(path: Path, frames: np.ndarray) -> None:
    write_pyav(path, frames, "libsvtav1", {"g": "2", "crf": "30"}, FPS)


def concat(parts: list[Path], out_path: Path) -> None:
    import av

    out_path.parent.mkdir(parents=True, exist_ok=True)
    listing = parts[0].with_suffix(".txt")
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    with av.open(str(listing), format="concat", options={"safe": "0"}) as src, av.open(str(out_path), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0], opaque=True)
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    listing.unlink()


def duration_s(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return float(s.duration * s.time_base)


def video_info(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width,
                "video.codec": s.codec_context.codec.canonical_name, "video.pix_fmt": s.pix_fmt,
                "video.is_depth_map": False, "video.fps": int(s.base_rate), "video.channels": 3,
                "has_audio": False}


def feature_stats(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}


def write_tasks(path: Path) -> None:
    """As pandas 2.x stores `pd.DataFrame({"task_index": ...}, index=tasks)`: the unnamed index as the
    column `__index_level_0__`, named in the `pandas` schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = pa.table({"task_index": pa.array(range(len(TASKS)), pa.int64()),
                      "__index_level_0__": pa.array(TASKS, pa.string())})
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), path)


def write_dataset(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = root / "tmp_videos"
    tmp.mkdir(parents=True)
    # Videos: one temporary mp4 per episode and camera, joined per target file.
    video_meta: dict[int, dict] = {e: {} for e in range(len(LENGTHS))}
    for c, cam in enumerate(CAMERAS):
        files: dict[tuple[int, int], list[int]] = {}
        for e, where in enumerate(VIDEO_FILES[cam]):
            files.setdefault(where, []).append(e)
        for (chunk, file), eps in files.items():
            parts = []
            start = 0.0
            for e in eps:
                part = tmp / f"{c}_{e}.mp4"
                encode(part, camera_frames(c, e, LENGTHS[e]))
                parts.append(part)
                d = duration_s(part)
                video_meta[e].update({f"videos/{cam}/chunk_index": chunk, f"videos/{cam}/file_index": file,
                                      f"videos/{cam}/from_timestamp": start,
                                      f"videos/{cam}/to_timestamp": start + d})
                start += d
            concat(parts, root / VIDEO_PATH.format(video_key=cam, chunk_index=chunk, file_index=file))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()

    # Data files, many episodes per file.
    rows: dict[tuple[int, int], list[dict]] = {}
    index = 0
    episode_rows, all_stats = [], []
    for e, n in enumerate(LENGTHS):
        action, state = episode_arrays(e)
        frame = {"action": action, "observation.state": state,
                 "timestamp": (np.arange(n) / FPS).astype(np.float32), "frame_index": np.arange(n),
                 "episode_index": np.full(n, e), "index": index + np.arange(n),
                 "task_index": np.full(n, EPISODE_TASK[e])}
        rows.setdefault(DATA_FILES[e], []).append(frame)
        stats = {k: feature_stats(v if v.ndim > 1 else v[:, None]) for k, v in frame.items()}
        for c, cam in enumerate(CAMERAS):
            img = camera_frames(c, e, n).transpose(0, 3, 1, 2) / 255.0
            stats[cam] = {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in
                          {"min": img.min((0, 2, 3)), "max": img.max((0, 2, 3)), "mean": img.mean((0, 2, 3)),
                           "std": img.std((0, 2, 3)), "count": np.array([n])}.items()}
        all_stats.append(stats)
        row = {"episode_index": e, "tasks": [TASKS[EPISODE_TASK[e]]], "length": n,
               "data/chunk_index": DATA_FILES[e][0], "data/file_index": DATA_FILES[e][1],
               "dataset_from_index": index, "dataset_to_index": index + n, **video_meta[e]}
        row.update({f"stats/{k}/{s}": np.asarray(v).tolist() for k, st in stats.items() for s, v in st.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        episode_rows.append(row)
        index += n
    for (chunk, file), frames in rows.items():
        path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        cat = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
        if file == 0:  # list<float>, as pandas converts a column of numpy arrays
            vec = {k: pa.array([list(map(float, r)) for r in cat[k]], pa.list_(pa.float32()))
                   for k in ("action", "observation.state")}
        else:  # fixed_size_list<float>[7], as the datasets library stores Sequence(length=7)
            vec = {k: pa.FixedSizeListArray.from_arrays(pa.array(cat[k].reshape(-1), pa.float32()), DIM)
                   for k in ("action", "observation.state")}
        table = pa.table({**vec, "timestamp": pa.array(cat["timestamp"], pa.float32()),
                          **{k: pa.array(cat[k], pa.int64())
                             for k in ("frame_index", "episode_index", "index", "task_index")}})
        pq.write_table(table, path)
    episodes_path = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes_path.parent.mkdir(parents=True, exist_ok=True)
    columns = {k: [r[k] for r in episode_rows] for k in episode_rows[0]}
    with pq.ParquetWriter(episodes_path, pa.Table.from_pydict(columns).schema, compression="snappy") as w:
        w.write_table(pa.Table.from_pydict(columns))
    write_tasks(root / "meta/tasks.parquet")

    vec = {"dtype": "float32", "shape": [DIM], "names": MOTORS}
    features = {"action": vec, "observation.state": dict(vec)}
    for cam in CAMERAS:
        first = root / VIDEO_PATH.format(video_key=cam, chunk_index=0, file_index=0)
        features[cam] = {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"],
                         "info": video_info(first)}
    features.update({"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                     **{k: {"dtype": "int64", "shape": [1], "names": None}
                        for k in ("frame_index", "episode_index", "index", "task_index")}})
    info = {"codebase_version": "v3.0", "robot_type": "so100_follower", "total_episodes": len(LENGTHS),
            "total_frames": sum(LENGTHS), "total_tasks": len(TASKS), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": FPS,
            "splits": {"train": f"0:{len(LENGTHS)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    agg = {k: {s: (np.min if s == "min" else np.max if s == "max" else np.mean)(
        np.stack([st[k][s] for st in all_stats]), 0).tolist() for s in ("min", "max", "mean")}
        for k in all_stats[0]}
    (root / "meta/stats.json").write_text(json.dumps(agg, indent=4))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "so100_toy")


def test_fixture_is_the_published_layout(dataset: Path) -> None:
    """The files are where LeRobot's templates put them, the videos are AV1, and (where pandas is
    installed) the tasks file reads back with the task strings as the index."""
    assert sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*.mp4")) == [
        "videos/observation.images.front/chunk-000/file-000.mp4",
        "videos/observation.images.front/chunk-000/file-001.mp4",
        "videos/observation.images.wrist/chunk-000/file-000.mp4",
        "videos/observation.images.wrist/chunk-000/file-001.mp4",
        "videos/observation.images.wrist/chunk-001/file-000.mp4"]
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["features"][CAMERAS[0]]["info"]["video.codec"] == "av1"
    assert read_lerobot_tasks(dataset / "meta/tasks.parquet") == dict(enumerate(TASKS))
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(dataset / "meta/tasks.parquet")
    assert list(tasks.index) == list(TASKS) and list(tasks["task_index"]) == [0, 1]


def test_tasks_written_by_pandas_both_ways(tmp_path: Path) -> None:
    """Unnamed index (LeRobotDataset.create) and index named "task" (the v2.1 -> v3.0 converter)."""
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"task_index": [0, 1]}, index=list(TASKS)).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"task_index": [0, 1]}, index=pd.Index(TASKS, name="task")).to_parquet(tmp_path / "b.parquet")
    for name in ("a", "b"):
        assert read_lerobot_tasks(tmp_path / f"{name}.parquet") == dict(enumerate(TASKS))


@pytest.mark.parametrize("camera", [None, CAMERAS[1]])
def test_episodes_decode_frame_exactly(dataset: Path, camera: str | None) -> None:
    cam = CAMERAS.index(camera) if camera else 0  # default: the first video key
    assert list_lerobot_episodes(dataset) == [0, 1, 2]
    for e, n in enumerate(LENGTHS):
        ep = read_lerobot_episode(dataset, e, camera=camera)
        want = camera_frames(cam, e, n)
        assert ep.images.shape == want.shape  # the count exactly
        # Each decoded frame is nearest its own source frame among all frames of all episodes of
        # this camera (so neither shifted in time nor taken from a neighbouring episode) ...
        pool = np.concatenate([camera_frames(cam, k, m) for k, m in enumerate(LENGTHS)])
        offset = sum(LENGTHS[:e])
        d = np.abs(ep.images[:, None].astype(np.int16) - pool[None].astype(np.int16)).mean(axis=(2, 3, 4))
        assert d.argmin(1).tolist() == list(range(offset, offset + n))
        assert np.abs(ep.images.astype(int) - want).mean() < 6  # ... and within codec tolerance
        action, state = episode_arrays(e)
        np.testing.assert_array_equal(ep.actions, action.astype(np.float64))
        np.testing.assert_array_equal(ep.proprio, state.astype(np.float64))
        assert ep.instruction == TASKS[EPISODE_TASK[e]] and ep.episode_id == f"episode_{e:06d}"


def _build(tmp_path: Path, path: Path, **params) -> dict:
    mix = MixConfig(name="t", samples_per_shard=16, workers=0, sources=[SourceConfig(
        name="robot", type="lerobot", params={"path": str(path), "chunk": CHUNK, "dataset": "so100",
                                              "tom": False, **params})])
    return build_mix(mix, tmp_path / "out", workers=0, progress=False)


def _samples(out: Path) -> list:
    manifest = json.loads((out / "robot" / "manifest.json").read_text())
    return [s for name in manifest["shards"] for s in iter_shard(out / "robot" / name)]


def test_build_with_a_gripper_mask(dataset: Path, tmp_path: Path) -> None:
    manifest = _build(tmp_path, dataset, camera=CAMERAS[1], unnormalized_dims=[-1])
    raw = np.concatenate([episode_arrays(e)[0] for e in range(len(LENGTHS))]).astype(np.float64)
    stats = ActionStats(**manifest["action_stats"]["so100"])
    np.testing.assert_allclose(stats.q01, np.quantile(raw, 0.01, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.q99, np.quantile(raw, 0.99, axis=0), rtol=0, atol=1e-12)
    assert stats.count == sum(LENGTHS) and stats.mask == [True] * 6 + [False]
    assert manifest["counts_by_kind"] == {"action": sum(n - CHUNK + 1 for n in LENGTHS)}
    assert manifest["skipped"] == {}

    tok = ActionTokenizer(1 << 20, stats)
    lo, span = np.asarray(stats.q01), np.asarray(stats.q99) - np.asarray(stats.q01)
    samples = _samples(tmp_path / "out")
    for s in samples:
        e = int(s.episode.split("_")[1])
        action = episode_arrays(e)[0].astype(np.float64)[s.frame:s.frame + CHUNK]
        bins = np.asarray([int(b) for b in s.conversation[-1].content.replace("<act_", " ").replace(">", "").split()])
        bins = bins.reshape(CHUNK, DIM)
        # The gripper goes into the bins as it is (0 -> the middle bin, 1 -> the top one) ...
        np.testing.assert_array_equal(bins[:, 6], values_to_bins(action[:, 6]))
        # ... the other dimensions normalised by the data's q01/q99.
        np.testing.assert_array_equal(bins[:, :6], values_to_bins(2 * (action[:, :6] - lo[:6]) / span[:6] - 1))
        decoded = tok.parse(s.conversation[-1].content, chunk=CHUNK)[:, 6]  # the bin centre, unscaled
        assert np.all(np.abs(decoded - action[:, 6]) <= 1 / 256 + 1e-12)
        assert TASKS[EPISODE_TASK[e]] in s.conversation[0].content
        frame = read_lerobot_episode(dataset, e, camera=CAMERAS[1]).images[s.frame]
        np.testing.assert_array_equal(s.images[0], frame)
    # The checkpoint's action_stats.json (what serving loads) keeps the mask.
    save_action_stats({"so100": stats}, tmp_path)
    assert load_action_stats(tmp_path)["so100"].mask == stats.mask
    # Without the mask the gripper is normalised like the rest: its bins differ.
    unmasked = ActionTokenizer(1 << 20, ActionStats(**{**manifest["action_stats"]["so100"], "mask": None}))
    assert not np.array_equal(unmasked.to_bins(raw)[:, 6], tok.to_bins(raw)[:, 6])


def test_bad_params_are_config_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"camera 'observation.images.top'.*observation.images.front"):
        _build(tmp_path, dataset, camera="observation.images.top")
    with pytest.raises(ConfigError, match=r"unnormalized_dims: \[7\] outside the 7 action dimensions"):
        _build(tmp_path / "b", dataset, unnormalized_dims=[7])


def _copy(dataset: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(dataset, dst))


def _retag(path: Path, tag: bytes) -> None:
    """Declares another codec in the file's video sample entry (the last 'av01' box type)."""
    data = path.read_bytes()
    i = data.rfind(b"av01")
    path.write_bytes(data[:i] + tag + data[i + 4:])


def test_an_undecodable_video_file_skips_its_episodes(dataset: Path, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path / "ds")
    bad = root / VIDEO_PATH.format(video_key=CAMERAS[0], chunk_index=0, file_index=1)  # episode 2
    _retag(bad, b"evc1")
    manifest = _build(tmp_path, root)
    assert manifest["skipped"] == {"unreadable_video": 1}
    assert manifest["counts_by_kind"] == {"action": sum(n - CHUNK + 1 for n in LENGTHS[:2])}
    detail = json.loads((tmp_path / "out/robot/manifest.json").read_text())["skipped_items"][0]["detail"]
    assert str(bad) in detail and "evc" in detail and "truncated file?" not in detail


def test_a_codec_nothing_decodes_skips_the_source_once(dataset: Path, tmp_path: Path) -> None:
    root = _copy(dataset, tmp_path / "ds")
    for f in (root / "videos" / CAMERAS[0]).rglob("*.mp4"):
        _retag(f, b"evc1")
    manifest = _build(tmp_path, root)
    assert manifest["skipped"] == {"unreadable_video": 1} and manifest["num_samples"] == 0
    detail = json.loads((tmp_path / "out/robot/manifest.json").read_text())["skipped_items"][0]
    assert detail["item"] == "*" and "evc" in detail["detail"] and "libxevd" in detail["detail"]
    assert "info.json" in detail["detail"]  # what the dataset says the codec is


def test_missing_frames_and_unknown_tasks_are_counted(dataset: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = _copy(dataset, tmp_path / "ds")
    # Episode 1 claims a task that tasks.parquet does not list.
    data = root / DATA_PATH.format(chunk_index=0, file_index=0)
    t = pq.read_table(data)
    tasks = pc.if_else(pc.equal(t["episode_index"], 1), pa.scalar(5, pa.int64()), t["task_index"])
    pq.write_table(t.set_column(t.column_names.index("task_index"), "task_index", tasks), data)
    # Episode 2's front video starts 2 s later than the video holds (its frames are not in the file).
    ep_file = root / "meta/episodes/chunk-000/file-000.parquet"
    t = pq.read_table(ep_file)
    col = f"videos/{CAMERAS[0]}/from_timestamp"
    shifted = pc.if_else(pc.equal(t["episode_index"], 2), pa.scalar(2.0, pa.float64()), t[col])
    pq.write_table(t.set_column(t.column_names.index(col), col, shifted), ep_file)
    manifest = _build(tmp_path, root)
    assert manifest["skipped"] == {"missing_video_frames": 1, "unknown_task": 1}
    assert manifest["counts_by_kind"] == {"action": LENGTHS[0] - CHUNK + 1}
