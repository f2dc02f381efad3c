"""Shared fixtures: one tiny random checkpoint (with Meta-World-like action stats) per session."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

ACTION_DIM = 4


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from magma.action_tokenizer import ActionStats
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    torch.set_num_threads(2)
    model, processor = build_model("configs/model/tiny.yaml", seed=0)
    actions = np.random.RandomState(0).uniform(-1, 1, (200, ACTION_DIM))
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, processor, folder, {"metaworld": ActionStats.from_actions(actions)})
    return folder


@pytest.fixture(scope="session")
def policy(tiny_checkpoint):
    from serve.policy import Policy

    p = Policy.from_checkpoint(tiny_checkpoint, engine="hf")
    yield p
    p.close()


@pytest.fixture(scope="session")
def screenshot_b64():
    from serve.images import encode_png_b64

    return encode_png_b64(np.random.RandomState(1).randint(0, 255, (160, 210, 3), np.uint8))
