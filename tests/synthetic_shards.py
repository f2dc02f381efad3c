"""Synthetic shards in the `magma data build` layout, for tests and benchmarks (not shipped).

Coloured squares on a grey canvas with a verbal (colour), spatial (point) or action (action
tokens) target. Written through `magma.shards` (the one writer and the typed manifests), so
what tests train on is the shard contract itself, not a copy of it."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from magma.action_tokenizer import ActionStats
from magma.schema import Sample, Turn
from magma.shards import (MANIFEST, SHARD_PATTERN, ShardManifest, SourceEntry, SourceManifest,
                          atomic_write_bytes, sample_members, split_member_name, tar_bytes,
                          write_manifest)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
DEFAULT_SOURCES = {"verbal": ("verbal", 24, 1.0), "spatial": ("spatial", 24, 1.0), "action": ("action", 24, 1.0)}


def _image(rng: np.random.Generator, colour: str) -> tuple[np.ndarray, tuple[int, int]]:
    img = np.full((48, 48, 3), 235, dtype=np.uint8)
    x, y = int(rng.integers(4, 32)), int(rng.integers(4, 32))
    img[y:y + 12, x:x + 12] = COLOURS[colour]
    return img, (x + 6, y + 6)


def make_sample(source: str, kind: str, i: int, rng: np.random.Generator) -> Sample:
    names = list(COLOURS)
    colour = names[int(rng.integers(len(names)))]
    img, (cx, cy) = _image(rng, colour)
    if kind == "verbal":
        user, answer = "<image>What colour is the square?", f"The square is {colour}."
    elif kind == "spatial":
        user, answer = "<image>Point to the square.", f"({cx * 1000 // 48},{cy * 1000 // 48})"
    else:
        bins = [names.index(colour) * 80 + 10, cx * 5, cy * 5]
        user, answer = "<image>Move the arm to the square.", "".join(f"<act_{b}>" for b in bins)
    return Sample(id=f"{source}-{i:05d}", images=[img], source=source, dataset="toy" if kind == "action" else "",
                  conversation=[Turn("user", user), Turn("assistant", answer, kind=kind)])


def _members(sample: Sample, broken: bool) -> list[tuple[str, bytes]]:
    members = sample_members(sample)
    if broken:  # the record no longer parses: readers must count and skip it
        members = [(n, b"{not json" if split_member_name(n)[1] == "json" else d) for n, d in members]
    return members


def _write_source(d: Path, name: str, kind: str, n: int, weight: float, per_shard: int,
                  broken: int, rng: np.random.Generator) -> SourceManifest:
    d.mkdir(parents=True, exist_ok=True)
    shards, sizes = [], []
    for s0 in range(0, n, per_shard):
        fname = SHARD_PATTERN.format(s0 // per_shard)
        idx = range(s0, min(n, s0 + per_shard))
        atomic_write_bytes(d / fname, tar_bytes([m for i in idx
                                                 for m in _members(make_sample(name, kind, i, rng), i < broken)]))
        shards.append(fname)
        sizes.append(len(idx))
    manifest = SourceManifest(name=name, type="test", weight=weight, dir=d.name, build_hash="test",
                              pipeline_version="test", samples_per_shard=per_shard, num_items=n,
                              num_samples=n, shards=shards, shard_sizes=sizes,
                              counts_by_kind={kind: n}, splits={"train": n})
    write_manifest(d / MANIFEST, manifest)
    return manifest


def write_shards(root: Path, sources: dict[str, tuple[str, int, float]], per_shard: int = 8,
                 seed: int = 0, corrupt: dict[str, int] | None = None) -> Path:
    """sources: {name: (kind, n_samples, weight)}; `corrupt` breaks the JSON of the first n
    samples of a source. Returns `root`, a build folder training reads like a real one."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stats = asdict(ActionStats.from_actions(rng.normal(size=(50, 3))))
    built = {name: _write_source(root / name, name, kind, n, weight, per_shard,
                                 (corrupt or {}).get(name, 0), rng)
             for name, (kind, n, weight) in sources.items()}
    counts: dict[str, int] = {}
    for m in built.values():
        for kind, k in m.counts_by_kind.items():
            counts[kind] = counts.get(kind, 0) + k
    top = ShardManifest(mix="test", pipeline_version="test", config_hash="x", samples_per_shard=per_shard,
                        sources={name: SourceEntry.of(m) for name, m in built.items()},
                        counts_by_kind=counts, counts_by_source={n: m.num_samples for n, m in built.items()},
                        splits={n: m.splits for n, m in built.items()}, action_stats={"toy": stats},
                        num_samples=sum(m.num_samples for m in built.values()))
    write_manifest(root / MANIFEST, top)
    return root
