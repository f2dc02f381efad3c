"""The shard format (magma.shards): names, writer, readers, manifests, and the build's use of them."""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from magma.schema import Sample, Turn, sample_to_tar_members
from magma.shards import (MANIFEST, ShardError, ShardManifest, SourceManifest, iter_shard,
                          iter_shard_members, member_name, read_manifest, read_source_manifest,
                          sample_members, scan_shard, shard_paths, split_member_name, tar_bytes,
                          write_manifest, write_shard)

REPO = Path(__file__).resolve().parents[2]


def _sample(i: int, n_images: int = 1) -> Sample:
    rng = np.random.default_rng(i)
    images = [rng.integers(0, 255, (8 + i, 12, 3), dtype=np.uint8) for _ in range(n_images)]
    user = "".join("<image>" for _ in images) + f"What is {i}?"
    return Sample(id=f"s-{i:03d}", images=images, source="test/src", dataset="toy",
                  conversation=[Turn("user", user), Turn("assistant", f"It is {i}.", kind="verbal")],
                  episode=f"ep{i % 2}", frame=i, meta={"split": "heldout" if i % 3 == 0 else "train"})


def _same(a: Sample, b: Sample) -> bool:
    return (a.id, a.conversation, a.source, a.dataset, a.episode, a.frame, a.meta) == \
        (b.id, b.conversation, b.source, b.dataset, b.episode, b.frame, b.meta) and \
        len(a.images) == len(b.images) and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))


# ---------------------------------------------------------------- names

def test_member_names_split_and_join():
    assert member_name("s-1", "json") == "s-1.json"
    assert split_member_name("s-1.0.png") == ("s-1", "0.png")
    assert split_member_name("./part/sub/s-1.json") == ("s-1", "json")  # directories allowed
    for bad in ("noext", ".json", "dir/.0.png", "s-1."):
        with pytest.raises(ValueError):
            split_member_name(bad)
    with pytest.raises(ValueError):
        member_name("a.b", "json")


def test_schema_names_members_by_the_scheme():
    s = _sample(1, n_images=2)
    names = [n for n, _ in sample_members(s)]
    assert names == list(sample_to_tar_members(s))
    assert [split_member_name(n) for n in names] == [("s-001", "json"), ("s-001", "0.png"), ("s-001", "1.png")]
    assert all(member_name(*split_member_name(n)) == n for n in names)


# ---------------------------------------------------------------- writing and reading

def test_round_trip_sequential_and_random_access(tmp_path):
    samples = [_sample(i, n_images=i % 3) for i in range(7)]
    path = tmp_path / "shard-000000.tar"
    assert write_shard(path, samples) == 7
    got = list(iter_shard(path))
    assert len(got) == 7 and all(_same(a, b) for a, b in zip(samples, got))
    index = scan_shard(path)
    assert len(index) == 7 and index.keys == [s.id for s in samples]
    with open(path, "rb") as fh:  # one shared handle, out of order
        for i in reversed(range(7)):
            assert _same(index.sample(i, fh), samples[i])
    assert _same(index.sample(3), samples[3])  # its own handle
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp


def test_writer_is_deterministic(tmp_path):
    samples = [_sample(i) for i in range(3)]
    write_shard(tmp_path / "a.tar", samples)
    write_shard(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert {(m.mtime, m.mode, m.uname) for m in tar.getmembers()} == {(0, 0o644, "")}
    assert tar_bytes([("x.json", b"{}")]) == tar_bytes([("x.json", b"{}")])
    with pytest.raises(ValueError, match="two samples with id"):
        write_shard(tmp_path / "c.tar", [samples[0], samples[0]])


def test_a_webdataset_tar_made_elsewhere_reads_back(tmp_path):
    """Written with plain tarfile as WebDataset writers do: `<dir>/<key>.<suffix>`, a
    directory entry, default (PAX) format, real mtimes and modes."""
    samples = [_sample(i, n_images=2) for i in range(3)]
    path = tmp_path / "outside.tar"
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo("train")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for s in samples:
            for name, data in sample_to_tar_members(s).items():
                info = tarfile.TarInfo(f"train/{name}")
                info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o600
                tar.addfile(info, io.BytesIO(data))
    assert [k for k, _ in iter_shard_members(path)] == ["s-000", "s-001", "s-002"]
    assert all(_same(a, b) for a, b in zip(samples, iter_shard(path)))
    index = scan_shard(path)
    assert _same(index.sample(2), samples[2]) and set(index.members[0]) == {"json", "0.png", "1.png"}


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(tar_bytes(members))
    return path


@pytest.mark.parametrize("read", [lambda p: list(iter_shard(p)), scan_shard], ids=["iter", "scan"])
def test_unreadable_shards_name_the_file_and_the_fix(tmp_path, read):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar file at all" * 40)
    whole = tar_bytes(sample_members(_sample(1)) + sample_members(_sample(2)))
    cut_header = tmp_path / "cut_header.tar"
    cut_header.write_bytes(whole[:1500])  # inside the second member's header
    cut_data = tmp_path / "cut_data.tar"
    cut_data.write_bytes(whole[:2000])  # inside the second member's data
    members = sample_members(_sample(1)) + sample_members(_sample(2))
    apart = _tar(tmp_path / "apart.tar", [members[0], members[2], members[1], members[3]])
    twice = _tar(tmp_path / "twice.tar", [members[0], members[0]])
    odd = _tar(tmp_path / "odd.tar", [("README", b"hi")])
    for path, why in ((garbage, "unreadable shard"), (cut_header, "truncated or damaged"),
                      (cut_data, "unreadable shard|truncated or damaged"),
                      # streaming meets the cut-off first sample before the stray member
                      (apart, "must be adjacent|sample 's-001': cannot decode"), (twice, "two 'json' members"),
                      (odd, "not <key>.<suffix>"), (tmp_path / "gone.tar", "no such shard")):
        with pytest.raises(ShardError, match="magma data build") as err:
            read(path)
        assert str(path) in str(err.value) and re.search(why, str(err.value)), (path, str(err.value))


def test_missing_or_corrupt_member_is_a_shard_error_naming_file_and_key(tmp_path):
    members = sample_members(_sample(1)) + sample_members(_sample(2))
    path = _tar(tmp_path / "shard.tar", [m for m in members if m[0] != "s-002.0.png"])
    it = iter_shard(path)
    assert next(it).id == "s-001"
    with pytest.raises(ShardError, match=r"shard\.tar: sample 's-002'.*magma data build"):
        next(it)
    with pytest.raises(ShardError, match="'s-002'"):
        scan_shard(path).sample(1)
    bad_json = _tar(tmp_path / "bad.tar", [("s-1.json", b"{not json")])
    with pytest.raises(ShardError, match=r"bad\.tar: sample 's-1': cannot decode"):
        list(iter_shard(bad_json))


# ---------------------------------------------------------------- manifests

def _minimal_manifest(**kw) -> ShardManifest:
    entry = {"type": "t", "weight": 1.0, "dir": "a", "num_samples": 2, "shards": ["shard-000000.tar"]}
    return ShardManifest.model_validate({"mix": "m", "pipeline_version": "v", "config_hash": "h",
                                         "samples_per_shard": 4, "sources": {"a": entry},
                                         "num_samples": 2, **kw})


def test_manifest_write_read_round_trip_sorted(tmp_path):
    m = _minimal_manifest(inference={"toy": {"chunk": 4, "use_proprio": True}})
    write_manifest(tmp_path / MANIFEST, m)
    text = (tmp_path / MANIFEST).read_text()
    raw = json.loads(text)
    assert list(raw) == sorted(raw) and raw["inference"] == {"toy": {"chunk": 4, "use_proprio": True}}
    assert read_manifest(tmp_path) == m
    assert shard_paths(tmp_path) == [tmp_path / "a" / "shard-000000.tar"]


def test_bad_manifests_are_clear_errors(tmp_path):
    with pytest.raises(ShardError, match=r"manifest\.json: no manifest; build shards with "
                                         r"`magma data build --config .* --out DIR`"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{broken")
    with pytest.raises(ShardError, match=r"manifest\.json: corrupt JSON .*magma data build"):
        read_manifest(tmp_path)
    raw = _minimal_manifest().model_dump(mode="json")
    raw["num_samples"] = "many"
    raw["sources"]["a"]["shardz"] = []
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ShardError) as err:
        read_manifest(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / MANIFEST) in msg and "num_samples" in msg and "sources.a.shardz: unknown key" in msg
    (tmp_path / MANIFEST).write_text(json.dumps({"name": "a", "build_hash": "x", "shards": []}))
    with pytest.raises(ShardError, match="the manifest of one source"):
        read_manifest(tmp_path)


# ---------------------------------------------------------------- what the build writes

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from data_pipeline.build.mix_config import load_mix_config
    from data_pipeline.build.writer import build_mix
    from data_pipeline.som.synthetic import write_synthetic_som_data

    root = tmp_path_factory.mktemp("build")
    data = write_synthetic_som_data(root / "data", n_images=3, n_annotations=2, n_episodes=2, seed=3)
    mix = load_mix_config(REPO / "configs" / "data" / "tiny_som.yaml", {"SOM_DATA": str(data)})
    build_mix(mix, root / "out", workers=0, progress=False)
    return root / "out"


def test_a_real_build_validates_and_keeps_its_json(built):
    top = read_manifest(built)
    raw = json.loads((built / MANIFEST).read_text())
    assert top.model_dump(mode="json") == raw  # every key and value survives the model
    assert top.num_samples == sum(top.counts_by_source.values()) > 0 and top.inference == {}
    for name, entry in top.sources.items():
        src = read_source_manifest(built / entry.dir)
        assert isinstance(src, SourceManifest) and src.name == name
        assert src.model_dump(mode="json") == json.loads((built / entry.dir / MANIFEST).read_text())
        assert src.shards == entry.shards and src.num_samples == entry.num_samples
    paths = shard_paths(built)
    assert sum(len(scan_shard(p)) for p in paths) == top.num_samples
    assert shard_paths(built / "images") == [built / "images" / n for n in top.sources["images"].shards]


# ---------------------------------------------------------------- inference settings in the build

def _register_test_source():
    from magma.config_io import StrictModel
    from data_pipeline.build.registry import SourceType, WorkItem, register_source

    class _Params(StrictModel):
        dataset: str = "toy"
        chunk: int = 4

    @register_source("test_inference")
    class _InferenceSource(SourceType):
        params_model = _Params

        def list_items(self, cfg):
            return [WorkItem(f"i{k}", k) for k in range(2)]

        def prepare(self, cfg, items):
            p = self.params(cfg)
            return {"inference": {p.dataset: {"chunk": p.chunk, "use_proprio": False, "action_dim": 3}}}

        def process(self, item, cfg, context):
            return [_sample(item.payload)]


_register_test_source()


def _mix(*sources: tuple[str, str, int]):
    from data_pipeline.build.mix_config import MixConfig
    return MixConfig.model_validate({"name": "inf", "samples_per_shard": 4, "workers": 0, "sources": [
        {"name": n, "type": "test_inference", "params": {"dataset": d, "chunk": c}} for n, d, c in sources]})


def test_build_merges_inference_settings_per_dataset(tmp_path):
    from data_pipeline.build.writer import build_mix
    mix = _mix(("a", "toy", 4), ("b", "toy", 4), ("c", "other", 2))
    returned = build_mix(mix, tmp_path / "out", workers=0, progress=False)
    top = read_manifest(tmp_path / "out")
    assert top.inference == {"toy": {"chunk": 4, "use_proprio": False, "action_dim": 3},
                             "other": {"chunk": 2, "use_proprio": False, "action_dim": 3}}
    assert returned == top.model_dump(mode="json")


def test_sources_disagreeing_on_a_dataset_is_a_build_error_naming_both(tmp_path):
    from data_pipeline.build.writer import BuildError, build_mix
    with pytest.raises(BuildError, match=r"sources 'a' and 'b' disagree on the inference settings "
                                         r"of dataset 'toy'"):
        build_mix(_mix(("a", "toy", 4), ("b", "toy", 8)), tmp_path / "out", workers=0, progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()
