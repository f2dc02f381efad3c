"""`magma train [run] --config configs/train/<name>.yaml [--set key=value ...]` (also `python -m train`).

One process: run it directly. Several ranks: `torchrun --nproc_per_node N -m train --config ...`
or `deepspeed --num_gpus N --module train --config ...` (on CPU add OMP_NUM_THREADS=1).

  magma train merge-lora ADAPTER --out DIR [--base CKPT] [--dtype bfloat16]   a LoRA run's adapter
      (<run>/final/adapter) merged into its base: a full checkpoint folder
"""
from __future__ import annotations

import argparse
import os
import sys

from magma.cli import run_cli, subcommand


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = subcommand(sub, "run", run_train, "train on shards (the default: 'magma train --config ...' runs it)")
    run.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set optim.lr=3e-4 --set dist.zero_stage=3")
    run.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    merge = subcommand(sub, "merge-lora", run_merge_lora,
                       "merge a LoRA adapter folder into its base checkpoint (a full HF folder)")
    merge.add_argument("adapter", help="adapter folder, e.g. <run_dir>/final/adapter")
    merge.add_argument("--out", required=True, help="output checkpoint folder")
    merge.add_argument("--base", help="base checkpoint folder (default: the one the adapter records)")
    merge.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                       help="weights dtype of the merged checkpoint (a bf16 run exports bf16)")
    return p


def run_train(args: argparse.Namespace) -> int:
    from train.config import load_train_config
    from train.loop import train

    result = train(load_train_config(args.config, args.overrides))
    if os.environ.get("RANK", "0") != "0":
        return 0
    if result.preempted:
        print(f"[train] preempted at step {result.final_step}; rerun the same command to resume")
    else:
        print(f"[train] done: step {result.final_step}, loss {result.final_loss:.4f}, "
              f"skipped samples {result.skipped or 0}; final model in {result.run_dir / 'final'}")
    return 0


def run_merge_lora(args: argparse.Namespace) -> int:
    import torch

    from train.lora import merge_adapter

    print(f"wrote {merge_adapter(args.adapter, args.out, base=args.base, dtype=getattr(torch, args.dtype))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from magma.checkpoint import CheckpointError
    from train.data import DataError
    from train.loop import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")  # `magma train --config ...` is `magma train run --config ...`
    # ConfigError is a ValueError
    return run_cli(build_parser(), argv,
                   errors=(CheckpointError, DataError, FileNotFoundError, NonFiniteLossError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
