"""Run under torchrun: builds a training model as train/loop.py does and writes, per rank,
`OUT/rank-R.json` = {"held_at_build", "held", "whole", "rss_growth"}: parameter elements this
rank holds right after the build (before DeepSpeed starts) and once the engine runs, of the
whole model, and how much this rank's peak RSS grew from before the build until the engine
runs (bytes; `rss_growth_build`: during the build alone). Run it with MALLOC_MMAP_THRESHOLD_
set low, so that freed tensors leave the peak instead of glibc's heap.

    torchrun --nproc_per_node 2 tests/train/zero3_probe.py CHECKPOINT_OR_SIZE_YAML OUT [legacy]

`legacy`: the full model on every rank, partitioned by deepspeed.initialize afterwards (the
path ZeRO-3 runs took before train/zero3.py), so a test can show the probe tells them apart.
"""
from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from train.config import load_train_config
from train.distributed import init_distributed, shutdown
from train.engines import DeepSpeedEngine, build_plan
from train.model_setup import BuildPlan, build_training_model
from train.zero3 import local_share

HERE = Path(__file__).resolve().parent


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> None:
    source, out = sys.argv[1], Path(sys.argv[2])
    legacy = len(sys.argv) > 3 and sys.argv[3] == "legacy"
    model_keys = ([f"model.config={source}"] if source.endswith(".yaml")
                  else ["model.config=", f"model.checkpoint={source}"])
    cfg = load_train_config(HERE / "micro_train.yaml", [
        f"run_dir={out / 'run'}", "data.shards=unused", *model_keys,
        "device=cpu", "precision=fp32", "dist.engine=deepspeed", "dist.zero_stage=3", "micro_batch_size=1"])
    info = init_distributed("cpu", "gloo", need_group=True)
    plan, ds_config = build_plan(cfg, "deepspeed", info.world_size, out / "run")
    before = peak_rss()
    model, _, _ = build_training_model(cfg.model, BuildPlan() if legacy else plan)
    grown = peak_rss() - before
    held_at_build, _ = local_share(model)  # 0 when the build was not partitioned
    engine = DeepSpeedEngine(cfg, model, info, ds_config)  # the engine starts from either build
    held, whole = local_share(engine.module)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{info.rank}.json").write_text(json.dumps(
        {"held_at_build": held_at_build, "held": held, "whole": whole, "rss_growth_build": grown,
         "rss_growth": peak_rss() - before, "world": info.world_size, "threads": torch.get_num_threads(),
         "pid": os.getpid()}))
    shutdown()


if __name__ == "__main__":
    main()
