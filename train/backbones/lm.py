"""Pretrain the tiny language model on generated text (`train.backbones.text_corpus`).

The model is the `text` section of `configs/model/tiny.yaml` (a 4-layer Llama, hidden 256) over
the built-in byte-level BPE without action tokens (fine-tuning appends them, as for any LM). The
output folder is an ordinary `LlamaForCausalLM` folder with its tokenizer and chat template, so
`text.pretrained: backbones/tiny-lm` loads it like any other LM.

Probes (teacher-forced, on fixed held-out examples, so they are comparable across steps and runs):
`exact/<family>` the share of examples whose whole answer is predicted token by token;
`token_copy` the accuracy on the repeat of a random segment at a random offset (the induction
test of ENVIRONMENT.md); `chance/ui_click` the expected exact rate of picking a random mark.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magma.config_io import ConfigError
from magma.model_config import load_model_spec
from magma.tokenizer_build import build_bpe_tokenizer
from train.backbones import text_corpus as tc
from train.backbones.resumable import LoopSettings, run_loop

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = REPO / "configs" / "model" / "tiny.yaml"
PROBE_SEED = 12345
PROBE_EXAMPLES = 96
MARK_FAMILIES = ("ui_click", "ui_ordinal", "grounding")  # answers that end in `Mark <id>`


def build_lm(tokenizer: Any, sizes: Path = DEFAULT_SIZES, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    text = load_model_spec(sizes).text
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=text.hidden_size,
                      intermediate_size=text.intermediate_size, num_hidden_layers=text.num_hidden_layers,
                      num_attention_heads=text.num_attention_heads,
                      num_key_value_heads=text.num_key_value_heads or text.num_attention_heads,
                      max_position_embeddings=text.max_position_embeddings, rms_norm_eps=text.rms_norm_eps,
                      tie_word_embeddings=text.tie_word_embeddings, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


def masked_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]
    target = ids[:, 1:]
    keep = mask[:, 1:]
    return torch.nn.functional.cross_entropy(logits[keep], target[keep])


def _answer_exact(model: torch.nn.Module, tokenizer: Any, examples: list[tc.Example]) -> float:
    hits = 0
    for example in examples:
        ids, mask = tc.encode_example(tokenizer, example)
        x = torch.tensor([ids])
        pred = model(input_ids=x).logits[0, :-1].argmax(-1)
        m = torch.tensor(mask[1:])
        hits += bool((pred[m] == x[0, 1:][m]).all())
    return hits / len(examples)


def _mark_id_accuracy(model: torch.nn.Module, tokenizer: Any, examples: list[tc.Example]) -> float:
    """Teacher-forced share of examples whose mark id (the digits before the answer's end of
    turn, one token per digit) is predicted: the lookup alone, without copying the label."""
    hits = 0
    for example in examples:
        ids, mask = tc.encode_example(tokenizer, example)
        answer = next(text for text, supervised in example if supervised)
        digits = len(answer.removesuffix(tc.END_OF_TURN).rsplit(" ", 1)[1])
        x = torch.tensor([ids])
        pred = model(input_ids=x).logits[0, :-1].argmax(-1)
        end = max(i for i, m in enumerate(mask) if m)  # the end-of-turn token
        span = range(end - digits, end)
        hits += all(int(pred[i - 1]) == ids[i] for i in span)
    return hits / len(examples)


def _token_copy_accuracy(model: torch.nn.Module, vocab: int) -> float:
    """72 random ids; a 6-20 id segment repeated at a random later offset; accuracy on the repeat."""
    rng = np.random.default_rng(PROBE_SEED)
    correct = total = 0
    for _ in range(PROBE_EXAMPLES // 2):
        x = rng.integers(0, vocab, size=72)
        n = int(rng.integers(6, 21))
        s = int(rng.integers(0, 36 - n))
        t = int(rng.integers(s + n, 72 - n))
        x[t:t + n] = x[s:s + n]
        pred = model(input_ids=torch.from_numpy(x)[None]).logits[0].argmax(-1).numpy()
        correct += int((pred[t:t + n - 1] == x[t + 1:t + n]).sum())
        total += n - 1
    return correct / total


def _gapped_recall_accuracy(model: torch.nn.Module, tokenizer: Any, vocab: int) -> float:
    """Token accuracy on the asked values of `gapped_recall` rows (fixed held-out rows)."""
    rng = np.random.default_rng([PROBE_SEED, 1])
    spelling = tc.spelling_tokens(tokenizer)
    correct = total = 0
    for _ in range(PROBE_EXAMPLES // 4):
        ids, mask = tc.gapped_recall(rng, vocab, 128, *spelling)
        x = torch.tensor([ids])
        pred = model(input_ids=x).logits[0, :-1].argmax(-1)
        m = torch.tensor(mask[1:])
        correct += int((pred[m] == x[0, 1:][m]).sum())
        total += int(m.sum())
    return correct / max(1, total)


def probe_lm(model: torch.nn.Module, tokenizer: Any, text_vocab: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, family in tc.FAMILIES.items():
        rng = np.random.default_rng([PROBE_SEED, len(name)])
        examples = [family(rng) for _ in range(PROBE_EXAMPLES)]
        out[f"exact/{name}"] = round(_answer_exact(model, tokenizer, examples), 4)
        if name in MARK_FAMILIES:
            out[f"mark_id/{name}"] = round(_mark_id_accuracy(model, tokenizer, examples), 4)
    rng = np.random.default_rng([PROBE_SEED, 0])
    out["chance/ui_click"] = round(float(np.mean([1 / int(rng.integers(2, 14)) for _ in range(1000)])), 4)
    out["token_copy"] = round(_token_copy_accuracy(model, text_vocab), 4)
    out["gapped_recall"] = round(_gapped_recall_accuracy(model, tokenizer, text_vocab), 4)
    return out


def _load_weights(model: torch.nn.Module, folder: Path, vocab: int) -> None:
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    if not weights.exists():
        raise ConfigError("no model.safetensors to start from", file=folder,
                          fix="give the --out folder of an earlier `magma backbones pretrain-lm`")
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    rows = state.get("model.embed_tokens.weight")
    if rows is None or rows.shape[0] != vocab:
        raise ConfigError(f"its embedding has {None if rows is None else rows.shape[0]} rows, the chosen "
                          f"tokenizer {vocab}", file=weights,
                          fix="start from a folder written by `magma backbones pretrain-lm` with the same sizes "
                              "and the same --tokenizer")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ConfigError(f"weights do not fit the tiny LM (missing {missing}, unexpected {unexpected})",
                          file=weights, fix="start from a folder written with the same --sizes")


LM_VOCABULARIES = ("builtin", "words")


def lm_tokenizer(vocabulary: str = "builtin") -> Any:
    """A BPE without action tokens (fine-tuning appends them, as for any LM).

    `builtin`: the project's 1,024-token BPE, which spells a label such as `okay` one character
    per token, so the legend lookup must match several tokens. `words`: the same merges' corpus
    plus every word labels are made of (`text_corpus.VOCABULARY_WORDS`, in each casing), each one
    token, as common words are in a real LM's vocabulary (about 3,000 entries)."""
    if vocabulary == "words":
        return build_bpe_tokenizer(4096, action_tokens=False, words=tc.VOCABULARY_WORDS)
    if vocabulary != "builtin":
        raise ConfigError(f"unknown LM tokenizer {vocabulary!r}", fix=f"use one of {LM_VOCABULARIES}")
    return build_bpe_tokenizer(1024, action_tokens=False)


def pretrain_lm(out: Path, steps: int, resume: bool = True, seed: int = 0, batch: int = 32, length: int = 384,
                lr: float = 1e-3, token_copy_frac: float = 0.25, sizes: Path = DEFAULT_SIZES,
                checkpoint_every: int = 250, probe_every: int = 250,
                stop_after: int | None = None, recall_frac: float = 0.0,
                init_from: Path | None = None, vocabulary: str = "builtin") -> dict[str, float]:
    """Trains and writes `<out>/` (model + tokenizer, bf16 weights), `<out>/training_log.jsonl`
    and `<out>/probe.json` (the final probe); returns the final probe.

    `init_from`: a folder this command wrote, whose weights start the run (a second stage with
    another mix, e.g. `recall_frac`), written with the same `vocabulary` (`lm_tokenizer`)."""
    out = Path(out)
    tokenizer = lm_tokenizer(vocabulary)
    model = build_lm(tokenizer, sizes, seed)
    if init_from is not None:
        _load_weights(model, Path(init_from), len(tokenizer))
    text_vocab = len(tokenizer)
    settings = LoopSettings(steps=steps, lr=lr, warmup=min(200, steps // 10), seed=seed,
                            checkpoint_every=checkpoint_every, probe_every=probe_every, stop_after=stop_after)

    def make_batch(rng: np.random.Generator, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = tc.make_rows(tokenizer, rng, batch, length, token_copy_frac=token_copy_frac,
                                 text_vocab=text_vocab, recall_frac=recall_frac)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def loss_fn(m: torch.nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        return masked_loss(m, *b), {}

    rows = run_loop(model, out / ".work", settings, make_batch, loss_fn,
                    probe=lambda m: probe_lm(m, tokenizer, text_vocab), resume=resume, desc="pretrain-lm")
    final = next(r["probe"] for r in reversed(rows) if "probe" in r)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out)
    (out / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = {"step": settings.last_step, "of_steps": steps, **final}
    (out / "probe.json").write_text(json.dumps(record, indent=1) + "\n")
    return final
