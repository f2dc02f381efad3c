"""Robot episodes in LeRobot v3, HDF5 and recorder layouts -> samples whose action tokens decode
to the original actions; bad episodes are skipped with counted reasons."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from magma.action_tokenizer import ActionStats, ActionTokenizer
from magma.episode import EPISODE_FRAMES, Episode, EpisodeMeta
from magma.prompts import robot_action_prompt
from data_pipeline.robot.episodes import RobotEpisode, list_hdf5_episodes, read_hdf5_episode
from data_pipeline.robot.lerobot import list_lerobot_episodes, read_lerobot_episode
from episode_writers import write_hdf5_episodes, write_lerobot_v3, write_video
from data_pipeline.build.mix_config import MixConfig
from data_pipeline.build.writer import build_mix, iter_shard
from data_pipeline.build.registry import SourceConfig
from tom_synth import synthetic_clip

T, D, P, CHUNK = 20, 4, 3, 2


def make_episode(seed: int, instruction: str = "push the block left") -> RobotEpisode:
    rng = np.random.default_rng(seed)
    return RobotEpisode(
        episode_id=f"ep{seed}", instruction=instruction,
        actions=rng.normal(0.0, [0.5, 1.0, 2.0, 0.1], size=(T, D)),
        images=synthetic_clip(seed, frames=T, size=128).frames,
        proprio=rng.normal(size=(T, P)), dataset="toy")


def _build(tmp_path: Path, type_name: str, path: Path, workers: int = 0, **params) -> dict:
    mix = MixConfig(name="t", samples_per_shard=16, workers=workers, sources=[SourceConfig(
        name="robot", type=type_name,
        params={"path": str(path), "chunk": CHUNK, "dataset": "toy", **params})])
    return build_mix(mix, tmp_path / "out", workers=workers, progress=False)


def _samples(out: Path) -> list:
    manifest = json.loads((out / "robot" / "manifest.json").read_text())
    return [s for name in manifest["shards"] for s in iter_shard(out / "robot" / name)]


def _assert_actions_round_trip(samples: list, episodes: list[RobotEpisode], stats: ActionStats) -> None:
    tok = ActionTokenizer(1 << 20, stats)
    by_id = {ep.episode_id: ep for ep in episodes}
    actions = [s for s in samples if s.primary_kind == "action"]
    assert len(actions) == sum(len(ep.actions) - CHUNK + 1 for ep in episodes)
    lo, hi = np.asarray(stats.q01), np.asarray(stats.q99)
    half_bin = tok.max_abs_error()
    for s in actions:
        ep = by_id[s.episode]
        want = ep.actions[s.frame:s.frame + CHUNK]
        got = tok.parse(s.conversation[-1].content, chunk=CHUNK)
        assert isinstance(got, np.ndarray), got
        # Inside [q01, q99] the decoded value is within half a bin; outside, of the clip bound.
        err = np.abs(got - np.clip(want, lo, hi))
        assert (err <= half_bin + 1e-9).all()
        assert s.dataset == "toy" and s.conversation[0].content == robot_action_prompt(ep.instruction)
        assert s.images[0].shape == (128, 128, 3)


def test_lerobot_v3_reader_round_trip(tmp_path: Path) -> None:
    episodes = [make_episode(0), make_episode(1, "open the drawer")]
    root = write_lerobot_v3(tmp_path / "lr", episodes, fps=10)
    assert list_lerobot_episodes(root) == [0, 1]
    for i, ep in enumerate(episodes):
        back = read_lerobot_episode(root, i)
        np.testing.assert_array_equal(back.actions, ep.actions)
        np.testing.assert_array_equal(back.proprio, ep.proprio)
        assert back.instruction == ep.instruction
        assert back.images.shape == ep.images.shape
        # frames come from the right place of the concatenated video (lossy codec)
        assert np.abs(back.images.astype(int) - ep.images).mean() < 12


def test_hdf5_reader_round_trip(tmp_path: Path) -> None:
    episodes = [make_episode(0), make_episode(1)]
    path = write_hdf5_episodes(tmp_path / "libero_toy_demo.hdf5", episodes)
    assert list_hdf5_episodes(path) == ["demo_0", "demo_1"]
    back = read_hdf5_episode(path, "demo_1")
    np.testing.assert_array_equal(back.actions, episodes[1].actions)
    np.testing.assert_array_equal(back.images, episodes[1].images)
    assert back.instruction == episodes[0].instruction and back.proprio.shape == (T, P)


@pytest.mark.parametrize("layout", ["lerobot", "hdf5"])
def test_robot_sources_actions_decode_within_half_a_bin(tmp_path: Path, layout: str) -> None:
    episodes = [make_episode(0), make_episode(1, "open the drawer")]
    if layout == "lerobot":
        path = write_lerobot_v3(tmp_path / "lr", episodes, fps=10)
        ids = {f"episode_{i:06d}": ep for i, ep in enumerate(episodes)}
    else:
        path = write_hdf5_episodes(tmp_path / "h5" / "toy.hdf5", episodes)
        ids = {f"toy-demo_{i}": ep for i, ep in enumerate(episodes)}
        for ep in episodes:
            ep.instruction = episodes[0].instruction  # one instruction per HDF5 file
    for eid, ep in ids.items():
        ep.episode_id = eid
    manifest = _build(tmp_path, layout, path)
    stats = ActionStats(**manifest["action_stats"]["toy"])
    assert stats.count == 2 * T
    samples = _samples(tmp_path / "out")
    _assert_actions_round_trip(samples, list(ids.values()), stats)
    kinds = manifest["counts_by_kind"]
    assert kinds["action"] == 2 * (T - CHUNK + 1) and kinds.get("spatial", 0) >= 1
    tom = [s for s in samples if s.primary_kind == "spatial"]
    assert all("Predict the next" in s.conversation[0].content for s in tom)


def _save_recorder(root: Path, ep: RobotEpisode, **arrays) -> None:
    Episode(EpisodeMeta(episode_id=ep.episode_id, env="toyenv", task="push",
                        instruction=ep.instruction, action_space="robot"),
            images=ep.images, actions=ep.actions.astype(np.float32),
            proprio=ep.proprio.astype(np.float32)).save(root)
    if arrays:  # overwrite the arrays to make a broken episode the recorder itself would refuse
        np.savez_compressed(root / ep.episode_id / EPISODE_FRAMES, **arrays)


def test_recorder_episodes_with_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "episodes"
    good = [make_episode(0), make_episode(1)]
    for ep in good:
        _save_recorder(root, ep)
    nan = make_episode(2)
    nan.episode_id = "nan"
    bad_actions = nan.actions.copy()
    bad_actions[5, 1] = np.nan
    _save_recorder(root, nan, images=nan.images, actions=bad_actions)
    short = make_episode(3)
    short.episode_id = "short"
    _save_recorder(root, short, images=short.images[:12], actions=short.actions)
    broken = make_episode(4)
    broken.episode_id = "broken"
    _save_recorder(root, broken)
    (root / "broken" / EPISODE_FRAMES).write_bytes(b"not a zip")

    manifest = _build(tmp_path, "robot_episodes", root, workers=2, tom=False)
    assert manifest["skipped"] == {"length_mismatch": 1, "nonfinite_actions": 1,
                                   "unreadable_episode": 1}
    stats = ActionStats(**manifest["action_stats"]["toy"])
    assert stats.count == 2 * T  # only the good episodes count
    for ep in good:
        ep.actions = ep.actions.astype(np.float32).astype(np.float64)
    _assert_actions_round_trip(_samples(tmp_path / "out"), good, stats)
    assert manifest["counts_by_kind"] == {"action": 2 * (T - CHUNK + 1)}


def test_hdf5_length_mismatch_is_counted(tmp_path: Path) -> None:
    ep = make_episode(0)
    ep.images = ep.images[:T - 3]
    path = write_hdf5_episodes(tmp_path / "h5" / "bad.hdf5", [make_episode(1), ep])
    manifest = _build(tmp_path, "hdf5", path, tom=False)
    assert manifest["skipped"] == {"length_mismatch": 1}
    assert manifest["counts_by_kind"] == {"action": T - CHUNK + 1}


def test_tom_sources_in_a_yaml_mix(tmp_path: Path) -> None:
    """`magma data build` with ToM sources in a mix: one writer, action stats at the top."""
    from data_pipeline.cli import main as data_main

    episodes = tmp_path / "episodes"
    for seed in (0, 1):
        ep = make_episode(seed)
        ep.proprio = ep.proprio.astype(np.float32)
        _save_recorder(episodes, ep)
    videos = tmp_path / "videos"
    write_video(videos / "clip.mp4", synthetic_clip(5, frames=16, size=128).frames, fps=10)
    (tmp_path / "mix.yaml").write_text(
        "name: tom_mix\nsamples_per_shard: 8\nworkers: 2\nsources:\n"
        "  - {name: clips, type: video, weight: 0.5, params: {path: '${DATA}/videos'}}\n"
        "  - {name: robot, type: robot_episodes, weight: 1.0,\n"
        "     params: {path: '${DATA}/episodes', chunk: 4, window_stride: 4}}\n")
    code = data_main(["build", "--config", str(tmp_path / "mix.yaml"), "--var",
                      f"DATA={tmp_path}", "--out", str(tmp_path / "out"), "-q"])
    assert code == 0
    top = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(top["action_stats"]) == {"toyenv"}  # recorder episodes: dataset = env name
    assert top["counts_by_source"]["clips"] == 1
    assert top["sources"]["robot"]["counts_by_kind"]["action"] == 2 * (T - 4 + 1)
    assert top["sources"]["robot"]["counts_by_kind"]["spatial"] >= 2  # windows at 0 and 4
    assert top["skipped"] == {}


def test_missing_tracker_skips_the_source_with_the_install_hint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAGMA_COTRACKER_CHECKPOINT", raising=False)
    path = write_hdf5_episodes(tmp_path / "h5" / "toy.hdf5", [make_episode(0)])
    manifest = _build(tmp_path, "hdf5", path, backend="cotracker")
    assert manifest["skipped"] == {"tracker_unavailable": 1} and manifest["num_samples"] == 0
    detail = json.loads((tmp_path / "out" / "robot" / "manifest.json").read_text())
    assert "autosegmentor" in detail["skipped_items"][0]["detail"]


def test_actions_false_makes_a_tom_only_source(tmp_path: Path) -> None:
    """The quickstart weights ToM traces on their own: `actions: false` keeps only them."""
    root = tmp_path / "episodes"
    for seed in (0, 1):
        _save_recorder(root, make_episode(seed))
    manifest = _build(tmp_path, "robot_episodes", root, actions=False)
    kinds = manifest["counts_by_kind"]
    assert "action" not in kinds and kinds.get("spatial", 0) >= 1
    assert all("Predict the next" in s.conversation[0].content for s in _samples(tmp_path / "out"))
