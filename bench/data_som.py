"""Set-of-Mark throughput: live page capture (pages/s), region proposals + rendering (images/s),
and the speed-up of 2 workers over 1 through the shard writer (ratios measured in one run).

    .venv/bin/python bench/data_som.py [--pages 24] [--images 60] [--workdir /tmp/data_som/bench]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipeline.build.writer import build_source
from data_pipeline.som.synthetic import synthetic_image
from data_pipeline.build.registry import SourceConfig

PAGES = Path(__file__).resolve().parents[1] / "tests" / "data_som" / "pages"


def make_inputs(work: Path, n_pages: int, n_images: int) -> tuple[Path, Path]:
    pages, images = work / "pages", work / "images"
    pages.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    templates = sorted(PAGES.glob("*.html"))
    for i in range(n_pages):
        shutil.copy(templates[i % len(templates)], pages / f"page{i:03d}.html")
    rng = np.random.default_rng(0)
    for i in range(n_images):
        Image.fromarray(synthetic_image(rng, (640, 480))).save(images / f"img{i:03d}.png")
    return pages, images


def timed_build(src: SourceConfig, out: Path, workers: int) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    m = build_source(src, out, samples_per_shard=64, workers=workers, progress=False)
    return time.perf_counter() - t0, m["num_items"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=24)
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/data_som/bench"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.workdir, ignore_errors=True)
    pages, images = make_inputs(args.workdir, args.pages, args.images)

    # per-call costs in this process (the browser is launched once, outside the timing)
    from data_pipeline.perception import capture_page, propose_marks, render_marks
    capture_page(next(pages.iterdir()))
    page_files = sorted(pages.iterdir())
    t0 = time.perf_counter()
    for f in page_files:
        capture_page(f)
    capture_rate = len(page_files) / (time.perf_counter() - t0)
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(images.iterdir())]
    t0 = time.perf_counter()
    for a in arrays:
        render_marks(a, propose_marks(a, max_marks=16))
    propose_rate = len(arrays) / (time.perf_counter() - t0)
    print(f"single process, warm: capture {capture_rate:.1f} pages/s; "
          f"proposals+render {propose_rate:.1f} images/s (640x480)")

    rows = []
    for kind, path, params in (("html", pages, {"per_task": 1}),
                               ("images", images, {"per_task": 1, "max_marks": 16})):
        src = SourceConfig(name=f"bench_{kind}", type=kind, params={"path": str(path), **params})
        t1, n = timed_build(src, args.workdir / f"out_{kind}_1", 1)
        t2, _ = timed_build(src, args.workdir / f"out_{kind}_2", 2)
        rows.append((kind, n, n / t1, n / t2, t1 / t2))
    print("\nshard writer end to end (pool start, browser launch per worker, PNG + tar writes):")
    print(f"{'source':8s} {'items':>5s} {'1 worker/s':>11s} {'2 workers/s':>12s} {'speed-up':>9s}")
    for kind, n, r1, r2, speedup in rows:
        print(f"{kind:8s} {n:5d} {r1:11.2f} {r2:12.2f} {speedup:8.2f}x")


if __name__ == "__main__":
    main()
