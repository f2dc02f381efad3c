"""`magma model ...`: create, inspect and size model checkpoints."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from magma.cli import run_cli, subcommand


def meta_model(config_path: str | Path):
    """The model of a size config on the meta device (shapes only, no memory)."""
    import torch

    from magma.build import magma_config_from_spec
    from magma.model_config import load_model_spec
    from magma.modeling_magma import MagmaForCausalLM

    spec = load_model_spec(config_path)
    if spec.text.pretrained or spec.vision.pretrained:  # sizes and vocabulary from the sources' files
        from magma.build import build_config_and_processor
        config, _ = build_config_and_processor(spec)
    else:
        vocab = spec.text.vocab_size or 1024 + 8 + spec.action_bins
        config = magma_config_from_spec(spec, vocab_size=vocab, image_token_id=vocab - 1)
    with torch.device("meta"):
        return MagmaForCausalLM(config)


def count_parameters_on_meta(config_path: str | Path) -> dict[str, int]:
    """Parameter counts per module for a size config, without allocating weights."""
    model = meta_model(config_path)
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("vision_tower", "multi_modal_projector", "language_model")}
    counts["total"] = sum(counts.values())
    return counts


def run_init(args: argparse.Namespace) -> int:
    """A checkpoint from a model spec: random backbones from sizes, or the `text.pretrained` /
    `vision.pretrained` sources' weights (local only; the projector is new either way)."""
    import torch

    from magma.build import build_model
    from magma.checkpoint import save_checkpoint
    from magma.model_config import load_model_spec

    spec = load_model_spec(args.config)
    model, processor = build_model(spec, seed=args.seed, dtype=getattr(torch, args.dtype))
    save_checkpoint(model, processor, args.out)
    n = sum(p.numel() for p in model.parameters())
    sources = [f"{k} from {v}" for k, v in (("LM", spec.text.pretrained), ("vision tower", spec.vision.pretrained))
               if v]
    print(f"wrote {args.out} ({n / 1e6:.2f}M parameters, vocab {len(processor.tokenizer)}"
          + (f"; {', '.join(sources)}, new projector" if sources else ", random weights") + ")")
    return 0


def zero_memory_estimates(config_path: str | Path, plan: str, gpus_per_node: int, nodes: int = 1
                          ) -> list[dict[str, object]]:
    """DeepSpeed's own estimates of model-state memory (16-bit weights, gradients, fp32 Adam
    states; activations not included) for a size config, from parameter counts on the meta
    device: one row per offload option, {"gpu_bytes", "cpu_bytes" (per node), "options"}."""
    if plan not in ("zero2", "zero3"):
        raise ValueError(f"--plan {plan!r}: choose zero2 or zero3")
    if gpus_per_node < 1 or nodes < 1:
        raise ValueError("--gpus and --nodes must be at least 1")
    model = meta_model(config_path)
    total = sum({id(p): p.numel() for p in model.parameters()}.values())  # tied weights once
    rows = []
    if plan == "zero3":
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
        for offload_opt, offload_param in ((False, False), (True, False), (True, True)):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                total, largest, gpus_per_node, nodes, cpu_offload=offload_opt,
                cpu_offload_params=offload_param, zero_init=True)
            rows.append({"gpu_bytes": gpu, "cpu_bytes": cpu, "options":
                         f"offload_optimizer={'cpu' if offload_opt else 'none'}, "
                         f"offload_param={'cpu' if offload_param else 'none'}, zero_init=1"})
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
        for offload_opt in (False, True):
            cpu, gpu = estimate_zero2_model_states_mem_needs(total, gpus_per_node, nodes, cpu_offload=offload_opt)
            rows.append({"gpu_bytes": gpu, "cpu_bytes": cpu,
                         "options": f"offload_optimizer={'cpu' if offload_opt else 'none'}"})
    return rows


def run_size(args: argparse.Namespace) -> int:
    for k, v in count_parameters_on_meta(args.config).items():
        print(f"{k:24s} {v / 1e9:8.3f}B  ({v:,})")
    if args.plan:
        rows = zero_memory_estimates(args.config, args.plan, args.gpus, args.nodes)
        print(f"\nZeRO-{args.plan[-1]} on {args.nodes} node(s) x {args.gpus} GPU(s): model states per GPU "
              "(DeepSpeed's estimator: 16-bit weights and gradients, fp32 Adam; activations not included)")
        print(f"{'per GPU':>10s}  {'per node CPU':>12s}  options")
        for r in rows:
            print(f"{r['gpu_bytes'] / 2**30:8.2f}GB  {r['cpu_bytes'] / 2**30:10.2f}GB  {r['options']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from magma.checkpoint import load_checkpoint

    model, processor, stats = load_checkpoint(args.checkpoint)
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    print(f"{args.checkpoint}: {n / 1e6:.2f}M parameters, vocab {len(processor.tokenizer)}, "
          f"image {c.image_size}px x {c.tokens_per_view} tokens/view, max_crops {c.max_crops}, "
          f"action datasets {sorted(stats) or 'none'}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from magma.magma_release import convert_magma_release

    out = convert_magma_release(args.src, args.out, config_path=args.config, tokenizer_dir=args.tokenizer)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma model", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = subcommand(sub, "init", run_init, "write a checkpoint folder from a model spec "
                      "(random weights, or text.pretrained / vision.pretrained backbones)")
    init.add_argument("--config", required=True, help="configs/model/<size>.yaml")
    init.add_argument("--out", required=True, help="output checkpoint folder")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                      help="weights dtype of the written checkpoint (bfloat16 halves an 8B one)")
    size = subcommand(sub, "size", run_size,
                      "parameter counts of a size config, and per-GPU memory of a ZeRO plan "
                      "(meta device, no memory)")
    size.add_argument("--config", required=True)
    size.add_argument("--plan", choices=["zero2", "zero3"],
                      help="also print per-GPU memory of this DeepSpeed plan (DeepSpeed's estimator)")
    size.add_argument("--gpus", type=int, default=8, help="GPUs per node for --plan (default 8)")
    size.add_argument("--nodes", type=int, default=1, help="nodes for --plan (default 1)")
    info = subcommand(sub, "info", run_info, "describe a checkpoint folder")
    info.add_argument("checkpoint")
    conv = subcommand(sub, "convert-magma", run_convert,
                      "convert a local folder in the public Magma-8B release layout (sizes, tokenizer, "
                      "image preprocessing and prompt format come from the folder)")
    conv.add_argument("src", help="the release folder (config.json, model*.safetensors, tokenizer files)")
    conv.add_argument("--config", help="optional size config to cross-check: its stated shapes must "
                      "agree with the release's")
    conv.add_argument("--tokenizer", help="local tokenizer folder (default: src)")
    conv.add_argument("--out", required=True, help="output checkpoint folder")
    return p


def main(argv: list[str] | None = None) -> int:
    from magma.checkpoint import CheckpointError

    # ConfigError is a ValueError; FileNotFoundError: a missing source folder
    return run_cli(build_parser(), argv, errors=(CheckpointError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
