"""Fixtures for the demo tests: a tiny random checkpoint made with `magma model init` (plus
Meta-World-like action statistics so the robot adapter answers), generated media, and the
demo itself in a subprocess on a free port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from magma.browser import launch_chromium

ROOT = Path(__file__).resolve().parents[2]
UPLOAD_LIMIT_MB = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot_like(seed: int = 0) -> np.ndarray:
    """A light page with a few labelled buttons (what region proposals should find)."""
    rng = np.random.default_rng(seed)
    img = np.full((300, 420, 3), 245, np.uint8)
    for i, label in enumerate(["Submit", "Cancel", "OK"]):
        x0, y0 = 30 + i * 130, 60 + int(rng.integers(0, 40))
        cv2.rectangle(img, (x0, y0), (x0 + 100, y0 + 40), (60, 110, 200), -1)
        cv2.putText(img, label, (x0 + 12, y0 + 27), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    cv2.rectangle(img, (30, 200), (390, 240), (120, 120, 120), 2)
    return img


def moving_square_video(path: Path, frames: int = 14, fps: float = 10.0) -> Path:
    rng = np.random.default_rng(1)
    background = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (7, 7), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (160, 120))
    for t in range(frames):
        f = background.copy()
        x = 20 + 6 * t
        cv2.rectangle(f, (x, 40), (x + 30, 70), (255, 40, 40), -1)
        cv2.rectangle(f, (x + 8, 48), (x + 16, 56), (20, 20, 200), -1)
        writer.write(f[:, :, ::-1])
    writer.release()
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    cv2.imwrite(str(d / "screen.png"), screenshot_like()[:, :, ::-1])
    (d / "notes.png").write_text("this is plain text, not an image\n" * 20)
    (d / "huge.png").write_bytes(np.random.default_rng(2).bytes(int(1.5 * UPLOAD_LIMIT_MB * 2 ** 20)))
    (d / "corrupt.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI " + np.random.default_rng(3).bytes(40_000))
    moving_square_video(d / "clip.avi")
    return d


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    from magma.action_tokenizer import ActionStats, save_action_stats

    out = tmp_path_factory.mktemp("demo_ckpt") / "tiny"
    subprocess.run([sys.executable, "-m", "magma.cli", "model", "init", "--config",
                    str(ROOT / "configs/model/tiny.yaml"), "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True, timeout=180)
    actions = np.random.default_rng(0).uniform(-1, 1, (200, 4))
    save_action_stats({"metaworld": ActionStats.from_actions(actions)}, out)
    return out


@pytest.fixture(scope="session")
def demo_url(demo_checkpoint, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("demo_log") / "demo.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="2",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "magma.cli", "demo", "--checkpoint", str(demo_checkpoint),
                                 "--host", "127.0.0.1", "--port", str(port), "--max-upload-mb", str(UPLOAD_LIMIT_MB),
                                 "--max-video-seconds", "5", "--threads", "2"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    import httpx

    deadline = time.monotonic() + 150
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"demo exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"demo did not start in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log_path.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")  # sync Playwright owns the thread's loop: close it with the module
def browser_page(demo_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(demo_url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Set-of-Mark").wait_for()
        yield page
        browser.close()
