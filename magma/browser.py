"""The headless Chromium every stage drives (page capture, the browser agent, the demo, the
MiniWoB++ and BrowserGym harnesses): one binary path, one set of flags, one screenshot call.

`--disable-dev-shm-usage` because containers often mount a 64 MB /dev/shm: Chromium keeps its
compositor frames there, and with a few browsers open a screenshot fails with "Unable to
capture screenshot" (seen in CI, never on a machine with a large /dev/shm). The flag moves that
memory to /tmp. `--no-zygote`: on this project's 2-core VMs a zygote reaping a renderer was
caught spinning in the kernel (wait4 -> release_task -> shrink_dcache_parent), every other
process starved until it was put on SCHED_IDLE; without zygotes the browser process reaps its
children itself. The cause found later: the test process had inherited SCHED_FIFO 99 from an
SVT-AV1 encode (magma.scheduling), so the browsers it started ran real-time.
`MAGMA_CHROMIUM` names another binary.
"""
from __future__ import annotations

import os
import time
from typing import Any

CHROMIUM = os.environ.get("MAGMA_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = ("--no-sandbox", "--no-zygote", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run")
SCREENSHOT_TRIES = 3
SCREENSHOT_TIMEOUT_MS = 30_000


def launch_chromium(playwright: Any, headless: bool = True) -> Any:
    """A Playwright Browser on the local Chromium, with the project's flags."""
    if not os.path.exists(CHROMIUM):
        raise FileNotFoundError(f"chromium not found at {CHROMIUM}: apt-get install chromium, "
                                "or set MAGMA_CHROMIUM to a Chromium binary")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=headless, args=list(CHROMIUM_ARGS))


def screenshot_png(page: Any, tries: int = SCREENSHOT_TRIES) -> bytes:
    """The page's viewport as PNG. A transient "Unable to capture screenshot" (the compositor had
    no frame yet, e.g. under load) is retried after a short wait; other errors are raised."""
    for attempt in range(tries - 1):
        try:
            return page.screenshot(type="png", timeout=SCREENSHOT_TIMEOUT_MS)
        except Exception as exc:
            if "Unable to capture screenshot" not in str(exc):
                raise
            time.sleep(0.5 * (attempt + 1))
    return page.screenshot(type="png", timeout=SCREENSHOT_TIMEOUT_MS)
