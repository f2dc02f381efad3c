"""Learning-rate schedules: linear warmup, then cosine decay to min_lr_ratio or constant."""
from __future__ import annotations

import math
from typing import Callable


def lr_lambda(schedule: str, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        span = max(1, max_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
