"""A resumable, seeded training loop for the backbone pretraining commands.

Every batch is drawn from `numpy.random.default_rng([seed, step])`, so a resumed run sees the same
batches as an uninterrupted one; model, optimizer and step go into `<work>/state.pt` (written to a
temporary file, then renamed), and the log is cut back to the checkpoint's step on resume.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from magma.config_io import ConfigError

STATE = "state.pt"
LOG = "training_log.jsonl"


@dataclass
class LoopSettings:
    steps: int
    lr: float
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 25
    probe_every: int = 250
    stop_after: int | None = None  # end this invocation at this step of the `steps` schedule

    @property
    def last_step(self) -> int:
        return self.steps if self.stop_after is None else max(0, min(self.steps, self.stop_after))


def lr_at(step: int, s: LoopSettings) -> float:
    """Linear warm-up, then cosine down to min_lr_ratio * lr."""
    if step <= s.warmup:
        return s.lr * step / max(1, s.warmup)
    t = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _read_log(path: Path, until: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= until]


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_loop(model: torch.nn.Module, work: Path, settings: LoopSettings,
             make_batch: Callable[[np.random.Generator, int], Any],
             loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
             probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
             resume: bool = True, desc: str = "pretrain") -> list[dict[str, Any]]:
    """Trains `model` for `settings.steps` steps (or up to `settings.stop_after`: the same run cut
    there, continued by a later call); returns the log rows (also in `<work>/training_log.jsonl`).

    `make_batch(rng, step)` draws one batch; `loss_fn(model, batch)` returns the loss and extra
    metrics; `probe(model)` (in eval mode, no grad) returns probe results, logged every probe_every
    steps and at the end. With `resume`, a state in `work` is continued from its step."""
    work.mkdir(parents=True, exist_ok=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.95))
    start = 0
    recent: list[float] = []  # losses since the last log row (kept in the checkpoint: exact logs on resume)
    state_file = work / STATE
    if resume and state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        recent = list(state.get("recent", []))
    elif state_file.exists():
        state_file.unlink()
    rows = _read_log(work / LOG, start)

    def checkpoint(step: int) -> None:
        tmp = work / f".{STATE}.tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "recent": recent}, tmp)
        os.replace(tmp, state_file)
        _write_log(work / LOG, rows)

    def run_probe(step: int) -> None:
        if probe is None:
            return
        model.eval()
        with torch.no_grad():
            result = probe(model)
        model.train()
        rows.append({"step": step, "probe": result})

    model.train()
    t0 = time.time()
    last = settings.last_step
    if start > last:
        raise ConfigError(f"the checkpoint is at step {start}, past --stop-after {last}", file=state_file,
                          fix="give a later --stop-after, or a fresh --out folder")
    bar = tqdm(range(start + 1, last + 1), initial=start, total=settings.steps, desc=desc,
               dynamic_ncols=True, mininterval=5)
    if start == 0:
        run_probe(0)
    for step in bar:
        lr = lr_at(step, settings)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(np.random.default_rng([settings.seed, step]), step)
        loss, extra = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip))
        opt.step()
        recent.append(loss.item())
        end = step == last
        if step % settings.log_every == 0 or end:
            rows.append({"step": step, "loss": sum(recent) / len(recent), "lr": lr, "grad_norm": grad_norm,
                         "elapsed_s": round(time.time() - t0, 1), **extra})
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
            recent = []
        if step % settings.probe_every == 0 or end:
            run_probe(step)
        if step % settings.checkpoint_every == 0 or end:
            checkpoint(step)
    return rows
