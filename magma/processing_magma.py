"""MagmaProcessor: the one transform from (images, text) or a `Sample` to model inputs.

Used by training (via `encode_sample`, which also builds the assistant-only labels) and by
serving (via `__call__` on a chat-template prompt), so pre-processing cannot drift between them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from magma.image_processing_magma import to_pil_rgb
from magma.schema import TARGET_KINDS, Sample
from magma.tokenizer_build import CHAT_TEMPLATE, END_OF_TURN, IMAGE_TOKEN

IGNORE_INDEX = -100


class MagmaProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 tokens_per_view: int = 49, chat_template: str | None = None, **kwargs: Any):
        self.tokens_per_view = tokens_per_view
        self.image_token = IMAGE_TOKEN
        super().__init__(image_processor, tokenizer,
                         chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    # ------------------------------------------------------------------ prompts
    def render_prompt(self, user_text: str, n_images: int | None = None,
                      system: str | None = None) -> str:
        """Chat-template prompt for one user turn, ready for generation.

        Texts from `magma.prompts` already hold their `<image>` placeholders; for a plain text
        without any, `n_images` (default 1) placeholders are put in front.
        """
        if n_images is None:
            n_images = 0 if IMAGE_TOKEN in user_text else 1
        content = IMAGE_TOKEN * n_images + user_text
        messages = ([{"role": "system", "content": system}] if system else []) + \
            [{"role": "user", "content": content}]
        return self.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    # ------------------------------------------------------------------ inference inputs
    def _expand_images(self, ids: list[int], views: Sequence[int]) -> list[int]:
        img_id, out, k = self.image_token_id, [], 0
        for t in ids:
            if t == img_id:
                if k >= len(views):
                    raise ValueError(f"text has more {IMAGE_TOKEN} placeholders than images ({len(views)})")
                out.extend([img_id] * (views[k] * self.tokens_per_view))
                k += 1
            else:
                out.append(t)
        if k != len(views):
            raise ValueError(f"{len(views)} images but {k} {IMAGE_TOKEN} placeholders in the text")
        return out

    def __call__(self, images: Any = None, text: str | list[str] | None = None,
                 return_tensors: str | None = "pt", padding_side: str = "left",
                 **kwargs: Any) -> BatchFeature:
        """Tokenise prompt(s) and images. Images are flat, in placeholder order across the batch.

        Batches are left-padded by default (generation); training uses `encode_sample`.
        """
        if text is None:
            raise ValueError("text is required (use render_prompt or apply_chat_template)")
        texts = [text] if isinstance(text, str) else list(text)
        imgs = [] if images is None else (list(images) if isinstance(images, (list, tuple)) else [images])
        img_feats = self.image_processor(imgs)
        views = [int(v) for v in img_feats["image_num_views"]]
        rows, v0 = [], 0
        for t in texts:
            ids = self.tokenizer(t, add_special_tokens=False)["input_ids"]
            n = ids.count(self.image_token_id)
            rows.append(self._expand_images(ids, views[v0:v0 + n]))
            v0 += n
        if v0 != len(views):
            raise ValueError(f"{len(views)} images but {v0} {IMAGE_TOKEN} placeholders in the text")
        input_ids, attention_mask = pad_rows(rows, self.tokenizer.pad_token_id, padding_side)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if imgs:
            data["pixel_values"] = img_feats["pixel_values"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ training inputs
    def encode_sample(self, sample: Sample, max_length: int | None = None) -> dict[str, Any]:
        """Sample -> input_ids, labels (assistant content + <|end|> only), per-token target kind,
        pixel_values [V, 3, S, S] and image_num_views. Returns numpy/torch-free lists + arrays."""
        sample.validate()
        tok = self.tokenizer
        img = self.image_processor([to_pil_rgb(i) for i in sample.images])
        views = [int(v) for v in img["image_num_views"]]
        ids: list[int] = []
        labels: list[int] = []
        kinds: list[int] = []
        k = 0
        end_id = tok.convert_tokens_to_ids(END_OF_TURN)
        for turn in sample.conversation:
            head = tok(f"<|{turn.role}|>", add_special_tokens=False)["input_ids"]
            body = tok(turn.content, add_special_tokens=False)["input_ids"]
            n_img = body.count(self.image_token_id)
            body = self._expand_images(body, views[k:k + n_img])
            k += n_img
            seg = head + body + [end_id]
            ids.extend(seg)
            if turn.role == "assistant":
                kind = TARGET_KINDS.index(turn.kind)  # type: ignore[arg-type]
                labels.extend([IGNORE_INDEX] * len(head) + body + [end_id])
                kinds.extend([-1] * len(head) + [kind] * (len(body) + 1))
            else:
                labels.extend([IGNORE_INDEX] * len(seg))
                kinds.extend([-1] * len(seg))
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"sample {sample.id!r}: {len(ids)} tokens exceed max_length {max_length}")
        return {"input_ids": ids, "labels": labels, "target_kind": kinds,
                "pixel_values": img["pixel_values"], "image_num_views": views}


def pad_rows(rows: list[list[int]], pad_id: int, side: str = "right",
             fill: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad token rows to one length; returns (ids [B, L], attention_mask [B, L])."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id if fill is None else fill, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        if side == "left":
            ids[i, width - len(r):], mask[i, width - len(r):] = r, 1
        else:
            ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


def collate_encoded(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded samples into a training batch (labels -100 on padding)."""
    ids, mask = pad_rows([e["input_ids"] for e in examples], pad_id)
    labels, _ = pad_rows([e["labels"] for e in examples], pad_id, fill=IGNORE_INDEX)
    kinds, _ = pad_rows([e["target_kind"] for e in examples], pad_id, fill=-1)
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.from_numpy(labels), "target_kind": torch.from_numpy(kinds)}
    pv = [np.asarray(e["pixel_values"]) for e in examples if len(e["pixel_values"])]
    if pv:
        batch["pixel_values"] = torch.from_numpy(np.concatenate(pv)).float()
    return batch
