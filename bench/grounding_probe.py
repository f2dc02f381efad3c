"""How many training steps does the tiny model need to learn a lookup?

Clicking the right mark from a legend (`button "okay" Mark 1` ... `click "okay" Mark ?`) is an
associative recall: find the line whose label matches and copy its id. This probe trains the
embedded tiny model (configs/model/tiny.yaml) from scratch on two synthetic token tasks at the
quickstart's batch size and prints accuracy against steps:

  copy    (control) a random sequence, a separator, the same sequence again: every target is
          the token a fixed distance back;
  recall  N key/value pairs (key, GAP filler tokens, value), a separator, then the keys in a
          shuffled order each followed by GAP fillers and its value: every target needs a
          content match (the legend lookup, without the words around it).

    python bench/grounding_probe.py --steps 1500 --pairs 4 --gap 3

Measured here (2 idle CPU cores, batch 32, lr 2e-3): copy reaches 1.00 by step 100; recall
stays at ~0.3 (the share a model gets by picking any value present) through 1,400 steps for
gap 3 and through 1,800 steps for gap 0 (those long runs used this script's prototype, same
tasks and model; this script itself was run to 200 steps: copy 1.00 at step 100, recall 0.32).
The quickstart trains ~600 steps of batch 16 with a few UI actions per batch, which is why its
tiny model does not learn the legend lookup (README).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from magma.build import build_model

SEP, FILL = 50, 5  # token ids used as separator and filler (never keys or values)


def copy_batch(g: torch.Generator, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(100, 600, (batch, length), generator=g)
    ids = torch.cat([x, torch.full((batch, 1), SEP), x], 1)
    labels = ids.clone()
    labels[:, :length + 1] = -100
    return ids, labels


def recall_batch(g: torch.Generator, batch: int, pairs: int, gap: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.stack([torch.randperm(300, generator=g)[:pairs] + 100 for _ in range(batch)])
    vals = torch.randint(10, 20, (batch, pairs), generator=g)
    filler = torch.full((batch, pairs, gap), FILL)
    kv = torch.cat([keys[..., None], filler, vals[..., None]], -1).reshape(batch, -1)
    order = torch.stack([torch.randperm(pairs, generator=g) for _ in range(batch)])
    q = torch.cat([torch.gather(keys, 1, order)[..., None], filler,
                   torch.gather(vals, 1, order)[..., None]], -1).reshape(batch, -1)
    ids = torch.cat([kv, torch.full((batch, 1), SEP), q], 1)
    labels = torch.full_like(ids, -100)
    value_pos = torch.arange(kv.shape[1] + 1 + gap + 1, ids.shape[1], gap + 2)
    labels[:, value_pos] = ids[:, value_pos]
    return ids, labels


def train_probe(task: str, steps: int, batch: int, lr: float, pairs: int, gap: int,
                every: int, seed: int = 0) -> list[tuple[int, float]]:
    model, _ = build_model(Path(__file__).resolve().parents[1] / "configs/model/tiny.yaml", seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        ids, labels = copy_batch(g, batch, 10) if task == "copy" else recall_batch(g, batch, pairs, gap)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / 50)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % every == 0:
            mask = labels[:, 1:] != -100
            acc = (out.logits[:, :-1].argmax(-1)[mask] == labels[:, 1:][mask]).float().mean().item()
            curve.append((step, acc))
            print(f"{task:6s} step {step:5d}  loss {out.loss.item():.3f}  acc {acc:.2f}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--gap", type=int, default=3, help="filler tokens between key and value")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--tasks", default="copy,recall")
    args = p.parse_args()
    torch.set_num_threads(2)
    results = {t: train_probe(t, args.steps, args.batch, args.lr, args.pairs, args.gap, args.every)
               for t in args.tasks.split(",")}
    chance = 1.0 / args.pairs
    print(f"\nfinal accuracy (recall chance by picking a present value: {chance:.2f})")
    for t, curve in results.items():
        first = next((s for s, a in curve if a >= 0.9), None)
        print(f"  {t:6s} {curve[-1][1]:.2f} after {curve[-1][0]} steps; "
              f"first step at >= 0.90: {first if first else 'never'}")


if __name__ == "__main__":
    main()
