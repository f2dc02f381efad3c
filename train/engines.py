"""Two interchangeable engines behind the loop: plain torch (one process) and DeepSpeed (ZeRO
1/2/3, any number of ranks). Both take a loss already normalised by the global number of target
tokens, so curves agree across engines and world sizes."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from train.config import TrainConfig
from train.distributed import DistInfo
from train.model_setup import module_of_parameters
from train.schedule import lr_lambda

# image_grid: (rows, cols) of crops per image, the Magma-8B release layout (converted checkpoints)
# sample_index + position_ids: packed rows, each sample attending only to itself (train.data.collate)
MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid", "position_ids", "sample_index")


def param_groups(cfg: TrainConfig, model: torch.nn.Module) -> list[dict[str, Any]]:
    """One group of every trainable parameter, or, when a per-module rate is set
    (optim.projector_lr / vision_lr / language_lr), one group per module in the order language,
    projector, vision (empty ones left out), each with its peak rate (unset: optim.lr)."""
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    rates = {"language": o.language_lr, "projector": o.projector_lr, "vision": o.vision_lr}
    if all(r is None for r in rates.values()):
        return [{"params": params}]
    owner = module_of_parameters(model)
    groups = []
    for part, rate in rates.items():
        members = [p for p in params if owner.get(id(p), "language") == part]
        if members:
            groups.append({"params": members, "lr": o.lr if rate is None else rate, "name": part})
    return groups


def _optimizer_and_scheduler(cfg: TrainConfig, model: torch.nn.Module):
    o = cfg.optim
    # Plain torch AdamW: DeepSpeed's own Adam variants JIT-compile for ~40 s on first use.
    opt = torch.optim.AdamW(param_groups(cfg, model), lr=o.lr, betas=o.betas, eps=o.eps,
                            weight_decay=o.weight_decay, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(o.schedule, o.warmup_steps, cfg.max_steps, o.min_lr_ratio))
    return opt, sched


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS if k in batch}


class TorchEngine:
    """One process, no DeepSpeed: AdamW + LambdaLR, bf16 through autocast (fp32 master weights)."""

    name = "torch"

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, info: DistInfo):
        if info.world_size > 1:
            raise ValueError("dist.engine=torch runs one process; use dist.engine=deepspeed with a launcher")
        self.cfg, self.device = cfg, info.device
        self.model = model.to(info.device)
        self.optimizer, self.scheduler = _optimizer_and_scheduler(cfg, self.model)
        self.autocast = cfg.precision == "bf16"

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(**model_inputs(batch, self.device)).logits

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def optimizer_step(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        """The first parameter group's current rate (see `param_groups`)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def save_resume(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, folder / "torch_state.pt")

    def load_resume(self, folder: Path) -> None:
        state = torch.load(folder / "torch_state.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[torch.nn.Module]:
        yield self.model


class DeepSpeedEngine:
    """deepspeed.initialize with a plain AdamW; ZeRO stage from configs/deepspeed/*.json."""

    name = "deepspeed"

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, info: DistInfo,
                 ds_config: dict[str, Any] | None = None):
        """`ds_config`: the one the model was built with (ZeRO-3 partitions at construction)."""
        import deepspeed

        self.cfg, self.device, self.world = cfg, info.device, info.world_size
        ds_config = ds_config or build_deepspeed_config(cfg, info.world_size)
        self.zero_stage = ds_config["zero_optimization"]["stage"]
        opt, sched = _optimizer_and_scheduler(cfg, model)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, config=ds_config)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.engine(**model_inputs(batch, self.device)).logits

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; the loss is already a share of the global
        # token mean, so undo the average and skip its 1/grad_accum scaling.
        self.engine.backward(loss * self.world, scale_wrt_gas=False)
        self.engine.step()  # updates only at the accumulation boundary

    def optimizer_step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    @property
    def lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def save_resume(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag="deepspeed", save_latest=False)

    def load_resume(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder), tag="deepspeed", load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"{folder}: no DeepSpeed state to resume from")

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[torch.nn.Module]:
        """Every rank must enter: under ZeRO-3 the parameters are gathered for the save."""
        if self.zero_stage == 3:
            import deepspeed
            with deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None):
                yield self.engine.module
        else:
            yield self.engine.module


def build_deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    path = Path(cfg.dist.deepspeed_config)
    try:
        ds = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no DeepSpeed config (see configs/deepspeed/zero{{1,2,3}}.json)") from None
    ds.setdefault("zero_optimization", {})
    if cfg.dist.zero_stage is not None:
        ds["zero_optimization"]["stage"] = cfg.dist.zero_stage
    ds["zero_optimization"].setdefault("stage", 0)
    # The training config owns batch shape, clipping and precision; the JSON owns ZeRO details.
    ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.micro_batch_size * cfg.grad_accum * world_size
    ds["gradient_clipping"] = cfg.optim.grad_clip
    ds["bf16"] = {"enabled": cfg.precision == "bf16"}
    ds["fp16"] = {"enabled": False}
    ds["zero_allow_untested_optimizer"] = True
    return ds


def make_engine(cfg: TrainConfig, model: torch.nn.Module, info: DistInfo,
                ds_config: dict[str, Any] | None = None):
    kind = resolve_engine_kind(cfg, info.world_size)
    return DeepSpeedEngine(cfg, model, info, ds_config) if kind == "deepspeed" else TorchEngine(cfg, model, info)


def build_plan(cfg: TrainConfig, engine_kind: str, world_size: int, run_dir: Path):
    """(BuildPlan, DeepSpeed config or None): ZeRO-3 runs build partitioned; DeepSpeed bf16 runs
    load weights in bf16 (the engine trains bf16 weights with fp32 master copies anyway); the
    torch engine keeps fp32 weights under autocast."""
    from train.model_setup import BuildPlan
    from train.zero3 import INIT_DIR

    ds_config = build_deepspeed_config(cfg, world_size) if engine_kind == "deepspeed" else None
    bf16 = cfg.precision == "bf16" and ds_config is not None
    zero3 = ds_config is not None and ds_config["zero_optimization"]["stage"] == 3
    plan = BuildPlan(dtype=torch.bfloat16 if bf16 else torch.float32, zero3=ds_config if zero3 else None,
                     scratch=run_dir / INIT_DIR)
    return plan, ds_config


def resolve_engine_kind(cfg: TrainConfig, world_size: int) -> str:
    if cfg.dist.engine == "auto":
        return "deepspeed" if world_size > 1 else "torch"
    return cfg.dist.engine
