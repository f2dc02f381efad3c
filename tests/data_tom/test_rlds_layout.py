"""The `rlds` source on Open X-Embodiment RLDS builder folders written by tensorflow-datasets itself.

Fixtures follow the published layouts:
- the OXE conversion template (github.com/kpertsch/rlds_dataset_builder, example_dataset): steps with
  observation {image, wrist_image, state}, a 7-dim action tensor, language_instruction per step,
  reward / discount / is_first / is_last / is_terminal, episode_metadata {file_path}; its step
  features built with tfds' own RLDS helper (tfds.rlds.rlds_base.build_info);
- RT-1 (tfds catalog, fractal20220817_data 0.1.0): a dict action (world_vector, rotation_delta,
  gripper_closedness_action, terminate_episode int32, ...), the instruction in
  observation/natural_language_instruction, state tensors base_pose_tool_reached / gripper_closed,
  no discount and no episode metadata.
Both are written with `GeneratorBasedBuilder.download_and_prepare`, i.e. `<name>/<version>/` with
dataset_info.json, features.json and `<name>-<split>.tfrecord-00000-of-00001` as on the OXE bucket.

The tests that need TensorFlow skip (named reason) without it; the missing-extra tests always run
by making the import fail.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from magma.action_tokenizer import ActionStats, ActionTokenizer
from magma.config_io import ConfigError
from magma.episode import Episode, EpisodeMeta
from magma.prompts import robot_action_prompt
from data_pipeline.build.mix_config import MixConfig, load_mix_config
from data_pipeline.build.registry import SourceConfig, check_source_params, registered_source_types
from data_pipeline.build.writer import build_mix, iter_shard
from data_pipeline.robot import rlds

ROOT = Path(__file__).resolve().parents[2]
H, W = 24, 32
TEMPLATE_LENGTHS = {"train": [6, 9, 7, 8], "val": [5]}
RT1_LENGTHS = [7, 5, 6]
NO_TF = "tensorflow-datasets is not installed (optional extra: " + rlds.RLDS_INSTALL + ")"


# ---------------------------------------------------------------- fixtures written by tfds

def _template_episode(split: str, e: int, t_len: int) -> dict[str, Any]:
    rng = np.random.default_rng(1000 * (split == "val") + e)
    ys, xs = np.mgrid[0:16, 0:16]
    steps = []
    for t in range(t_len):
        wrist = np.clip(40 + 8 * e + 3 * t + xs * 4 + ys * 2, 0, 255).astype(np.uint8)  # smooth: JPEG
        steps.append({
            "observation": {"image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),  # PNG: exact
                            "wrist_image": np.stack([wrist, wrist[::-1], wrist.T], -1),
                            "state": rng.normal(size=8).astype(np.float32)},
            "action": rng.normal(0.0, [0.5, 1, 2, 0.1, 0.2, 0.3, 1], size=7).astype(np.float32),
            "discount": 1.0, "reward": float(t == t_len - 1),
            "is_first": t == 0, "is_last": t == t_len - 1, "is_terminal": t == t_len - 1,
            "language_instruction": f"put the {split} block {e} in the bowl"})
    return {"steps": steps, "episode_metadata": {"file_path": f"/raw/{split}/episode_{e}.npy"}}


def _rt1_episode(e: int, t_len: int) -> dict[str, Any]:
    rng = np.random.default_rng(500 + e)
    steps = []
    for t in range(t_len):
        steps.append({
            "action": {"base_displacement_vector": np.zeros(2, np.float32),
                       "base_displacement_vertical_rotation": np.zeros(1, np.float32),
                       "gripper_closedness_action": rng.uniform(-1, 1, size=1).astype(np.float32),
                       "rotation_delta": rng.normal(0, 0.1, size=3).astype(np.float32),
                       "terminate_episode": np.array([0, 1, 0] if t < t_len - 1 else [1, 0, 0], np.int32),
                       "world_vector": rng.normal(0, 0.05, size=3).astype(np.float32)},
            "is_first": t == 0, "is_last": t == t_len - 1, "is_terminal": t == t_len - 1,
            "observation": {"base_pose_tool_reached": rng.normal(size=7).astype(np.float32),
                            "gripper_closed": rng.uniform(0, 1, size=1).astype(np.float32),
                            "image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                            "natural_language_instruction": f"pick rxbar chocolate {e}"},
            "reward": float(t == t_len - 1)})
    return {"steps": steps}


def _write_builder(tfds: Any, data_dir: Path, builder_name: str, version: str, info: Any,
                   splits: dict[str, list[dict[str, Any]]]) -> Path:
    """A TFDS builder whose _info is `info(builder)`, prepared into data_dir/<name>/<version>/."""

    class FixtureBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = builder_name
        VERSION = tfds.core.Version(version)

        def _info(self) -> Any:
            return info(self)

        def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split: str) -> Any:
            for i, episode in enumerate(splits[split]):
                yield f"{split}-{i}", episode

    builder = FixtureBuilder(data_dir=str(data_dir))
    builder.download_and_prepare()
    return Path(builder.data_dir)


@pytest.fixture(scope="module")
def tfds_module() -> Any:
    try:
        return rlds.import_tfds()
    except rlds.RldsUnavailable:
        pytest.skip(NO_TF)


@pytest.fixture(scope="module")
def oxe_root(tmp_path_factory: pytest.TempPathFactory, tfds_module: Any) -> dict[str, Any]:
    """OXE_ROOT with a template-style dataset and an RT-1 style one, plus the episodes written."""
    tfds = tfds_module
    from tensorflow_datasets.rlds import rlds_base

    root = tmp_path_factory.mktemp("oxe")
    template = {s: [_template_episode(s, e, n) for e, n in enumerate(lengths)]
                for s, lengths in TEMPLATE_LENGTHS.items()}
    features = tfds.features

    def template_info(builder: Any) -> Any:
        return rlds_base.build_info(rlds_base.DatasetConfig(
            name="toy_franka",
            observation_info=features.FeaturesDict({
                "image": features.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="png"),
                "wrist_image": features.Image(shape=(16, 16, 3), dtype=np.uint8, encoding_format="jpeg"),
                "state": features.Tensor(shape=(8,), dtype=np.float32)}),
            action_info=features.Tensor(shape=(7,), dtype=np.float32),
            reward_info=features.Scalar(dtype=np.float32),
            discount_info=features.Scalar(dtype=np.float32),
            step_metadata_info={"language_instruction": features.Text()},
            episode_metadata_info={"episode_metadata": features.FeaturesDict({"file_path": features.Text()})}),
            builder)

    rt1 = [_rt1_episode(e, n) for e, n in enumerate(RT1_LENGTHS)]

    def rt1_info(builder: Any) -> Any:
        vec = lambda n, dt=np.float32: features.Tensor(shape=(n,), dtype=dt)  # noqa: E731
        step = features.Dataset({
            "action": features.FeaturesDict({
                "base_displacement_vector": vec(2), "base_displacement_vertical_rotation": vec(1),
                "gripper_closedness_action": vec(1), "rotation_delta": vec(3),
                "terminate_episode": vec(3, np.int32), "world_vector": vec(3)}),
            "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            "observation": features.FeaturesDict({
                "base_pose_tool_reached": vec(7), "gripper_closed": vec(1),
                "image": features.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="png"),
                "natural_language_instruction": features.Tensor(shape=(), dtype=np.str_)}),
            "reward": features.Scalar(dtype=np.float32)})
        return tfds.core.DatasetInfo(builder=builder, features=features.FeaturesDict({"steps": step}))

    return {"root": root,
            "template_dir": _write_builder(tfds, root, "toy_franka", "1.0.0", template_info, template),
            "template": template,
            "rt1_dir": _write_builder(tfds, root, "fractal20220817_data", "0.1.0", rt1_info, {"train": rt1}),
            "rt1": rt1}


def _by_instruction(episodes: list[dict[str, Any]], key: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    def text(step: dict[str, Any]) -> str:
        node: Any = step
        for k in key:
            node = node[k]
        return node
    return {text(ep["steps"][0]): ep for ep in episodes}


def _stack(steps: list[dict[str, Any]], *path: str) -> np.ndarray:
    out = []
    for s in steps:
        node: Any = s
        for k in path:
            node = node[k]
        out.append(np.asarray(node))
    return np.stack(out)


def _build(tmp_path: Path, sources: list[SourceConfig], workers: int = 0) -> dict[str, Any]:
    mix = MixConfig(name="t", samples_per_shard=8, workers=workers, sources=sources)
    return build_mix(mix, tmp_path / "out", workers=workers, progress=False)


def _samples(out: Path, source: str) -> list:
    manifest = json.loads((out / source / "manifest.json").read_text())
    return [s for name in manifest["shards"] for s in iter_shard(out / source / name)]


# ---------------------------------------------------------------- with TensorFlow

def test_rlds_template_layout_reads_back_what_tfds_wrote(oxe_root: dict[str, Any]) -> None:
    d = str(oxe_root["template_dir"])
    assert rlds.find_builder_dir(oxe_root["root"] / "toy_franka") == oxe_root["template_dir"]
    layout = rlds.describe_rlds(d)
    assert layout.name == "toy_franka" and layout.splits == {"train": 4, "val": 1}
    assert set(layout.cameras) == {"image", "wrist_image"}
    keys = rlds.resolve_keys(layout)
    assert (keys.camera, keys.state_keys, keys.instruction_key, keys.action_keys) == (
        "image", ("state",), "language_instruction", ())
    written = _by_instruction(oxe_root["template"]["train"], ("language_instruction",))
    seen = set()
    for i in range(4):  # tfds shuffles episodes on write: match them by instruction
        ep = rlds.read_rlds_episode(d, i, keys)
        want = written[ep.instruction]["steps"]
        seen.add(ep.instruction)
        assert ep.dataset == "toy_franka" and ep.episode_id == f"episode_{i:06d}" and ep.split == "train"
        np.testing.assert_array_equal(ep.actions, _stack(want, "action").astype(np.float64))
        np.testing.assert_array_equal(ep.proprio, _stack(want, "observation", "state").astype(np.float64))
        np.testing.assert_array_equal(ep.images, _stack(want, "observation", "image"))
        assert ep.num_frames == len(want)
    assert seen == set(written)
    # The JPEG wrist camera on request; the stats pass reads no image at all.
    wrist = rlds.read_rlds_episode(d, 0, keys.model_copy(update={"camera": "wrist_image"}))
    want = written[wrist.instruction]["steps"]
    assert np.abs(wrist.images.astype(int) - _stack(want, "observation", "wrist_image")).mean() < 3
    light = rlds.read_rlds_episode(d, 2, keys, load_images=False)
    assert light.images is None and light.num_frames == len(written[light.instruction]["steps"])
    # RLDS: the is_last step's action is not valid -> drop_last leaves it out.
    short = rlds.read_rlds_episode(d, 1, keys.model_copy(update={"drop_last": True}))
    assert len(short.actions) == len(written[short.instruction]["steps"]) - 1
    val = rlds.read_rlds_episode(d, 0, keys, split="val")
    assert val.split == "val" and val.instruction == "put the val block 0 in the bowl"


def test_rlds_rt1_dict_action_and_observation_instruction(oxe_root: dict[str, Any]) -> None:
    d = str(oxe_root["rt1_dir"])
    layout = rlds.describe_rlds(d)
    assert layout.dict_action and layout.cameras == ["image"]
    with pytest.raises(rlds.RldsKeyError, match="world_vector"):
        rlds.resolve_keys(layout)  # a dict action needs its order declared
    keys = rlds.resolve_keys(layout, state_keys=["base_pose_tool_reached", "gripper_closed"],
                             action_keys=["world_vector", "rotation_delta", "gripper_closedness_action"])
    assert keys.instruction_key == "observation/natural_language_instruction"
    written = _by_instruction(oxe_root["rt1"], ("observation", "natural_language_instruction"))
    for i in range(len(RT1_LENGTHS)):
        ep = rlds.read_rlds_episode(d, i, keys)
        want = written[ep.instruction]["steps"]
        expected = np.concatenate([_stack(want, "action", k) for k in
                                   ("world_vector", "rotation_delta", "gripper_closedness_action")], 1)
        np.testing.assert_array_equal(ep.actions, expected.astype(np.float64))  # terminate_episode left out
        np.testing.assert_array_equal(ep.proprio, np.concatenate(
            [_stack(want, "observation", "base_pose_tool_reached"),
             _stack(want, "observation", "gripper_closed")], 1).astype(np.float64))
        np.testing.assert_array_equal(ep.images, _stack(want, "observation", "image"))
    picked = rlds.read_rlds_episode(d, 0, rlds.resolve_keys(layout, action_keys=["world_vector", "terminate_episode"],
                                                            action_dims=[0, -1]))
    want = written[picked.instruction]["steps"]
    np.testing.assert_array_equal(picked.actions[:, 0], _stack(want, "action", "world_vector")[:, 0])
    np.testing.assert_array_equal(picked.actions[:, 1], _stack(want, "action", "terminate_episode")[:, 2])
    with pytest.raises(rlds.RldsKeyError, match="gripper_closed"):
        rlds.resolve_keys(layout, state_keys=["gripper_state"], action_keys=["world_vector"])


def test_rlds_build_samples_and_action_stats(oxe_root: dict[str, Any], tmp_path: Path) -> None:
    """`magma data build` as a user runs it (a fresh process forking 2 workers)."""
    chunk = 2
    config = tmp_path / "mix.yaml"
    config.write_text("name: t\nsamples_per_shard: 8\nsources:\n  - {name: franka, type: rlds, params: "
                      "{path: '${OXE_ROOT}/toy_franka', chunk: 2, use_proprio: true, tom: false}}\n")
    run = subprocess.run([sys.executable, "-m", "data_pipeline.cli", "build", "--config", str(config), "--out",
                          str(tmp_path / "out"), "--var", f"OXE_ROOT={oxe_root['root']}", "--workers", "2", "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    episodes = oxe_root["template"]["train"]
    all_actions = np.concatenate([_stack(ep["steps"], "action") for ep in episodes]).astype(np.float64)
    stats = manifest["action_stats"]["toy_franka"]
    np.testing.assert_allclose(stats["q01"], np.quantile(all_actions, 0.01, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats["q99"], np.quantile(all_actions, 0.99, axis=0), rtol=0, atol=1e-12)
    assert stats["count"] == len(all_actions)
    assert manifest["inference"]["toy_franka"] == {"chunk": chunk, "use_proprio": True, "action_dim": 7,
                                                   "proprio_dim": 8}
    samples = _samples(tmp_path / "out", "franka")
    assert manifest["skipped"] == {} and len(samples) == sum(n - chunk + 1 for n in TEMPLATE_LENGTHS["train"])
    tok = ActionTokenizer(1 << 20, ActionStats(**stats))
    lo, hi = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    written = _by_instruction(episodes, ("language_instruction",))
    for s in samples:
        prompt = s.conversation[0].content
        instruction = next(k for k in written if k in prompt)
        steps = written[instruction]["steps"]
        want = _stack(steps, "action")[s.frame:s.frame + chunk].astype(np.float64)
        got = tok.parse(s.conversation[-1].content, chunk=chunk)
        assert isinstance(got, np.ndarray), got
        assert (np.abs(got - np.clip(want, lo, hi)) <= tok.max_abs_error() + 1e-9).all()
        state = steps[s.frame]["observation"]["state"].astype(np.float64).tolist()
        assert prompt == robot_action_prompt(instruction, state)
        np.testing.assert_array_equal(s.images[0], steps[s.frame]["observation"]["image"])
        assert s.dataset == "toy_franka" and s.source == "robot/toy_franka"


@pytest.mark.timeout(300)
def test_rlds_workers_forked_after_tensorflow_refuse_instead_of_hanging(oxe_root: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    """This test process has loaded TensorFlow (the fixtures): workers forked from it would deadlock
    in their first TensorFlow call, so they skip with a reason that says what to do."""
    manifest = _build(tmp_path, [SourceConfig(name="franka", type="rlds", params={
        "path": str(oxe_root["template_dir"]), "tom": False, "max_episodes": 2})], workers=2)
    assert manifest["skipped"] == {"forked_after_tensorflow": 2} and manifest["num_samples"] == 0
    assert manifest["action_stats"]["toy_franka"]["count"] > 0  # the statistics pass ran in a fresh process
    detail = json.loads((tmp_path / "out/franka/manifest.json").read_text())["skipped_items"][0]["detail"]
    assert "--workers 0" in detail


def test_rlds_oxe_example_config_builds_the_datasets_present(oxe_root: dict[str, Any], tmp_path: Path) -> None:
    """The example mix's fractal keys work on a folder with RT-1's published features; datasets
    absent from OXE_ROOT are skipped and counted, not fatal."""
    mix = load_mix_config(ROOT / "configs/data/oxe-example.yaml", {"OXE_ROOT": str(oxe_root["root"])})
    manifest = build_mix(mix, tmp_path / "out", workers=0, progress=False)
    assert manifest["counts_by_source"]["fractal"] == sum(RT1_LENGTHS)
    stats = manifest["action_stats"]
    assert set(stats) == {"fractal20220817_data"}  # fractal and fractal_tom agree on it
    assert stats["fractal20220817_data"]["mask"] == [True] * 6 + [False]  # the gripper stays raw
    others = [s.name for s in mix.sources if not s.name.startswith("fractal")]
    assert others and manifest["skipped"] == {"path_not_found": len(others)}


def test_rlds_bad_keys_split_and_truncated_shard(oxe_root: dict[str, Any], tfds_module: Any,
                                                 tmp_path: Path) -> None:
    path = str(oxe_root["template_dir"])
    base = {"path": path, "tom": False}
    for k, (params, match) in enumerate([({"camera": "top_image"}, "image, wrist_image|wrist_image, image"),
                                         ({"split": "test"}, "train, val")]):
        with pytest.raises(ConfigError, match=match):
            _build(tmp_path / f"bad{k}", [SourceConfig(name="franka", type="rlds", params={**base, **params})])
    with pytest.raises(rlds.RldsKeyError, match="action is a tensor"):
        rlds.resolve_keys(rlds.describe_rlds(path), action_keys=["world_vector"])
    # A truncated shard: the episodes before the cut are read, the rest counted unreadable.
    broken = tmp_path / "broken" / "toy_franka" / "1.0.0"
    shutil.copytree(oxe_root["template_dir"], broken)
    shard = next(broken.glob("toy_franka-train.tfrecord-*"))
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) * 3 // 5])
    manifest = _build(tmp_path, [SourceConfig(name="franka", type="rlds", params={
        "path": str(broken), "tom": False, "max_episodes": 4})])
    skipped = manifest["skipped"].get("unreadable_episode", 0)
    assert 1 <= skipped < 4 and manifest["num_samples"] > 0
    detail = next(s["detail"] for s in json.loads((tmp_path / "out/franka/manifest.json").read_text())[
        "skipped_items"] if s["reason"] == "unreadable_episode")
    assert str(broken) in detail and "episode" in detail
    # A TFDS folder that is not RLDS (no `steps`): the source is skipped with its reason.
    flat = _write_builder(tfds_module, tmp_path / "flat", "toy_flat", "1.0.0", lambda b: tfds_module.core.DatasetInfo(
        builder=b, features=tfds_module.features.FeaturesDict({"x": tfds_module.features.Tensor(
            shape=(2,), dtype=np.float32)})), {"train": [{"x": np.zeros(2, np.float32)}]})
    manifest = _build(tmp_path / "flat_out", [SourceConfig(name="flat", type="rlds", params={
        "path": str(flat), "tom": False})])
    assert manifest["skipped"] == {"not_rlds": 1} and manifest["num_samples"] == 0


# ---------------------------------------------------------------- without TensorFlow (always run)

@pytest.fixture
def without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of tensorflow / tensorflow_datasets fail, as where the extra is not installed."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)


def test_rlds_without_tensorflow_is_one_clear_error(without_tensorflow: None) -> None:
    assert rlds.missing_tfds() == "No module named 'tensorflow'"
    with pytest.raises(rlds.RldsUnavailable) as info:
        rlds.import_tfds()
    assert "tensorflow-datasets" in str(info.value) and rlds.RLDS_INSTALL in str(info.value)


def test_rlds_builder_folder_lookup(tmp_path: Path) -> None:
    """OXE paths are <dataset>/<version>/: the dataset folder with one version resolves to it."""
    for version in ("0.1.0", "1.0.0"):
        (tmp_path / "bridge" / version).mkdir(parents=True)
        for name in rlds.BUILDER_FILES:
            (tmp_path / "bridge" / version / name).write_text("{}")
        if version == "0.1.0":
            assert rlds.find_builder_dir(tmp_path / "bridge") == tmp_path / "bridge" / "0.1.0"
    with pytest.raises(rlds.EpisodeError, match="0.1.0, 1.0.0") as info:
        rlds.find_builder_dir(tmp_path / "bridge")
    assert info.value.reason == "ambiguous_dataset"
    with pytest.raises(rlds.EpisodeError, match="dataset_info.json") as info:
        rlds.find_builder_dir(tmp_path)
    assert info.value.reason == "unreadable_dataset"


def test_rlds_build_without_tensorflow_fails_instead_of_succeeding(
        without_tensorflow: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from data_pipeline.cli import main

    rng = np.random.default_rng(0)
    Episode(EpisodeMeta(episode_id="ep0", env="toyenv", task="push", instruction="push it",
                        action_space="robot"),
            images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
            actions=rng.normal(size=(4, 3)).astype(np.float32)).save(tmp_path / "episodes")
    folder = tmp_path / "oxe" / "bridge" / "0.1.0"  # what the bucket holds; never opened here
    folder.mkdir(parents=True)
    for name in rlds.BUILDER_FILES:
        (folder / name).write_text("{}")
    config = tmp_path / "mix.yaml"
    config.write_text(
        "name: t\nworkers: 0\nsources:\n"
        f"  - {{name: recorded, type: robot_episodes, params: {{path: '{tmp_path / 'episodes'}', tom: false}}}}\n"
        "  - {name: bridge, type: rlds, params: {path: '${OXE_ROOT}/bridge/0.1.0', tom: false,"
        " action_keys: [world_vector, rotation_delta, open_gripper]}}\n")
    code = main(["build", "--config", str(config), "--out", str(tmp_path / "out"),
                 "--var", f"OXE_ROOT={tmp_path / 'oxe'}", "-q"])
    err = capsys.readouterr()
    assert code != 0
    assert "source 'bridge' (rlds)" in err.err and "tensorflow-datasets" in err.err
    assert rlds.RLDS_INSTALL in err.err
    assert len([line for line in err.err.splitlines() if "error:" in line]) == 1
    assert "manifest.json:" not in err.out and not (tmp_path / "out" / "manifest.json").exists()


def test_rlds_params_checked_before_work_and_example_config_valid(tmp_path: Path) -> None:
    assert "rlds" in registered_source_types()
    with pytest.raises(ConfigError, match="action_key"):
        check_source_params(SourceConfig(name="x", type="rlds", params={"path": "p", "action_key": ["a"]}))
    with pytest.raises(ConfigError, match="split"):
        check_source_params(SourceConfig(name="x", type="rlds", params={"path": "p", "split": "train[:10]"}))
    mix = load_mix_config(ROOT / "configs/data/oxe-example.yaml", {"OXE_ROOT": str(tmp_path)})
    types = {s.type for s in mix.sources}
    assert types == {"rlds"} and len(mix.sources) >= 4
    assert all(s.params["path"].startswith(str(tmp_path)) for s in mix.sources)


def test_rlds_registry_import_does_not_load_tensorflow() -> None:
    code = ("import sys; from data_pipeline.build.registry import registered_source_types as r; "
            "assert 'rlds' in r(); bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
