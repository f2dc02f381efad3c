"""Transformers engine: batched greedy decoding with a KV cache and constrained action decoding.

Concurrent requests are left-padded into one batch (prefill once, then one token per step for
every row); rows that asked for actions have their logits restricted to the 256 action ids of
the checkpoint's action-token scheme (`processor.action_vocab`) and stop after exactly
`max_new_tokens` tokens, free-text rows stop at the recorded end-of-turn token
(`processor.eot_token_id`).

A cached prefix for a fixed system prompt is not used: every Magma prompt starts with the
user turn's image tokens (`<|user|><image>...`), so requests share only one token of prefix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from magma.checkpoint import load_checkpoint
from serve.engines.base import BatchedEngine, GenerationOutput, GenerationRequest, ThreadBatcher, output_text


class ActionLogitsProcessor(LogitsProcessor):
    """Sets every non-action logit to -inf on the constrained rows of a batch.

    `allowed` is `ActionTokenizer.logits_mask(vocab)` as a tensor; `rows` marks the rows that
    decode actions (None = all rows), so one batch can mix actions and free text.
    """

    def __init__(self, allowed: torch.Tensor, rows: torch.Tensor | None = None):
        self.blocked = ~allowed.bool()
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        blocked = self.blocked[: scores.shape[-1]].to(scores.device)
        if self.rows is None:
            return scores.masked_fill(blocked, float("-inf"))
        mask = self.rows.to(scores.device)[:, None] & blocked[None, :]
        return scores.masked_fill(mask, float("-inf"))


def action_id_range(processor) -> range:
    """Vocabulary ids of the 256 action bins under the processor's scheme (checked against its
    tokenizer): `<act_0>..<act_255>` (append) or the last 256 base-vocabulary ids (reuse_last)."""
    return processor.action_vocab.ids


class HFEngine(BatchedEngine):
    """`generate(requests)` over a transformers MagmaForCausalLM, batched across callers.

    naive=True runs each request alone through `model.generate` with no constraint, waiting
    for EOS up to `naive_max_new_tokens` (default: the request's own limit): the benchmark
    baseline of a plain per-request server.
    """

    name = "hf"

    def __init__(self, model, processor, max_batch: int = 16, max_wait_s: float = 0.005,
                 naive: bool = False, naive_max_new_tokens: int | None = None):
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.naive = naive
        self.naive_max_new_tokens = naive_max_new_tokens
        self.eos_id = processor.eot_token_id
        self.pad_id = self.tokenizer.pad_token_id
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        ids = action_id_range(processor)
        self.action_mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.action_mask[ids.start:ids.stop] = True
        self._batcher = ThreadBatcher(self._run_naive if naive else self._run_batch,
                                      max_batch=1 if naive else max_batch, max_wait_s=max_wait_s,
                                      name="hf")

    @classmethod
    def from_checkpoint(cls, folder: str | Path, **kwargs) -> "HFEngine":
        model, processor, _ = load_checkpoint(folder)
        return cls(model, processor, **kwargs)

    # ------------------------------------------------------------------ decoding
    def _encode(self, requests: Sequence[GenerationRequest]):
        images = [im for r in requests for im in r.images]
        return self.processor(images=images or None, text=[r.prompt for r in requests],
                              return_tensors="pt")

    def _text(self, ids: list[int], actions: bool = False) -> str:
        return output_text(self.processor, ids, actions)

    @torch.inference_mode()
    def _run_batch(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        enc = self._encode(requests)
        input_ids, attn = enc["input_ids"], enc["attention_mask"]
        bsz = input_ids.shape[0]
        limits = torch.tensor([r.max_new_tokens for r in requests])
        constrained = torch.tensor([r.constrain_to_actions for r in requests])
        processors = LogitsProcessorList([ActionLogitsProcessor(self.action_mask, constrained)])
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config.get_text_config())
        out = self.model(input_ids=input_ids, pixel_values=enc.get("pixel_values"),
                         image_grid=enc.get("image_grid"), attention_mask=attn, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        generated = torch.empty((bsz, 0), dtype=torch.long)
        done = torch.zeros(bsz, dtype=torch.bool)
        stopped = torch.zeros(bsz, dtype=torch.bool)  # ended on EOS (vs. length)
        next_pos = positions[:, -1:] + 1
        for step in range(int(limits.max())):
            scores = processors(generated, out.logits[:, -1].float())
            token = scores.argmax(-1)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            generated = torch.cat([generated, token[:, None]], dim=1)
            hit_eos = (token == self.eos_id) & ~constrained & ~done
            stopped |= hit_eos
            done |= hit_eos | (limits <= step + 1)
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones((bsz, 1), dtype=attn.dtype)], dim=1)
            out = self.model(input_ids=token[:, None], attention_mask=attn, position_ids=next_pos,
                             past_key_values=out.past_key_values, use_cache=True)
            next_pos = next_pos + 1
        results = []
        for i, r in enumerate(requests):
            row = generated[i, : r.max_new_tokens].tolist()
            if stopped[i]:
                row = row[: row.index(self.eos_id)]
            results.append(GenerationOutput(row, self._text(row, r.constrain_to_actions),
                                            "stop" if stopped[i] else "length"))
        return results

    @torch.inference_mode()
    def _run_naive(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        results = []
        for r in requests:
            enc = self._encode([r])
            limit = self.naive_max_new_tokens or r.max_new_tokens
            out = self.model.generate(**enc, max_new_tokens=limit, do_sample=False,
                                      eos_token_id=self.eos_id, pad_token_id=self.pad_id)
            row = out[0, enc["input_ids"].shape[1]:].tolist()
            stopped = self.eos_id in row
            if stopped:
                row = row[: row.index(self.eos_id)]
            results.append(GenerationOutput(row, self._text(row), "stop" if stopped else "length"))
        return results
