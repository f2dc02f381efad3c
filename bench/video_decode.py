"""Video decoding benchmark: PyAV (what data_pipeline.tom.video uses) vs OpenCV, on H.264, AV1 and
mpeg4 clips written here.

    .venv/bin/python bench/video_decode.py [--frames 300] [--size 256] [--repeat 3]

For each codec it prints, measured in the same run:
- decode fps of a whole-file sequential pass to RGB arrays: OpenCV (the baseline, 1.00x), PyAV's
  plain `frame.to_ndarray` single-threaded and with FFmpeg's frame/slice threads, and our
  `read_video` (PyAV with one reused swscale reformatter), as ratios to the baseline;
- frame-exactness between the two decoders: decoded frame counts and the max / mean absolute
  RGB difference of frame i from OpenCV vs frame i from PyAV;
- random access: `read_frame_range` at 5 offsets (10 frames each) vs the same frames of the
  sequential pass (must be identical), and its time per range vs decoding the prefix.
AV1 is written like LeRobot writes it (libsvtav1, yuv420p, g=2, crf=30); H.264 with libx264
(yuv420p, g=30, B-frames on); mpeg4 with OpenCV's own `mp4v` writer.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1's banner otherwise floods stderr

from magma.scheduling import normal_scheduling


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """A textured scene panning by one pixel per frame with a moving square (codec-friendly)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8), (2 * size, size))
    frames = np.empty((n, size, size, 3), np.uint8)
    for t in range(n):
        f = base[:, t % size:t % size + size].copy()
        y = (3 * t) % (size - size // 4)
        f[y:y + size // 4, size // 3:size // 3 + size // 4] = (255, 40, 40)
        frames[t] = f
    return frames


def write_pyav(path: Path, frames: np.ndarray, fps: int, codec: str, options: dict[str, str]) -> Path:
    import av

    # libsvtav1 run as root leaves the thread on SCHED_FIFO 99 (magma.scheduling): undo it
    with normal_scheduling(), av.open(str(path), "w") as out:
        stream = out.add_stream(codec, fps, options=options)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames.shape[2], frames.shape[1]
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path


def write_opencv(path: Path, frames: np.ndarray, fps: int) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[1:3][::-1])
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return path


def decode_opencv(path: Path) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(out) if out else np.zeros((0,), np.uint8)


def decode_pyav(path: Path, threads: bool) -> np.ndarray:
    """The plain PyAV idiom: frame.to_ndarray per frame (a new swscale context each time)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if threads:
            s.thread_type = "AUTO"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])


def decode_ours(path: Path) -> np.ndarray:
    """data_pipeline.tom.video.read_video: PyAV with one reused reformatter."""
    from data_pipeline.tom.video import read_video

    return read_video(path)[0]


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_codec(name: str, path: Path, n: int, repeat: int) -> None:
    from data_pipeline.tom.video import probe_video, read_frame_range

    info = probe_video(path)
    t_cv, cv = timed(lambda: decode_opencv(path), repeat)
    t_av, pv = timed(lambda: decode_pyav(path, threads=False), repeat)
    t_avt, _ = timed(lambda: decode_pyav(path, threads=True), repeat)
    t_ours, ours = timed(lambda: decode_ours(path), repeat)
    print(f"\n== {name}: {path.name} ({info.codec}, {info.width}x{info.height}, {info.num_frames} frames "
          f"stated, {path.stat().st_size / 1024:.0f} KiB)")
    n_cv = len(cv) if cv.ndim == 4 else 0
    if n_cv:
        print(f"  opencv          {n_cv / t_cv:8.0f} fps   1.00x (baseline)")
    else:
        print("  opencv          decodes 0 frames: no baseline (ratios below are vs PyAV single-threaded)")
    base = n_cv / t_cv if n_cv else len(pv) / t_av
    print(f"  pyav            {len(pv) / t_av:8.0f} fps   {len(pv) / t_av / base:.2f}x")
    print(f"  pyav threads    {len(pv) / t_avt:8.0f} fps   {len(pv) / t_avt / base:.2f}x")
    print(f"  read_video      {len(ours) / t_ours:8.0f} fps   {len(ours) / t_ours / base:.2f}x   "
          f"(PyAV, one reformatter; identical to pyav: {np.array_equal(ours, pv)})")
    if n_cv:
        m = min(n_cv, len(pv))
        diff = np.abs(cv[:m].astype(np.int16) - pv[:m].astype(np.int16))
        print(f"  frames: opencv {n_cv}, pyav {len(pv)} (written {n}); |opencv - pyav| max {diff.max()}, "
              f"mean {diff.mean():.3f}, identical frames {int((diff.reshape(m, -1).max(1) == 0).sum())}/{m}")
    else:
        print(f"  frames: opencv 0, pyav {len(pv)} (written {n})")
    rng = np.random.default_rng(1)
    starts = sorted(rng.choice(np.arange(0, len(pv) - 10), size=5, replace=False).tolist())
    exact, t_ranges = True, 0.0
    for s in starts:
        t0 = time.perf_counter()
        got = read_frame_range(path, s, 10)
        t_ranges += time.perf_counter() - t0
        exact &= bool(np.array_equal(got, pv[s:s + 10]))
    prefix = np.mean([(s + 10) / (len(pv) / t_av) for s in starts])
    print(f"  read_frame_range x5 at {starts}: identical to the sequential pass: {exact}; "
          f"{t_ranges / 5 * 1000:.1f} ms per range vs {prefix * 1000:.1f} ms to decode its prefix "
          f"({prefix / (t_ranges / 5):.1f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    frames = make_frames(args.frames, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = {
            "AV1 (libsvtav1, as LeRobot)": write_pyav(tmp / "av1.mp4", frames, args.fps, "libsvtav1",
                                                      {"g": "2", "crf": "30"}),
            "H.264 (libx264)": write_pyav(tmp / "h264.mp4", frames, args.fps, "libx264",
                                          {"g": "30", "crf": "23"}),
            "MPEG-4 part 2 (OpenCV mp4v)": write_opencv(tmp / "mp4v.mp4", frames, args.fps),
        }
        print(f"{args.frames} frames of {args.size}x{args.size} at {args.fps} fps, best of {args.repeat}; "
              f"OMP/threads: {os.cpu_count()} cores visible")
        for name, path in clips.items():
            bench_codec(name, path, args.frames, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
