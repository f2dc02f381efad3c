"""Per-target-kind losses and the run's logs: metrics.jsonl, TensorBoard, optional W&B, tqdm."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from magma.schema import TARGET_KINDS
from train.distributed import all_reduce_sum


class KindLosses:
    """Sums of per-token loss and token counts per target kind over one optimizer step."""

    def __init__(self) -> None:
        self.sums = torch.zeros(len(TARGET_KINDS), dtype=torch.float64)
        self.counts = torch.zeros(len(TARGET_KINDS), dtype=torch.float64)

    def add(self, per_token: torch.Tensor, target_kind: torch.Tensor) -> None:
        """per_token [B, L-1] from causal_lm_loss(reduction="none"); target_kind [B, L] of the batch."""
        kinds = target_kind[:, 1:].to(per_token.device)
        per_token = per_token.detach().double()
        for k in range(len(TARGET_KINDS)):
            m = kinds == k
            self.sums[k] += per_token[m].sum().cpu()
            self.counts[k] += m.sum().cpu()

    def reduced(self) -> dict[str, float]:
        """All-reduced: {'loss', 'loss_verbal', 'loss_spatial', 'loss_action'} (NaN for absent kinds)."""
        both = all_reduce_sum(torch.cat([self.sums, self.counts]))
        sums, counts = both[:len(TARGET_KINDS)], both[len(TARGET_KINDS):]
        out = {"loss": float(sums.sum() / counts.sum()) if counts.sum() > 0 else float("nan")}
        for k, name in enumerate(TARGET_KINDS):
            out[f"loss_{name}"] = float(sums[k] / counts[k]) if counts[k] > 0 else None
        return out


class RunLogger:
    """Rank 0 only: appends metrics.jsonl, writes TensorBoard scalars, and W&B if configured."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool, wandb_project: str | None,
                 config: dict[str, Any]):
        self.path = run_dir / "metrics.jsonl"
        keep_metrics_until(self.path, start_step)  # lines after the resumed step are re-logged
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("log.wandb_project is set but wandb is not installed "
                                   "(pip install wandb, or unset log.wandb_project)") from None
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir), resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"
                   and v is not None and math.isfinite(v)}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def keep_metrics_until(path: Path, step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
