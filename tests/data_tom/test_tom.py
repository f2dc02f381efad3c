"""Trace-of-Mark on synthetic clips: camera compensation, foreground marks, trace targets."""
from __future__ import annotations

import numpy as np
import pytest

from magma.codecs import denormalize_point, is_error, parse_traces
from data_pipeline.tom.traces import TomParams, TomSkip, tom_overlay, trace_of_mark
from tom_synth import synthetic_clip

MOVING_CAMERAS = {"pan": {"pan": (1.5, 0.8)}, "pan_zoom": {"pan": (1.0, -0.5), "zoom": 0.01},
                  "pan_zoom_out": {"pan": (-2.0, 1.0), "zoom": -0.01}}


def _true_background(clip, result) -> np.ndarray:
    """Tracks that start on the background and stay uncovered and visible throughout."""
    start = result.tracks[0]
    owner = clip.object_of(start)
    gt = clip.ground_truth(start)
    h, w = clip.frames.shape[1:3]
    uncovered = np.ones(len(start), bool)
    for t in range(len(clip.frames)):
        masks = clip.object_masks(t, dilate=4)
        x = np.clip(np.round(gt[t, :, 0]).astype(int), 0, w - 1)
        y = np.clip(np.round(gt[t, :, 1]).astype(int), 0, h - 1)
        uncovered &= masks[y, x] < 0
    return (owner < 0) & uncovered & result.visible.all(0)


@pytest.mark.parametrize("camera", sorted(MOVING_CAMERAS))
@pytest.mark.parametrize("seed", [0, 1])
def test_compensated_background_stays_static(camera: str, seed: int) -> None:
    clip = synthetic_clip(seed, **MOVING_CAMERAS[camera])
    result = trace_of_mark(clip.frames)
    assert result.camera_moving
    bg = _true_background(clip, result)
    assert bg.sum() >= 50
    raw = np.linalg.norm(result.tracks - result.tracks[:1], axis=2)[:, bg].max(0)
    comp = np.linalg.norm(result.tracks_compensated - result.tracks_compensated[:1], axis=2)
    worst = comp[:, bg].max(0)  # per track, the largest drift over the clip
    assert np.median(raw) > 10  # the camera really moved these points
    assert np.percentile(worst, 95) <= 2.0
    assert not result.foreground[bg].mean() > 0.05


def test_static_camera_is_not_compensated() -> None:
    clip = synthetic_clip(0)
    result = trace_of_mark(clip.frames)
    assert not result.camera_moving
    np.testing.assert_array_equal(result.tracks, result.tracks_compensated)


@pytest.mark.parametrize("camera", ["static"] + sorted(MOVING_CAMERAS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foreground_marks_land_on_moving_objects(camera: str, seed: int) -> None:
    clip = synthetic_clip(seed, **MOVING_CAMERAS.get(camera, {}))
    result = trace_of_mark(clip.frames, TomParams(fg_clusters=3, bg_clusters=6))
    objects = clip.object_masks(0, dilate=3)
    fg = [m for m in result.marks if m.id in result.foreground_marks]
    bg = [m for m in result.marks if m.id not in result.foreground_marks]
    assert 1 <= len(fg) <= 3 and len(bg) >= 3
    on = [objects[int(round(m.centre[1])), int(round(m.centre[0]))] for m in fg]
    assert all(o >= 0 for o in on), on
    assert set(on) == {0, 1}  # each moving square gets a mark
    assert sum(objects[int(round(m.centre[1])), int(round(m.centre[0]))] >= 0 for m in bg) <= 1
    assert [m.id for m in result.marks] == list(range(1, len(result.marks) + 1))


def test_trace_target_follows_true_motion() -> None:
    clip = synthetic_clip(3, pan=(1.0, 0.5))
    params = TomParams(n_future=6)
    result = trace_of_mark(clip.frames, params)
    text = result.target_text(params.n_future)
    traces = parse_traces(text)
    assert not is_error(traces)
    assert [t.mark for t in traces] == result.foreground_marks
    # Truth in frame-0 coordinates: the object moved by its world velocity, seen at frame-0 scale.
    scale = clip.cameras[0][0, 0]
    for tr in traces:
        start = result.tracks[0, result.mark_tracks[tr.mark]]
        obj = clip.object_of(start[None])[0]
        assert obj >= 0 and len(tr.points) == params.n_future
        vx, vy = clip.velocities[obj]
        for t, p in enumerate(tr.points, start=1):
            want = start + scale * t * np.array([vx, vy])
            got = np.array(denormalize_point(p, 256, 256))
            assert np.linalg.norm(got - want) <= 2.0, (tr.mark, t, got, want)


def test_bad_clips_are_skipped_with_a_reason() -> None:
    clip = synthetic_clip(0)
    still = np.repeat(clip.frames[:1], 16, axis=0)
    with pytest.raises(TomSkip) as exc:
        trace_of_mark(still)
    assert exc.value.reason == "static_clip"
    with pytest.raises(TomSkip) as exc:
        trace_of_mark(np.zeros((16, 64, 64, 3), np.uint8))
    assert exc.value.reason == "black_clip"
    with pytest.raises(TomSkip) as exc:
        trace_of_mark(clip.frames[:4], TomParams(n_future=8))
    assert exc.value.reason == "too_short"


def test_overlay_draws_marks_and_traces() -> None:
    clip = synthetic_clip(0)
    result = trace_of_mark(clip.frames)
    overlay = tom_overlay(clip.frames, result, n_future=8)
    assert overlay.shape == clip.frames[0].shape and overlay.dtype == np.uint8
    changed = np.abs(overlay.astype(int) - clip.frames[0].astype(int)).sum(2) > 0
    for m in result.marks:
        x, y = (int(round(v)) for v in m.centre)
        assert changed[y, x]
    assert changed.mean() < 0.2  # drawn on the frame, not over it
