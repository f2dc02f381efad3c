"""Atomic, resumable checkpoints in the run folder.

    checkpoints/step-N/            a HF folder (magma.checkpoint.load_checkpoint loads it, with
                                   action_stats.json and inference_settings.json) plus
        resume/                    engine state (torch_state.pt or DeepSpeed's folder),
        resume/rng-rank-R.pt       per-rank RNG states, and
        trainer_state.json         {"step", "skipped", ...}: written last, marks it complete
    checkpoints/latest             text file: the name of the newest complete step-N

A checkpoint is written to `checkpoints/.tmp-step-N`, renamed to `step-N` once complete, and only
then does `latest` move (os.replace of a temporary file), so a crash at any point leaves
`latest` naming a complete checkpoint. Older checkpoints beyond keep_last are then pruned.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magma.checkpoint import save_checkpoint
from magma.inference_settings import InferenceSettings
from train.distributed import barrier
from train.lora import ADAPTER_DIR, export_adapter, is_lora
from train.model_setup import exportable_model

STATE_FILE = "trainer_state.json"
LATEST = "latest"
STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def complete_steps(ckpt_root: Path) -> list[int]:
    steps = []
    for p in ckpt_root.glob("step-*") if ckpt_root.is_dir() else []:
        m = STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def save_training_checkpoint(ckpt_root: Path, step: int, engine: Any, processor: Any, action_stats: dict,
                             trainer_state: dict[str, Any], keep_last: int, is_main: bool, rank: int,
                             inference: InferenceSettings | None = None) -> Path:
    """Collective: every rank calls it. Returns the final step-N folder."""
    final = ckpt_root / f"step-{step}"
    tmp = ckpt_root / f".tmp-step-{step}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    engine.save_resume(tmp / "resume")
    torch.save(rng_state(), tmp / "resume" / f"rng-rank-{rank}.pt")
    export_hf_folder(engine, processor, tmp, action_stats, is_main, inference)
    barrier()
    if is_main:
        _write_text_atomic(tmp / STATE_FILE, json.dumps({**trainer_state, "step": step}, indent=1))
        if final.exists():  # a re-run of the same step after resume: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _write_text_atomic(ckpt_root / LATEST, final.name + "\n")
        for old in complete_steps(ckpt_root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(ckpt_root / f"step-{old}", ignore_errors=True)
    barrier()
    return final


def export_hf_folder(engine: Any, processor: Any, folder: Path, action_stats: dict, is_main: bool,
                     inference: InferenceSettings | None = None) -> None:
    """Collective: a HF folder with full weights (gathered under ZeRO-3, LoRA merged), its action
    statistics and the inference settings its training data was built with; a LoRA run also
    writes the adapter alone to `folder/adapter/` (train/lora.py)."""
    with engine.full_weights() as module:
        if is_main:
            save_checkpoint(exportable_model(module), processor, folder, action_stats, inference)
            if is_lora(module):
                export_adapter(module, folder / ADAPTER_DIR, action_stats, inference)


def find_resume_folder(ckpt_root: Path, resume: str) -> Path | None:
    """`resume`: never | auto (the `latest` checkpoint, else the newest complete one) | a folder."""
    if resume == "never":
        return None
    if resume != "auto":
        folder = Path(resume)
        if not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"{folder}: not a complete training checkpoint (no {STATE_FILE}); "
                                    f"pick a folder under {ckpt_root}")
        return folder
    pointer = ckpt_root / LATEST
    if pointer.is_file():
        folder = ckpt_root / pointer.read_text().strip()
        if (folder / STATE_FILE).is_file():
            return folder
    steps = complete_steps(ckpt_root)
    return ckpt_root / f"step-{steps[-1]}" if steps else None


def check_resume_compatible(folder: Path, engine_name: str, world_size: int) -> None:
    """Engine state only loads into the same engine (and, for DeepSpeed, the same world size)."""
    state = json.loads((folder / STATE_FILE).read_text())
    saved_engine, saved_world = state.get("engine", engine_name), state.get("world_size", world_size)
    if saved_engine != engine_name or (engine_name == "deepspeed" and saved_world != world_size):
        raise ValueError(f"{folder}: saved by the {saved_engine} engine on {saved_world} rank(s), this run is "
                         f"{engine_name} on {world_size}; resume with the same setup, or start from its "
                         f"weights with --set model.checkpoint={folder} --set model.config= "
                         "--set checkpoint.resume=never")


def load_training_checkpoint(folder: Path, engine: Any, rank: int) -> dict[str, Any]:
    """Restores engine state and this rank's RNG; returns trainer_state.json."""
    state = json.loads((folder / STATE_FILE).read_text())
    engine.load_resume(folder / "resume")
    rng_file = folder / "resume" / f"rng-rank-{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def clean_stale_tmp(ckpt_root: Path) -> None:
    for p in ckpt_root.glob(".tmp-step-*"):
        shutil.rmtree(p, ignore_errors=True)
