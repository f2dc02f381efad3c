"""Shared fixtures: one tiny random model/checkpoint per test session (built offline)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "model" / "tiny.yaml"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_and_processor():
    from magma.build import build_model
    model, processor = build_model(TINY_CONFIG, seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model_and_processor) -> Path:
    """A saved random-init tiny checkpoint folder (read-only by convention)."""
    import numpy as np

    from magma.action_tokenizer import ActionStats
    from magma.checkpoint import save_checkpoint
    model, processor = tiny_model_and_processor
    rng = np.random.default_rng(0)
    stats = {"metaworld": ActionStats.from_actions(rng.uniform(-1, 1, size=(500, 4)))}
    folder = tmp_path_factory.mktemp("tiny_ckpt")
    save_checkpoint(model, processor, folder, action_stats=stats)
    return folder


@pytest.fixture(autouse=True, scope="module")
def _close_shared_page_capturer():
    """A module that captured pages leaves a sync Playwright running on the main thread; close it
    so later modules (browser agent, demo) can start their own."""
    yield
    import sys
    page_capture = sys.modules.get("data_pipeline.som.page_capture")
    if page_capture is not None:
        page_capture.close_shared_capturer()


@pytest.fixture(autouse=True)
def _no_real_time_scheduling_left_behind():
    """A test that leaves the process on a real-time policy (libsvtav1 as root does) would hand it
    to every browser and server started later, which then starve the machine: put the process
    back and fail the test that did it, naming the cause."""
    from magma.scheduling import is_real_time, restore_normal_scheduling

    yield
    if is_real_time():
        restore_normal_scheduling()
        pytest.fail("this test left the process on a real-time scheduling policy (SCHED_FIFO/RR); "
                    "wrap SVT-AV1 encodes in magma.scheduling.normal_scheduling()", pytrace=False)
