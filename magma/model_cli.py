"""`magma model ...`: create, inspect and size model checkpoints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def count_parameters_on_meta(config_path: str | Path) -> dict[str, int]:
    """Parameter counts per module for a size config, without allocating weights."""
    import torch

    from magma.build import magma_config_from_spec
    from magma.model_config import load_model_spec
    from magma.modeling_magma import MagmaForCausalLM

    spec = load_model_spec(config_path)
    vocab = spec.text.vocab_size or 1024 + 8 + spec.action_bins
    config = magma_config_from_spec(spec, vocab_size=vocab, image_token_id=vocab - 1)
    with torch.device("meta"):
        model = MagmaForCausalLM(config)
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("vision_tower", "multi_modal_projector", "language_model")}
    counts["total"] = sum(counts.values())
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="magma model", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    init = sub.add_parser("init", help="write a randomly initialised checkpoint folder")
    init.add_argument("--config", required=True, help="configs/model/<size>.yaml")
    init.add_argument("--out", required=True, help="output checkpoint folder")
    init.add_argument("--seed", type=int, default=0)
    size = sub.add_parser("size", help="parameter counts of a size config (meta device, no memory)")
    size.add_argument("--config", required=True)
    info = sub.add_parser("info", help="describe a checkpoint folder")
    info.add_argument("checkpoint")
    conv = sub.add_parser("convert-magma", help="convert a folder in the public Magma-8B layout")
    conv.add_argument("src")
    conv.add_argument("--config", required=True, help="size config matching the source shapes")
    conv.add_argument("--tokenizer", help="local tokenizer folder (default: src)")
    conv.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from magma.checkpoint import CheckpointError
    from magma.model_config import ConfigFileError
    try:
        if args.cmd == "init":
            from magma.build import build_model
            from magma.checkpoint import save_checkpoint
            model, processor = build_model(args.config, seed=args.seed)
            save_checkpoint(model, processor, args.out)
            n = sum(p.numel() for p in model.parameters())
            print(f"wrote {args.out} ({n / 1e6:.2f}M parameters, vocab {len(processor.tokenizer)})")
        elif args.cmd == "size":
            for k, v in count_parameters_on_meta(args.config).items():
                print(f"{k:24s} {v / 1e9:8.3f}B  ({v:,})")
        elif args.cmd == "info":
            from magma.checkpoint import load_checkpoint
            model, processor, stats = load_checkpoint(args.checkpoint)
            n = sum(p.numel() for p in model.parameters())
            c = model.config
            print(f"{args.checkpoint}: {n / 1e6:.2f}M parameters, vocab {len(processor.tokenizer)}, "
                  f"image {c.image_size}px x {c.tokens_per_view} tokens/view, max_crops {c.max_crops}, "
                  f"action datasets {sorted(stats) or 'none'}")
        elif args.cmd == "convert-magma":
            from magma.magma_release import convert_magma_release
            out = convert_magma_release(args.src, args.config, args.out, tokenizer_dir=args.tokenizer)
            print(f"wrote {out}")
    except (ConfigFileError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"magma model {args.cmd}: {exc}", file=sys.stderr)
        return 2
    return 0
