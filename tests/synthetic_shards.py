"""Synthetic shards in the `magma data build` layout, for smoke tests and benchmarks.

Coloured squares on a grey canvas with a verbal (colour), spatial (point) or action (action
tokens) target; the format written here is the shard contract, not the data pipeline's code."""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from magma.action_tokenizer import ActionStats
from magma.schema import Sample, Turn, sample_to_tar_members

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}


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


def write_shards(root: Path, sources: dict[str, tuple[str, int, float]], per_shard: int = 8,
                 seed: int = 0, corrupt: dict[str, int] | None = None) -> Path:
    """sources: {name: (kind, n_samples, weight)}; `corrupt` breaks the JSON of n samples of a source."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    top = {"mix": "test", "config_hash": "x", "pipeline_version": "test", "sources": {},
           "counts_by_kind": {}, "counts_by_source": {}, "skipped": {}, "splits": {},
           "action_stats": {"toy": asdict(ActionStats.from_actions(rng.normal(size=(50, 3))))}}
    for name, (kind, n, weight) in sources.items():
        d = root / name
        d.mkdir(exist_ok=True)
        shards = []
        broken = (corrupt or {}).get(name, 0)
        for s0 in range(0, n, per_shard):
            fname = f"shard-{s0 // per_shard:06d}.tar"
            with tarfile.open(d / fname, "w") as tar:
                for i in range(s0, min(n, s0 + per_shard)):
                    for member, data in sample_to_tar_members(make_sample(name, kind, i, rng)).items():
                        if i < broken and member.endswith(".json"):
                            data = b"{not json"
                        ti = tarfile.TarInfo(member)
                        ti.size = len(data)
                        tar.addfile(ti, io.BytesIO(data))
            shards.append(fname)
        info = {"type": "test", "weight": weight, "dir": name, "num_samples": n, "shards": shards,
                "counts_by_kind": {kind: n}, "skipped": {}}
        (d / "manifest.json").write_text(json.dumps(info))
        top["sources"][name] = info
        top["counts_by_kind"][kind] = top["counts_by_kind"].get(kind, 0) + n
        top["counts_by_source"][name] = n
    (root / "manifest.json").write_text(json.dumps(top, indent=1))
    return root


DEFAULT_SOURCES = {"verbal": ("verbal", 24, 1.0), "spatial": ("spatial", 24, 1.0), "action": ("action", 24, 1.0)}
