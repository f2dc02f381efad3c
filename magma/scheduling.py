"""Keeping a process on the normal CPU scheduler.

SVT-AV1 (PyAV's `libsvtav1`, the encoder LeRobot writes its videos with), run as root, moves the
thread that opens the encoder to SCHED_FIFO priority 99 and leaves it there. Everything that
thread starts afterwards inherits the real-time policy: a headless Chromium whose renderer then
busy-animates a page holds a core at FIFO 99, the kernel's real-time throttling leaves every
normal process 5% of it, and on a 2-core machine the whole test suite crawls (measured here: a
CI run stalled for 80 minutes in the demo tests; the renderer and the Playwright driver at FIFO 99,
load average 250). Decoding (libdav1d) does not do this.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

REAL_TIME_POLICIES = (os.SCHED_FIFO, os.SCHED_RR)


def is_real_time() -> bool:
    """Whether the calling thread runs under a real-time scheduling policy."""
    return os.sched_getscheduler(0) in REAL_TIME_POLICIES


def restore_normal_scheduling() -> None:
    """Moves the calling thread back to SCHED_OTHER (always allowed, root or not)."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@contextmanager
def normal_scheduling() -> Iterator[None]:
    """Runs the block (e.g. an SVT-AV1 encode) and puts the calling thread back on the policy it
    had before, whatever the block's libraries changed."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)
