"""Video reading with PyAV: whole files, frame sampling by fps/stride, clip windows, and
frame-exact ranges by frame index or by timestamp.

Frames are RGB uint8 arrays [T, H, W, 3]. Why PyAV for every codec: its wheels bundle an FFmpeg
with libdav1d, so it decodes AV1 (LeRobot's default codec, which the FFmpeg inside OpenCV here
cannot decode), it reports each frame's presentation timestamp (what LeRobot v3's
`from_timestamp` and the data's `timestamp` column refer to) and it seeks to the keyframe before a
timestamp, so a range in a long multi-episode file costs its own frames, not the whole prefix.
`bench/video_decode.py` measures it against OpenCV (speed, and frame-for-frame equality).

A file that cannot be opened or decoded raises `VideoError` (a ValueError) whose message names the
file, the codec from the container's stream info and what would decode it; callers count it as
a skip reason. A timestamp with no frame near it raises `VideoTimestampError` (a VideoError).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# Sample-entry codes of ISO BMFF (mp4/mov) video tracks -> the codec they declare; used to name the
# codec when FFmpeg has no decoder for it (PyAV then gives the stream no codec context).
_FOURCC_CODECS = {"av01": "av1", "avc1": "h264", "avc3": "h264", "hvc1": "hevc", "hev1": "hevc",
                  "vp09": "vp9", "vp08": "vp8", "mp4v": "mpeg4", "evc1": "evc", "vvc1": "vvc",
                  "vvi1": "vvc", "apch": "prores", "apcn": "prores"}
# What decodes a codec when the FFmpeg here does not (keyed by FFmpeg decoder or codec name).
_DECODER_HINTS = {
    "av1": "FFmpeg's native 'av1' decoder only works with hardware acceleration; PyAV's wheels "
           "(pip install 'av>=15') bundle libdav1d, which decodes AV1 in software",
    "evc": "an FFmpeg built with libxevd decodes MPEG-5 EVC (PyAV's wheels do not include it)",
}
_REENCODE = "re-encode it from its source, e.g. `ffmpeg -i IN -c:v libsvtav1 -pix_fmt yuv420p OUT.mp4`"


class VideoError(ValueError):
    """An unreadable, truncated, undecodable or empty video (the message names the file and codec)."""


class VideoTimestampError(VideoError):
    """A requested timestamp has no decoded frame within the tolerance."""


class VideoDecoderMissing(VideoError):
    """No decoder here can decode the stream's codec (so no file in that codec will decode)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int  # as reported by the container; may overstate a truncated file
    width: int
    height: int
    codec: str = ""  # FFmpeg's decoder name (e.g. libdav1d, h264, mpeg4)
    duration_s: float = 0.0
    start_s: float = 0.0  # presentation time of the first frame (0 for files LeRobot writes)


def _import_av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a dependency of the project
        raise VideoError("PyAV is not installed: pip install 'av>=15' (it bundles FFmpeg with "
                         "libdav1d for AV1)") from exc
    return av


def _boxes(f, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, end) of the ISO BMFF boxes in [start, end) of an open file."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def _iso_video_fourcc(path: Path) -> str | None:
    """The sample-entry code of the first video track of an mp4/mov (None if not found): walks
    moov/trak/mdia/{hdlr, minf/stbl/stsd} by box headers, reading only those boxes."""

    def child(f, start: int, end: int, name: str) -> tuple[int, int] | None:
        return next(((s, e) for k, s, e in _boxes(f, start, end) if k == name), None)

    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            moov = child(f, 0, size, "moov")
            for kind, s, e in _boxes(f, *moov) if moov else ():
                if kind != "trak":
                    continue
                mdia = child(f, s, e, "mdia")
                hdlr = mdia and child(f, *mdia, "hdlr")
                if not hdlr:
                    continue
                f.seek(hdlr[0] + 8)  # version/flags, pre_defined, then handler_type
                if f.read(4) != b"vide":
                    continue
                minf = child(f, *mdia, "minf")
                stbl = minf and child(f, *minf, "stbl")
                stsd = stbl and child(f, *stbl, "stsd")
                if stsd:
                    entry = next(_boxes(f, stsd[0] + 8, stsd[1]), None)  # after version/flags, count
                    return entry[0] if entry else None
    except (OSError, struct.error):
        return None
    return None


def _container_facts(path: Path) -> str:
    """What the bytes say about a file FFmpeg cannot parse (an mp4 without its index box, ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return ""
    if len(head) < 12:
        return f" ({path.stat().st_size} bytes)"
    if head[4:8] == b"ftyp":
        kinds = [k for k, _, _ in _iso_boxes(path)]
        if "moov" not in kinds:
            return (f"; it is an ISO media file (mp4/mov) whose top-level boxes are {kinds} with no "
                    "'moov' index box, which a writer adds when it finishes: the file was not written "
                    "or copied to its end")
    return ""


def _iso_boxes(path: Path) -> list[tuple[str, int, int]]:
    try:
        with open(path, "rb") as f:
            return list(_boxes(f, 0, path.stat().st_size))
    except (OSError, struct.error):
        return []


def _codec_hint(codec: str) -> str:
    """What would decode `codec` (an FFmpeg codec or decoder name)."""
    hint = _DECODER_HINTS.get(codec)
    return f"{hint}; or {_REENCODE}" if hint else f"decode it with an FFmpeg that has a {codec} decoder, or {_REENCODE}"


def _no_decoder_message(path: Path) -> str:
    tag = _iso_video_fourcc(path)
    if tag is None:
        return (f"{path}: FFmpeg (in PyAV) cannot identify the codec of its video stream, so nothing "
                f"here can decode it; {_REENCODE}")
    codec = _FOURCC_CODECS.get(tag)
    if codec is None:
        return (f"{path}: its video track declares codec tag {tag!r}, which FFmpeg (in PyAV) does not "
                f"know, so nothing here can decode it; {_REENCODE}")
    return (f"{path}: its video track is {codec} (codec tag {tag!r}) and the FFmpeg in PyAV has no "
            f"{codec} decoder; {_codec_hint(codec)}")


class _Reader:
    """One open file: the container, its first video stream and that stream's time facts."""

    def __init__(self, path: str | Path):
        av = _import_av()
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such video file")
        try:
            self.container = av.open(str(self.path))
        except av.FFmpegError as exc:
            raise VideoError(f"{self.path}: FFmpeg (in PyAV) cannot parse the container: "
                             f"{exc.strerror or exc}{_container_facts(self.path)}") from None
        if not self.container.streams.video:
            self.close()
            raise VideoError(f"{self.path}: the container has no video stream "
                             f"(streams: {[s.type for s in self.container.streams]})")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context is None:
            message = _no_decoder_message(self.path)
            self.close()
            raise VideoDecoderMissing(message)
        # One reformatter per file reuses its swscale context: ~3x faster than frame.to_ndarray
        # (which builds one per frame), same pixels (bench/video_decode.py).
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()
        self.codec = self.stream.codec_context.name
        self.time_base: Fraction = self.stream.time_base or Fraction(1, 1)
        rate = self.stream.average_rate or self.stream.base_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.start_s = (float(self.stream.start_time * self.time_base)
                        if self.stream.start_time is not None else 0.0)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> VideoInfo:
        s = self.stream
        duration = (float(s.duration * self.time_base) if s.duration
                    else float(self.container.duration or 0) / 1_000_000)
        frames = int(s.frames or 0) or (int(round(duration * self.fps)) if self.fps else 0)
        return VideoInfo(path=str(self.path), fps=self.fps, num_frames=frames,
                         width=int(s.codec_context.width), height=int(s.codec_context.height),
                         codec=self.codec, duration_s=duration, start_s=self.start_s)

    def seek(self, t: float) -> None:
        """To the keyframe at or before presentation time `t` (seconds); a container that cannot
        seek stays at its start (callers check where decoding began)."""
        av = _import_av()
        try:
            self.container.seek(int(np.floor(t / self.time_base)), stream=self.stream, backward=True,
                                any_frame=False)
        except av.FFmpegError:
            pass

    def rgb(self, frame: object) -> np.ndarray:
        """One decoded frame as RGB uint8 [H, W, 3]."""
        return self._reformatter.reformat(frame, format="rgb24").to_ndarray()

    def frames(self) -> Iterator[tuple[float, object]]:
        """(presentation time in seconds, av.VideoFrame) in presentation order. A decoder error
        ends the iteration only when frames already came out (a truncated tail); before that it is
        a VideoError naming the codec."""
        av = _import_av()
        period = 1.0 / self.fps if self.fps > 0 else 1.0 / 30.0
        count, last = 0, None
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None:
                    t = float(frame.pts * frame.time_base)
                else:  # no timestamps (rare raw streams): count frames
                    t = self.start_s + count * period if last is None else last + period
                last = t
                count += 1
                yield t, frame
        except av.FFmpegError as exc:
            if count:
                return
            raise VideoError(f"{self.path}: the {self.codec} decoder rejects the data of the video "
                             f"stream ({exc.strerror or exc}) before any frame: the bytes are not "
                             f"valid {self.codec} although the container declares it; {_REENCODE}") from None
        if count == 0:
            # FFmpeg's native av1 decoder needs hardware acceleration: without it nothing decodes.
            kind = VideoDecoderMissing if self.codec == "av1" else VideoError
            raise kind(f"{self.path}: the {self.codec} decoder gave no frame; {_codec_hint(self.codec)}")


def probe_video(path: str | Path) -> VideoInfo:
    """Container facts of the first video stream; VideoError if nothing here can decode it."""
    with _Reader(path) as r:
        return r.info()


def sample_indices(num_frames: int, src_fps: float, target_fps: float | None = None,
                   stride: int = 1) -> list[int]:
    """Frame indices that resample `num_frames` at `src_fps` to `target_fps` (if given), then
    keep every `stride`-th one."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if target_fps and src_fps > 0 and target_fps < src_fps:
        step = src_fps / target_fps
        idx = sorted({int(round(i * step)) for i in range(int(num_frames / step) + 1)})
        idx = [i for i in idx if i < num_frames]
    else:
        idx = list(range(num_frames))
    return idx[::stride]


def read_video(path: str | Path, target_fps: float | None = None, stride: int = 1,
               max_frames: int | None = None, start_s: float = 0.0,
               end_s: float | None = None) -> tuple[np.ndarray, float]:
    """Decodes `path` -> (frames [T,H,W,3] RGB, fps of the returned frames). `start_s`/`end_s`
    are seconds from the first frame; the frames kept are those whose presentation time lies in
    [start_s, end_s). Raises VideoError when nothing decodes."""
    with _Reader(path) as r:
        src_fps = r.fps if r.fps > 0 else 30.0
        decoded, began = _window(r, start_s, end_s, 0.25 / src_fps, seek=start_s > 0)
    if start_s > 0 and began is not None and began - r.start_s > start_s + 0.25 / src_fps:
        with _Reader(path) as r:  # the seek landed after start_s: decode from the beginning
            decoded, _ = _window(r, start_s, end_s, 0.25 / src_fps, seek=False)
    if not decoded:
        raise VideoError(f"{path}: no frame in [{start_s}, {end_s}) s of the video "
                         f"({r.codec}, {src_fps:g} fps)")
    keep = sample_indices(len(decoded), src_fps, target_fps, stride)
    if max_frames is not None:
        keep = keep[:max_frames]
    frames = np.stack([decoded[k] for k in keep])
    out_fps = src_fps if not target_fps or target_fps >= src_fps else target_fps
    return frames, out_fps / stride


def _window(r: _Reader, start_s: float, end_s: float | None, eps: float, seek: bool
            ) -> tuple[list[np.ndarray], float | None]:
    """RGB frames with presentation time (from the first frame) in [start_s, end_s), and the time
    decoding began at."""
    if seek:
        r.seek(r.start_s + start_s)
    decoded: list[np.ndarray] = []
    began = None
    for t, frame in r.frames():
        began = t if began is None else began
        rel = t - r.start_s
        if rel + eps < start_s:
            continue
        if end_s is not None and rel >= end_s - eps:
            break
        decoded.append(r.rgb(frame))
    return decoded, began


def read_frames_at(path: str | Path, timestamps: Sequence[float],
                   tolerance_s: float | None = None) -> np.ndarray:
    """The frame whose presentation time is nearest each of `timestamps` (seconds, as the
    container's pts say: LeRobot's `from_timestamp + timestamp`) -> [len(timestamps), H, W, 3].

    Seeks to the keyframe before the earliest one and decodes up to the latest, so the cost is the
    requested span, not the file (a seek that lands after the earliest one is retried from the
    start). `tolerance_s` (default: a quarter of a frame period) bounds the distance to the nearest
    frame; beyond it a VideoTimestampError names the timestamp and the nearest frame time."""
    ts = np.asarray(list(timestamps), dtype=np.float64)
    if ts.size == 0:
        raise ValueError("no timestamps to read")
    with _Reader(path) as r:
        period = 1.0 / r.fps if r.fps > 0 else 1.0 / 30.0
        tol = 0.25 * period if tolerance_s is None else float(tolerance_s)
        seek = float(ts.min()) - r.start_s > period
        found = _nearest_frames(r, ts, period, tol, seek)
        if seek and found[2] is not None and found[2] > float(ts.min()) + tol:
            r.close()
            with _Reader(path) as again:
                found = _nearest_frames(again, ts, period, tol, seek=False)
    out, best, seen_first = found
    missing = [k for k in range(ts.size) if out[k] is None]
    if missing:
        k = missing[0]
        near = ("no frame within a frame period" if np.isnan(best[k])
                else f"the nearest frame is at {best[k]:.6f} s")
        raise VideoTimestampError(
            f"{path}: {len(missing)} of {ts.size} requested timestamps have no frame within "
            f"{tol:.6f} s (first: {ts[k]:.6f} s, {near}; decoding started at "
            f"{seen_first if seen_first is not None else float('nan'):.6f} s; {r.codec}, "
            f"{r.fps:g} fps)")
    return np.stack(out)  # type: ignore[arg-type]


def _nearest_frames(r: _Reader, ts: np.ndarray, period: float, tol: float, seek: bool
                    ) -> tuple[list[np.ndarray | None], np.ndarray, float | None]:
    """One decoding pass for read_frames_at: (frame per timestamp or None, nearest frame time per
    timestamp, time of the first decoded frame)."""
    order = np.argsort(ts, kind="stable")
    sorted_ts = ts[order]
    best_dist = np.full(ts.size, np.inf)
    best_time = np.full(ts.size, np.nan)
    out: list[np.ndarray | None] = [None] * ts.size
    if seek:
        r.seek(float(sorted_ts[0]))
    seen_first: float | None = None
    for t, frame in r.frames():
        if seen_first is None:
            seen_first = t
        if t > sorted_ts[-1] + period:
            break
        # The timestamps this frame could serve: those within one period of it.
        lo = np.searchsorted(sorted_ts, t - period, side="left")
        hi = np.searchsorted(sorted_ts, t + period, side="right")
        rgb = None
        for k in order[lo:hi]:
            d = abs(t - ts[k])
            if d < best_dist[k]:
                best_dist[k], best_time[k] = d, t
                if d <= tol:
                    rgb = r.rgb(frame) if rgb is None else rgb
                    out[k] = rgb
                else:
                    out[k] = None
    return out, best_time, seen_first


def read_frame_range(path: str | Path, start: int, count: int) -> np.ndarray:
    """Frames [start, start+count) by index in presentation order (index i is the frame shown at
    first-frame time + i / fps), frame-exact and without decoding the frames before the keyframe
    preceding `start`. Raises VideoError if the video holds fewer frames."""
    if start < 0 or count < 1:
        raise ValueError(f"need start >= 0 and count >= 1, got {start}, {count}")
    info = probe_video(path)
    if info.fps <= 0:
        raise VideoError(f"{path}: the container states no frame rate; read it with read_video")
    times = info.start_s + (start + np.arange(count)) / info.fps
    try:
        return read_frames_at(path, times)
    except VideoTimestampError as exc:
        raise VideoError(f"{path}: wanted frames {start}..{start + count - 1} at {info.fps:g} fps, "
                         f"but the video ({info.codec}, {info.num_frames} frames stated) has no "
                         f"frame at some of those times: {exc}") from None


def clip_windows(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) windows of `length` frames every `stride` frames (none if too short)."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    return [(s, s + length) for s in range(0, num_frames - length + 1, stride)]


def list_videos(folder: str | Path) -> list[Path]:
    root = Path(folder)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
