"""Playwright work for the demo. The sync API is bound to the thread that started it, while
Gradio runs handlers on a pool of threads, so each browser lives on its own single thread:
`on_capture_thread` for page captures (data_pipeline's shared capturer) and `LiveSession` for
the step-by-step browser agent (serve.client.browser's observe/execute)."""
from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from data_pipeline import perception
from magma.browser import launch_chromium
from serve.client.browser import execute, history_text, observe, ui_request
from serve.demo.backend import Backend, DemoError
from serve.demo.logic import shorten, draw_click, is_local_target

T = TypeVar("T")
ASSETS = Path(__file__).resolve().parent / "assets"
LIVE_PAGE = ASSETS / "live_page.html"

_capture_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-capture")


def on_capture_thread(fn: Callable[..., T], *args: Any, timeout: float = 60.0) -> T:
    return _capture_thread.submit(fn, *args).result(timeout=timeout)


def _png_to_rgb(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


@dataclass
class LiveStep:
    screen: np.ndarray  # marked screen with the predicted action drawn
    summary: str
    page_status: str
    executed: bool = True


@dataclass
class LiveSession:
    """One headless page driven by the policy, one step at a time."""

    viewport: tuple[int, int] = (800, 500)
    history: list[str] = field(default_factory=list)
    steps: int = 0
    url: str = ""
    _thread: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "demo-live"))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pw: Any = None
    _browser: Any = None
    _page: Any = None

    def _run(self, fn: Callable[..., T], *args: Any, timeout: float = 120.0) -> T:
        with self._lock:
            return self._thread.submit(fn, *args).result(timeout=timeout)

    def _ensure_page(self) -> Any:
        if self._browser is None or not self._browser.is_connected():
            from playwright.sync_api import sync_playwright

            self._pw = self._pw or sync_playwright().start()
            try:
                self._browser = launch_chromium(self._pw)
            except FileNotFoundError as exc:
                raise DemoError(str(exc)) from None
            self._page = None
        if self._page is None or self._page.is_closed():
            self._page = self._browser.new_page(viewport={"width": self.viewport[0], "height": self.viewport[1]})
        return self._page

    def _page_status(self) -> str:
        try:
            return str(self._page.evaluate(
                "() => (document.getElementById('result') || {}).innerText || ''")).strip()
        except Exception:
            return ""

    def _marked_screen(self, image_b64: str, dom: list[dict]) -> tuple[np.ndarray, list]:
        screen = _png_to_rgb(image_b64)
        marks, _ = perception.marks_from_dom_elements(dom)
        return (perception.render_marks(screen, list(marks)) if marks else screen), list(marks)

    def reset(self, url: str | None = None) -> LiveStep:
        def go() -> LiveStep:
            target = (url or "").strip() or LIVE_PAGE.as_uri()
            if not is_local_target(target):
                raise DemoError(f"{target}: the live agent only opens local pages")
            if "://" not in target:
                p = Path(target).expanduser().resolve()
                if not p.is_file():
                    raise DemoError(f"{p}: no such HTML file")
                target = p.as_uri()
            page = self._ensure_page()
            try:
                page.goto(target, timeout=10_000)
            except Exception as exc:
                raise DemoError(f"cannot open {target}: {str(exc).splitlines()[0]}") from None
            self.url, self.history, self.steps = target, [], 0
            image_b64, dom = observe(page)
            marked, marks = self._marked_screen(image_b64, dom)
            return LiveStep(marked, f"Opened {target}: {len(marks)} marks on the screen.", self._page_status())

        return self._run(go)

    def step(self, backend: Backend, instruction: str) -> LiveStep:
        instruction = (instruction or "").strip()
        if not instruction:
            raise DemoError("type the agent's task first, e.g. 'click the OK button'")
        if self._page is None:
            self.reset()

        def one() -> LiveStep:
            page = self._ensure_page()
            image_b64, dom = observe(page)
            marked, marks = self._marked_screen(image_b64, dom)
            action = backend.act(ui_request(instruction, image_b64, dom, self.history))
            drawn = draw_click(marked, marks, action.get("mark"), action.get("point"))
            ok, note = execute(page, action)
            self.steps += 1
            entry = history_text(action) if ok else None
            if entry:
                self.history.append(entry)
            verdict = "executed" if ok else "not executed"
            summary = f"Step {self.steps}: `{shorten(action.get('raw', ''), 80)}` -> {verdict} ({note})"
            return LiveStep(drawn, summary, self._page_status(), ok)

        return self._run(one)

    def close(self) -> None:
        def stop() -> None:
            try:
                if self._browser is not None:
                    self._browser.close()
                if self._pw is not None:
                    self._pw.stop()
            except Exception:
                pass

        try:
            self._thread.submit(stop).result(timeout=10)
        finally:
            self._thread.shutdown(wait=False)
