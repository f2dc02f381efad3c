"""Training throughput on CPU: 1 process vs 2 ranks ZeRO-2, padded vs packed rows (samples/s and
the per-sample loss difference packing leaves), padding with/without packing, the fraction of
step time spent waiting for data, and the useful training FLOP/s (magma.flops: real tokens only)
against this machine's fp32 GEMM peak measured in the same run, with a table of where one step's
time goes. Ratios are against baselines measured in this run.

    .venv/bin/python bench/train.py                        # tiny model (configs/model/tiny.yaml)
    .venv/bin/python bench/train.py --shards /tmp/qs/runs/latest/shards --micro-batch 16 --steps 20
    .venv/bin/python bench/train.py --model-config tests/train/micro_model.yaml --steps 10
    .venv/bin/python bench/train.py --mfu            # GPU: model FLOPs utilisation of a ~1B model

Synthetic shards (tests/synthetic_shards.py) unless --shards DIR points at real ones. Lines other
checks parse:
    packing: samples/s x<R> vs padded (same shards), max per-sample loss difference <E>
    cpu mfu: <P>% of measured GEMM peak (<achieved> / <peak> GFLOP/s)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# DeepSpeed's own timers (wall_clock_breakdown) print per step on rank 0, e.g.
# "time (ms) | fwd: 1614.18 | bwd: 3116.42 | bwd_inner: 3022.34 | bwd_allreduce: 81.87 | step: 33.77"
DS_TIMER = re.compile(r"\b(fwd|bwd|bwd_inner|bwd_allreduce|step|optimizer_allgather|optimizer_step): ([0-9.]+)")


def deepspeed_timer_config(tmp: Path) -> Path:
    """configs/deepspeed/zero2.json with DeepSpeed's wall-clock breakdown printed every step."""
    ds = json.loads((REPO / "configs/deepspeed/zero2.json").read_text())
    ds.update(wall_clock_breakdown=True, steps_per_print=1)
    path = tmp / "zero2-timers.json"
    path.write_text(json.dumps(ds))
    return path


def deepspeed_timers(output: str, warmup: int) -> dict[str, float]:
    """Median ms per step of each DeepSpeed timer in a run's output (first `warmup` steps dropped)."""
    seen: dict[str, list[float]] = {}
    for line in output.splitlines():
        if "time (ms)" in line and "microstep" not in line:
            for name, ms in DS_TIMER.findall(line):
                seen.setdefault(name, []).append(float(ms))
    return {k: statistics.median(v[warmup:] or v) for k, v in seen.items()}


def run_training(run_dir: Path, args: argparse.Namespace, shards: Path, ranks: int, micro: int,
                 extra: tuple[str, ...] = (), timers: dict[str, float] | None = None) -> list[dict]:
    """Runs train on `ranks` processes; the metrics rows after warm-up. With `timers` (a dict to
    fill), DeepSpeed runs print their wall-clock breakdown and its medians land there."""
    overrides = [f"run_dir={run_dir}", f"data.shards={shards}", f"max_steps={args.steps}",
                 f"micro_batch_size={micro}", "grad_accum=1", "checkpoint.every=0", "log.tensorboard=false",
                 "log.progress=false", f"data.num_workers={args.workers}", f"model.config={args.model_config}",
                 "dist.zero_stage=2", "checkpoint.resume=never", "log.every=1", *extra]
    if timers is not None and ranks > 1:
        overrides.append(f"dist.deepspeed_config={deepspeed_timer_config(run_dir.parent)}")
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
    if timers is not None:
        timers.update(deepspeed_timers(proc.stdout + proc.stderr, args.warmup))
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows[args.warmup:]  # the first steps pay for allocation and worker start-up


def gemm_peak(threads: int, n: int = 2048, reps: int = 6, clock: Callable[[], float] = time.perf_counter) -> float:
    """This machine's fp32 GEMM peak in FLOP/s: the fastest of `reps` n x n torch.matmul on
    `threads` threads (the cores the training uses), timed by `clock`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        a @ b
        best = min(best, clock() - t0)
    torch.set_num_threads(before)
    return 2.0 * n ** 3 / best


def padding_fraction(shards: Path, model_config: str, packing: bool, batches: int, micro: int,
                     pack_length: int) -> float:
    from magma.build import build_model
    from train.data import MixedShardStream, StreamSpec

    processor = build_model(model_config)[1]
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, micro, 0, packing=packing, pack_length=pack_length),
                            processor)
    pad = tok = 0
    for m in range(batches):
        b = ds.micro_batch(m)
        pad, tok = pad + int(b["n_pad"]), tok + int(b["n_tokens"])
    return pad / (pad + tok)


def packed_loss_difference(shards: Path, model_config: str, micro: int, pack_length: int,
                           batches: int = 2) -> tuple[float, float]:
    """Max |per-sample loss packed - the same sample alone| over the first micro batches of the
    shards (fp32, a freshly initialised model): (of the per-sample loss, the mean over its target
    tokens, as training reports it; of the summed token losses, which adds up fp32 rounding of
    hundreds of tokens)."""
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

    worst_mean = worst_sum = 0.0
    with torch.no_grad():
        for m in range(batches):
            encoded = [ds._encode(*ds.schedule.lookup(g), Counter())[0] for g in ds.global_indices(m)]
            alone = [collate([e], pad) for e in encoded]
            sums = [losses(b).sum().item() for b in alone]
            targets = [max(int(b["n_target_tokens"]), 1) for b in alone]
            batch = collate(encoded, pad, packing=True, pack_length=pack_length)
            per_token, owner = losses(batch), batch["sample_index"][:, 1:]
            for i, (a, n) in enumerate(zip(sums, targets)):
                packed = per_token[owner == i].sum().item()
                worst_mean, worst_sum = max(worst_mean, abs(packed - a) / n), max(worst_sum, abs(packed - a))
    return worst_mean, worst_sum


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
            "flops_per_s": med("flops_per_s"), "step_time_s": med("step_time_s"),
            "tokens_per_step": med("tokens_per_s") * med("step_time_s"),
            "data_wait_frac": sum(r["data_wait_frac"] * r["step_time_s"] for r in rows)
            / sum(r["step_time_s"] for r in rows)}


PARTS = ("data", "vision fwd", "LM fwd", "LM bwd", "vision bwd", "optimizer")


def step_breakdown(shards: Path, model_config: str, micro: int, packing: bool, pack_length: int,
                   steps: int, warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """Where one rank's training step goes: one thread, `micro` samples, AdamW as the torch
    engine runs it, timed in this thread's CPU time (time.thread_time: time other processes take
    on a shared machine does not count). Returns (median seconds per part, useful training FLOPs
    per part). 'data' is the loader's work (shard read, image decode, processor, collate) done
    inline: in training a loader worker does it beside the step. The vision backward starts when
    the gradient reaches the projected image features (the projector's backward counts as vision)."""
    import torch

    clock = time.thread_time
    threads = 1

    from magma.build import build_model
    from magma.flops import batch_flops
    from magma.modeling_magma import causal_lm_loss
    from train.data import MixedShardStream, StreamSpec
    from train.engines import MODEL_INPUTS

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, processor = build_model(model_config)[:2]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)  # as train/engines.py
    ds = MixedShardStream(StreamSpec(str(shards), None, 0, 0, 1, micro, 0, packing=packing,
                                     pack_length=pack_length), processor)
    times: dict[str, list[float]] = {k: [] for k in PARTS}
    flops: dict[str, list[float]] = {k: [] for k in PARTS}
    image_id = model.config.image_token_id
    for m in range(warmup + steps):
        t = [clock()]
        batch = ds.micro_batch(m)
        t.append(clock())
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        reached: list[float] = []
        ids = inputs.pop("input_ids")
        embeds = model.get_input_embeddings()(ids.masked_fill(ids == image_id, 0))
        if "pixel_values" in inputs:
            feats = model.image_token_features(inputs.pop("pixel_values"), inputs.pop("image_grid", None))
            feats.register_hook(lambda g, into=reached: into.append(clock()))
            embeds = embeds.masked_scatter((ids == image_id)[..., None], feats)
        t.append(clock())
        logits = model(inputs_embeds=embeds, **inputs).logits
        loss = causal_lm_loss(logits, batch["labels"], reduction="none").sum() / batch["n_target_tokens"]
        t.append(clock())
        loss.backward()
        t.append(clock())
        t[-1:] = [reached[0] if reached else t[-1], t[-1]]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t.append(clock())
        if m < warmup:
            continue
        f = batch_flops(model.config, batch)
        vision, lm = f.vision + f.projector, f.lm_linear + f.lm_head + f.attention
        for i, (part, work) in enumerate(zip(PARTS, (0.0, vision, lm, 2 * lm, 2 * vision, 0.0))):
            times[part].append(t[i + 1] - t[i])
            flops[part].append(work)
    torch.set_num_threads(before)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in flops.items()})


def print_breakdown(times: dict[str, float], flops: dict[str, float], peak: float, micro: int,
                    ds_timers: dict[str, float], two_step_s: float) -> None:
    step = sum(times.values())
    print(f"where one rank's step goes (packed, {micro} samples, 1 thread, thread CPU time; 1-thread GEMM peak "
          f"{peak / 1e9:.0f} GFLOP/s in the same clock):")
    print(f"  {'part':22s}{'ms/step':>9s}{'share':>8s}{'GFLOP':>8s}{'GFLOP/s':>9s}{'of peak':>9s}")
    for part in PARTS:
        rate = flops[part] / times[part] if times[part] else 0.0
        print(f"  {part:22s}{times[part] * 1e3:9.0f}{times[part] / step:8.1%}{flops[part] / 1e9:8.2f}"
              + (f"{rate / 1e9:9.1f}{rate / peak:9.1%}" if flops[part] else f"{'-':>9s}{'-':>9s}"))
    total = sum(flops.values())
    print(f"  {'step':22s}{step * 1e3:9.0f}{1:8.0%}{total / 1e9:8.2f}{total / step / 1e9:9.1f}"
          f"{total / step / peak:9.1%}")
    if ds_timers:
        comm = ds_timers.get("bwd_allreduce", 0.0) + ds_timers.get("optimizer_allgather", 0.0)
        print(f"  2 ranks ZeRO-2 (DeepSpeed timers, rank 0, ms/step): fwd {ds_timers.get('fwd', 0):.0f}, "
              f"bwd {ds_timers.get('bwd_inner', 0):.0f}, gradient reduce + wait for the other rank "
              f"{ds_timers.get('bwd_allreduce', 0):.0f}, optimizer {ds_timers.get('optimizer_step', 0):.0f}, "
              f"parameter allgather {ds_timers.get('optimizer_allgather', 0):.0f}: communication "
              f"{comm / 1e3 / two_step_s:.1%} of the step")


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
    p.add_argument("--breakdown-steps", type=int, default=4, help="steps timed part by part (0: no table)")
    p.add_argument("--skip-ranks", action="store_true", help="no 2-rank runs (the mfu line then uses 1 process)")
    p.add_argument("--skip-one-process", action="store_true", help="no 1-process runs (2 threads in one process)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the training runs, interleaved (best kept)")
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
        print(f"model {args.model_config}, shards {shards}, {args.steps} steps ({args.warmup} warm-up dropped), "
              f"global batch {args.micro_batch}, {args.threads} threads, {args.workers} loader worker(s)/rank")
        packed_opts = ("data.packing=true", f"data.pack_length={args.pack_length}")
        plan = []
        if not args.skip_one_process:
            plan += [("1 process, padded", 1, ("data.packing=false",)), ("1 process, packed", 1, packed_opts)]
        if not args.skip_ranks:
            plan += [("2 ranks ZeRO-2, padded", 2, ("data.packing=false",)), ("2 ranks ZeRO-2, packed", 2, packed_opts)]
        if not plan:
            sys.exit("bench: --skip-ranks and --skip-one-process leave nothing to run")
        # Other processes only ever slow a run down: with --repeat the configurations run interleaved
        # and each keeps its fastest repeat. The peak is the best of an all-cores matmul measured
        # around every run and `threads` x a one-thread matmul in thread CPU time (which other
        # processes cannot slow down: on a shared machine the all-cores one can lose 3x).
        peaks = [gemm_peak(args.threads)]
        cpu_peak = args.threads * gemm_peak(1, clock=time.thread_time)
        runs: dict[str, dict[str, float]] = {}
        timers: dict[str, float] = {}
        for rep in range(args.repeat):
            for i, (name, ranks, opts) in enumerate(plan):
                found: dict[str, float] = {}
                r = summary(run_training(tmp / f"run-{rep}-{i}", args, shards, ranks, args.micro_batch // ranks,
                                         opts, found if ranks > 1 and opts is packed_opts else None))
                if name not in runs or r["samples_per_s"] > runs[name]["samples_per_s"]:
                    runs[name] = r
                    timers = found or timers
                peaks.append(gemm_peak(args.threads))
        cpu_peak = max(cpu_peak, args.threads * gemm_peak(1, clock=time.thread_time))
        peak = max(peaks + [cpu_peak])
        print(f"fp32 GEMM peak (2048^2 matmul), GFLOP/s: {args.threads} threads, wall clock, around the runs: "
              + ", ".join(f"{x / 1e9:.0f}" for x in peaks) + f"; {args.threads} x 1 thread in thread CPU time: "
              f"{cpu_peak / 1e9:.0f}; peak = the best, {peak / 1e9:.0f}")
        print(f"{'':26s}{'samples/s':>10s}{'tokens/s':>10s}{'tok/step':>9s}{'s/step':>8s}{'GFLOP/s':>9s}"
              f"{'of peak':>9s}{'data wait':>10s}")
        for name, r in runs.items():
            print(f"{name:26s}{r['samples_per_s']:10.2f}{r['tokens_per_s']:10.1f}{r['tokens_per_step']:9.0f}"
                  f"{r['step_time_s']:8.2f}{r['flops_per_s'] / 1e9:9.1f}{r['flops_per_s'] / peak:9.1%}"
                  f"{r['data_wait_frac']:10.1%}")
        if len(runs) == 4:
            one, packed_run = runs["1 process, padded"], runs["1 process, packed"]
            two, two_packed = runs["2 ranks ZeRO-2, padded"], runs["2 ranks ZeRO-2, packed"]
            print(f"2 ranks / 1 process (padded): samples/s x{two['samples_per_s'] / one['samples_per_s']:.2f}; "
                  f"packed: x{two_packed['samples_per_s'] / packed_run['samples_per_s']:.2f}; packing on 1 process: "
                  f"samples/s x{packed_run['samples_per_s'] / one['samples_per_s']:.2f} vs padded")
        # The quickstart's setting (2 ranks of one thread) unless skipped: one process of two
        # OpenMP threads slows down several-fold whenever another process takes a core.
        quick = "2 ranks ZeRO-2, packed" if not args.skip_ranks else "1 process, packed"
        base = quick.replace("packed", "padded")
        diff, diff_sum = packed_loss_difference(shards, args.model_config, args.micro_batch, args.pack_length)
        print(f"packing: samples/s x{runs[quick]['samples_per_s'] / runs[base]['samples_per_s']:.2f} vs padded "
              f"(same shards), max per-sample loss difference {diff:.2e}")
        print(f"  ({quick} vs {base}; per-sample loss = mean over the sample's target tokens; "
              f"of the summed token losses: {diff_sum:.2e})")
        achieved = runs[quick]["flops_per_s"]
        print(f"cpu mfu: {achieved / peak:.1%} of measured GEMM peak ({achieved / 1e9:.1f} / {peak / 1e9:.1f} GFLOP/s)")
        print(f"  (useful training FLOPs of real tokens, magma.flops, per step time of the quickstart's setting: "
              f"{quick}, global batch {args.micro_batch})")
        plain = padding_fraction(shards, args.model_config, False, 8, args.micro_batch, args.pack_length)
        packed = padding_fraction(shards, args.model_config, True, 8, args.micro_batch, args.pack_length)
        print(f"padding waste: {plain:.1%} padded -> {packed:.1%} of packed rows (x{packed / plain:.2f}; the sdpa and "
              f"flash-attention paths drop even that, running the real tokens as one flat row)"
              if plain else "padding waste: none")
        wait = {name: r["data_wait_frac"] for name, r in runs.items() if "packed" in name}
        worst = max(wait.values())
        print(f"dataloader stall fraction with packing: {worst:.1%} "
              f"(target < 5%: {'ok' if worst < 0.05 else 'MISSED'})")
        if args.breakdown_steps > 0:
            per_rank = max(1, args.micro_batch // 2)
            times, flops = step_breakdown(shards, args.model_config, per_rank, True, args.pack_length,
                                          args.breakdown_steps, 1)
            print_breakdown(times, flops, gemm_peak(1, clock=time.thread_time), per_rank, timers,
                            runs.get("2 ranks ZeRO-2, packed", {}).get("step_time_s", 0.0) or 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
