"""The project's recorder format for demonstration and evaluation episodes.

Environments in `eval/` write it; `data_pipeline` reads it. One folder per episode:

    <root>/<episode_id>/episode.json   EpisodeMeta (task, instruction, seed, split, ...)
    <root>/<episode_id>/frames.npz     images [T, H, W, 3] uint8 (observation before step t);
                                       robot episodes add actions [T, D] and proprio [T, P]
    <root>/<episode_id>/steps.jsonl    one JSON object per step (UI: action in pixels + marks)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

EPISODE_META = "episode.json"
EPISODE_FRAMES = "frames.npz"
EPISODE_STEPS = "steps.jsonl"


@dataclass
class EpisodeMeta:
    episode_id: str
    env: str  # "miniwob", "metaworld", ...
    task: str
    instruction: str
    action_space: Literal["ui", "robot"]
    seed: int | None = None
    split: Literal["train", "heldout"] = "train"
    success: bool | None = None
    num_steps: int = 0
    fps: float = 10.0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Episode:
    meta: EpisodeMeta
    images: np.ndarray  # [T, H, W, 3] uint8
    actions: np.ndarray | None = None  # robot: [T, D] float32
    proprio: np.ndarray | None = None  # robot: [T, P] float32
    steps: list[dict[str, Any]] = field(default_factory=list)  # UI: {"action": {...}, "marks": [...]}

    def validate(self) -> "Episode":
        where = f"episode {self.meta.episode_id!r}"
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{where}: images must be uint8 [T, H, W, 3], got "
                             f"{self.images.dtype} {self.images.shape}")
        t = self.images.shape[0]
        for name, arr in (("actions", self.actions), ("proprio", self.proprio)):
            if arr is not None and (arr.ndim != 2 or arr.shape[0] != t):
                raise ValueError(f"{where}: {name} shape {arr.shape} does not match {t} frames")
        if self.steps and len(self.steps) != t:
            raise ValueError(f"{where}: {len(self.steps)} step records for {t} frames")
        return self

    def save(self, root: str | Path) -> Path:
        """Writes atomically: a half-written episode never appears under its final name."""
        self.validate()
        self.meta.num_steps = int(self.images.shape[0])
        final = Path(root) / self.meta.episode_id
        tmp = Path(root) / f".{self.meta.episode_id}.tmp{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        arrays = {"images": self.images}
        if self.actions is not None:
            arrays["actions"] = self.actions.astype(np.float32)
        if self.proprio is not None:
            arrays["proprio"] = self.proprio.astype(np.float32)
        np.savez_compressed(tmp / EPISODE_FRAMES, **arrays)
        with open(tmp / EPISODE_STEPS, "w") as f:
            for step in self.steps:
                f.write(json.dumps(step) + "\n")
        (tmp / EPISODE_META).write_text(json.dumps(asdict(self.meta), indent=1))
        if final.exists():
            import shutil
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    @classmethod
    def load(cls, folder: str | Path) -> "Episode":
        folder = Path(folder)
        try:
            meta = EpisodeMeta(**json.loads((folder / EPISODE_META).read_text()))
            with np.load(folder / EPISODE_FRAMES) as z:
                images = z["images"]
                actions = z["actions"] if "actions" in z else None
                proprio = z["proprio"] if "proprio" in z else None
            steps_file = folder / EPISODE_STEPS
            steps = ([json.loads(line) for line in steps_file.read_text().splitlines() if line]
                     if steps_file.exists() else [])
        except Exception as exc:
            raise ValueError(f"{folder}: not a readable episode ({type(exc).__name__}: {exc})") from exc
        return cls(meta, images, actions, proprio, steps).validate()


def iter_episode_dirs(root: str | Path) -> Iterator[Path]:
    """Episode folders under `root`, sorted (skips half-written `.tmp` folders)."""
    for p in sorted(Path(root).iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / EPISODE_META).exists():
            yield p
