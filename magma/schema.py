"""The training sample: images plus a conversation whose assistant turns carry a target kind.

Every stage speaks this record. `data_pipeline` builds samples and writes them to shards with
`sample_to_tar_members`; `train` reads them back with `sample_from_tar_members`. The encoding
lives here so the writer and the reader cannot drift apart.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

TargetKind = Literal["verbal", "spatial", "action"]
TARGET_KINDS: tuple[str, ...] = ("verbal", "spatial", "action")
Role = Literal["system", "user", "assistant"]
SCHEMA_VERSION = 1


class SampleError(ValueError):
    """A sample that breaks the schema (says which sample and which field)."""


@dataclass
class Turn:
    role: Role
    content: str
    # Only assistant turns carry a target kind; the loss is computed on them alone.
    kind: TargetKind | None = None

    def __post_init__(self) -> None:
        if self.role not in ("system", "user", "assistant"):
            raise SampleError(f"turn role must be system/user/assistant, got {self.role!r}")
        if self.role == "assistant" and self.kind not in TARGET_KINDS:
            raise SampleError(f"assistant turn needs kind in {TARGET_KINDS}, got {self.kind!r}")
        if self.role != "assistant" and self.kind is not None:
            raise SampleError(f"only assistant turns carry a kind (role {self.role!r})")
        if not isinstance(self.content, str):
            raise SampleError(f"turn content must be str, got {type(self.content).__name__}")


@dataclass
class Sample:
    """One training example.

    `images` are RGB uint8 arrays [H, W, 3]; the user turns contain one `<image>` placeholder
    per image, in order. `dataset` names the action statistics used for action targets.
    """

    id: str
    images: list[np.ndarray]
    conversation: list[Turn]
    source: str  # e.g. "som/miniwob", "tom/video", "robot/metaworld", "verbal/captions"
    dataset: str = ""
    episode: str | None = None
    frame: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "Sample":
        where = f"sample {self.id!r}"
        if not self.id or "." in self.id or "/" in self.id:
            raise SampleError(f"{where}: id must be non-empty without '.' or '/' (tar keys)")
        if not any(t.role == "assistant" for t in self.conversation):
            raise SampleError(f"{where}: needs at least one assistant turn (the target)")
        placeholders = sum(t.content.count(IMAGE_PLACEHOLDER) for t in self.conversation)
        if placeholders != len(self.images):
            raise SampleError(
                f"{where}: {placeholders} '{IMAGE_PLACEHOLDER}' placeholders but "
                f"{len(self.images)} images; put one placeholder per image in the user turns")
        for i, img in enumerate(self.images):
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
                    and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0):
                raise SampleError(f"{where}: image {i} must be uint8 [H, W, 3], got "
                                  f"{getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
        return self

    @property
    def target_kinds(self) -> list[str]:
        return [t.kind for t in self.conversation if t.role == "assistant"]  # type: ignore[misc]

    @property
    def primary_kind(self) -> str:
        return self.target_kinds[0]


# The one image placeholder: prompts, the tokenizer's special token and the processor use it.
IMAGE_PLACEHOLDER = "<image>"


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def sample_to_tar_members(sample: Sample) -> dict[str, bytes]:
    """WebDataset-style members: `{id}.json` and `{id}.{i}.png` per image."""
    sample.validate()
    record = {
        "schema_version": SCHEMA_VERSION,
        "id": sample.id,
        "conversation": [asdict(t) for t in sample.conversation],
        "source": sample.source,
        "dataset": sample.dataset,
        "episode": sample.episode,
        "frame": sample.frame,
        "meta": sample.meta,
        "num_images": len(sample.images),
        "image_sizes": [[int(im.shape[1]), int(im.shape[0])] for im in sample.images],
    }
    members = {f"{sample.id}.json": json.dumps(record, sort_keys=True).encode()}
    for i, img in enumerate(sample.images):
        members[f"{sample.id}.{i}.png"] = _png_bytes(img)
    return members


def sample_from_tar_members(key: str, members: dict[str, bytes]) -> Sample:
    """Inverse of `sample_to_tar_members`; `members` maps the suffix after the key ("json",
    "0.png", ...) to bytes. Raises SampleError naming the key on anything malformed."""
    try:
        record = json.loads(members["json"])
        images = []
        for i in range(int(record["num_images"])):
            with Image.open(io.BytesIO(members[f"{i}.png"])) as im:
                images.append(np.asarray(im.convert("RGB")))
        turns = [Turn(**t) for t in record["conversation"]]
        return Sample(id=record["id"], images=images, conversation=turns, source=record["source"],
                      dataset=record.get("dataset", ""), episode=record.get("episode"),
                      frame=record.get("frame"), meta=record.get("meta", {})).validate()
    except SampleError:
        raise
    except Exception as exc:  # corrupt JSON, missing member, undecodable PNG
        raise SampleError(f"sample {key!r}: cannot decode ({type(exc).__name__}: {exc})") from exc
