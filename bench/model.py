"""Tiny-model speed on this CPU: forward+backward per sample, and generate tokens/s with and
without the KV cache (printed as a ratio measured in the same run).

    .venv/bin/python bench/model.py [--threads 2] [--batch 8] [--new-tokens 32]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from magma.build import build_model
from magma.processing_magma import collate_encoded
from magma.schema import Sample, Turn

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs/model/tiny.yaml"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, proc = build_model(args.config)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (160, 210, 3), dtype=np.uint8)
    sample = Sample(id="b", images=[img], source="bench", conversation=[
        Turn("user", "<image>Task: click the Submit button\nNext action?"),
        Turn("assistant", "click Mark 3 at (512,288)", "action")])
    batch = collate_encoded([proc.encode_sample(sample)] * args.batch, proc.tokenizer.pad_token_id)
    batch.pop("target_kind")
    model.train()

    def step() -> None:
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)

    fb = _time(step, args.repeats)
    model.eval()
    inputs = proc(images=[Image.fromarray(img)], text=proc.render_prompt("Describe the screen."))
    n = args.new_tokens

    def gen(cache: bool):
        return lambda: model.generate(**inputs, max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, use_cache=cache)

    with torch.no_grad():
        t_cache = _time(gen(True), args.repeats)
        t_nocache = _time(gen(False), args.repeats)
    params = sum(p.numel() for p in model.parameters())
    print(f"model {Path(args.config).stem}: {params / 1e6:.2f}M parameters, {args.threads} threads, "
          f"prompt {inputs['input_ids'].shape[1]} tokens")
    print(f"forward+backward: {fb / args.batch * 1000:.1f} ms/sample (batch {args.batch})")
    print(f"generate with KV cache:    {n / t_cache:7.1f} tokens/s")
    print(f"generate without KV cache: {n / t_nocache:7.1f} tokens/s")
    print(f"KV cache speed-up: {t_nocache / t_cache:.2f}x")


if __name__ == "__main__":
    main()
