"""Offline metrics on held-out shards, teacher-forced (one forward pass per sample, no sampling):

- mark accuracy: samples whose target names a mark ("Mark 7", UI actions on a mark) and whose
  target tokens are all predicted right;
- action token accuracy: fraction of action tokens predicted right (argmax over the 256 action
  ids, as constrained decoding would);
- action L1: mean |decoded predicted action - decoded target action| in the dataset's units.

Action tokens are the labelled tokens of `action` answers (the encoded `target_kind`) that are
action ids (not the end of turn); ids and values follow the checkpoint's action tokens
(`processor.action_vocab`: its scheme, start and binning). Under `reuse_last` the action ids are
ordinary base-vocabulary tokens that other answers use too, so the id range alone cannot tell.

Reads the data pipeline's shards (`*.tar`, the format of `magma.shards`) with its reader; keeps
samples whose meta split matches (held-out by default) and passes over ones that do not decode.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from magma.schema import Sample
from magma.shards import ShardError, decode_sample, iter_shard_members

_MARK_TARGET = re.compile(r"\bMark \d+\b")


def iter_shard_samples(root: str | Path, split: str | None = "heldout") -> Iterator[Sample]:
    """Samples from every `*.tar` under root (sorted), filtered on meta["split"] when given."""
    tars = sorted(Path(root).rglob("*.tar")) if Path(root).is_dir() else [Path(root)]
    for path in tars:
        for key, members in iter_shard_members(path):  # ShardError for an unreadable tar
            try:
                sample = decode_sample(path, key, members)
            except ShardError:  # one undecodable sample: scored without it
                continue
            if split is None or sample.meta.get("split", "train") == split:
                yield sample


def offline_metrics(checkpoint: str | Path, shards: str | Path, split: str | None = "heldout",
                    max_samples: int = 200) -> dict[str, Any]:
    """Teacher-forced metrics of a checkpoint on shard samples (see module docstring)."""
    import torch

    from magma.action_tokenizer import ActionTokenizer
    from magma.checkpoint import load_checkpoint
    from magma.processing_magma import collate_encoded
    from magma.schema import TARGET_KINDS

    model, processor, stats = load_checkpoint(checkpoint)
    model.eval()
    tok = processor.tokenizer
    vocab = processor.action_vocab
    act_ids = torch.tensor(list(vocab.ids))
    action_kind = TARGET_KINDS.index("action")
    action_codecs = {name: ActionTokenizer(vocab, s) for name, s in stats.items()}
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    mark_hits = mark_n = tok_hits = tok_n = 0
    l1_sum, l1_n, n = 0.0, 0, 0
    for sample in iter_shard_samples(shards, split):
        if n >= max_samples:
            break
        n += 1
        enc = processor.encode_sample(sample)
        batch = collate_encoded([enc], pad_id)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           pixel_values=batch.get("pixel_values")).logits[0, :-1]
        labels, kinds = batch["labels"][0, 1:], batch["target_kind"][0, 1:]
        on = labels >= 0
        pred = logits.argmax(-1)
        target_text = " ".join(t.content for t in sample.conversation if t.role == "assistant")
        if _MARK_TARGET.search(target_text):
            mark_n += 1
            mark_hits += int(bool((pred[on] == labels[on]).all()))
        is_act = on & (kinds == action_kind) & torch.from_numpy(vocab.is_action(labels.numpy()))
        if is_act.any():
            act_pred = act_ids[logits[is_act][:, act_ids].argmax(-1)]
            tok_hits += int((act_pred == labels[is_act]).sum())
            tok_n += int(is_act.sum())
            if sample.dataset in action_codecs:
                at = action_codecs[sample.dataset]
                try:
                    diff = at.decode(act_pred.tolist()) - at.decode(labels[is_act].tolist())
                    l1_sum += float(np.abs(diff).sum())
                    l1_n += diff.size
                except ValueError:
                    pass
    return {"samples": n, "split": split,
            "mark_accuracy": mark_hits / mark_n if mark_n else None, "mark_samples": mark_n,
            "action_token_accuracy": tok_hits / tok_n if tok_n else None, "action_tokens": tok_n,
            "action_l1": l1_sum / l1_n if l1_n else None}
