"""LK tracker accuracy on synthetic clips with known motion, and the CoTracker adapter contract."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from data_pipeline.tom.tracking import (LKParams, TrackerUnavailable, ensure_backend, grid_queries,
                                    track, track_cotracker)
from tom_synth import synthetic_clip

CAMERAS = {"static": {}, "pan": {"pan": (1.5, 0.8)}, "pan_zoom": {"pan": (1.0, -0.5), "zoom": 0.01},
           "pan_zoom_out": {"pan": (-2.0, 1.0), "zoom": -0.01}}


@pytest.mark.parametrize("camera", sorted(CAMERAS))
@pytest.mark.parametrize("seed", [0, 1])
def test_lk_median_error_on_visible_points(camera: str, seed: int) -> None:
    clip = synthetic_clip(seed, frames=16, size=256, **CAMERAS[camera])
    queries = grid_queries(256, 256, 15)
    tracks, visible = track(clip.frames, queries, backend="lk")
    assert tracks.shape == (16, 225, 2) and visible.shape == (16, 225)
    assert visible.dtype == bool and visible[0].all()
    err = np.linalg.norm(tracks - clip.ground_truth(queries), axis=2)
    assert np.median(err[visible]) <= 1.5
    # Visibility must not be bought by dropping most points.
    assert visible[-1].mean() >= 0.5


def test_lk_marks_occluded_points_invisible() -> None:
    clip = synthetic_clip(0)
    queries = grid_queries(256, 256, 15)
    _, visible = track(clip.frames, queries)
    with_check = visible[-1].sum()
    _, loose = track(clip.frames, queries, params=LKParams(min_patch_ncc=-2.0))
    # Background points run over by the squares are caught by the appearance check.
    assert with_check < loose[-1].sum()
    covered = [i for i, q in enumerate(queries)
               if clip.object_of(q[None])[0] < 0 and clip.object_masks(15)[int(q[1]), int(q[0])] >= 0]
    assert covered and not visible[-1, covered].any()


def test_grid_and_input_checks() -> None:
    q = grid_queries(100, 200, 4)
    assert q.shape == (16, 2) and q[:, 0].max() < 200 and q[:, 1].max() < 100
    with pytest.raises(ValueError):
        track(np.zeros((4, 8, 8), np.uint8), q)
    with pytest.raises(ValueError):
        track(np.zeros((4, 8, 8, 3), np.uint8), q, backend="magic")


def test_cotracker_missing_checkpoint_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MAGMA_COTRACKER_CHECKPOINT", raising=False)
    monkeypatch.setitem(sys.modules, "cotracker", None)  # as if the package were absent
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    with pytest.raises(TrackerUnavailable, match="pip install --no-deps autosegmentor"):
        ensure_backend("cotracker", tmp_path / "missing.pth")
    with pytest.raises(TrackerUnavailable, match="autosegmentor"):
        track(np.zeros((4, 32, 32, 3), np.uint8), np.zeros((1, 2), np.float32), "cotracker")


@pytest.mark.slow
@pytest.mark.parametrize("online", [False, True])
def test_cotracker_adapter_contract(tmp_path, online: bool) -> None:
    """Real upstream model code with random weights: shapes, dtypes and the query frame."""
    pytest.importorskip("cotracker.predictor",
                        reason="cotracker not importable: pip install --no-deps autosegmentor==3.0.1")
    import torch
    from cotracker.models.build_cotracker import build_cotracker

    torch.manual_seed(0)
    ckpt = tmp_path / "random_cotracker3.pth"
    torch.save(build_cotracker(None, offline=not online, window_len=16 if online else 60
                               ).state_dict(), ckpt)
    frames = synthetic_clip(0, frames=8, size=256).frames[:, ::2, ::2].copy()  # 8 x 128 x 128
    queries = np.array([[20.0, 30.0], [64.0, 64.0], [100.5, 90.0]], np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on a shared 2-core box run ~5x slower than 1
    try:
        tracks, visible = track_cotracker(frames, queries, checkpoint=ckpt, online=online,
                                          model_resolution=(64, 64))
    finally:
        torch.set_num_threads(threads)
    assert tracks.shape == (8, 3, 2) and tracks.dtype == np.float32
    assert visible.shape == (8, 3) and visible.dtype == bool
    assert np.isfinite(tracks).all()
    if not online:  # the offline predictor pins frame 0 to the queries
        np.testing.assert_allclose(tracks[0], queries, atol=1e-3)
