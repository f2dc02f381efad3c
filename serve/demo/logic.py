"""What the demo's tabs do, without any Gradio: input checks with limits, Set-of-Mark and
Trace-of-Mark perception, model calls through a `Backend`, and the drawings.

Every user-facing failure raises `DemoError` with a readable message; the UI layer shows it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from data_pipeline import perception
from magma.codecs import denormalize_point
from magma.marks import Mark
from magma.prompts import trace_prompt, verbal_prompt
from serve.demo.backend import Backend, DemoError
from serve.errors import ServeError
from serve.images import ImageLimits, decode_image, encode_png_b64

MB = 1024 * 1024


@dataclass(frozen=True)
class DemoLimits:
    max_upload_mb: float = 8.0
    max_video_seconds: float = 20.0
    max_video_frames: int = 48  # frames decoded for Trace-of-Mark (after the length check)
    video_side: int = 320  # frames are downscaled so tracking stays interactive on a CPU
    max_marks: int = 32
    max_image_side: int = 4096

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


def _upload_path(path: str | os.PathLike | None, what: str, limits: DemoLimits) -> Path:
    if not path:
        raise DemoError(f"no {what} uploaded yet: choose a file first")
    p = Path(path)
    if not p.is_file():
        raise DemoError(f"the uploaded {what} is gone ({p.name}); upload it again")
    size = p.stat().st_size
    if size > limits.max_upload_bytes:
        raise DemoError(f"the {what} is too large: {size / MB:.1f} MB, the limit is "
                        f"{limits.max_upload_mb:g} MB")
    if size == 0:
        raise DemoError(f"the uploaded {what} is empty")
    return p


# ---------------------------------------------------------------- images and Set-of-Mark

def load_image(path: str | os.PathLike | None, limits: DemoLimits = DemoLimits()) -> np.ndarray:
    """An uploaded PNG/JPEG -> RGB uint8 [H, W, 3]."""
    p = _upload_path(path, "image", limits)
    img_limits = ImageLimits(max_bytes=limits.max_upload_bytes, max_side=limits.max_image_side,
                             max_pixels=limits.max_image_side ** 2)
    try:
        img = decode_image(p.read_bytes(), img_limits, field=p.name)
    except ServeError as exc:
        raise DemoError(f"not a usable image: {exc.message} (upload a PNG or JPEG screenshot)") from None
    return np.asarray(img, dtype=np.uint8)


def is_local_target(target: str) -> bool:
    """Only pages on this machine are captured: the demo never goes to the network."""
    t = target.strip()
    if t.startswith("file://") or t.startswith("data:"):
        return True
    if t.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        return (urlparse(t).hostname or "") in ("127.0.0.1", "localhost", "::1")
    return "://" not in t


def capture(target: str, viewport: tuple[int, int] = (1024, 640)) -> tuple[np.ndarray, list[Mark]]:
    """A local URL or HTML file -> (screenshot, DOM marks). Runs on the caller's thread."""
    target = (target or "").strip()
    if not target:
        raise DemoError("enter a local URL (http://127.0.0.1:..., file://...) or an HTML file path")
    if not is_local_target(target):
        raise DemoError(f"{target}: only local pages (127.0.0.1, localhost, file paths) are captured")
    try:
        return perception.capture_page(target, viewport=viewport, timeout_s=10.0)
    except perception.CaptureError as exc:
        raise DemoError(f"cannot capture the page: {exc}") from None


def propose(image: np.ndarray, limits: DemoLimits = DemoLimits()) -> list[Mark]:
    return list(perception.propose_marks(image, max_marks=limits.max_marks))


def mark_rows(marks: Sequence[Mark]) -> list[list[Any]]:
    """Rows for the mark table: id, role, text, box, centre (pixels)."""
    rows = []
    for d in perception.mark_table(marks):
        box = ", ".join(f"{v:.0f}" for v in d["box"])
        cx, cy = Mark.from_dict(d).centre
        rows.append([d["id"], d.get("role", ""), d.get("text", ""), f"[{box}]", f"({cx:.0f}, {cy:.0f})"])
    return rows


def draw_click(marked: np.ndarray, marks: Sequence[Mark], mark_id: int | None,
               point: Sequence[float] | None) -> np.ndarray:
    """The predicted mark outlined thick and the click point as a crosshair."""
    out = np.ascontiguousarray(marked, dtype=np.uint8).copy()
    scale = max(1, round(max(out.shape[:2]) / 400))
    chosen = next((m for m in marks if m.id == mark_id), None)
    if chosen is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in chosen.box)
        cv2.rectangle(out, (x0 - 2, y0 - 2), (x1 + 2, y1 + 2), (255, 0, 255), 2 * scale, cv2.LINE_AA)
    if point is not None:
        x, y = int(round(point[0])), int(round(point[1]))
        cv2.circle(out, (x, y), 8 * scale, (255, 0, 255), 2 * scale, cv2.LINE_AA)
        cv2.drawMarker(out, (x, y), (255, 255, 0), cv2.MARKER_CROSS, 14 * scale, scale, cv2.LINE_AA)
    return out


@dataclass
class ClickResult:
    image: np.ndarray
    summary: str
    response: dict


def predict_click(backend: Backend, image: np.ndarray, marks: Sequence[Mark], instruction: str) -> ClickResult:
    """The policy's UI adapter with the marks supplied; returns the drawn prediction."""
    instruction = (instruction or "").strip()
    if not instruction:
        raise DemoError("type an instruction first, e.g. 'click the Submit button'")
    resp = backend.act({"adapter": "ui", "instruction": instruction, "image": encode_png_b64(image),
                        "marks": [m.to_dict() for m in marks]})
    marked = perception.render_marks(image, list(marks)) if marks else image
    drawn = draw_click(marked, marks, resp.get("mark"), resp.get("point"))
    return ClickResult(drawn, describe_ui_action(resp), resp)


def shorten(text: str, limit: int = 160) -> str:
    """Model text from an untrained model can be long garbage; keep the page readable."""
    text = " ".join(str(text).split()).replace("`", "'")
    return text if len(text) <= limit else text[:limit] + "..."


def describe_ui_action(resp: dict) -> str:
    raw = resp.get("raw", "")
    if resp.get("error"):
        err = resp["error"]
        head = f"**No action:** the model's answer did not resolve ({err['code']}: {shorten(err['message'])})."
        if resp.get("point") is not None:
            head = f"**{resp.get('op')}** at a point; note: {shorten(err['message'])}"
        return f"{head}\n\nModel text: `{shorten(raw)}`"
    parts = [f"**{resp.get('op')}**"]
    if resp.get("mark") is not None:
        parts.append(f"on **Mark {resp['mark']}**")
    if resp.get("point") is not None:
        x, y = resp["point"]
        parts.append(f"at ({x:.0f}, {y:.0f}) px")
    if resp.get("text"):
        parts.append(f'text "{resp["text"]}"')
    return " ".join(parts) + f"\n\nModel text: `{shorten(raw)}`"


# ---------------------------------------------------------------- video and Trace-of-Mark

def read_video(path: str | os.PathLike | None, limits: DemoLimits = DemoLimits()) -> tuple[np.ndarray, float]:
    """An uploaded short video -> (RGB frames [T, H, W, 3] downscaled, fps)."""
    p = _upload_path(path, "video", limits)
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise DemoError("cannot open the video: not a video file, or a corrupt or unsupported one "
                            "(try an MP4 or AVI)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if reported / fps > limits.max_video_seconds:
            raise DemoError(f"the video is too long: {reported / fps:.1f} s, the limit is "
                            f"{limits.max_video_seconds:g} s; trim it to a short clip")
        frames = []
        while len(frames) < limits.max_video_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            f = min(1.0, limits.video_side / max(h, w))
            if f < 1.0:
                bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise DemoError("no frame of the video could be decoded: the file is corrupt or truncated")
    return np.stack(frames), fps


def analyse_video(frames: np.ndarray, n_future: int = 8) -> Any:
    """Tracks, camera compensation and clustered marks (`perception.trace_of_mark`)."""
    params = perception.TomParams(n_future=n_future)
    try:
        return perception.trace_of_mark(frames, params)
    except perception.TomSkip as exc:
        why = {"too_short": f"the clip is too short: Trace-of-Mark needs at least {n_future + 1} frames",
               "black_clip": "the clip is (almost) black",
               "static_clip": "nothing moves in the clip",
               "no_tracks": "no tracked point stays visible long enough"}.get(exc.reason, str(exc))
        raise DemoError(f"no traces: {why}") from None
    except perception.TrackerUnavailable as exc:
        raise DemoError(f"the point tracker is unavailable: {exc}") from None


def tom_images(frames: np.ndarray, result: Any, n_future: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw tracked grid points over the clip, compensated traces of the clustered marks)."""
    stop = n_future + 1
    raw = frames[0].copy()
    for t in range(stop):
        for (x, y), vis in zip(result.tracks[t], result.visible[t]):
            if vis:
                shade = int(80 + 175 * t / max(1, stop - 1))
                cv2.circle(raw, (int(round(x)), int(round(y))), 1, (shade, 255 - shade, 40), -1)
    fg = [m for m in result.marks if m.id in result.foreground_marks]
    bg = [m for m in result.marks if m.id not in result.foreground_marks]
    traces = perception.render_traces(frames[0], result.tracks_compensated, fg, result.mark_tracks,
                                      n_future=n_future)
    return raw, perception.draw_point_marks(traces, bg)


def tom_summary(result: Any) -> str:
    fg = len(result.foreground_marks)
    return (f"{result.tracks.shape[1]} tracked points over {result.tracks.shape[0]} frames; "
            f"camera {'moving (compensated)' if result.camera_moving else 'static'}; "
            f"{len(result.marks)} marks ({fg} foreground, {len(result.marks) - fg} background).")


def draw_predicted_traces(first: np.ndarray, result: Any, predicted: list[dict] | None,
                          n_future: int) -> np.ndarray:
    """Tracked traces (green) vs predicted ones (magenta) of the foreground marks."""
    out = np.ascontiguousarray(first, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    by_id = {m.id: m for m in result.marks}
    for mid in result.foreground_marks:
        tr = result.tracks_compensated[:n_future + 1, result.mark_tracks[mid]]
        cv2.polylines(out, [np.round(tr).astype(np.int32).reshape(-1, 1, 2)], False, (40, 220, 40), 2, cv2.LINE_AA)
    for tr in predicted or []:
        start = by_id.get(int(tr["mark"]))
        pts = [denormalize_point(tuple(p), w, h) for p in tr.get("points", [])]
        if start is not None:
            pts = [start.centre] + pts
        if len(pts) >= 2:
            arr = np.round(np.asarray(pts, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [arr], False, (255, 0, 255), 2, cv2.LINE_AA)
        for x, y in pts[1:]:
            cv2.circle(out, (int(round(x)), int(round(y))), 2, (255, 0, 255), -1, cv2.LINE_AA)
    out = perception.draw_point_marks(out, list(result.marks))
    cv2.putText(out, "tracked", (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 220, 40), 1, cv2.LINE_AA)
    cv2.putText(out, "predicted", (6, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 0, 255), 1, cv2.LINE_AA)
    return out


def predict_traces(backend: Backend, frames: np.ndarray, result: Any, instruction: str,
                   n_future: int) -> tuple[np.ndarray, str]:
    """The model's trace prediction on the marked first frame, as in the ToM training samples."""
    marked = perception.draw_point_marks(frames[0], list(result.marks))
    resp = backend.chat(trace_prompt((instruction or "").strip(), n_future), encode_png_b64(marked),
                        max_tokens=min(512, 16 + 12 * n_future * max(1, len(result.foreground_marks))),
                        expect="traces")
    predicted = resp.get("parsed") if not resp.get("error") else None
    image = draw_predicted_traces(frames[0], result, predicted, n_future)
    if resp.get("error"):
        text = (f"The model's answer is not a trace ({shorten(resp['error']['message'])}); only the tracked "
                f"traces are drawn.\n\nModel text: `{shorten(resp.get('text', ''))}`")
    else:
        text = f"Predicted traces for {len(predicted or [])} marks.\n\nModel text: `{shorten(resp.get('text', ''))}`"
    return image, text


# ---------------------------------------------------------------- agent: chat and robot actions

def ask(backend: Backend, image: np.ndarray, question: str, max_tokens: int = 64) -> str:
    question = (question or "").strip()
    if not question:
        raise DemoError("type a question about the image first")
    resp = backend.chat(verbal_prompt(question), encode_png_b64(image), max_tokens=max_tokens)
    return shorten(resp.get("text", ""), 600) or "(empty answer)"


# Meta-World: xyz end-effector deltas, 1.0 = 1 cm (action_scale 1/100), gripper effort.
ACTION_UNITS: dict[str, list[tuple[str, str]]] = {
    "metaworld": [("dx", "cm"), ("dy", "cm"), ("dz", "cm"), ("gripper", "-1 open .. +1 close")],
}


def action_labels(dataset: str, dim: int) -> list[tuple[str, str]]:
    known = ACTION_UNITS.get(dataset, [])
    return [known[i] if i < len(known) else (f"a{i}", "dataset units") for i in range(dim)]


def parse_proprio(text: str) -> list[float] | None:
    text = (text or "").replace(",", " ").strip()
    if not text:
        return None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise DemoError(f"robot state must be numbers separated by spaces or commas, got {text[:60]!r}") from None
    if not all(np.isfinite(values)):
        raise DemoError("robot state values must be finite numbers")
    return values


@dataclass
class RobotResult:
    rows: list[list[Any]]
    figure: Any
    summary: str


def robot_action(backend: Backend, image: np.ndarray, instruction: str, dataset: str | None,
                 proprio_text: str = "") -> RobotResult:
    instruction = (instruction or "").strip()
    if not instruction:
        raise DemoError("type a robot instruction first, e.g. 'open the drawer'")
    request: dict[str, Any] = {"adapter": "robot", "instruction": instruction, "image": encode_png_b64(image)}
    if dataset:
        request["dataset"] = dataset
    proprio = parse_proprio(proprio_text)
    if proprio is not None:
        request["proprio"] = proprio
    resp = backend.act(request)
    if resp.get("error") or not resp.get("action"):
        err = resp.get("error") or {"message": "no action returned"}
        raise DemoError(f"the model's action did not decode: {err['message']}")
    labels = action_labels(resp.get("dataset") or dataset or "", len(resp["action"]))
    rows = [[name, round(float(v), 4), unit] for (name, unit), v in zip(labels, resp["action"])]
    return RobotResult(rows, action_bar_plot(labels, resp["action"]),
                       f"Action for **{resp.get('dataset')}** ({resp.get('tokens', 0)} action tokens).")


def action_bar_plot(labels: Sequence[tuple[str, str]], values: Sequence[float]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 2.6), dpi=100)
    ax = fig.add_subplot()
    names = [f"{n}\n({u})" if len(u) < 12 else n for n, u in labels]
    colours = ["#2a9d8f" if v >= 0 else "#e76f51" for v in values]
    ax.bar(names, values, color=colours)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("action value")
    ax.set_title("decoded action")
    fig.tight_layout()
    return fig
