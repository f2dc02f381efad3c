"""MagmaProcessor: the one transform from (images, text) or a `Sample` to model inputs.

Used by training (via `encode_sample`, which also builds the assistant-only labels) and by
serving (via `__call__` on a chat-template prompt), so pre-processing cannot drift between them.
Both take the chat format from the one chat template (`apply_chat_template`): training cuts
the rendered conversation at the assistant contents, serving renders the prompt up to the
generation header, so the tokens before an assistant answer are the tokens serving sends.

What `magma.tokenizer_setup` resolved for the tokenizer travels in `processor_config.json`:
`eot_token` (ends an assistant turn: the last labelled token and the generation stop), the
action-token scheme (`action_tokens`, `action_token_start`) and the bins' values
(`action_binning`), all three read through `action_vocab` (see `magma.action_tokenizer`). Text
goes to ids through `text_to_ids`, which puts action text `<act_b>` on the scheme's ids.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from magma.action_tokenizer import ACTION_BINNINGS, ACTION_TEXT, N_ACTION_BINS, ActionVocab, action_token
from magma.image_processing_magma import count_image_tokens, to_pil_rgb
from magma.schema import IMAGE_PLACEHOLDER as IMAGE_TOKEN
from magma.schema import TARGET_KINDS, Sample, Turn
from magma.tokenizer_build import CHAT_TEMPLATE

IGNORE_INDEX = -100


class MagmaProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 tokens_per_view: int = 49, chat_template: str | None = None,
                 eot_token: str | None = None, action_tokens: str = "append",
                 action_token_start: int | None = None, row_separator: bool = False,
                 add_special_tokens: bool = False, action_binning: str = "uniform", **kwargs: Any):
        """`chat_template`: default the tokenizer's own, else the built-in one. `eot_token`:
        default the tokenizer's eos (checkpoints from before it was recorded).
        `action_token_start`: first action id; default `<act_0>`'s id (`append`) or
        `tokenizer.vocab_size - 256` (`reuse_last`). `action_binning`: which values the bins
        hold, `uniform` (default: every checkpoint from before it was recorded) or `openvla`
        (the Magma-8B release's; `magma.action_tokenizer`). `row_separator`: the model ends every
        image-feature row with a learnt vector (the Magma-8B release), one more token per row.
        `add_special_tokens`: every sequence starts with what the tokenizer itself adds before a
        text (Llama-3: `<|begin_of_text|>`), as the release's processor and training do, before
        the chat template's own text (`special_prefix`)."""
        self.tokens_per_view = tokens_per_view
        self.row_separator = row_separator
        self.add_special_tokens = add_special_tokens
        self.image_token = IMAGE_TOKEN
        self.eot_token = eot_token
        self.action_tokens = action_tokens
        self.action_token_start = action_token_start
        if action_binning not in ACTION_BINNINGS:
            raise ValueError(f"action_binning {action_binning!r} (processor_config.json) is not a binning; "
                             f"choose one of {', '.join(ACTION_BINNINGS)}")
        self.action_binning = action_binning
        self._action_vocab: ActionVocab | None = None
        template = chat_template or getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=template, **kwargs)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def eot_token_id(self) -> int:
        """The end-of-turn id: the last labelled token of an answer and the generation stop."""
        if self.eot_token is None:
            return self.tokenizer.eos_token_id
        tid = self.tokenizer.convert_tokens_to_ids(self.eot_token)
        if not isinstance(tid, int) or self.tokenizer.convert_ids_to_tokens(tid) != self.eot_token:
            raise ValueError(f"eot_token {self.eot_token!r} (processor_config.json) is not a token of "
                             "the tokenizer; the tokenizer and processor files come from different folders")
        return tid

    @property
    def action_vocab(self) -> ActionVocab:
        """Where the 256 action bins are in the vocabulary (checked against the tokenizer)."""
        if self._action_vocab is None:
            self._action_vocab = self._resolve_action_vocab()
        return self._action_vocab

    def _resolve_action_vocab(self) -> ActionVocab:
        tok, start = self.tokenizer, self.action_token_start
        if self.action_tokens == "append":
            first = tok.convert_tokens_to_ids(action_token(0))
            last = tok.convert_tokens_to_ids(action_token(N_ACTION_BINS - 1))
            if start is None:
                start = first
            if first != start or last != start + N_ACTION_BINS - 1:
                raise ValueError(f"the tokenizer lacks contiguous {action_token(0)}..{action_token(255)} "
                                 f"tokens from id {start} (action_tokens: append); rebuild the checkpoint "
                                 "with magma.tokenizer_setup")
        elif start is None:
            start = tok.vocab_size - N_ACTION_BINS
        vocab = ActionVocab(self.action_tokens, int(start), binning=self.action_binning)
        if vocab.end > len(tok):
            raise ValueError(f"action ids [{vocab.start}, {vocab.end}) exceed the tokenizer ({len(tok)} ids)")
        return vocab

    def text_to_ids(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added: the chat template places them). Under
        `reuse_last`, action text `<act_b>` is not a token: it becomes the scheme's ids here."""
        if self.action_tokens == "append" or "<act_" not in text:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        vocab, ids, pos = self.action_vocab, [], 0
        for m in ACTION_TEXT.finditer(text):
            if m.start() > pos:
                ids += self.tokenizer(text[pos:m.start()], add_special_tokens=False)["input_ids"]
            ids += vocab.text_to_ids(m.group(0))
            pos = m.end()
        if pos < len(text):
            ids += self.tokenizer(text[pos:], add_special_tokens=False)["input_ids"]
        return ids

    def special_prefix(self) -> list[int]:
        """The ids every sequence starts with: none, or with `add_special_tokens` those the
        tokenizer puts before a text (only a prefix is supported: a suffix would split turns)."""
        if not self.add_special_tokens:
            return []
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        if full[len(full) - len(bare):] != bare:
            raise ValueError("add_special_tokens: the tokenizer adds special tokens after a text; "
                             "only a prefix (a bos) can start every sequence")
        return full[:len(full) - len(bare)]

    def prompt_to_ids(self, prompt: str) -> list[int]:
        """A rendered prompt's ids as the model sees them: `special_prefix` + `text_to_ids`
        (`<image>` not yet expanded; every engine sends these)."""
        return self.special_prefix() + self.text_to_ids(prompt)

    def decode_actions(self, ids: Sequence[int]) -> str:
        """Action ids (constrained decoding) -> their text `<act_b>...` under either scheme."""
        return self.action_vocab.ids_to_text(ids)

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
        try:
            return self.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja's TemplateError from raise_exception (e.g. no system role)
            if not system:
                raise
            raise ValueError(f"this checkpoint's chat template takes no system turn ({exc}); "
                             "send the prompt without one") from None

    # ------------------------------------------------------------------ inference inputs
    def image_token_counts(self, image_inputs: Any) -> list[int]:
        """Image tokens per image of an image-processor output: its views (or, in the release's
        grid layout, its `image_grid`) times the feature cells, plus the row separators."""
        side = math.isqrt(self.tokens_per_view)
        views = [int(v) for v in image_inputs["image_num_views"]]
        grid = image_inputs.get("image_grid")
        grids = ([[(int(r), int(c))] for r, c in np.asarray(grid).reshape(-1, 2)] if grid is not None
                 else [[(1, 1)] * v for v in views])
        return [count_image_tokens(g, side, self.row_separator) for g in grids]

    def num_image_tokens(self, width: int, height: int) -> int:
        """Image tokens a width x height image expands to (what `__call__` inserts)."""
        grids = self.image_processor.token_grids(width, height)
        return count_image_tokens(grids, math.isqrt(self.tokens_per_view), self.row_separator)

    def _expand_images(self, ids: list[int], views: Sequence[int]) -> list[int]:
        """Each placeholder -> views x tokens_per_view image tokens (the views layout)."""
        return self._expand_image_tokens(ids, [v * self.tokens_per_view for v in views])

    def _expand_image_tokens(self, ids: list[int], counts: Sequence[int]) -> list[int]:
        """Each placeholder -> its image's token count (`image_token_counts`)."""
        img_id, out, k = self.image_token_id, [], 0
        for t in ids:
            if t == img_id:
                if k >= len(counts):
                    raise ValueError(f"text has more {IMAGE_TOKEN} placeholders than images ({len(counts)})")
                out.extend([img_id] * counts[k])
                k += 1
            else:
                out.append(t)
        if k != len(counts):
            raise ValueError(f"{len(counts)} images but {k} {IMAGE_TOKEN} placeholders in the text")
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
        counts = self.image_token_counts(img_feats)
        rows, v0 = [], 0
        for t in texts:
            ids = self.prompt_to_ids(t)
            n = ids.count(self.image_token_id)
            rows.append(self._expand_image_tokens(ids, counts[v0:v0 + n]))
            v0 += n
        if v0 != len(counts):
            raise ValueError(f"{len(counts)} images but {v0} {IMAGE_TOKEN} placeholders in the text")
        input_ids, attention_mask = pad_rows(rows, self.tokenizer.pad_token_id, padding_side)
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if imgs:
            data["pixel_values"] = img_feats["pixel_values"]
            if "image_grid" in img_feats:
                data["image_grid"] = img_feats["image_grid"]
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
        the end-of-turn token (the generation stop); the whole tail if it holds none."""
        eot = self.eot_token_id
        return tail.index(eot) + 1 if eot in tail else len(tail)

    def encode_sample(self, sample: Sample, max_length: int | None = None) -> dict[str, Any]:
        """Sample -> input_ids, labels (assistant content + end of turn only), per-token target
        kind, pixel_values [V, 3, S, S] and image_num_views. Returns numpy/torch-free lists +
        arrays. The text is the chat template's rendering (`chat_spans`)."""
        sample.validate()
        img = self.image_processor([to_pil_rgb(i) for i in sample.images])
        views = [int(v) for v in img["image_num_views"]]
        counts = self.image_token_counts(img)
        ids: list[int] = []
        labels: list[int] = []
        kinds: list[int] = []
        k = 0

        def tokens(text: str) -> list[int]:
            nonlocal k
            out = self.text_to_ids(text)
            n_img = out.count(self.image_token_id)
            out = self._expand_image_tokens(out, counts[k:k + n_img])
            k += n_img
            return out

        try:
            spans = self.chat_spans(sample.conversation)
        except ValueError as exc:
            raise ValueError(f"sample {sample.id!r}: {exc}") from None
        ids += self.special_prefix()
        labels += [IGNORE_INDEX] * len(ids)
        kinds += [-1] * len(ids)
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
        out = {"input_ids": ids, "labels": labels, "target_kind": kinds,
               "pixel_values": img["pixel_values"], "image_num_views": views}
        if "image_grid" in img:
            out["image_grid"] = img["image_grid"]
        return out


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
    grids = [np.asarray(e["image_grid"]).reshape(-1, 2) for e in examples if "image_grid" in e]
    if grids:  # the release's grid layout: (rows, cols) of crops per image, in image order
        batch["image_grid"] = torch.from_numpy(np.concatenate(grids)).long()
    return batch
