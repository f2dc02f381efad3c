"""The training loop, top to bottom. DeepSpeed / torch details live in train/engines.py, data in
train/data.py, checkpoint files in train/checkpointing.py, logs in train/metrics.py."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from magma.checkpoint import load_inference_settings
from magma.flops import batch_flops
from magma.inference_settings import training_settings
from magma.modeling_magma import causal_lm_loss
from train.checkpointing import (check_resume_compatible, clean_stale_tmp, export_hf_folder, find_resume_folder,
                                 load_training_checkpoint, save_training_checkpoint)
from train.config import TrainConfig, dump_config
from train.data import StreamSpec, make_loader, read_manifest
from train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from train.engines import build_plan, make_engine, resolve_engine_kind
from train.metrics import KindLosses, RunLogger
from train.model_setup import build_training_model, count_trainable
from train.zero3 import local_share


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step, the batch sources and the debug file."""


@dataclass
class TrainResult:
    run_dir: Path
    final_step: int
    final_loss: float
    preempted: bool
    skipped: dict[str, int]
    resumed_from: Path | None = None


class PreemptionFlag:
    """SIGTERM sets a flag; the loop checks it (agreed across ranks) after each step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train(cfg: TrainConfig) -> TrainResult:
    """Runs (or resumes) the training described by `cfg`; see train/__init__.py for the run folder."""
    engine_kind = resolve_engine_kind(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    info = init_distributed(cfg.device, cfg.dist.backend, need_group=engine_kind == "deepspeed")
    ok = False
    try:
        result = _train(cfg, info, engine_kind)
        ok = True
        return result
    finally:
        shutdown(synchronise=ok)  # after a failure on one rank a barrier could wait forever


def _train(cfg: TrainConfig, info: DistInfo, engine_kind: str) -> TrainResult:
    # ---------------------------------------------------------------- run folder
    run_dir = Path(cfg.run_dir)
    ckpt_root = run_dir / "checkpoints"
    if info.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(ckpt_root)  # a crash during a save leaves only a .tmp folder behind
        dump_config(cfg, run_dir / "config.yaml")
    barrier()

    # ---------------------------------------------------------------- model, data, engine
    torch.manual_seed(cfg.seed)
    plan, ds_config = build_plan(cfg, engine_kind, info.world_size, run_dir)
    model, processor, ckpt_stats = build_training_model(cfg.model, plan)
    if plan.zero3 is not None:  # what each rank holds before DeepSpeed starts
        held, whole = local_share(model)
        print(f"[train] rank {info.rank}: ZeRO-3 partitioned at construction, holds {held} of {whole} "
              f"parameter elements", flush=True)
    manifest = read_manifest(cfg.data.shards, cfg.data.weights)
    action_stats = {**ckpt_stats, **manifest.action_stats}
    # What the shards' prompts were built with (chunk, proprio, ...), recorded in every checkpoint
    # so that serve and eval repeat it; a fine-tuning run keeps its start checkpoint's entries.
    inference = training_settings(manifest.inference,
                                  load_inference_settings(cfg.model.checkpoint) if cfg.model.checkpoint else None)
    W = info.world_size
    resume_from = find_resume_folder(ckpt_root, cfg.checkpoint.resume)
    if resume_from is not None:
        check_resume_compatible(resume_from, engine_kind, W)
    engine = make_engine(cfg, model, info, ds_config)
    trainable, total = count_trainable(engine.module)

    start_step, skipped = 0, {}
    if resume_from is not None:
        state = load_training_checkpoint(resume_from, engine, info.rank)
        start_step, skipped = int(state["step"]), dict(state.get("skipped", {}))
    A, b = cfg.grad_accum, cfg.micro_batch_size
    loader = make_loader(StreamSpec(
        shards=cfg.data.shards, weights=cfg.data.weights, seed=cfg.data.seed, rank=info.rank, world_size=W,
        micro_batch_size=b, start_micro=start_step * A, max_length=cfg.data.max_length,
        packing=cfg.data.packing, pack_length=cfg.data.pack_length), processor, cfg.data.num_workers)
    logger = RunLogger(run_dir, start_step, cfg.log.tensorboard, cfg.log.wandb_project,
                       cfg.model_dump(mode="json")) if info.is_main else None
    if info.is_main:
        print(f"[train] {engine.name} engine, {W} rank(s), {trainable / 1e6:.2f}M/{total / 1e6:.2f}M trainable "
              f"params, global batch {b * A * W}, sources {[s.name for s in manifest.sources]}"
              + (f", resumed from {resume_from} at step {start_step}" if resume_from else ""), flush=True)

    def checkpoint(step: int) -> Path:
        return save_training_checkpoint(ckpt_root, step, engine, processor, action_stats,
                                        {"skipped": skipped, "world_size": W, "engine": engine.name},
                                        cfg.checkpoint.keep_last, info.is_main, info.rank, inference)

    # ---------------------------------------------------------------- the loop
    preempt = PreemptionFlag()
    bar = tqdm(total=cfg.max_steps, initial=start_step, desc="train", dynamic_ncols=True,
               disable=not (info.is_main and cfg.log.progress))
    batches = iter(loader)
    config = getattr(engine.module, "config", None)

    def useful_flops(batch: dict) -> float:
        """Training FLOPs of the batch's real tokens (magma.flops; 0 for a model it cannot read)."""
        try:
            return batch_flops(config, batch).training
        except AttributeError:
            return 0.0

    step, last = start_step, {"loss": float("nan")}
    preempted = False
    try:
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(A)]  # all micro batches of this step
            t_data = time.perf_counter() - t0

            # Normalise by the target tokens of the whole global batch: curves then match
            # across world sizes and accumulation settings.
            counts = all_reduce_sum(torch.tensor([float(sum(m["n_target_tokens"] for m in micro)),
                                                  float(sum(m["n_tokens"] for m in micro)),
                                                  float(sum(m["n_pad"] for m in micro)),
                                                  sum(useful_flops(m) for m in micro)], dtype=torch.float64))
            n_target = max(counts[0].item(), 1.0)
            kinds = KindLosses()
            for mb in micro:
                logits = engine.forward(mb)
                per_token = causal_lm_loss(logits, mb["labels"].to(logits.device), reduction="none")
                engine.backward(per_token.sum() / n_target)
                kinds.add(per_token, mb["target_kind"])
            lr = engine.lr  # the rate this step used (the scheduler moves on in optimizer_step)
            grad_norm = engine.optimizer_step()
            step += 1
            for m in micro:
                for reason, n in m["meta"]["skipped"].items():
                    skipped[reason] = skipped.get(reason, 0) + n
            losses = kinds.reduced()
            if not torch.isfinite(torch.tensor(losses["loss"])):
                raise nonfinite_loss(run_dir, step, losses, micro, info.rank)

            dt = time.perf_counter() - t0
            last = {"step": step, **losses, "lr": lr, "grad_norm": grad_norm,
                    "tokens_per_s": counts[1].item() / dt, "samples_per_s": b * A * W / dt,
                    "train_flops": counts[3].item(), "flops_per_s": counts[3].item() / dt,
                    "padding_frac": counts[2].item() / max(counts[1].item() + counts[2].item(), 1.0),
                    "data_wait_frac": t_data / dt, "step_time_s": dt,
                    "skipped": sum(skipped.values())}
            if logger is not None and (step % cfg.log.every == 0 or step == cfg.max_steps):
                logger.log(last)
            bar.update(1)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}",
                            smp_s=f"{last['samples_per_s']:.1f}", lr=f"{lr:.2e}", refresh=False)

            stop = all_reduce_sum(torch.tensor([float(preempt.requested)])).item() > 0
            if stop or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < cfg.max_steps):
                checkpoint(step)
            if stop:
                preempted = True
                if info.is_main:
                    print(f"[train] SIGTERM: saved checkpoint at step {step}; exiting", flush=True)
                break
        if not preempted:
            checkpoint(step)
            final = run_dir / "final"
            if info.is_main:
                shutil.rmtree(final, ignore_errors=True)
            barrier()
            export_hf_folder(engine, processor, final, action_stats, info.is_main, inference)
    finally:
        bar.close()
        preempt.restore()
        if logger is not None:
            logger.close()
    return TrainResult(run_dir=run_dir, final_step=step, final_loss=float(last["loss"]),
                       preempted=preempted, skipped=skipped,
                       resumed_from=resume_from)


def nonfinite_loss(run_dir: Path, step: int, losses: dict, micro: list[dict], rank: int) -> NonFiniteLossError:
    """Writes debug/nonfinite-step-N-rank-R.json (losses, sample ids and sources) before failing."""
    debug = run_dir / "debug"
    debug.mkdir(parents=True, exist_ok=True)
    ids = [i for m in micro for i in m["meta"]["ids"]]
    sources = sorted({s for m in micro for s in m["meta"]["sources"]})
    path = debug / f"nonfinite-step-{step}-rank-{rank}.json"
    path.write_text(json.dumps({"step": step, "losses": losses, "sample_ids": ids, "sources": sources,
                                "micro_batches": [m["meta"]["micro"] for m in micro]}, indent=1))
    return NonFiniteLossError(
        f"non-finite loss {losses['loss']} at step {step}; batch sources {sources}; sample ids and "
        f"per-kind losses in {path}. Lower optim.lr, check the model checkpoint for NaN weights, "
        f"or resume from the last checkpoint in {run_dir / 'checkpoints'}")
