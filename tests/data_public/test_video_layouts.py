"""ssv2 / epic_kitchens / ego4d sources on annotation files written from the published layouts and
videos encoded the way the datasets ship them (PyAV: VP9 .webm for SSv2, H.264 .MP4/.mp4 for
EPIC-KITCHENS and Ego4D). In every video a textured square moves only inside the annotated
window and stands still elsewhere, so a trace sample exists only when the right frames are read.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from magma.codecs import is_error, parse_traces
from data_pipeline.build.mix_config import MixConfig
from data_pipeline.build.registry import SourceConfig
from data_pipeline.build.writer import build_mix, iter_shard
from data_pipeline.public.video_layouts import (BadRecord, VideoWindow, clean_narration, fill_template,
                                                parse_timestamp, read_ego4d, read_epic_kitchens, read_ssv2)

TOM = {"window": 8, "window_stride": 8, "n_future": 4, "grid": 8}  # tiny clips, LK tracker


def moving_square(n: int, moving: tuple[int, int], size: int = 64, side: int = 20, seed: int = 0) -> np.ndarray:
    """[n, size, size, 3] frames: a textured square on a textured background that moves one pixel
    right and down per frame for frames moving[0]..moving[1]-1 and stands still before and after."""
    rng = np.random.default_rng(seed)

    def texture(h: int, w: int, sigma: float) -> np.ndarray:
        noise = rng.uniform(0, 255, size=(h, w, 3)).astype(np.float32)
        return np.clip(cv2.GaussianBlur(noise, (0, 0), sigma) * 1.6 - 70, 0, 255).astype(np.uint8)

    background, sprite = texture(size, size, 2.0), texture(side, side, 1.2)
    frames = []
    for t in range(n):
        k = min(max(t - moving[0], 0), moving[1] - moving[0])
        f = background.copy()
        f[8 + k:8 + k + side, 8 + k:8 + k + side] = sprite
        frames.append(f)
    return np.stack(frames)


def encode(path: Path, frames: np.ndarray, fps: int, codec: str) -> Path:
    """Encodes with PyAV (FFmpeg's libvpx-vp9 / libx264), as the datasets' videos were made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"} if codec == "libx264" else {"crf": "20", "b": "0"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


def build(tmp_path: Path, type_name: str, **params) -> tuple[dict, list]:
    mix = MixConfig(name="t", samples_per_shard=16, workers=0, sources=[
        SourceConfig(name="vid", type=type_name, params={**TOM, **params})])
    build_mix(mix, tmp_path / "out", workers=0, progress=False)
    src = json.loads((tmp_path / "out" / "vid" / "manifest.json").read_text())
    return src, [s for name in src["shards"] for s in iter_shard(tmp_path / "out" / "vid" / name)]


def skip_details(src: dict) -> dict[str, tuple[str, str]]:
    return {it["item"]: (it["reason"], it["detail"]) for it in src["skipped_items"]}


def check_traces(sample, instruction: str) -> None:
    assert sample.primary_kind == "spatial" and sample.images[0].shape == (64, 64, 3)
    assert f"Task: {instruction}\n" in sample.conversation[0].content
    traces = parse_traces(sample.conversation[1].content)
    assert not is_error(traces) and traces and all(len(t.points) == TOM["n_future"] for t in traces)


# ---------------------------------------------------------------- parsing

def test_layout_text_rules() -> None:
    assert parse_timestamp("00:00:03.37") == pytest.approx(3.37)
    assert parse_timestamp("01:02:03.851") == pytest.approx(3723.851)
    with pytest.raises(ValueError):
        parse_timestamp("3.37")
    assert fill_template("Holding [something] next to [something]", ["potato", "vicks vaporub bottle"]) \
        == "Holding potato next to vicks vaporub bottle"
    with pytest.raises(ValueError):
        fill_template("Pushing [something] from left to right", [])
    assert clean_narration("#C C picks up the knife ") == "C picks up the knife"
    assert clean_narration("#O man X opens the door") == "man X opens the door"
    assert clean_narration("#c C cuts #C the onion") == "C cuts the onion"


# ---------------------------------------------------------------- Something-Something v2

@pytest.fixture(scope="module")
def ssv2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ssv2")
    videos = root / "20bn-something-something-v2"
    encode(videos / "78687.webm", moving_square(24, (0, 24)), 12, "libvpx-vp9")  # SSv2: 12 fps VP9
    (videos / "4242.webm").write_bytes(b"\x1aE\xdf\xa3 not a real webm")
    # something-something-v2-train.json: a list of {id, label, template, placeholders}
    records = [
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "11", "template": "Pushing [something] from left to right", "placeholders": ["toy car"]},
        {"id": "4242", "label": "tearing paper", "template": "Tearing [something]", "placeholders": ["paper"]},
        {"id": "99"},  # the test split publishes ids only
    ]
    (root / "something-something-v2-train.json").write_text(json.dumps(records))
    return root


def test_ssv2_reader(ssv2: Path) -> None:
    entries = {e.item_id: e for e in read_ssv2(ssv2 / "something-something-v2-train.json")}
    assert isinstance(entries["78687"], VideoWindow) and entries["78687"].videos == ("78687.webm",)
    assert entries["78687"].instruction == "holding potato next to vicks vaporub bottle"
    assert entries["11"].instruction == "Pushing toy car from left to right"  # no label: filled template
    assert isinstance(entries["99"], BadRecord) and entries["99"].reason == "bad_record"


def test_ssv2_source(ssv2: Path, tmp_path: Path) -> None:
    src, samples = build(tmp_path, "ssv2", path=str(ssv2 / "something-something-v2-train.json"),
                         video_root=str(ssv2 / "20bn-something-something-v2"))
    assert src["skipped"] == {"bad_record": 1, "missing_video": 1, "unreadable_video": 1}
    details = skip_details(src)
    assert details["4242"][0] == "unreadable_video" and "4242.webm" in details["4242"][1]
    assert details["11"][0] == "missing_video" and "11.webm" in details["11"][1]
    assert "something-something-v2-train.json" in details["99"][1]  # names the file and the record
    assert [s.frame for s in samples] == [0, 8, 16]  # the whole clip is the window
    for s in samples:
        check_traces(s, "holding potato next to vicks vaporub bottle")
        assert s.source == "tom/ssv2" and s.episode == "78687" and s.meta["placeholders"][0] == "potato"


# ---------------------------------------------------------------- EPIC-KITCHENS-100

EPIC_COLUMNS = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
                "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
                "noun_class", "all_nouns", "all_noun_classes"]


def epic_row(nid: str, video: str, start: str, stop: str, narration: str, fps: int = 24) -> dict:
    verb, noun = narration.split(" ", 1)
    return {"narration_id": nid, "participant_id": video.split("_")[0], "video_id": video,
            "narration_timestamp": start + "0", "start_timestamp": start, "stop_timestamp": stop,
            "start_frame": int(parse_timestamp(start) * fps), "stop_frame": int(parse_timestamp(stop) * fps),
            "narration": narration, "verb": verb, "verb_class": 3, "noun": noun, "noun_class": 3,
            "all_nouns": f"['{noun}']", "all_noun_classes": "[3]"}


@pytest.fixture(scope="module")
def epic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("epic")
    # the published tree: <participant>/videos/<video_id>.MP4; P03_101 sits flat under the root
    encode(root / "videos" / "P01" / "videos" / "P01_01.MP4", moving_square(48, (12, 36)), 24, "libx264")
    encode(root / "videos" / "P03_101.MP4", moving_square(48, (24, 40), seed=1), 24, "libx264")
    rows = [
        epic_row("P01_01_0", "P01_01", "00:00:00.50", "00:00:01.50", "open door"),  # frames 12..35 move
        epic_row("P01_01_1", "P01_01", "00:00:00.00", "00:00:00.45", "take plate"),  # still: no trace
        epic_row("P01_01_2", "P01_01", "00:00:05.00", "00:00:06.00", "wash pan"),  # past the 2 s video
        epic_row("P02_03_0", "P02_03", "00:00:00.00", "00:00:01.00", "cut onion"),  # no such video
        epic_row("P03_101_0", "P03_101", "00:00:01.00", "00:00:01.67", "put knife"),  # flat layout
        {**epic_row("P01_01_3", "P01_01", "00:00:00.00", "00:00:01.00", "stir pot"), "stop_timestamp": "1.0"},
    ]
    with (root / "EPIC_100_train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EPIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_epic_source(epic: Path, tmp_path: Path) -> None:
    src, samples = build(tmp_path, "epic_kitchens", path=str(epic / "EPIC_100_train.csv"),
                         video_root=str(epic / "videos"))
    assert src["skipped"] == {"bad_record": 1, "missing_video": 1, "static_clip": 1,
                              "window_outside_video": 1}
    details = skip_details(src)
    assert details["P01_01_2"][0] == "window_outside_video" and "P01_01.MP4" in details["P01_01_2"][1]
    assert details["P02_03_0"][0] == "missing_video" and "P02_03.MP4" in details["P02_03_0"][1]
    assert details["P01_01_3"][0] == "bad_record" and "line 7" in details["P01_01_3"][1]
    by_record: dict[str, list] = {}
    for s in samples:
        by_record.setdefault(s.meta["narration_id"], []).append(s)
    assert sorted(by_record) == ["P01_01_0", "P03_101_0"]
    # frames 12..35 at 24 fps: clips start at 12, 20, 28 (none from the still frames before 12)
    assert [s.frame for s in by_record["P01_01_0"]] == [12, 20, 28]
    for s in by_record["P01_01_0"]:
        check_traces(s, "open door")
        assert s.meta["window_frames"] == [12, 36] and s.meta["verb"] == "open" and s.episode == "P01_01"
    assert by_record["P03_101_0"][0].meta["video"] == "P03_101.MP4"
    assert [s.frame for s in by_record["P03_101_0"]] == [24, 32]


def test_epic_resampled_window(epic: Path, tmp_path: Path) -> None:
    """fps=12 keeps every second frame of the 24 fps segment; provenance stays in source frames;
    max_frames cuts a longer window and counts it."""
    src, samples = build(tmp_path, "epic_kitchens", path=str(epic / "EPIC_100_train.csv"),
                         video_root=str(epic / "videos"), fps=12, window=6, window_stride=6)
    frames = sorted(s.frame for s in samples if s.meta["narration_id"] == "P01_01_0")
    assert frames == [12, 24]  # 12 kept frames (12, 14, ..., 34) -> clips at offsets 0 and 6
    assert src["dropped"] == {}
    # P01_01_1: 0.00..0.45 s = 10 frames at 24 fps -> 5 at 12 fps, fewer than the window of 6
    assert src["skipped"]["too_short"] == 1 and skip_details(src)["P01_01_1"][0] == "too_short"
    src, samples = build(tmp_path / "cut", "epic_kitchens", path=str(epic / "EPIC_100_train.csv"),
                         video_root=str(epic / "videos"), fps=12, window=6, window_stride=6, max_frames=8)
    assert sorted(s.frame for s in samples if s.meta["narration_id"] == "P01_01_0") == [12]
    assert src["dropped"] == {"window_truncated": 1}  # P01_01_0: 12 frames -> 8; P03_101_0 has 8


def test_epic_reader_rejects_other_csv(tmp_path: Path) -> None:
    from magma.layouts.errors import LayoutError
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LayoutError, match="missing columns"):
        read_epic_kitchens(tmp_path / "x.csv")


# ---------------------------------------------------------------- Ego4D

UID = "002ad105-bd9a-4858-953e-54e88dc7587e"


@pytest.fixture(scope="module")
def ego4d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ego4d")
    encode(root / "v1" / "full_scale" / f"{UID}.mp4", moving_square(48, (12, 36)), 30, "libx264")

    def narration(t: float, text: str) -> dict:
        return {"timestamp_sec": t, "timestamp_frame": int(t * 30), "narration_text": text,
                "annotation_uid": "b7e9c3c4-6a1f-4a4e-9f3e-0c2d5c6f1a11"}

    data = {
        UID: {
            "narration_pass_1": {
                "narrations": [narration(0.8, "#C C picks up the knife"),  # window 0.4..1.2 s = frames 12..35
                               narration(0.1, "#C C looks around"),  # 0..0.5 s: the square is still
                               narration(10.0, "#C C drops the knife"),  # past the 1.6 s video
                               narration(0.8, "#C C holds #unsure")],
                "summaries": [{"start_sec": 0.0, "end_sec": 1.6, "summary_text": "#Summary C cooks",
                               "annotation_uid": "b7e9c3c4-6a1f-4a4e-9f3e-0c2d5c6f1a11"}]},
            "narration_pass_2": {"narrations": [narration(0.8, "#C C lifts a knife")], "summaries": []},
        },
        "0f0e0d0c-0000-4000-8000-000000000000": {
            "narration_pass_1": {"narrations": [narration(1.0, "#C C opens the fridge")], "summaries": []}},
    }
    (root / "narration.json").write_text(json.dumps(data))
    return root


def test_ego4d_reader(ego4d: Path) -> None:
    entries = read_ego4d(ego4d / "narration.json")
    windows = [e for e in entries if isinstance(e, VideoWindow)]
    assert [w.instruction for w in windows] == ["C picks up the knife", "C looks around", "C drops the knife",
                                                "C lifts a knife", "C opens the fridge"]
    assert windows[0].centre_s == 0.8 and windows[0].meta["narration_text"] == "#C C picks up the knife"
    assert [e.reason for e in entries if isinstance(e, BadRecord)] == ["unsure_narration"]
    assert len(read_ego4d(ego4d / "narration.json", passes=["narration_pass_2"])) == 1


def test_ego4d_source(ego4d: Path, tmp_path: Path) -> None:
    src, samples = build(tmp_path, "ego4d", path=str(ego4d / "narration.json"),
                         video_root=str(ego4d / "v1" / "full_scale"), window_s=0.8)
    assert src["skipped"] == {"missing_video": 1, "static_clip": 1, "unsure_narration": 1,
                              "window_outside_video": 1}
    by_pass = {p: [s.frame for s in samples if s.meta["pass"] == p] for p in ("narration_pass_1", "narration_pass_2")}
    assert by_pass == {"narration_pass_1": [12, 20, 28], "narration_pass_2": [12, 20, 28]}  # 0.4..1.2 s at 30 fps
    for s in samples:
        assert s.meta["window_frames"] == [12, 36] and s.episode == UID
        check_traces(s, s.meta["narration_text"].removeprefix("#C ").strip())
