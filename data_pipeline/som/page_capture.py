"""Live UI capture: render an HTML file or URL in headless Debian chromium (Playwright), take
the screenshot and collect the boxes of visible interactive and text elements.

An element counts when it has a non-empty box that intersects the viewport, is not hidden by
CSS (display, visibility, opacity) and is the topmost element at one of a few points inside it
(so covered elements get no mark). Boxes are clipped to the viewport; text inside a control is
that control's text; a control nested in another with almost the same box folds into it.
One browser is kept per process and reused across pages (launch ~0.7 s, capture ~50 ms).
"""
from __future__ import annotations

import atexit
import multiprocessing.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from magma.browser import launch_chromium, screenshot_png
from magma.marks import Mark
from data_pipeline.som.dom_marks import box_iou, reading_order


class CaptureError(RuntimeError):
    """A page that failed to load, timed out or could not be captured (`reason` is short)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Runs in the page: returns [{x0, y0, x1, y1, role, text, interactive, depth}] in DOM order.
_COLLECT_JS = r"""
() => {
  const vw = window.innerWidth, vh = window.innerHeight;
  const INTERACTIVE = 'a[href], button, input:not([type=hidden]), textarea, select, summary, ' +
    '[role=button], [role=link], [role=tab], [role=checkbox], [role=radio], [role=menuitem], ' +
    '[role=option], [role=switch], [role=textbox], [onclick], [contenteditable=true]';
  const roleOf = (el) => {
    const r = el.getAttribute('role'); if (r) return r;
    const t = el.tagName.toLowerCase();
    if (t === 'a') return 'link';
    if (t === 'input') {
      const ty = (el.getAttribute('type') || 'text').toLowerCase();
      if (ty === 'checkbox' || ty === 'radio') return ty;
      if (['button', 'submit', 'reset', 'image'].includes(ty)) return 'button';
      if (ty === 'range') return 'slider';
      return 'textbox';
    }
    if (t === 'textarea') return 'textbox';
    if (t === 'select') return 'select';
    if (t === 'button' || t === 'summary') return 'button';
    return 'button';  // [onclick] and friends
  };
  const textOf = (el) => {
    const t = el.tagName.toLowerCase();
    if (t === 'input' || t === 'textarea') {
      const ty = (el.getAttribute('type') || '').toLowerCase();
      if ((ty === 'checkbox' || ty === 'radio') && el.labels && el.labels.length)
        return el.labels[0].innerText;
      if (['button', 'submit', 'reset'].includes(ty)) return el.value;
      const label = el.labels && el.labels.length ? el.labels[0].innerText : '';
      return el.value || el.placeholder || el.getAttribute('aria-label') || label || '';
    }
    if (t === 'select') return el.selectedIndex >= 0 ? el.options[el.selectedIndex].text : '';
    return el.innerText || el.getAttribute('aria-label') || el.getAttribute('title') || '';
  };
  const styleVisible = (el) => {
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || s.visibility === 'collapse' ||
          parseFloat(s.opacity) === 0) return false;
    }
    return true;
  };
  const topmost = (el, x0, y0, x1, y1) => {
    const pts = [[(x0 + x1) / 2, (y0 + y1) / 2], [x0 + 2, y0 + 2], [x1 - 2, y0 + 2],
                 [x0 + 2, y1 - 2], [x1 - 2, y1 - 2]];
    for (const [x, y] of pts) {
      const hit = document.elementFromPoint(x, y);
      if (!hit) continue;
      if (hit === el || el.contains(hit)) return true;
      if (el.labels && Array.from(el.labels).some(l => l === hit || l.contains(hit))) return true;
    }
    return false;
  };
  const boxOf = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width <= 0 || r.height <= 0) return null;
    const x0 = Math.max(0, r.left), y0 = Math.max(0, r.top);
    const x1 = Math.min(vw, r.right), y1 = Math.min(vh, r.bottom);
    if (x1 - x0 < 1 || y1 - y0 < 1) return null;
    return [x0, y0, x1, y1];
  };
  const out = [];
  const controls = new Set(document.querySelectorAll(INTERACTIVE));
  const labelled = new Set();
  for (const c of controls) if (c.labels) for (const l of c.labels) labelled.add(l);
  const insideControl = (el) => {
    for (let e = el.parentElement; e; e = e.parentElement) if (controls.has(e)) return true;
    return false;
  };
  const depth = (el) => { let d = 0; for (let e = el; e; e = e.parentElement) d++; return d; };
  for (const el of document.body.querySelectorAll('*')) {
    const isControl = controls.has(el);
    if (!isControl) {
      if (labelled.has(el) || insideControl(el)) continue;
      const tag = el.tagName.toLowerCase();
      if (['script', 'style', 'noscript', 'template', 'svg', 'option'].includes(tag)) continue;
      const ownText = Array.from(el.childNodes).some(
        n => n.nodeType === 3 && n.textContent.trim().length > 0);
      if (!ownText) continue;
    }
    const b = boxOf(el);
    if (!b || !styleVisible(el) || !topmost(el, ...b)) continue;
    out.push({x0: b[0], y0: b[1], x1: b[2], y1: b[3], role: isControl ? roleOf(el) : 'text',
              text: (textOf(el) || '').trim().replace(/\s+/g, ' ').slice(0, 200),
              interactive: isControl, depth: depth(el)});
  }
  return out;
}
"""


def _inside(a: tuple[float, ...], b: tuple[float, ...], tol: float = 1.0) -> bool:
    return a[0] >= b[0] - tol and a[1] >= b[1] - tol and a[2] <= b[2] + tol and a[3] <= b[3] + tol


def marks_from_collected(elements: list[dict[str, Any]]) -> list[Mark]:
    """Browser records -> de-duplicated marks in reading order (ids from 0)."""
    boxes = [(e["x0"], e["y0"], e["x1"], e["y1"]) for e in elements]
    drop: set[int] = set()
    for i, a in enumerate(elements):
        for j, b in enumerate(elements):
            if i == j or j in drop:
                continue
            # nested controls with nearly the same box: keep the outer (shallower) one
            if (a["interactive"] and b["interactive"] and b["depth"] < a["depth"]
                    and _inside(boxes[i], boxes[j]) and box_iou(boxes[i], boxes[j]) > 0.8):
                drop.add(i)
            # text blocks whose box equals a control's (e.g. a styled wrapper): one mark
            if not a["interactive"] and b["interactive"] and box_iou(boxes[i], boxes[j]) > 0.9:
                drop.add(i)
    keep = [i for i in range(len(elements)) if i not in drop]
    order = reading_order([boxes[i] for i in keep])
    return [Mark(n, tuple(float(v) for v in boxes[keep[k]]), elements[keep[k]]["text"],  # type: ignore[arg-type]
                 elements[keep[k]]["role"]) for n, k in enumerate(order)]


class PageCapturer:
    """One headless chromium, reused for many pages (one per process)."""

    def __init__(self) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise CaptureError("no_browser", "playwright is not installed (pip install playwright)") from None
        self._pw = sync_playwright().start()
        try:
            self._browser = launch_chromium(self._pw)
        except FileNotFoundError as exc:
            self._pw.stop()
            raise CaptureError("no_browser", str(exc)) from None
        self._context = self._browser.new_context()
        self._page = None

    def capture(self, url_or_path: str | Path, viewport: tuple[int, int] = (1280, 800),
                timeout_s: float = 15.0, scroll: tuple[int, int] = (0, 0)
                ) -> tuple[np.ndarray, list[Mark]]:
        url = _to_url(url_or_path)
        if self._page is None or self._page.is_closed():
            self._page = self._context.new_page()
        page = self._page
        page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
        try:
            try:
                response = page.goto(url, timeout=timeout_s * 1000, wait_until="load")
            except Exception as exc:  # playwright TimeoutError / net::ERR_*
                reason = "page_timeout" if "Timeout" in type(exc).__name__ else "page_failed_to_load"
                raise CaptureError(reason, f"{url}: {str(exc).splitlines()[0]}") from None
            if response is not None and response.status >= 400:
                raise CaptureError("page_failed_to_load", f"{url}: HTTP {response.status}")
            if scroll != (0, 0):
                page.evaluate(f"window.scrollTo({int(scroll[0])}, {int(scroll[1])})")
            elements = page.evaluate(_COLLECT_JS)
            png = screenshot_png(page)
        except Exception:
            page.close()  # a broken page is not reused
            raise
        import cv2
        bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        return np.ascontiguousarray(bgr[:, :, ::-1]), marks_from_collected(elements)

    def close(self) -> None:
        try:
            self._browser.close()
            self._pw.stop()
        except Exception:
            pass


def _to_url(url_or_path: str | Path) -> str:
    s = str(url_or_path)
    if s.startswith(("http://", "https://", "file://", "data:", "about:")):
        return s
    path = Path(s).expanduser().resolve()
    if not path.is_file():
        raise CaptureError("page_failed_to_load", f"{path}: no such file")
    return path.as_uri()


_CAPTURER: dict[int, PageCapturer] = {}  # pid -> capturer (a forked child must not reuse its parent's)


def shared_capturer() -> PageCapturer:
    pid = os.getpid()
    if pid not in _CAPTURER:
        _CAPTURER.clear()
        _CAPTURER[pid] = PageCapturer()
        atexit.register(_CAPTURER[pid].close)
        # pool workers leave through os._exit (no atexit) but run multiprocessing finalizers
        multiprocessing.util.Finalize(None, _CAPTURER[pid].close, exitpriority=10)
    return _CAPTURER[pid]


def close_shared_capturer() -> None:
    """Closes this process's browser. Playwright's sync API keeps an event loop on the calling
    thread while it runs, so any other sync Playwright user on that thread (the browser agent,
    the demo) must wait until the shared capturer is closed."""
    capturer = _CAPTURER.pop(os.getpid(), None)
    if capturer is not None:
        capturer.close()


def capture_page(url_or_html_path: str | Path, viewport: tuple[int, int] = (1280, 800),
                 timeout_s: float = 15.0) -> tuple[np.ndarray, list[Mark]]:
    """Screenshot (RGB uint8 [H, W, 3]) and marks of the visible interactive/text elements."""
    return shared_capturer().capture(url_or_html_path, viewport, timeout_s)
