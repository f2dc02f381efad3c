"""data_pipeline.tom.video on files written by the encoders the outside world uses (PyAV's libsvtav1 as
LeRobot calls it, libx264 with B-frames, libvpx-vp9 webm as Something-Something v2 ships, OpenCV's
mp4v): exact frame counts, frame-exact ranges by index and timestamp (with keyframe seeking), and
undecodable files that name the file and the codec."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.tom.video import (VideoDecoderMissing, VideoError, VideoTimestampError, probe_video,
                                     read_frame_range, read_frames_at, read_video)
from episode_writers import write_pyav, write_video

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per encoder otherwise

FPS, N, SIZE = 10, 24, 64


def scene(n: int = N, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Frames that differ clearly from each other (a bar moving 2 px per frame over a smooth
    background) so that a frame one step off is detectable through a lossy codec."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 3, yy * 3, np.full_like(xx, int(rng.integers(40, 200)))], -1).clip(0, 255)
    frames = np.repeat(base[None].astype(np.uint8), n, 0)
    for t in range(n):
        x = (2 * t) % (size - 8)
        frames[t, :, x:x + 8] = (250, 250, 30)
    return frames


def nearest_source(decoded: np.ndarray, source: np.ndarray) -> list[int]:
    """For each decoded frame, the index of the source frame it is closest to (mean abs error)."""
    d = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    return d.argmin(1).tolist()


ENCODERS = {
    "av1": lambda d, f: write_pyav(d / "clip.mp4", f, "libsvtav1", {"g": "2", "crf": "30"}, FPS),  # LeRobot's
    "h264": lambda d, f: write_pyav(d / "clip.mp4", f, "libx264", {"g": "8", "bf": "2", "crf": "20"}, FPS),
    "vp9": lambda d, f: write_pyav(d / "clip.webm", f, "libvpx-vp9", {"g": "8", "crf": "30", "b": "0"}, FPS),
    "mpeg4": lambda d, f: write_video(d / "clip.mp4", f, FPS),  # OpenCV's mp4v writer
}
DECODERS = {"av1": "libdav1d", "h264": "h264", "vp9": ("libvpx-vp9", "vp9"), "mpeg4": "mpeg4"}


@pytest.mark.parametrize("codec", sorted(ENCODERS))
def test_codecs_decode_frame_exactly(tmp_path: Path, codec: str) -> None:
    src = scene()
    path = ENCODERS[codec](tmp_path, src)
    info = probe_video(path)
    assert info.codec in np.atleast_1d(DECODERS[codec]) and info.fps == FPS
    assert (info.width, info.height) == (SIZE, SIZE)
    frames, fps = read_video(path)
    assert frames.shape == src.shape and fps == FPS  # every frame, none twice
    assert nearest_source(frames, src) == list(range(N))
    assert np.abs(frames.astype(int) - src).mean() < 8  # within codec tolerance
    # Ranges after a seek are the very frames of the sequential pass (one decoder, exact).
    np.testing.assert_array_equal(read_frame_range(path, 13, 6), frames[13:19])
    np.testing.assert_array_equal(read_frame_range(path, 0, 3), frames[:3])
    times = [1.7, 0.4, 2.3, 1.7]  # any order, repeats allowed
    np.testing.assert_array_equal(read_frames_at(path, times), frames[[17, 4, 23, 17]])
    window, _ = read_video(path, start_s=1.0, end_s=1.5)
    np.testing.assert_array_equal(window, frames[10:15])


def test_concatenated_episodes_by_timestamp(tmp_path: Path) -> None:
    """Episodes concatenated by stream copy (FFmpeg's concat demuxer, as LeRobot builds its v3
    files): episode e starts at the summed durations of the ones before it."""
    import av

    episodes = [scene(n, seed=e) for e, n in enumerate((9, 6, 11))]
    parts = [write_pyav(tmp_path / f"ep{e}.mp4", f, "libsvtav1", {"g": "2", "crf": "30"}, FPS)
             for e, f in enumerate(episodes)]
    listing = tmp_path / "concat.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out_path = tmp_path / "file-000.mp4"
    with av.open(str(listing), format="concat", options={"safe": "0"}) as src, \
            av.open(str(out_path), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0], opaque=True)
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    start = 0.0
    for frames in episodes:
        got = read_frames_at(out_path, start + np.arange(len(frames)) / FPS)
        assert len(got) == len(frames) and nearest_source(got, frames) == list(range(len(frames)))
        start += len(frames) / FPS
    assert probe_video(out_path).num_frames == sum(len(f) for f in episodes)


def _patch_sample_entry(path: Path, tag: bytes) -> Path:
    """The same mp4 with its video sample entry code replaced (the last 'av01' box type)."""
    data = path.read_bytes()
    i = data.rfind(b"av01")
    out = path.with_name(f"{tag.decode()}.mp4")
    out.write_bytes(data[:i] + tag + data[i + 4:])
    return out


def test_undecodable_videos_name_the_file_and_the_codec(tmp_path: Path) -> None:
    good = write_pyav(tmp_path / "good.mp4", scene(), "libsvtav1", {"g": "2", "crf": "30"}, FPS)
    evc = _patch_sample_entry(good, b"evc1")  # MPEG-5 EVC: FFmpeg knows it, PyAV has no decoder
    with pytest.raises(VideoDecoderMissing) as err:
        read_video(evc)
    msg = str(err.value)
    assert str(evc) in msg and "evc" in msg and "libxevd" in msg and "truncated file?" not in msg
    unknown = _patch_sample_entry(good, b"zzzz")  # a codec tag nothing knows
    with pytest.raises(VideoError, match="'zzzz'"):
        probe_video(unknown)
    with pytest.raises(VideoError, match=r"no 'moov' index box") as err:
        cut = tmp_path / "cut.mp4"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        read_frame_range(cut, 0, 2)
    assert not isinstance(err.value, VideoDecoderMissing)  # one bad file, not a missing decoder
    with pytest.raises(VideoError, match="no such video file"):
        probe_video(tmp_path / "missing.mp4")


def test_timestamps_outside_the_video(tmp_path: Path) -> None:
    path = write_pyav(tmp_path / "clip.mp4", scene(), "libsvtav1", {"g": "2", "crf": "30"}, FPS)
    with pytest.raises(VideoTimestampError, match=r"2 of 3 requested timestamps.*nearest frame is at 2\.3"):
        read_frames_at(path, [2.3, 2.4, 2.5])
    with pytest.raises(VideoTimestampError, match="nearest frame is at 0.5"):
        read_frames_at(path, [0.52], tolerance_s=1e-4)  # between two frames
    with pytest.raises(VideoError, match="wanted frames 20..29"):
        read_frame_range(path, 20, 10)
