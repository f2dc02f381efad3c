"""Training throughput on CPU: 1 process vs 2 ranks ZeRO-2, padded vs packed rows (samples/s and
the per-sample loss difference packing leaves), padding with/without packing, and the
fraction of step time spent waiting for data. Ratios are against baselines measured in this run.

    .venv/bin/python bench/train.py                        # tiny model (configs/model/tiny.yaml)
    .venv/bin/python bench/train.py --model-config tests/train/micro_model.yaml --steps 10
    .venv/bin/python bench/train.py --mfu            # GPU: model FLOPs utilisation of a ~1B model

Synthetic shards (tests/synthetic_shards.py) unless --shards DIR points at real ones.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_training(run_dir: Path, args: argparse.Namespace, shards: Path, ranks: int, micro: int,
                 extra: tuple[str, ...] = ()) -> list[dict]:
    overrides = [f"run_dir={run_dir}", f"data.shards={shards}", f"max_steps={args.steps}",
                 f"micro_batch_size={micro}", "grad_accum=1", "checkpoint.every=0", "log.tensorboard=false",
                 "log.progress=false", f"data.num_workers={args.workers}", f"model.config={args.model_config}",
                 "dist.zero_stage=2", "checkpoint.resume=never", *extra]
    cmd = ["-m", "train", "--config", "configs/train/tiny.yaml"] + [a for o in overrides for a in ("--set", o)]
    if ranks > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(port)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.threads // ranks)), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable] + cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: training with {ranks} rank(s) failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows[args.warmup:]  # the first steps pay for allocation and worker start-up


def padding_fraction(shards: Path, model_config: str, packing: bool, batches: int, micro: int) -> float:
    from magma.build import build_model
    from train.data import MixedShardStream, StreamSpec

    processor = build_model(model_config)[1]
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, micro, 0, packing=packing, pack_length=512), processor)
    pad = tok = 0
    for m in range(batches):
        b = ds.micro_batch(m)
        pad, tok = pad + int(b["n_pad"]), tok + int(b["n_tokens"])
    return pad / (pad + tok)


def packed_loss_difference(shards: Path, model_config: str, micro: int, pack_length: int, batches: int = 2) -> float:
    """Max |per-sample loss packed - the same sample alone| (summed token losses, fp32, a freshly
    initialised model) over the first micro batches of the shards."""
    from collections import Counter

    import torch

    from magma.build import build_model
    from magma.modeling_magma import causal_lm_loss
    from train.data import MixedShardStream, StreamSpec, collate
    from train.engines import MODEL_INPUTS

    torch.manual_seed(0)
    model, processor = build_model(model_config)[:2]
    model = model.float().eval()
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, micro, 0), processor)
    pad = processor.tokenizer.pad_token_id

    def losses(batch: dict) -> torch.Tensor:
        logits = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits
        return causal_lm_loss(logits, batch["labels"], reduction="none")

    worst = 0.0
    with torch.no_grad():
        for m in range(batches):
            encoded = [ds._encode(*ds.schedule.lookup(g), Counter())[0] for g in ds.global_indices(m)]
            alone = [losses(collate([e], pad)).sum().item() for e in encoded]
            batch = collate(encoded, pad, packing=True, pack_length=pack_length)
            per_token, owner = losses(batch), batch["sample_index"][:, 1:]
            worst = max([worst] + [abs(per_token[owner == i].sum().item() - a) for i, a in enumerate(alone)])
    return worst


# ~1B parameters: a small ConvNeXt + a 20-layer, 2048-wide Llama (used by --mfu on a GPU).
MODEL_1B = {
    "name": "bench-1b",
    "vision": {"depths": [3, 3, 9, 3], "hidden_sizes": [128, 256, 512, 1024], "feature_stage": 3},
    "image_size": 224,
    "text": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 20,
             "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 4096,
             "tie_word_embeddings": False},
    "tokenizer": {"builtin_bpe_vocab": 1024},
}
H100_BF16_DENSE_FLOPS = 989e12


def measure_mfu(args: argparse.Namespace, tmp: Path, shards: Path) -> None:
    """Tokens/s of the real training path (DeepSpeed ZeRO-2, bf16, packed rows of 2048) on one
    GPU -> FLOPs/token of the language model (6N + attention) / the GPU's peak."""
    import torch
    import yaml

    from magma.model_cli import count_parameters_on_meta

    if not torch.cuda.is_available():
        sys.exit("bench --mfu: needs a CUDA GPU (torch.cuda.is_available() is False)")
    spec = tmp / "model-1b.yaml"
    spec.write_text(yaml.safe_dump(MODEL_1B))
    counts = count_parameters_on_meta(spec)
    t = MODEL_1B["text"]
    seq = 2048
    flops_per_token = 6 * counts["language_model"] + 12 * t["num_hidden_layers"] * t["hidden_size"] * seq
    overrides = [f"run_dir={tmp / 'mfu'}", f"data.shards={shards}", f"model.config={spec}", "max_steps=12",
                 f"micro_batch_size={args.mfu_batch}", "data.packing=true", f"data.pack_length={seq}",
                 "data.max_length=2048", "precision=bf16", "device=cuda", "dist.engine=deepspeed",
                 "dist.zero_stage=2", "checkpoint.every=0", "checkpoint.resume=never", "log.progress=false",
                 "log.tensorboard=false", "model.gradient_checkpointing=false", f"data.num_workers={args.workers}"]
    cmd = [sys.executable, "-m", "train", "--config", "configs/train/tiny.yaml"] + \
        [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench --mfu: training failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (tmp / "mfu" / "metrics.jsonl").read_text().splitlines()][4:]
    tps = statistics.median(r["tokens_per_s"] for r in rows)
    peak = float(os.environ.get("PEAK_FLOPS", H100_BF16_DENSE_FLOPS))
    print(f"~1B model ({counts['total'] / 1e9:.2f}B params, LM {counts['language_model'] / 1e9:.2f}B): "
          f"{tps:,.0f} tokens/s, data wait {statistics.median(r['data_wait_frac'] for r in rows):.1%}, "
          f"MFU {tps * flops_per_token / peak:.1%} of {peak / 1e12:.0f} TFLOP/s (target >= 40% on an H100)")


def summary(rows: list[dict]) -> dict[str, float]:
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"samples_per_s": med("samples_per_s"), "tokens_per_s": med("tokens_per_s"),
            "data_wait_frac": sum(r["data_wait_frac"] * r["step_time_s"] for r in rows)
            / sum(r["step_time_s"] for r in rows)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", default="configs/model/tiny.yaml")
    p.add_argument("--shards", help="shard folder (default: synthetic shards in a temp folder)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=8, help="global batch; 2 ranks get half each")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers per rank")
    p.add_argument("--threads", type=int, default=2, help="CPU threads in total (split across ranks)")
    p.add_argument("--pack-length", type=int, default=1024, help="packed row length for the packing comparison")
    p.add_argument("--mfu", action="store_true", help="GPU only: MFU of a ~1B model instead of the CPU bench")
    p.add_argument("--mfu-batch", type=int, default=96, help="samples per micro batch (packed) for --mfu")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        shards = Path(args.shards) if args.shards else None
        if shards is None:
            from tests.synthetic_shards import write_shards
            shards = write_shards(tmp / "shards", {k: (k, 96, 1.0) for k in ("verbal", "spatial", "action")},
                                  per_shard=32)
        if args.mfu:
            measure_mfu(args, tmp, shards)
            return 0
        print(f"model {args.model_config}, {args.steps} steps ({args.warmup} warm-up dropped), "
              f"global batch {args.micro_batch}, {args.threads} threads, {args.workers} loader worker(s)/rank")
        one = summary(run_training(tmp / "one", args, shards, 1, args.micro_batch))
        two = summary(run_training(tmp / "two", args, shards, 2, args.micro_batch // 2))
        print(f"{'':28s}{'samples/s':>12s}{'tokens/s':>12s}{'data wait':>11s}")
        for name, s in (("1 process (torch)", one), ("2 ranks ZeRO-2 (gloo)", two)):
            print(f"{name:28s}{s['samples_per_s']:12.2f}{s['tokens_per_s']:12.1f}{s['data_wait_frac']:10.1%}")
        print(f"2 ranks / 1 process: samples/s x{two['samples_per_s'] / one['samples_per_s']:.2f}, "
              f"tokens/s x{two['tokens_per_s'] / one['tokens_per_s']:.2f}")
        packed_run = summary(run_training(tmp / "packed", args, shards, 1, args.micro_batch,
                                          ("data.packing=true", f"data.pack_length={args.pack_length}")))
        diff = packed_loss_difference(shards, args.model_config, args.micro_batch, args.pack_length)
        print(f"packing: samples/s x{packed_run['samples_per_s'] / one['samples_per_s']:.2f} vs padded (same shards), "
              f"max per-sample loss difference {diff:.2e}")
        plain = padding_fraction(shards, args.model_config, False, 8, args.micro_batch)
        packed = padding_fraction(shards, args.model_config, True, 8, args.micro_batch)
        print(f"padding waste: {plain:.1%} padded -> {packed:.1%} with packing "
              f"(x{packed / plain:.2f} of the padded baseline)" if plain else "padding waste: none")
        worst = max(one["data_wait_frac"], two["data_wait_frac"])
        print(f"dataloader stall fraction: {worst:.1%} (target < 5%: {'ok' if worst < 0.05 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
