"""MagmaProcessor: the one transform from (images, text) or a `Sample` to model inputs.

Used by training (via `encode_sample`, which also builds the assistant-only labels) and by
serving (via `__call__` on a chat-template prompt), so pre-processing cannot drift between them.
Both take the chat format from the one chat template (`apply_chat_template`): training cuts
the rendered conversation at the assistant contents, serving renders the prompt up to the
generation header, so the tokens before an assistant answer are the tokens serving sends.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from magma.image_processing_magma import to_pil_rgb
from magma.schema import IMAGE_PLACEHOLDER as IMAGE_TOKEN
from magma.schema import TARGET_KINDS, Sample, Turn
from magma.tokenizer_build import CHAT_TEMPLATE

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
    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        if not messages:
            return ""
        return self.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)

    def chat_spans(self, conversation: Sequence[Turn]) -> list[tuple[str, Turn | None]]:
        """The conversation as the chat template renders it, cut into consecutive spans:
        `(text, None)` for prompt text (everything up to an assistant turn's content, its
        generation header included) and `(text, turn)` for an assistant turn's content followed
        by the template's end-of-turn text. The spans concatenate to the full rendering.

        Prefix by prefix: the prompt before assistant turn i is the rendering of turns [:i] with
        the generation prompt, exactly what `render_prompt` gives serving.
        """
        messages = [{"role": t.role, "content": t.content} for t in conversation]
        spans: list[tuple[str, Turn | None]] = []
        done, pending = "", ""
        for i, turn in enumerate(conversation):
            if turn.role == "assistant":
                if i == 0:
                    raise ValueError("the conversation starts with an assistant turn; a chat "
                                     "template renders an answer after a prompt: put the user "
                                     "(or system) turn first")
                head = self._render(messages[:i], generation=True)
                pending += _after(done, head, f"turn {i} generation prompt")
                full = self._render(messages[:i + 1])
                answer = _after(head, full, f"turn {i}")
                if not answer.startswith(turn.content):
                    raise ValueError(f"the chat template changes assistant turn {i}'s content "
                                     f"({answer[:40]!r} for {turn.content[:40]!r}); training labels "
                                     "need the content verbatim")
                spans += [(pending, None), (answer, turn)]
                pending = ""
            else:
                full = self._render(messages[:i + 1])
                pending += _after(done, full, f"turn {i}")
            done = full
        if pending:
            spans.append((pending, None))
        return spans

    def _end_of_turn_length(self, tail: list[int]) -> int:
        """How many tokens after an assistant content are its end of turn (labelled): through
        the tokenizer's eos token (the generation stop); the whole tail if it holds none."""
        eos = self.tokenizer.eos_token_id
        return tail.index(eos) + 1 if eos in tail else len(tail)

    def encode_sample(self, sample: Sample, max_length: int | None = None) -> dict[str, Any]:
        """Sample -> input_ids, labels (assistant content + end of turn only), per-token target
        kind, pixel_values [V, 3, S, S] and image_num_views. Returns numpy/torch-free lists +
        arrays. The text is the chat template's rendering (`chat_spans`)."""
        sample.validate()
        img = self.image_processor([to_pil_rgb(i) for i in sample.images])
        views = [int(v) for v in img["image_num_views"]]
        ids: list[int] = []
        labels: list[int] = []
        kinds: list[int] = []
        k = 0

        def tokens(text: str) -> list[int]:
            nonlocal k
            out = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            n_img = out.count(self.image_token_id)
            out = self._expand_images(out, views[k:k + n_img])
            k += n_img
            return out

        try:
            spans = self.chat_spans(sample.conversation)
        except ValueError as exc:
            raise ValueError(f"sample {sample.id!r}: {exc}") from None
        for text, turn in spans:
            if turn is None:
                seg = tokens(text)
                ids += seg
                labels += [IGNORE_INDEX] * len(seg)
                kinds += [-1] * len(seg)
                continue
            body = tokens(turn.content)
            tail = tokens(text[len(turn.content):])
            n_end = self._end_of_turn_length(tail)
            kind = TARGET_KINDS.index(turn.kind)  # type: ignore[arg-type]
            ids += body + tail
            labels += body + tail[:n_end] + [IGNORE_INDEX] * (len(tail) - n_end)
            kinds += [kind] * (len(body) + n_end) + [-1] * (len(tail) - n_end)
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"sample {sample.id!r}: {len(ids)} tokens exceed max_length {max_length}")
        return {"input_ids": ids, "labels": labels, "target_kind": kinds,
                "pixel_values": img["pixel_values"], "image_num_views": views}


def _after(prefix: str, text: str, where: str) -> str:
    """`text` minus `prefix`; the chat template must render a conversation's prefix as a prefix."""
    if not text.startswith(prefix):
        raise ValueError(f"the chat template does not render the conversation incrementally at "
                         f"{where}: the rendering of the turns before it is not a prefix of the "
                         "rendering with it; encode_sample needs a template whose turns append")
    return text[len(prefix):]


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
