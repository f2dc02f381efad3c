"""Mixed, sharded, resumable training data over the shard layout of `magma data build`.

    DIR/manifest.json                      {"sources": {name: {"dir", "weight", "shards", ...}},
    DIR/<source dir>/shard-000000.tar       "action_stats": {dataset: stats}, ...}

How samples are ordered (everything follows from the seed, nothing from the world size):

- A *global sample stream* g = 0, 1, 2, ... picks a source for every g from the manifest
  weights (NumPy draws in blocks of `MIX_BLOCK`, seeded by (seed, block)). The j-th time a source
  is picked it yields its j-th sample in epoch order: each epoch (j // N) permutes the
  source's shards and the samples inside each shard, so reading stays shard-local.
- Optimizer step t, micro step a, rank r reads g in
  `[(t*A + a)*b*W + r*b, ... + b)` (b = micro batch per rank, A = grad accumulation, W = world).
  One process with micro batch b*W reads exactly the union of the ranks' micro batches, so
  runs with different world sizes see the same data; DataLoader workers take every
  `num_workers`-th micro batch (no sample is read twice in one step).
- The data position is therefore just the number of micro batches consumed: resuming at
  step t restarts the stream at micro batch t*A with no other state.
- A sample that does not decode (or exceeds `max_length`) is counted and replaced by the next
  sample of the same source, so batch shapes, and with them the loss normalisation, stay fixed.

Shards are read by random access into the tar (offsets from a header scan), which for
uncompressed WebDataset tars costs one seek per member.
"""
from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from magma.action_tokenizer import ActionStats
from magma.processing_magma import IGNORE_INDEX, collate_encoded
from magma.schema import sample_from_tar_members

MIX_BLOCK = 4096


class DataError(RuntimeError):
    """Shards that cannot be used for training; the message names the file and the fix."""


@dataclass
class SourceInfo:
    name: str
    dir: Path
    weight: float
    shards: list[str]


@dataclass
class ShardManifest:
    root: Path
    sources: list[SourceInfo]
    action_stats: dict[str, ActionStats] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


def read_manifest(root: str | Path, weights: dict[str, float] | None = None) -> ShardManifest:
    """The top-level manifest, with optional per-source weight overrides."""
    root = Path(root)
    path = root / "manifest.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no manifest; build shards with `magma data build --config "
                        "configs/data/<mix>.yaml --out DIR` and set data.shards=DIR") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt JSON ({exc}); rebuild the shards") from None
    weights = weights or {}
    unknown = set(weights) - set(raw.get("sources", {}))
    if unknown:
        raise DataError(f"data.weights names unknown sources {sorted(unknown)}; "
                        f"{path} has {sorted(raw.get('sources', {}))}")
    sources = []
    for name, info in sorted(raw.get("sources", {}).items()):
        w = float(weights.get(name, info.get("weight", 1.0)))
        shards = list(info.get("shards", []))
        if w <= 0 or not shards:
            continue
        sources.append(SourceInfo(name=name, dir=root / info.get("dir", name), weight=w, shards=shards))
    if not sources:
        raise DataError(f"{path}: no source with a positive weight and at least one shard")
    stats = {k: ActionStats(**v) for k, v in raw.get("action_stats", {}).items()}
    return ShardManifest(root=root, sources=sources, action_stats=stats, raw=raw)


# --------------------------------------------------------------------------- one source
@dataclass
class _ShardEntry:
    path: Path
    keys: list[str]
    members: list[dict[str, tuple[int, int]]]  # per key: suffix -> (offset, size)


def scan_shard(path: Path) -> _ShardEntry:
    """Sample keys in tar order with member offsets (headers only: no data is read)."""
    keys: list[str] = []
    members: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile() or "." not in info.name:
                    continue
                key, suffix = os.path.basename(info.name).split(".", 1)
                if key not in members:
                    members[key] = {}
                    keys.append(key)
                members[key][suffix] = (info.offset_data, info.size)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: unreadable shard ({exc}); rebuild it with `magma data build`") from None
    return _ShardEntry(path=path, keys=keys, members=[members[k] for k in keys])


class SourceReader:
    """The j-th sample of a source in its seeded epoch order."""

    def __init__(self, info: SourceInfo, index: int, seed: int):
        self.info, self.index, self.seed = info, index, seed
        self.shards = [scan_shard(info.dir / s) for s in info.shards]
        self.sizes = np.array([len(s.keys) for s in self.shards])
        self.num_samples = int(self.sizes.sum())
        if self.num_samples == 0:
            raise DataError(f"{info.dir}: source {info.name!r} has shards but no samples")
        self._epoch: int | None = None
        self._handles: dict[Path, Any] = {}
        self._pid = os.getpid()

    def _epoch_order(self, epoch: int) -> None:
        if self._epoch == epoch:
            return
        rng = np.random.default_rng([self.seed, self.index, epoch])
        self._shard_order = rng.permutation(len(self.shards))
        self._cum = np.cumsum(self.sizes[self._shard_order])
        self._inner = {}
        self._epoch = epoch

    def locate(self, j: int) -> tuple[int, int]:
        """(shard index, position in shard) of the j-th draw from this source."""
        epoch, r = divmod(j, self.num_samples)
        self._epoch_order(epoch)
        slot = int(np.searchsorted(self._cum, r, side="right"))
        shard = int(self._shard_order[slot])
        pos = r - (int(self._cum[slot - 1]) if slot else 0)
        if shard not in self._inner:
            self._inner[shard] = np.random.default_rng([self.seed, self.index, epoch, shard]).permutation(
                int(self.sizes[shard]))
        return shard, int(self._inner[shard][pos])

    def _read(self, path: Path, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share offsets
            self._handles, self._pid = {}, os.getpid()
        fh = self._handles.get(path)
        if fh is None:
            fh = self._handles[path] = open(path, "rb")
        fh.seek(offset)
        return fh.read(size)

    def sample(self, j: int):
        shard_i, pos = self.locate(j)
        entry = self.shards[shard_i]
        key = entry.keys[pos]
        members = {suffix: self._read(entry.path, off, size) for suffix, (off, size) in entry.members[pos].items()}
        return sample_from_tar_members(f"{entry.path.name}:{key}", members)


# --------------------------------------------------------------------------- mixing
class MixSchedule:
    """Which source each global sample g comes from, and how many times that source was drawn
    before g (so any process can find sample g without talking to the others)."""

    def __init__(self, weights: list[float], seed: int):
        p = np.asarray(weights, dtype=np.float64)
        self.p = p / p.sum()
        self.seed = seed
        self._block_starts: list[np.ndarray] = [np.zeros(len(p), dtype=np.int64)]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        if b not in self._cache:
            rng = np.random.default_rng([self.seed, 7919, b])
            choice = rng.choice(len(self.p), size=MIX_BLOCK, p=self.p)
            onehot = np.eye(len(self.p), dtype=np.int64)[choice]
            before = np.cumsum(onehot, axis=0) - onehot  # draws of each source earlier in the block
            self._cache = {b: (choice, before)}  # workers move forward: keep one block
        return self._cache[b]

    def lookup(self, g: int) -> tuple[int, int]:
        b, i = divmod(g, MIX_BLOCK)
        while len(self._block_starts) <= b:
            k = len(self._block_starts) - 1
            choice, _ = self._block(k)
            self._block_starts.append(self._block_starts[k] + np.bincount(choice, minlength=len(self.p)))
        choice, before = self._block(b)
        s = int(choice[i])
        return s, int(self._block_starts[b][s] + before[i, s])


# --------------------------------------------------------------------------- batching
def pack_encoded(examples: list[dict[str, Any]], pack_length: int) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Packs encoded samples into as few rows of <= pack_length tokens as fit, balancing row
    lengths (longest first onto the shortest row) so the padded batch wastes little.

    Returns merged examples (token lists and pixel views concatenated in row order) and
    per-row position ids that restart at every sample. Attention still spans the samples of a
    row unless the attention implementation splits on position ids (flash_attention_2)."""
    lengths = [len(e["input_ids"]) for e in examples]
    n_rows = max(1, -(-sum(lengths) // pack_length))
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    used = [0] * n_rows
    for i in sorted(range(len(examples)), key=lambda i: (-lengths[i], i)):
        r = min(range(len(rows)), key=lambda r: (used[r], r))
        if used[r] + lengths[i] > pack_length and used[r] > 0:
            rows.append([])
            used.append(0)
            r = len(rows) - 1
        rows[r].append(i)
        used[r] += lengths[i]
    merged, positions = [], []
    for row in (sorted(r) for r in rows if r):  # keep stream order inside a row
        group = [examples[i] for i in row]
        pv = [np.asarray(e["pixel_values"]) for e in group if len(e["pixel_values"])]
        merged.append({k: sum((e[k] for e in group), []) for k in ("input_ids", "labels", "target_kind")}
                      | {"pixel_values": np.concatenate(pv) if pv else []})
        positions.append(sum((list(range(len(e["input_ids"]))) for e in group), []))
    return merged, positions


def collate(examples: list[dict[str, Any]], pad_id: int, packing: bool = False,
            pack_length: int = 1024) -> dict[str, torch.Tensor]:
    """Right-padded (optionally packed) batch plus `n_tokens` and `n_pad` bookkeeping."""
    positions = None
    if packing:
        examples, positions = pack_encoded(examples, pack_length)
    batch = collate_encoded(examples, pad_id)
    if positions is not None:
        pos = torch.zeros_like(batch["input_ids"])
        for i, p in enumerate(positions):
            pos[i, :len(p)] = torch.tensor(p)
        batch["position_ids"] = pos
    mask = batch["attention_mask"]
    batch["n_tokens"] = mask.sum()
    batch["n_pad"] = mask.numel() - mask.sum()
    batch["n_target_tokens"] = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    return batch


@dataclass
class StreamSpec:
    """Everything a worker needs to produce micro batches (picklable)."""

    shards: str
    weights: dict[str, float] | None
    seed: int
    rank: int
    world_size: int
    micro_batch_size: int  # per rank
    start_micro: int  # first micro batch index (resume position: step * grad_accum)
    max_length: int | None = None
    packing: bool = False
    pack_length: int = 1024


class MixedShardStream(IterableDataset):
    """Yields collated micro batches for one rank, forever, from micro batch `start_micro` on."""

    def __init__(self, spec: StreamSpec, processor: Any):
        super().__init__()
        self.spec, self.processor = spec, processor
        self.manifest = read_manifest(spec.shards, spec.weights)
        self.readers = [SourceReader(s, i, spec.seed) for i, s in enumerate(self.manifest.sources)]
        self.schedule = MixSchedule([s.weight for s in self.manifest.sources], spec.seed)

    def global_indices(self, micro: int) -> range:
        s = self.spec
        start = micro * s.micro_batch_size * s.world_size + s.rank * s.micro_batch_size
        return range(start, start + s.micro_batch_size)

    def _encode(self, src: int, j: int, skipped: Counter) -> tuple[dict[str, Any], Any]:
        reader = self.readers[src]
        for attempt in range(reader.num_samples):
            try:
                sample = reader.sample(j + attempt)
                enc = self.processor.encode_sample(sample)
            except ValueError:  # SampleError (undecodable or off-schema) or a processor refusal
                skipped["corrupt"] += 1
                continue
            if self.spec.max_length is not None and len(enc["input_ids"]) > self.spec.max_length:
                skipped["too_long"] += 1
                continue
            return enc, sample
        raise DataError(f"source {reader.info.name!r} ({reader.info.dir}): no usable sample "
                        f"(skipped {dict(skipped)}); check max_length or rebuild the shards")

    def micro_batch(self, micro: int) -> dict[str, Any]:
        skipped: Counter = Counter()
        encoded, ids, sources = [], [], []
        for g in self.global_indices(micro):
            src, j = self.schedule.lookup(g)
            enc, sample = self._encode(src, j, skipped)
            encoded.append(enc)
            ids.append(sample.id)
            sources.append(self.readers[src].info.name)
        batch: dict[str, Any] = collate(encoded, self.processor.tokenizer.pad_token_id,
                                        self.spec.packing, self.spec.pack_length)
        batch["meta"] = {"micro": micro, "ids": ids, "sources": sources, "skipped": dict(skipped)}
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        micro = self.spec.start_micro + wid
        while True:
            yield self.micro_batch(micro)
            micro += nw


def make_loader(spec: StreamSpec, processor: Any, num_workers: int = 0) -> DataLoader:
    ds = MixedShardStream(spec, processor)
    return DataLoader(ds, batch_size=None, num_workers=num_workers,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None)
