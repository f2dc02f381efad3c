"""The shard format every stage reads and writes: WebDataset-style tars plus `manifest.json`.

    DIR/manifest.json                 ShardManifest: the mix, per-source entries, counts,
    DIR/<source dir>/manifest.json      action statistics and inference settings per dataset
    DIR/<source dir>/shard-000000.tar SourceManifest: one source's build record
                                      uncompressed USTAR tar; sample k's members are adjacent

Member names follow WebDataset: `<key>.<suffix>` where the key is the sample id and the
suffix names the part (`json`, `0.png`, `1.png`, ...); a member may sit in a directory
(`part/<key>.json`), the key being the basename up to its first '.'. The record inside the
members is `magma.schema`'s (`sample_to_tar_members` / `sample_from_tar_members`).

Writing is deterministic (mtime 0, mode 0o644, members in the order given) so a rerun
writes byte-identical shards, and atomic (temp file + rename) so a killed build leaves
either the old file or the new one. Every read error is a `ShardError` naming the file and
the fix. Torch-free: pydantic, the standard library and the schema's NumPy/PIL.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from pydantic import BaseModel, Field, ValidationError

from magma.action_tokenizer import ActionStats
from magma.config_io import StrictModel, validation_problems
from magma.schema import Sample, SampleError, sample_from_tar_members, sample_to_tar_members

__all__ = [
    "MANIFEST", "SHARD_PATTERN", "REBUILD", "ShardError",
    "member_name", "split_member_name", "sample_members",
    "tar_bytes", "atomic_write_bytes", "write_shard",
    "iter_shard_members", "decode_sample", "iter_shard", "ShardIndex", "scan_shard",
    "SkippedItem", "SourceManifest", "SourceEntry", "ShardManifest",
    "read_manifest", "read_source_manifest", "write_manifest", "shard_paths",
]

MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{:06d}.tar"
REBUILD = "rebuild it with `magma data build`"
BUILD_HINT = "build shards with `magma data build --config configs/data/<mix>.yaml --out DIR`"


class ShardError(ValueError):
    """A shard or manifest that cannot be read; the message names the file and the fix."""


# ---------------------------------------------------------------- member names

def member_name(sample_id: str, suffix: str) -> str:
    """The tar member holding part `suffix` ("json", "0.png") of sample `sample_id`."""
    if not sample_id or "." in sample_id or "/" in sample_id:
        raise ValueError(f"sample id {sample_id!r} cannot be a tar key (empty, '.' or '/')")
    if not suffix:
        raise ValueError(f"sample {sample_id!r}: empty member suffix")
    return f"{sample_id}.{suffix}"


def split_member_name(name: str) -> tuple[str, str]:
    """(key, suffix) of a member name: key = basename up to its first '.', suffix = the rest.
    Raises ValueError for a name with no key or no suffix."""
    key, dot, suffix = name.rpartition("/")[2].partition(".")
    if not key or not dot or not suffix:
        raise ValueError(f"tar member {name!r} is not <key>.<suffix>")
    return key, suffix


def sample_members(sample: Sample) -> list[tuple[str, bytes]]:
    """The sample's tar members in writing order (validates it). `magma.schema` names them
    `member_name(sample.id, suffix)`; tests/magma/test_shard_format.py holds the two together."""
    return list(sample_to_tar_members(sample).items())


# ---------------------------------------------------------------- writing

def tar_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    """An uncompressed USTAR tar of (name, data) in the given order; the same members give
    the same bytes (mtime 0, mode 0o644, no owner names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `path` through a temp file beside it and a rename: readers (and a rerun after
    kill -9) see the old file or the whole new one. Temps are named `.<name>.tmp<pid>`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)  # no fsync: kill -9 keeps the page cache; the rename gives atomicity
    os.replace(tmp, path)


def write_shard(path: str | Path, samples: Iterable[Sample]) -> int:
    """Writes the samples to one shard atomically; returns how many were written.
    Raises SampleError for an off-schema sample, ValueError for a repeated id."""
    members: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise ValueError(f"{path}: two samples with id {sample.id!r}; give each sample its own id")
        seen.add(sample.id)
        members.extend(sample_members(sample))
    atomic_write_bytes(path, tar_bytes(members))
    return len(seen)


# ---------------------------------------------------------------- reading

def _group(path: Path, tar: tarfile.TarFile) -> Iterator[tuple[str, list[tuple[str, tarfile.TarInfo]]]]:
    """(key, [(suffix, info)]) per sample, from the file members in tar order. A sample's
    members must be adjacent (the WebDataset convention); anything else is a ShardError, and
    so is an archive cut short (checked before the last sample is given out)."""
    key: str | None = None
    group: list[tuple[str, tarfile.TarInfo]] = []
    done: set[str] = set()
    for info in tar:
        if not info.isfile():
            continue
        try:
            k, suffix = split_member_name(info.name)
        except ValueError as exc:
            raise ShardError(f"{path}: {exc}; {REBUILD}") from None
        if k != key:
            if key is not None:
                yield key, group
                done.add(key)
            if k in done:
                raise ShardError(f"{path}: member {info.name!r} is not next to the other members of "
                                 f"sample {k!r} (a sample's members must be adjacent); {REBUILD}")
            key, group = k, []
        if any(s == suffix for s, _ in group):
            raise ShardError(f"{path}: sample {k!r} has two {suffix!r} members; {REBUILD}")
        group.append((suffix, info))
    _check_end(path, tar)
    if key is not None:
        yield key, group


def _check_end(path: Path, tar: tarfile.TarFile) -> None:
    """tarfile stops quietly at a short or invalid header after the first member; a whole
    archive ends with a zero block there instead. Call after the members were walked."""
    tar.fileobj.seek(tar.offset)  # type: ignore[union-attr]
    if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:  # type: ignore[union-attr]
        raise ShardError(f"{path}: truncated or damaged after byte {tar.offset} (no end-of-archive "
                         f"block); {REBUILD}")


def _open_error(path: Path, exc: Exception) -> ShardError:
    if isinstance(exc, FileNotFoundError):
        return ShardError(f"{path}: no such shard; {REBUILD}")
    return ShardError(f"{path}: unreadable shard ({type(exc).__name__}: {exc}); {REBUILD}")


def iter_shard_members(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) per sample in tar order. Reads plain or compressed tars
    sequentially; raises ShardError for a file that is not a readable tar."""
    path = Path(path)
    try:
        with tarfile.open(path, "r") as tar:
            for key, group in _group(path, tar):
                yield key, {suffix: tar.extractfile(info).read() for suffix, info in group}  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _open_error(path, exc) from None


def decode_sample(path: str | Path, key: str, members: dict[str, bytes]) -> Sample:
    """The sample in one key's members; ShardError naming the file and the key when they do
    not decode (missing member, corrupt JSON or image, off-schema record)."""
    try:
        return sample_from_tar_members(key, members)
    except SampleError as exc:
        raise ShardError(f"{path}: {exc}; {REBUILD}") from None


def iter_shard(path: str | Path) -> Iterator[Sample]:
    """Samples of one shard in order; the first that does not decode raises ShardError."""
    for key, members in iter_shard_members(path):
        yield decode_sample(path, key, members)


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample of an uncompressed shard lies: keys in tar order and, per key,
    suffix -> (data offset, size). Reading sample i costs one seek per member."""

    path: Path
    keys: list[str]
    members: list[dict[str, tuple[int, int]]]

    def __len__(self) -> int:
        return len(self.keys)

    def read_members(self, i: int, fh: BinaryIO | None = None) -> dict[str, bytes]:
        """Sample i's members, read through `fh` (an open handle of `path`) or a fresh one."""
        if fh is None:
            with open(self.path, "rb") as own:
                return self.read_members(i, own)
        out = {}
        for suffix, (offset, size) in self.members[i].items():
            fh.seek(offset)
            out[suffix] = fh.read(size)
        return out

    def sample(self, i: int, fh: BinaryIO | None = None) -> Sample:
        """Sample i, decoded (ShardError when it does not decode)."""
        return decode_sample(self.path, self.keys[i], self.read_members(i, fh))


def scan_shard(path: str | Path) -> ShardIndex:
    """The index of one uncompressed shard from its headers alone (no data is read)."""
    path = Path(path)
    keys, members = [], []
    try:
        with tarfile.open(path, "r:") as tar:
            for key, group in _group(path, tar):
                keys.append(key)
                members.append({suffix: (info.offset_data, info.size) for suffix, info in group})
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _open_error(path, exc) from None
    return ShardIndex(path=path, keys=keys, members=members)


# ---------------------------------------------------------------- manifests

class SkippedItem(StrictModel):
    item: str  # the item id, or "*" when the whole source was skipped
    reason: str
    detail: str = ""


class SourceManifest(StrictModel):
    """`<source dir>/manifest.json`: what `build_source` made of one source of the mix.
    `context` is what the source's `prepare()` returned (action stats, inference settings)."""

    name: str
    type: str
    weight: float
    dir: str
    params: dict[str, Any] = Field(default_factory=dict)
    build_hash: str
    pipeline_version: str
    samples_per_shard: int
    num_items: int
    num_samples: int
    shards: list[str]
    shard_sizes: list[int]
    counts_by_kind: dict[str, int] = Field(default_factory=dict)
    image_sizes: dict[str, int] = Field(default_factory=dict)  # "WxH" -> images
    splits: dict[str, int] = Field(default_factory=dict)  # meta split -> samples
    skipped: dict[str, int] = Field(default_factory=dict)  # reason -> items
    skipped_items: list[SkippedItem] = Field(default_factory=list)  # the first ones, listed
    dropped: dict[str, int] = Field(default_factory=dict)  # reason -> parts dropped in kept items
    context: dict[str, Any] = Field(default_factory=dict)


class SourceEntry(StrictModel):
    """One source in the top-level manifest; its shards live in `<root>/<dir>/`."""

    type: str
    weight: float
    dir: str
    num_samples: int
    shards: list[str]
    shard_sizes: list[int] = Field(default_factory=list)
    counts_by_kind: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    splits: dict[str, int] = Field(default_factory=dict)
    build_hash: str = ""

    @classmethod
    def of(cls, source: SourceManifest) -> "SourceEntry":
        return cls.model_validate(source.model_dump(include=set(cls.model_fields)))


class ShardManifest(StrictModel):
    """`DIR/manifest.json`, the one file training reads. `action_stats` and `inference` are
    merged per dataset from the sources' `prepare()` contexts (`inference`: {dataset:
    settings}, carried as given; magma.inference_settings reads it)."""

    mix: str
    pipeline_version: str
    config_hash: str
    samples_per_shard: int
    sources: dict[str, SourceEntry]
    counts_by_kind: dict[str, int] = Field(default_factory=dict)
    counts_by_source: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    dropped: dict[str, int] = Field(default_factory=dict)
    action_stats: dict[str, ActionStats] = Field(default_factory=dict)
    inference: dict[str, dict[str, Any]] = Field(default_factory=dict)
    splits: dict[str, dict[str, int]] = Field(default_factory=dict)  # source -> split -> samples
    image_sizes: dict[str, int] = Field(default_factory=dict)
    num_samples: int


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShardError(f"{path}: no manifest; {BUILD_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: corrupt JSON ({exc}); {REBUILD}") from None
    except OSError as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(raw, dict):
        raise ShardError(f"{path}: a manifest is a JSON object, got {type(raw).__name__}; {REBUILD}")
    return raw


def _validate(model: type[BaseModel], raw: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ShardError(f"{path}: {validation_problems(exc, model)}; {REBUILD}") from None


def read_manifest(root: str | Path) -> ShardManifest:
    """`root/manifest.json` (a build folder's) as a ShardManifest; ShardError when it is
    missing, not JSON, a source's manifest, or has a bad field."""
    path = Path(root) / MANIFEST
    raw = _read_json(path)
    if "sources" not in raw and "build_hash" in raw:
        raise ShardError(f"{path}: the manifest of one source, not of a build; pass the build "
                         f"folder (the one above {Path(root).name}/)")
    return _validate(ShardManifest, raw, path)


def read_source_manifest(folder: str | Path) -> SourceManifest:
    """`folder/manifest.json` of one source as a SourceManifest (ShardError as read_manifest)."""
    path = Path(folder) / MANIFEST
    return _validate(SourceManifest, _read_json(path), path)


def write_manifest(path: str | Path, manifest: ShardManifest | SourceManifest) -> None:
    """Writes the manifest as JSON (sorted keys, no timestamps) atomically."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode())


def shard_paths(folder: str | Path) -> list[Path]:
    """Every shard a build folder (top-level manifest) or a source folder lists, in order."""
    folder = Path(folder)
    raw = _read_json(folder / MANIFEST)
    if "sources" in raw:
        top = _validate(ShardManifest, raw, folder / MANIFEST)
        return [folder / s.dir / name for s in top.sources.values() for name in s.shards]
    return [folder / name for name in _validate(SourceManifest, raw, folder / MANIFEST).shards]
