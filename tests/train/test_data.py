"""Data side: mixing, rank/worker split, resume position, corrupt samples, packing, config."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from magma.build import build_model
from magma.config_io import ConfigError
from train.config import load_train_config
from train.data import DataError, MixedShardStream, StreamSpec, make_loader, read_manifest

from conftest import HERE, MICRO_TRAIN
from synthetic_shards import write_shards


@pytest.fixture(scope="module")
def processor():
    return build_model(HERE / "micro_model.yaml")[1]


def stream(shards, processor, **kw) -> MixedShardStream:
    spec = dict(shards=str(shards), weights=None, seed=0, rank=0, world_size=1, micro_batch_size=4, start_micro=0)
    spec.update(kw)
    return MixedShardStream(StreamSpec(**spec), processor)


def ids_of(ds: MixedShardStream, micros: range) -> list[str]:
    return [i for m in micros for i in ds.micro_batch(m)["meta"]["ids"]]


def test_ranks_partition_the_single_process_stream(shards, processor):
    single = stream(shards, processor, micro_batch_size=4)
    ranks = [stream(shards, processor, micro_batch_size=2, rank=r, world_size=2) for r in range(2)]
    for m in range(6):
        parts = [ranks[r].micro_batch(m)["meta"]["ids"] for r in range(2)]
        assert parts[0] + parts[1] == single.micro_batch(m)["meta"]["ids"]
        assert not set(parts[0]) & set(parts[1])


def test_no_sample_repeats_within_an_epoch(shards, processor):
    ds = stream(shards, processor, micro_batch_size=6)
    ids = ids_of(ds, range(8))  # 48 draws over 3 sources of 24 samples: no source exhausted twice
    per_source = Counter(i.split("-")[0] for i in ids)
    for src, n in per_source.items():
        drawn = [i for i in ids if i.startswith(src)]
        assert len(set(drawn[:24])) == min(n, 24), src


def test_resume_position_and_workers_reproduce_the_stream(shards, processor):
    full = ids_of(stream(shards, processor), range(7))
    resumed = ids_of(stream(shards, processor, start_micro=3), range(3, 7))
    assert resumed == full[12:]
    loader = make_loader(StreamSpec(str(shards), None, 0, 0, 1, 4, start_micro=3), processor, num_workers=2)
    it = iter(loader)
    got = [i for _ in range(4) for i in next(it)["meta"]["ids"]]
    assert got == full[12:]


def test_mixing_follows_weights(shards, processor):
    ds = stream(shards, processor, weights={"verbal": 6.0, "spatial": 1.0, "action": 1.0}, micro_batch_size=8)
    src = Counter(s for m in range(12) for s in ds.micro_batch(m)["meta"]["sources"])
    assert 0.62 < src["verbal"] / sum(src.values()) < 0.88
    with pytest.raises(DataError, match="unknown sources"):
        stream(shards, processor, weights={"nope": 1.0})


def test_corrupt_samples_are_skipped_and_counted(tmp_path, processor):
    root = write_shards(tmp_path / "bad", {"verbal": ("verbal", 8, 1.0)}, corrupt={"verbal": 3})
    ds = stream(root, processor, micro_batch_size=8)
    batch = ds.micro_batch(0)
    # every draw that lands on a broken sample is counted, then replaced by the next good one
    assert set(batch["meta"]["skipped"]) == {"corrupt"} and batch["meta"]["skipped"]["corrupt"] >= 3
    assert batch["input_ids"].shape[0] == 8
    assert set(batch["meta"]["ids"]) == {f"verbal-{i:05d}" for i in range(3, 8)}


def test_packing_cuts_padding_and_keeps_targets(shards, processor):
    plain = stream(shards, processor, micro_batch_size=8).micro_batch(0)
    packed = stream(shards, processor, micro_batch_size=8, packing=True, pack_length=128).micro_batch(0)
    assert packed["n_tokens"] == plain["n_tokens"]
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]
    frac = lambda b: float(b["n_pad"]) / b["input_ids"].numel()  # noqa: E731
    assert frac(packed) < frac(plain)
    assert (packed["labels"] != -100).sum() == (plain["labels"] != -100).sum()
    assert packed["pixel_values"].shape == plain["pixel_values"].shape
    assert int(packed["position_ids"][0, 0]) == 0 and int(packed["position_ids"].max()) < 128


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="magma data build"):
        read_manifest(tmp_path)


def test_config_rejects_unknown_keys_and_applies_overrides(tmp_path):
    cfg = load_train_config(MICRO_TRAIN, ["optim.lr=0.5", "dist.zero_stage=3", "model.lora.enabled=true"])
    assert cfg.optim.lr == 0.5 and cfg.dist.zero_stage == 3 and cfg.model.lora.enabled
    with pytest.raises(ConfigError, match="optim.lr_typo"):
        load_train_config(MICRO_TRAIN, ["optim.lr_typo=1"])
    with pytest.raises(ConfigError, match="exactly one"):
        load_train_config(MICRO_TRAIN, ["model.checkpoint=/x"])


def test_kind_losses_split_by_target_kind():
    from train.metrics import KindLosses
    per_token = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    kinds = torch.tensor([[-1, 0, 2, 2, -1]])  # shifted by one inside: tokens 1..4
    k = KindLosses()
    k.add(per_token, kinds)
    r = k.reduced()
    assert r["loss_verbal"] == 1.0 and r["loss_action"] == 2.5 and r["loss_spatial"] is None
    assert r["loss"] == pytest.approx(2.0)
