"""LLaVA / ShareGPT4V visual instruction data, as published.

Layout (LLaVA repo, docs/Data.md and `llava_v1_5_mix665k.json`; ShareGPT4V uses the same
records): a JSON list (or JSON Lines) of

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus in the image is white and red."}, ...]}

`image` is relative to the image folder (LLaVA's `--image_folder`); records without it are
text-only (the ShareGPT part of the 665k mix). `<image>` marks where the image goes and may
stand anywhere in a human turn (usually first, `"<image>\\n..."`; at the end in OCR-VQA).
Speakers: `human` and `gpt` (LLaVA's trainer maps them to USER/ASSISTANT and knows no other),
plus `system`, accepted only as the first turn. Any other speaker is a LayoutError
('unknown_speaker'). After an optional system turn the turns alternate human, gpt, human, ...
and end with a gpt turn (the trainer asserts the same alternation).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from magma.layouts.errors import LayoutError
from magma.layouts.json_records import RawRecord, require_object

LLAVA_IMAGE_TOKEN = "<image>"  # the placeholder as LLaVA writes it
Speaker = Literal["human", "gpt", "system"]
SPEAKERS: tuple[str, ...] = ("human", "gpt", "system")


class LlavaTurn(BaseModel):
    model_config = ConfigDict(frozen=True)
    speaker: Speaker
    value: str  # verbatim, `<image>` tokens included

    @property
    def image_tokens(self) -> int:
        return self.value.count(LLAVA_IMAGE_TOKEN)


class LlavaRecord(BaseModel):
    """One conversation; `images` are the record's image paths ([] for text-only records)."""

    model_config = ConfigDict(frozen=True)
    file: str
    index: int
    id: str
    images: list[str]
    turns: list[LlavaTurn]

    @property
    def where(self) -> str:
        return f"{self.file}: record {self.index} (id {self.id!r})"

    @property
    def text_only(self) -> bool:
        return not self.images


def _images(rec: dict, where: str) -> list[str]:
    image = rec.get("image")
    if image is None:
        return []
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise LayoutError("bad_record", f"{where}: 'image' must be a relative path (or a list of them), "
                          f"got {image!r}"[:200])
    return list(paths)


def _turns(rec: dict, where: str) -> list[LlavaTurn]:
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise LayoutError("bad_record", f"{where}: 'conversations' must be a non-empty list of "
                          "{'from', 'value'} turns")
    turns = []
    for n, t in enumerate(conv):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise LayoutError("bad_record", f"{where}: turn {n} needs 'from' and a string 'value'")
        speaker = t.get("from")
        if speaker not in SPEAKERS:
            raise LayoutError("unknown_speaker", f"{where}: turn {n} is from {speaker!r}; LLaVA data "
                              "has 'human' and 'gpt' (and 'system' as the first turn)")
        turns.append(LlavaTurn(speaker=speaker, value=t["value"]))
    return turns


def _check_order(turns: list[LlavaTurn], where: str) -> None:
    body = turns[1:] if turns[0].speaker == "system" else turns
    expected = ["human", "gpt"] * ((len(body) + 1) // 2)
    if [t.speaker for t in body] != expected[:len(body)] or len(body) % 2:
        got = " ".join(t.speaker for t in turns)
        raise LayoutError("bad_record", f"{where}: turns must alternate human, gpt, ... and end with "
                          f"gpt (after an optional first system turn); got: {got}"[:300])


def _check_image_tokens(turns: list[LlavaTurn], images: list[str], where: str) -> None:
    in_human = sum(t.image_tokens for t in turns if t.speaker == "human")
    elsewhere = sum(t.image_tokens for t in turns if t.speaker != "human")
    if elsewhere:
        raise LayoutError("image_token_mismatch", f"{where}: '{LLAVA_IMAGE_TOKEN}' stands in a gpt or "
                          "system turn; it belongs in a human turn")
    if not images and in_human:
        raise LayoutError("image_token_mismatch", f"{where}: {in_human} '{LLAVA_IMAGE_TOKEN}' token(s) "
                          "but no 'image'; add the image path or remove the token")
    if images and in_human not in (0, len(images)):
        raise LayoutError("image_token_mismatch", f"{where}: {in_human} '{LLAVA_IMAGE_TOKEN}' tokens for "
                          f"{len(images)} image(s); give one token per image (or none)")


def parse_llava_record(raw: RawRecord) -> LlavaRecord:
    """One raw record -> LlavaRecord; raises LayoutError ('bad_record', 'unknown_speaker',
    'image_token_mismatch', or the line's 'bad_json') naming the file and the record."""
    rec = require_object(raw)
    rid = rec.get("id", "")
    where = f"{raw.where} (id {rid!r})" if rid != "" else raw.where
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise LayoutError("bad_record", f"{where}: 'id' must be a string or an integer")
    images = _images(rec, where)
    turns = _turns(rec, where)
    _check_order(turns, where)
    _check_image_tokens(turns, images, where)
    return LlavaRecord(file=raw.file, index=raw.index, id=str(rid), images=images, turns=turns)
