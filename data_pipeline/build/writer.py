"""The one resumable shard writer used by every source (SoM and ToM alike).

API:
    build_mix(mix: MixConfig, out: Path, workers=None, overwrite=False, progress=True) -> dict
        Builds every source of the mix into `out/<source>/` and writes `out/manifest.json`
        (a `magma.shards.ShardManifest`; train reads only that). Returns it as JSON-ready dict.
    build_source(src: SourceConfig, out_dir: Path, samples_per_shard, workers, ...) -> dict
        One source: `out_dir/shard-000000.tar ...` + `out_dir/manifest.json` (a
        `magma.shards.SourceManifest`), returned as a dict.
The format itself (member names, tar bytes, manifests, readers) is `magma.shards`; this
module decides only what goes into it, resumably.

How it survives kill -9 and stays deterministic:
  1. Items are listed and sorted by id; their ids (and the source config) form the build hash.
  2. A process pool runs `process(item)` for every item without a result yet; each result is
     written atomically (temp file + rename) to `.work/<hash>/items/<index>.tar` and a
     `<index>.json` marker naming its samples or its skip reason (the marker is written last).
  3. Packing walks the items in sorted order and cuts their samples into shards of exactly
     `samples_per_shard` (the last one shorter); each shard is written atomically, and shards
     already present are kept, so a rerun writes only what is missing.
  4. The source manifest (no timestamps, sorted keys) is written last; a source whose manifest
     matches the build hash is skipped on rerun.
Per-dataset `action_stats` and `inference` settings that sources return from `prepare()` are
merged into the top-level manifest; two sources giving one dataset different values is a
BuildError naming both.
Sample ids are assigned here: `<source>-<item_id>-<k>` sanitised to [A-Za-z0-9_-].
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import re
import shutil
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from magma.config_io import validation_problems
from magma.schema import Sample, SampleError
from magma.shards import (MANIFEST, SHARD_PATTERN, ShardError, ShardManifest, SourceEntry,
                          SourceManifest, atomic_write_bytes, iter_shard, iter_shard_members,
                          member_name, read_source_manifest, sample_members, tar_bytes,
                          write_manifest)
from data_pipeline.build.mix_config import PIPELINE_VERSION, MixConfig, stable_hash
from data_pipeline.build.registry import SkipItem, SourceConfig, WorkItem, get_source_type

# iter_shard is magma.shards', re-exported so build tests read back what they built
__all__ = ["BuildError", "build_mix", "build_source", "iter_shard", "sanitize_id"]

log = logging.getLogger("data_pipeline.build.writer")

BUILD_HASH_FILE = ".build_hash"
_MAX_LISTED_SKIPS = 200


class BuildError(RuntimeError):
    """A build that cannot proceed (says which source/folder and how to fix it)."""


def sanitize_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


# ---------------------------------------------------------------- atomic file helpers

def _atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _remove_stale_temps(folder: Path) -> None:
    for p in folder.glob(".*.tmp*"):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(type_name: str, cfg_json: str, context: dict, items_dir: str) -> None:
    _WORKER.update(source=get_source_type(type_name), cfg=SourceConfig.model_validate_json(cfg_json),
                   context=context, items_dir=Path(items_dir))


def _sample_summary(s: Sample) -> dict[str, Any]:
    return {"id": s.id, "kind": s.primary_kind,
            "image_sizes": [f"{im.shape[1]}x{im.shape[0]}" for im in s.images],
            "split": str(s.meta.get("split", "train"))}


def _process_one(task: tuple[int, WorkItem]) -> tuple[int, str | None, str]:
    """Runs one item and stores its result; returns (index, skip reason or None, log text)."""
    index, item = task
    src, cfg, items_dir = _WORKER["source"], _WORKER["cfg"], _WORKER["items_dir"]
    skipped, detail, members, summaries, dropped = None, "", [], [], Counter()
    try:
        samples = src.process(item, cfg, _WORKER["context"])
        base = sanitize_id(f"{cfg.name}-{item.item_id}")
        for k, s in enumerate(samples):
            s.id = f"{base}-{k}"
            dropped.update(s.meta.pop("_dropped", {}))
            members.extend(sample_members(s))  # validates
            summaries.append(_sample_summary(s))
    except SkipItem as exc:
        skipped, detail = exc.reason, exc.detail
    except SampleError as exc:
        skipped, detail = "invalid_sample", str(exc)
    except Exception as exc:  # one bad item must not stop the run
        skipped = f"error_{type(exc).__name__}"
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if skipped is not None:
        members, summaries, dropped = [], [], Counter()
    stem = items_dir / f"{index:08d}"
    atomic_write_bytes(stem.with_suffix(".tar"), tar_bytes(members))
    _atomic_write_json(stem.with_suffix(".json"), {"item_id": item.item_id, "samples": summaries,
                                                   "skipped": skipped, "detail": detail,
                                                   "dropped": dict(dropped)})
    return index, skipped, (f"{cfg.name}: skipped item {item.item_id!r} ({skipped}) {detail}"
                            if skipped else "")


# ---------------------------------------------------------------- one source

def _run_items(src: SourceConfig, pending: list[tuple[int, WorkItem]], context: dict,
               items_dir: Path, workers: int, progress: bool, backend: str) -> None:
    init_args = (src.type, src.model_dump_json(), context, str(items_dir))
    if backend == "ray":
        from data_pipeline.build.ray_backend import run_with_ray
        results: Iterator = run_with_ray(_init_worker, _process_one, init_args, pending, workers)
        pool = None
    elif backend == "inline" or workers == 0:
        _init_worker(*init_args)
        results, pool = map(_process_one, pending), None
    else:
        # The pool forks before tqdm starts its monitor thread (forking threads is unsafe).
        pool = mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=init_args)
        results = pool.imap_unordered(_process_one, pending, chunksize=1)
    try:
        with logging_redirect_tqdm(), tqdm(total=len(pending), desc=src.name, unit="item",
                                           disable=not progress, dynamic_ncols=True) as bar:
            for _, _, message in results:
                if message:
                    log.warning(message)
                bar.update(1)
        if pool is not None:
            pool.close()  # workers exit cleanly and run their finalizers (e.g. close browsers)
            pool.join()
            pool = None
    finally:
        if pool is not None:  # interrupted: stop the workers now
            pool.terminate()
            pool.join()


def _pack_shards(out_dir: Path, items_dir: Path, n_items: int, samples_per_shard: int
                 ) -> tuple[list[str], list[int], list[dict]]:
    records = [json.loads((items_dir / f"{i:08d}.json").read_text()) for i in range(n_items)]
    order = [(i, k) for i, rec in enumerate(records) for k in range(len(rec["samples"]))]
    names, sizes = [], []
    cache: dict[int, dict[str, list[tuple[str, bytes]]]] = {}

    def members_of(i: int, k: int) -> list[tuple[str, bytes]]:
        if i not in cache:
            cache.clear()  # items are visited in order: keep one item's members at a time
            cache[i] = {key: [(member_name(key, suffix), data) for suffix, data in parts.items()]
                        for key, parts in iter_shard_members(items_dir / f"{i:08d}.tar")}
        return cache[i][records[i]["samples"][k]["id"]]

    for s, start in enumerate(range(0, len(order), samples_per_shard)):
        chunk = order[start:start + samples_per_shard]
        name = SHARD_PATTERN.format(s)
        names.append(name)
        sizes.append(len(chunk))
        if (out_dir / name).exists():
            continue  # written atomically by an earlier run of the same build
        atomic_write_bytes(out_dir / name, tar_bytes([m for i, k in chunk for m in members_of(i, k)]))
    return names, sizes, records


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def build_source(src: SourceConfig, out_dir: Path, samples_per_shard: int, workers: int = 2,
                 overwrite: bool = False, progress: bool = True, backend: str = "pool"
                 ) -> dict[str, Any]:
    """Builds one source into `out_dir` (resumable); returns its manifest as a dict."""
    return _build_source(src, out_dir, samples_per_shard, workers, overwrite, progress,
                         backend).model_dump(mode="json")


def _already_built(out_dir: Path, build_hash: str) -> SourceManifest | None:
    """The finished manifest of this very build in `out_dir`, if there is one."""
    if not (out_dir / BUILD_HASH_FILE).exists() or not (out_dir / MANIFEST).exists():
        return None
    try:
        manifest = read_source_manifest(out_dir)
    except ShardError as exc:  # e.g. written by an older version: build it again
        log.warning("%s; building the source again", exc)
        return None
    return manifest if manifest.build_hash == build_hash else None


def _build_source(src: SourceConfig, out_dir: Path, samples_per_shard: int, workers: int,
                  overwrite: bool, progress: bool, backend: str) -> SourceManifest:
    source = get_source_type(src.type)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        items = sorted(source.list_items(src), key=lambda it: it.item_id)
        list_skip = None
    except SkipItem as exc:
        items, list_skip = [], exc
    if not items and list_skip is None:
        list_skip = SkipItem("no_items", f"source {src.name!r} ({src.type}) found no inputs "
                             f"with params {src.params}")
    ids = [sanitize_id(it.item_id) for it in items]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise BuildError(f"source {src.name!r}: item ids collide after sanitising: {dupes[:5]}; "
                         "make item ids unique in [A-Za-z0-9_-]")
    build_hash = stable_hash({"source": src.model_dump(), "items": [it.item_id for it in items],
                              "samples_per_shard": samples_per_shard,
                              "pipeline_version": PIPELINE_VERSION})

    hash_file = out_dir / BUILD_HASH_FILE
    if hash_file.exists() and hash_file.read_text().strip() != build_hash:
        if not overwrite:
            raise BuildError(f"{out_dir} holds a build of a different config or item list; "
                             "pass --overwrite to rebuild it or choose another --out")
        shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
    done = _already_built(out_dir, build_hash)
    if done is not None:
        shutil.rmtree(out_dir / ".work", ignore_errors=True)
        log.info("%s: already built (%d samples), skipping", src.name, done.num_samples)
        return done
    atomic_write_bytes(hash_file, build_hash.encode())
    _remove_stale_temps(out_dir)

    items_dir = out_dir / ".work" / build_hash / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(items_dir)
    context = source.prepare(src, items) if items else {}
    pending = [(i, it) for i, it in enumerate(items)
               if not (items_dir / f"{i:08d}.json").exists()]
    if pending:
        _run_items(src, pending, context, items_dir, workers, progress, backend)

    names, sizes, records = _pack_shards(out_dir, items_dir, len(items), samples_per_shard)
    summaries = [s for rec in records for s in rec["samples"]]
    skipped = Counter(rec["skipped"] for rec in records if rec["skipped"])
    dropped: Counter = Counter()
    for rec in records:
        dropped.update(rec.get("dropped", {}))
    skipped_items = [{"item": rec["item_id"], "reason": rec["skipped"], "detail": rec["detail"]}
                     for rec in records if rec["skipped"]][:_MAX_LISTED_SKIPS]
    if list_skip is not None:
        skipped[list_skip.reason] += 1
        skipped_items.append({"item": "*", "reason": list_skip.reason, "detail": list_skip.detail})
        log.warning("%s: source skipped (%s) %s", src.name, list_skip.reason, list_skip.detail)
    manifest = SourceManifest.model_validate({
        "name": src.name, "type": src.type, "weight": src.weight, "dir": out_dir.name,
        "params": _jsonable(src.params), "build_hash": build_hash,
        "pipeline_version": PIPELINE_VERSION, "samples_per_shard": samples_per_shard,
        "num_items": len(items), "num_samples": len(summaries),
        "shards": names, "shard_sizes": sizes,
        "counts_by_kind": dict(sorted(Counter(s["kind"] for s in summaries).items())),
        "image_sizes": dict(sorted(Counter(sz for s in summaries for sz in s["image_sizes"]).items())),
        "splits": dict(sorted(Counter(s["split"] for s in summaries).items())),
        "skipped": dict(sorted(skipped.items())), "skipped_items": skipped_items,
        "dropped": dict(sorted(dropped.items())),
        "context": _jsonable(context),
    })
    write_manifest(out_dir / MANIFEST, manifest)
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    return manifest


# ---------------------------------------------------------------- the mix

def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


# What each per-dataset field of the top manifest holds, and how to settle a disagreement.
_PER_DATASET = {"action_stats": ("action statistics", "give each source its own dataset name"),
                "inference": ("inference settings", "give both the same settings (chunk, "
                              "use_proprio, ...) or each its own dataset name")}


def _merge_per_dataset(top: dict[str, Any], owners: dict[tuple[str, str], str],
                       m: SourceManifest) -> None:
    """Merges the source's `context[field] = {dataset: value}` into `top[field]`; a dataset
    that two sources give different values is a BuildError naming both."""
    for field, (what, fix) in _PER_DATASET.items():
        entries = m.context.get(field) or {}
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise BuildError(f"source {m.name!r} ({m.type}): prepare() returned {field} that is not "
                             f"{{dataset: {{...}}}}: {entries!r}")
        for dataset, value in entries.items():
            if dataset in top[field] and top[field][dataset] != value:
                raise BuildError(f"sources {owners[field, dataset]!r} and {m.name!r} disagree on the "
                                 f"{what} of dataset {dataset!r}; {fix}")
            top[field][dataset] = value
            owners.setdefault((field, dataset), m.name)


def build_mix(mix: MixConfig, out: str | Path, workers: int | None = None, overwrite: bool = False,
              progress: bool = True, backend: str = "pool") -> dict[str, Any]:
    """Builds every source of `mix` under `out` and writes the top-level manifest; returns
    it as a dict (the JSON of a ShardManifest)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = mix.workers if workers is None else workers
    top: dict[str, Any] = {
        "mix": mix.name, "pipeline_version": PIPELINE_VERSION,
        "config_hash": stable_hash({"mix": mix.model_dump(exclude={"workers"}),
                                    "pipeline_version": PIPELINE_VERSION}),
        "samples_per_shard": mix.samples_per_shard, "sources": {}, "counts_by_kind": {},
        "counts_by_source": {}, "skipped": {}, "dropped": {}, "action_stats": {}, "inference": {},
        "splits": {}, "image_sizes": {},
    }
    owners: dict[tuple[str, str], str] = {}
    for src in mix.sources:
        m = _build_source(src, out / src.name, mix.samples_per_shard, workers, overwrite, progress,
                          backend)
        top["sources"][src.name] = SourceEntry.of(m)
        top["counts_by_source"][src.name] = m.num_samples
        _add(top["counts_by_kind"], m.counts_by_kind)
        _add(top["skipped"], m.skipped)
        _add(top["dropped"], m.dropped)
        _add(top["image_sizes"], m.image_sizes)
        top["splits"][src.name] = m.splits
        _merge_per_dataset(top, owners, m)
    top["num_samples"] = sum(top["counts_by_source"].values())
    try:
        manifest = ShardManifest.model_validate(top)
    except ValidationError as exc:
        raise BuildError(f"{out / MANIFEST}: the merged manifest is invalid: "
                         f"{validation_problems(exc, ShardManifest)}") from None
    write_manifest(out / MANIFEST, manifest)
    return manifest.model_dump(mode="json")
