"""Seed splits: training demonstrations and held-out evaluation never share a seed.

MiniWoB++ seeds pick the page (targets, layout); Meta-World seeds pick the goal and object
positions, so held-out seeds are held-out goal positions too. The ranges are disjoint by
construction: train seeds are [0, HELDOUT_SEED_BASE), held-out seeds start at HELDOUT_SEED_BASE.
"""
from __future__ import annotations

from typing import Literal

Split = Literal["train", "heldout"]
HELDOUT_SEED_BASE = 1_000_000


def split_seeds(split: Split, n: int, offset: int = 0) -> list[int]:
    """`n` seeds of `split`, starting `offset` seeds into it (so later runs can add new ones)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got n={n}, offset={offset}")
    base = 0 if split == "train" else HELDOUT_SEED_BASE
    if split == "train" and offset + n > HELDOUT_SEED_BASE:
        raise ValueError(f"train seeds end at {HELDOUT_SEED_BASE}; asked for {offset}+{n}")
    return list(range(base + offset, base + offset + n))


def split_of_seed(seed: int) -> Split:
    return "heldout" if seed >= HELDOUT_SEED_BASE else "train"
