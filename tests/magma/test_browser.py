"""The one Chromium launch: the flags every stage gets, and a screenshot that retries only the
transient capture error."""
import pytest

from magma import browser


class FlakyPage:
    def __init__(self, errors: list[str]) -> None:
        self.errors, self.calls = list(errors), 0

    def screenshot(self, type: str, timeout: int) -> bytes:
        self.calls += 1
        if self.errors:
            raise RuntimeError(self.errors.pop(0))
        return b"png"


def test_screenshot_retries_the_transient_capture_error(monkeypatch):
    monkeypatch.setattr(browser.time, "sleep", lambda s: None)
    page = FlakyPage(["Protocol error (Page.captureScreenshot): Unable to capture screenshot"] * 2)
    assert browser.screenshot_png(page) == b"png" and page.calls == 3
    page = FlakyPage(["Unable to capture screenshot"] * 3)
    with pytest.raises(RuntimeError, match="Unable to capture"):
        browser.screenshot_png(page)
    assert page.calls == 3


def test_other_screenshot_errors_are_not_retried():
    page = FlakyPage(["Target page, context or browser has been closed"])
    with pytest.raises(RuntimeError, match="closed"):
        browser.screenshot_png(page)
    assert page.calls == 1


def test_flags_and_a_missing_binary(monkeypatch):
    assert {"--no-sandbox", "--no-zygote", "--disable-dev-shm-usage"} <= set(browser.CHROMIUM_ARGS)
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(FileNotFoundError, match="MAGMA_CHROMIUM"):
        browser.launch_chromium(object())
