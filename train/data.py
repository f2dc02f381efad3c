"""Mixed, sharded, resumable training data over the shard layout of `magma data build`.

    DIR/manifest.json                      magma.shards.ShardManifest: {"sources": {name: {"dir",
    DIR/<source dir>/shard-000000.tar       "weight", "shards", ...}}, "action_stats", "inference"}

The format (manifest models, member names, the tar index) is `magma.shards`; this module only
decides which sample comes when.

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

Shards are read by random access into the tar (`magma.shards.scan_shard`: offsets from a header
scan), which for uncompressed WebDataset tars costs one seek per member.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from magma.action_tokenizer import ActionStats
from magma.processing_magma import IGNORE_INDEX, collate_encoded
from magma.schema import Sample
from magma.shards import MANIFEST, ShardError, ShardIndex, ShardManifest, scan_shard
from magma.shards import read_manifest as read_shard_manifest

MIX_BLOCK = 4096


class DataError(RuntimeError):
    """Shards that cannot be used for training; the message names the file and the fix."""


@dataclass
class SourceInfo:
    """A source the run draws from: its shards under `dir`, at `weight` (after overrides)."""

    name: str
    dir: Path
    weight: float
    shards: list[str]


@dataclass
class TrainingMix:
    """The build's manifest and the sources training draws from (positive weight, shards)."""

    root: Path
    manifest: ShardManifest
    sources: list[SourceInfo]

    @property
    def action_stats(self) -> dict[str, ActionStats]:
        return self.manifest.action_stats

    @property
    def inference(self) -> dict[str, dict[str, Any]]:
        """Per-dataset inference settings the samples were built with (magma.inference_settings)."""
        return self.manifest.inference


def read_manifest(root: str | Path, weights: dict[str, float] | None = None) -> TrainingMix:
    """The top-level manifest, with optional per-source weight overrides; DataError for a
    missing or bad manifest, unknown override names, or nothing to draw from."""
    root = Path(root)
    path = root / MANIFEST
    try:
        manifest = read_shard_manifest(root)
    except ShardError as exc:
        raise DataError(f"data.shards: {exc}") from None
    weights = weights or {}
    unknown = set(weights) - set(manifest.sources)
    if unknown:
        raise DataError(f"data.weights names unknown sources {sorted(unknown)}; "
                        f"{path} has {sorted(manifest.sources)}")
    sources = []
    for name, entry in sorted(manifest.sources.items()):
        w = float(weights.get(name, entry.weight))
        if w <= 0 or not entry.shards:
            continue
        sources.append(SourceInfo(name=name, dir=root / entry.dir, weight=w, shards=list(entry.shards)))
    if not sources:
        raise DataError(f"{path}: no source with a positive weight and at least one shard")
    return TrainingMix(root=root, manifest=manifest, sources=sources)


# --------------------------------------------------------------------------- one source
def _scan(path: Path) -> ShardIndex:
    try:
        return scan_shard(path)
    except ShardError as exc:
        raise DataError(str(exc)) from None


class SourceReader:
    """The j-th sample of a source in its seeded epoch order."""

    def __init__(self, info: SourceInfo, index: int, seed: int):
        self.info, self.index, self.seed = info, index, seed
        self.shards = [_scan(info.dir / s) for s in info.shards]
        self.sizes = np.array([len(s) for s in self.shards])
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

    def _handle(self, path: Path) -> Any:
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share offsets
            self._handles, self._pid = {}, os.getpid()
        fh = self._handles.get(path)
        if fh is None:
            fh = self._handles[path] = open(path, "rb")
        return fh

    def sample(self, j: int) -> Sample:
        """The j-th draw, decoded; ShardError (a ValueError) when it does not decode."""
        shard_i, pos = self.locate(j)
        index = self.shards[shard_i]
        return index.sample(pos, self._handle(index.path))


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

    Returns merged examples (token lists, pixel views and crop grids concatenated in the row's
    sample order, so image tokens stay with their sample) and, per row, the indices into
    `examples` of its samples, in stream order (the order of their tokens in the row)."""
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
    merged, members = [], []
    for row in (sorted(r) for r in rows if r):  # keep stream order inside a row
        group = [examples[i] for i in row]
        pv = [np.asarray(e["pixel_values"]) for e in group if len(e["pixel_values"])]
        merged.append({k: sum((list(e[k]) for e in group), []) for k in ("input_ids", "labels", "target_kind")}
                      | {"pixel_values": np.concatenate(pv) if pv else []})
        grids = [np.asarray(e["image_grid"]).reshape(-1, 2) for e in group if "image_grid" in e]
        if grids:  # the release's crop grids, in the row's image order
            merged[-1]["image_grid"] = np.concatenate(grids)
        members.append(row)
    return merged, members


def collate(examples: list[dict[str, Any]], pad_id: int, packing: bool = False,
            pack_length: int = 1024) -> dict[str, torch.Tensor]:
    """Right-padded (optionally packed) batch plus `n_tokens` and `n_pad` bookkeeping.

    Packed batches also carry `position_ids` (restarting at 0 for every sample) and
    `sample_index` [rows, L]: the index into `examples` of each token's sample, -1 on padding.
    With both, MagmaForCausalLM lets every sample attend only to itself, so per-sample losses
    equal those of the samples run alone. A sample's first label is ignored in a packed row (alone
    it is never a target either: nothing precedes it)."""
    members = None
    if packing:
        lengths = [len(e["input_ids"]) for e in examples]
        examples, members = pack_encoded(examples, pack_length)
    batch = collate_encoded(examples, pad_id)
    if members is not None:
        pos = torch.zeros_like(batch["input_ids"])
        index = torch.full_like(batch["input_ids"], -1)
        for r, row in enumerate(members):
            start = 0
            for i in row:
                n = lengths[i]
                pos[r, start:start + n] = torch.arange(n)
                index[r, start:start + n] = i
                batch["labels"][r, start] = IGNORE_INDEX  # predicted by the previous sample's last token
                start += n
        batch["position_ids"] = pos
        batch["sample_index"] = index
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
