"""Serving benchmark: actions/s and p50/p99 latency for 1/4/16 concurrent clients.

    .venv/bin/python bench/serve.py [--checkpoint DIR] [--duration 8] [--vllm]

Compares, in one run and on the same model: the hf engine with dynamic batching + constrained
action decoding vs a naive per-request `model.generate` baseline (no batching, no constraint),
and optionally the vLLM engine. Also reports generated tokens per action (target: exactly
action_dim x chunk). Without --checkpoint a random tiny checkpoint (with 4-dim action stats)
is built in a temp folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_checkpoint(folder: Path) -> Path:
    from magma.action_tokenizer import ActionStats
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    model, processor = build_model("configs/model/tiny.yaml", seed=0)
    stats = {"metaworld": ActionStats.from_actions(np.random.RandomState(0).uniform(-1, 1, (200, 4)))}
    return save_checkpoint(model, processor, folder / "tiny", stats)


def measure(policy, clients: int, duration: float, request: dict) -> dict:
    latencies, tokens, errors = [], [], []
    stop_at = time.perf_counter() + duration

    def worker():
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                r = policy.act(request)
            except Exception as exc:
                errors.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - t0)
            tokens.append(r["tokens"] if r.get("tokens") else len(r.get("raw", "")))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "wall": wall, "n": len(latencies), "errors": len(errors),
            "tokens_per_action": float(np.mean(tokens)) if tokens else 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per (engine, clients) cell")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per cell (noise control)")
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--vllm", action="store_true", help="also benchmark the vLLM engine")
    p.add_argument("--naive-cap", type=int, default=32, help="max_new_tokens of the EOS-waiting baseline")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from serve.client.http import encode_image
    from serve.engines.hf import HFEngine
    from serve.policy import Policy

    ckpt = Path(args.checkpoint) if args.checkpoint else make_checkpoint(Path(tempfile.mkdtemp(prefix="bench_serve_")))
    batched = Policy.from_checkpoint(ckpt, engine="hf", default_chunk=args.chunk)
    dim = next(iter(batched.action_stats.values())).dim

    def naive_policy(cap: int) -> Policy:
        return Policy(HFEngine(batched.engine.model, batched.processor, naive=True, naive_max_new_tokens=cap),
                      batched.processor, batched.action_stats, default_chunk=args.chunk)

    # Two baselines: a plain server that waits for EOS up to a usual cap, and the best case for
    # it (a trained model that says EOS right after the action tokens: action_dim x chunk + 1).
    engines = {"hf batched+constrained": batched,
               f"naive generate (cap {args.naive_cap})": naive_policy(args.naive_cap),
               "naive generate (N+1)": naive_policy(dim * args.chunk + 1)}
    if args.vllm:
        engines["vllm"] = Policy.from_checkpoint(ckpt, engine="vllm", default_chunk=args.chunk)
    image = encode_image(np.random.RandomState(0).randint(0, 255, (160, 210, 3), np.uint8))
    request = {"adapter": "robot", "instruction": "pick up the red cube", "image": image, "proprio": [0.1, 0.2]}
    for pol in engines.values():  # warm-up
        pol.act(request)
    clients = [int(c) for c in args.clients.split(",")]
    results: dict = {}
    print(f"checkpoint {ckpt}; action_dim {dim} x chunk {args.chunk} = {dim * args.chunk} tokens/action target; "
          f"{args.duration:.0f} s per cell, torch threads {args.threads}")
    print(f"{'engine':28s} {'clients':>7s} {'actions/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'tok/act':>8s} {'errors':>6s}")
    # The machine is shared: engines take turns in short rounds so that load swings hit all alike.
    for c in clients:
        samples: dict = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, pol in engines.items():
                samples[name].append(measure(pol, c, args.duration / args.rounds, request))
        for name in engines:
            rounds = samples[name]
            lat = [x for r in rounds for x in r.pop("latencies")]
            n, wall = sum(r["n"] for r in rounds), sum(r["wall"] for r in rounds)
            p50, p99 = np.percentile(lat, [50, 99]) * 1000 if lat else (float("nan"),) * 2
            r = {"actions_per_s": n / wall, "p50_ms": p50, "p99_ms": p99, "errors": sum(x["errors"] for x in rounds),
                 "tokens_per_action": float(np.mean([x["tokens_per_action"] for x in rounds]))}
            results[(name, c)] = r
            print(f"{name:28s} {c:7d} {r['actions_per_s']:10.2f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} "
                  f"{r['tokens_per_action']:8.1f} {r['errors']:6d}", flush=True)
    print("\nthroughput ratios (same run):")
    for c in clients:
        ours = results[("hf batched+constrained", c)]["actions_per_s"]
        line = f"  {c:2d} clients: hf batched+constrained / " + ", ".join(
            f"{name} = {ours / results[(name, c)]['actions_per_s']:.2f}x"
            for name in engines if name.startswith("naive"))
        if args.vllm:
            ratio = results[("vllm", c)]["actions_per_s"] / results[("hf batched+constrained", c)]["actions_per_s"]
            line += f"; vllm / hf batched = {ratio:.2f}x"
        print(line)
    print(f"hf batch sizes seen: max {max(batched.engine.batch_sizes)}, mean {np.mean(batched.engine.batch_sizes):.1f}")
    for pol in engines.values():
        pol.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
