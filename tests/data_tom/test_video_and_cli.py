"""Video source (captions, bad videos counted) and the `magma data track` / `tom` commands."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from magma.codecs import is_error, parse_traces
from data_pipeline.build.writer import iter_shard
from data_pipeline.cli import main as data_main
from data_pipeline.tom.cli import detect_input_type
from data_pipeline.tom.video import clip_windows, read_video, sample_indices
from episode_writers import write_video
from tom_synth import synthetic_clip


def main_tom(argv: list[str]) -> int:
    return data_main(["tom", *argv])


def main_track(argv: list[str]) -> int:
    return data_main(["track", *argv])


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    clip = synthetic_clip(0, frames=20, size=128, pan=(1.0, 0.5))
    write_video(root / "good.mp4", clip.frames, fps=10)
    (root / "good.txt").write_text("two squares slide apart")
    write_video(root / "short.mp4", clip.frames[:5], fps=10)
    write_video(root / "static.mp4", np.repeat(clip.frames[:1], 20, 0), fps=10)
    write_video(root / "black.mp4", np.zeros((20, 128, 128, 3), np.uint8), fps=10)
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 2])
    return root


def test_sampling_and_windows(video_dir: Path) -> None:
    assert sample_indices(10, 30.0, 10.0) == [0, 3, 6, 9]
    assert sample_indices(10, 10.0, None, stride=3) == [0, 3, 6, 9]
    assert clip_windows(20, 16, 4) == [(0, 16), (4, 20)]
    assert clip_windows(5, 16, 4) == []
    frames, fps = read_video(video_dir / "good.mp4", target_fps=5)
    assert frames.shape == (10, 128, 128, 3) and fps == 5


def test_video_source_counts_bad_videos(video_dir: Path, tmp_path: Path) -> None:
    code = main_tom(["--input", str(video_dir), "--out", str(tmp_path / "out"), "--workers", "2",
                     "--window", "16", "--n-future", "6", "-q"])
    assert code == 0
    top = json.loads((tmp_path / "out" / "manifest.json").read_text())
    src = top["sources"]["tom"]
    assert src["type"] == "video"
    assert top["skipped"] == {"black_clip": 1, "static_clip": 1, "too_short": 1,
                              "unreadable_video": 1}
    samples = [s for name in src["shards"] for s in iter_shard(tmp_path / "out" / "tom" / name)]
    assert len(samples) == 1 and samples[0].primary_kind == "spatial"
    s = samples[0]
    assert "Task: two squares slide apart" in s.conversation[0].content
    traces = parse_traces(s.conversation[1].content)
    assert not is_error(traces) and all(len(t.points) == 6 for t in traces)
    marks = {m["id"]: m for m in s.meta["marks"]}
    assert set(s.meta["foreground_marks"]) <= set(marks) and s.images[0].shape == (128, 128, 3)


def test_track_cli_writes_tracks_npz(video_dir: Path, tmp_path: Path) -> None:
    code = main_track(["--input", str(video_dir / "good.mp4"), "--grid", "10",
                       "--out", str(tmp_path), "--overlay", "-q"])
    assert code == 0
    with np.load(tmp_path / "good.tracks.npz") as z:
        assert z["tracks"].shape == (20, 100, 2) and z["tracks"].dtype == np.float32
        assert z["visible"].shape == (20, 100) and z["visible"].dtype == bool
        assert z["tracks_compensated"].shape == (20, 100, 2)
        assert z["foreground"].shape == (100,) and 0 < z["foreground"].sum() < 50
        # the camera pans: raw background tracks move, compensated ones barely do
        bg = ~z["foreground"] & z["visible"].all(0)
        raw = np.linalg.norm(z["tracks"][-1, bg] - z["tracks"][0, bg], axis=1)
        comp = np.linalg.norm(z["tracks_compensated"][-1, bg] - z["tracks_compensated"][0, bg], axis=1)
        assert np.median(raw) > 15 and np.median(comp) < 2
    assert (tmp_path / "good.overlay.png").is_file()
    # A still video is valid tracking input: everything stays put, nothing is foreground.
    assert main_track(["--input", str(video_dir / "static.mp4"), "--out", str(tmp_path), "-q"]) == 0
    with np.load(tmp_path / "static.tracks.npz") as z:
        assert not z["foreground"].any() and np.abs(z["tracks"] - z["tracks"][:1]).max() < 0.5


def test_cli_errors_are_one_clear_line(video_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    assert main_tom(["--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.delenv("MAGMA_COTRACKER_CHECKPOINT", raising=False)
    assert main_track(["--input", str(video_dir / "good.mp4"), "--out", str(tmp_path),
                       "--backend", "cotracker"]) == 3
    err = capsys.readouterr().err
    assert "autosegmentor" in err and err.count("\n") == 1
    assert main_track(["--input", str(video_dir / "black.mp4"), "--out", str(tmp_path), "-q"]) == 1
    assert "black_clip" in capsys.readouterr().err
    assert not (tmp_path / "black.tracks.npz").exists()


def test_detect_input_type(video_dir: Path, tmp_path: Path) -> None:
    assert detect_input_type(video_dir) == "video"
    assert detect_input_type(video_dir / "good.mp4") == "video"
    (tmp_path / "x.hdf5").write_bytes(b"")
    assert detect_input_type(tmp_path / "x.hdf5") == "hdf5"
    (tmp_path / "lr" / "meta").mkdir(parents=True)
    (tmp_path / "lr" / "meta" / "info.json").write_text("{}")
    assert detect_input_type(tmp_path / "lr") == "lerobot"
    (tmp_path / "eps" / "e0").mkdir(parents=True)
    (tmp_path / "eps" / "e0" / "episode.json").write_text("{}")
    assert detect_input_type(tmp_path / "eps") == "robot_episodes"
    assert detect_input_type(tmp_path / "eps" / "e0") is None
