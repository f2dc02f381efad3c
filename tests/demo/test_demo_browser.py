"""End to end in a real (headless Debian chromium) browser: the demo on a tiny random
checkpoint, driven through its tabs, with bad uploads in between."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.demo.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def upload(page, elem_id: str, path: Path) -> None:
    """Clear a gr.File if it holds a file, then upload `path` through its file input."""
    box = page.locator(f"#{elem_id}")
    clear = box.get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()
    box.locator("input[type=file]").set_input_files(str(path))


def status(page, elem_id: str, text: str):
    from playwright.sync_api import expect

    loc = page.locator(f"#{elem_id}")
    expect(loc).to_contain_text(text, timeout=90_000)
    assert "Traceback" not in page.content()
    return loc.inner_text()


def shot(page, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.std() > 5, f"{name}: screenshot looks blank"
    return path


def image_shown(page, elem_id: str) -> None:
    from playwright.sync_api import expect

    img = page.locator(f"#{elem_id} img")
    expect(img.first).to_be_visible(timeout=90_000)
    assert page.evaluate("(id) => { const i = document.querySelector('#' + id + ' img'); "
                         "return i.complete && i.naturalWidth > 0; }", elem_id)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo_screens")


def test_set_of_mark_tab(browser_page, media, shots):
    page = browser_page
    page.get_by_role("tab", name="Set-of-Mark").click()
    # bad uploads first: each shows an error and leaves the tab usable
    upload(page, "som-upload", media / "notes.png")
    assert "not a usable image" in status(page, "som-status", "Error")
    upload(page, "som-upload", media / "huge.png")
    assert "too large" in status(page, "som-status", "too large")
    upload(page, "som-upload", media / "screen.png")
    text = status(page, "som-status", "marks on the image")
    n_marks = int(re.search(r"(\d+) marks on the image", text).group(1))
    assert n_marks >= 3  # three buttons at least
    image_shown(page, "som-marked")
    table = page.locator("#som-table").inner_text()
    assert table.count("region") == n_marks  # one row per proposed region
    page.locator("#som-instruction textarea").fill("click the Submit button")
    page.locator("#som-predict").click()
    action = status(page, "som-action", "Model text")
    image_shown(page, "som-prediction")
    # a random model may not answer with a valid action, but the page must say which
    assert "Mark" in action or "No action" in action
    shot(page, shots, "tab_set_of_mark")


def test_set_of_mark_page_capture(browser_page, shots):
    """A local HTML page is captured in headless chromium and marked from its DOM."""
    page = browser_page
    page.get_by_role("tab", name="Set-of-Mark").click()
    page.locator("#som-url textarea").fill("https://example.com/")
    page.locator("#som-capture").click()
    status(page, "som-status", "only local pages")
    page.locator("#som-url textarea").fill(str(ROOT / "serve/demo/assets/live_page.html"))
    page.locator("#som-capture").click()
    status(page, "som-status", "marks on the page")
    table = page.locator("#som-table").inner_text()
    assert "Submit" in table and "Cancel" in table  # DOM marks carry the element texts
    image_shown(page, "som-marked")


def test_trace_of_mark_tab(browser_page, media, shots):
    page = browser_page
    page.get_by_role("tab", name="Trace-of-Mark").click()
    upload(page, "tom-upload", media / "corrupt.avi")
    assert "Error" in status(page, "tom-status", "Error")
    upload(page, "tom-upload", media / "clip.avi")
    text = status(page, "tom-status", "tracked points")
    assert "foreground" in text
    image_shown(page, "tom-raw")
    image_shown(page, "tom-traces")
    page.locator("#tom-predict").click()
    status(page, "tom-predict-status", "Model text")
    image_shown(page, "tom-prediction")
    shot(page, shots, "tab_trace_of_mark")


def test_agent_tab(browser_page, media, shots):
    page = browser_page
    page.get_by_role("tab", name="Agent").click()
    page.locator("#agent-ask").click()  # nothing uploaded yet -> an error, not a crash
    status(page, "agent-status", "upload an image first")
    upload(page, "agent-upload", media / "screen.png")
    status(page, "agent-status", "image loaded")
    page.locator("#agent-ask").click()
    status(page, "agent-status", "answered")
    assert page.locator("#agent-chat").inner_text().count("What is in the image?") == 1
    page.locator("#robot-predict").click()
    status(page, "agent-status", "Action for")
    table = page.locator("#robot-table").inner_text()
    assert "dx" in table and "cm" in table and "gripper" in table
    page.locator("#robot-plot img, #robot-plot svg, #robot-plot canvas").first.wait_for()
    shot(page, shots, "tab_agent")


def test_live_tab(browser_page, shots):
    page = browser_page
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-reset").click()
    status(page, "live-log", "marks on the screen")
    image_shown(page, "live-screen")
    page.locator("#live-step").click()
    status(page, "live-log", "Step 1")
    page.locator("#live-auto").click()  # continues the episode (stops early on an action that cannot run)
    status(page, "live-log", "Step 2")
    shot(page, shots, "tab_live")


def test_app_still_works_after_errors(browser_page, media):
    """After every bad request above, a fresh good request on the first tab still works."""
    page = browser_page
    page.get_by_role("tab", name="Set-of-Mark").click()
    upload(page, "som-upload", media / "notes.png")
    status(page, "som-status", "not a usable image")
    upload(page, "som-upload", media / "screen.png")
    status(page, "som-status", "marks on the image")
