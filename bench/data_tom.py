"""Trace-of-Mark throughput: LK frames/s (15x15 grid, 256x256, one core), the cost of ToM
(compensation + clustering) relative to tracking, and the 2-worker speed-up on whole clips.

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_tom.py [--clips 16] [--repeats 3]

All numbers come from one run; ratios compare against the baseline measured in it.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data_tom")]

from data_pipeline.tom.traces import TomParams, trace_of_mark  # noqa: E402
from data_pipeline.tom.tracking import grid_queries, track  # noqa: E402
from tom_synth import synthetic_clip  # noqa: E402

CAMERAS = [{}, {"pan": (1.5, 0.8)}, {"pan": (1.0, -0.5), "zoom": 0.01}]


def _clip(i: int) -> np.ndarray:
    return synthetic_clip(i, frames=16, size=256, **CAMERAS[i % len(CAMERAS)]).frames


def _one_clip(i: int) -> int:
    cv2.setNumThreads(1)
    return len(trace_of_mark(_clip(i), TomParams(grid=15)).marks)


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16, help="clips for the worker speed-up")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    clips = [_clip(i) for i in range(len(CAMERAS))]
    q = grid_queries(256, 256, 15)

    tracked = [track(c, q) for c in clips]
    t_track = _best(lambda: [track(c, q) for c in clips], args.repeats)
    t_tom = _best(lambda: [trace_of_mark(c, tracks=tv) for c, tv in zip(clips, tracked)],
                  args.repeats)
    frames = sum(len(c) for c in clips)
    print(f"LK tracking, 15x15 grid, 256x256, 1 thread: {frames / t_track:8.1f} frames/s "
          f"({t_track / len(clips) * 1e3:.1f} ms per 16-frame clip)")
    print(f"ToM (compensation + split + K-means) / tracking time: {t_tom / t_track:6.3f}x")

    items = list(range(args.clips))
    t1 = _best(lambda: list(map(_one_clip, items)), 1)
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_one_clip, items[:2])  # warm the workers
        t2 = _best(lambda: pool.map(_one_clip, items, chunksize=1), 1)
    load = os.getloadavg()[0]
    print(f"{args.clips} clips end to end: 1 worker {t1:.2f} s, 2 workers {t2:.2f} s -> "
          f"speed-up {t1 / t2:.2f}x (target >= 1.7x; load average now {load:.1f} on "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
