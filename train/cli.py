"""`magma train --config configs/train/<name>.yaml [--set key=value ...]` (also `python -m train`).

One process: run it directly. Several ranks: `torchrun --nproc_per_node N -m train --config ...`
or `deepspeed --num_gpus N --module train --config ...` (on CPU add OMP_NUM_THREADS=1).
"""
from __future__ import annotations

import argparse
import os
import sys

from magma.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=3e-4 --set dist.zero_stage=3")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=run_train)
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


def main(argv: list[str] | None = None) -> int:
    from train.data import DataError
    from train.loop import NonFiniteLossError

    # ConfigError is a ValueError
    return run_cli(build_parser(), argv,
                   errors=(DataError, FileNotFoundError, NonFiniteLossError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
