"""inference_settings.json: round trip through the checkpoint folder, defaults for folders
without it, one clear error for a bad file, and the request check naming both values."""
from __future__ import annotations

import inspect
import json
import shutil

import pytest

from magma import prompts
from magma.checkpoint import CheckpointError, load_inference_settings, verify_checkpoint
from magma.inference_settings import (INFERENCE_SETTINGS_FILE, PROMPT_FORMAT, ActionSettings, InferenceMismatch,
                                      InferenceSettings, InferenceSettingsError, UISettings, check_chunk_override,
                                      resolve_robot_request, save_inference_settings, training_settings)

TRAINED = InferenceSettings(actions={
    "metaworld": ActionSettings(chunk=4, use_proprio=True, action_dim=4, proprio_dim=7),
    "bridge": ActionSettings(chunk=1, use_proprio=False, action_dim=7)})


@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def test_ui_defaults_are_the_renderers_defaults():
    legend = inspect.signature(prompts.marks_legend).parameters
    ui = UISettings()
    assert ui.legend_max_marks == legend["max_marks"].default
    assert ui.legend_max_text == legend["max_text"].default
    assert ui.history_window == inspect.signature(prompts.ui_action_prompt).parameters["history_window"].default


def test_round_trip_and_defaults_without_the_file(checkpoint):
    assert load_inference_settings(checkpoint) == InferenceSettings()  # `magma model init`, older checkpoints
    settings = InferenceSettings(actions={"metaworld": TRAINED.actions["metaworld"]})
    save_inference_settings(settings, checkpoint)
    assert load_inference_settings(checkpoint) == settings
    assert json.loads((checkpoint / INFERENCE_SETTINGS_FILE).read_text())["prompt_format"] == PROMPT_FORMAT


@pytest.mark.parametrize("content, message", [
    ('{"actions": {"metaworld": {"chunk": 4}}}', "actions.metaworld.use_proprio"),
    ('{"actions": {}, "colour": "red"}', "colour: unknown key"),
    ('{"prompt_format": "magma-v0"}', "prompt format 'magma-v0', but this code renders 'magma-v1'"),
    ('{"actions": {"metaworld": {"chunk": 2, "use_proprio": false, "action_dim": 7}}}',
     "dataset metaworld has action_dim 7, but action_stats.json has dim 4"),
    ('{"actions": {"other": {"chunk": 2, "use_proprio": false, "action_dim": 4}}}', "no statistics for it"),
])
def test_a_bad_file_is_one_checkpoint_error_naming_it(checkpoint, content, message):
    (checkpoint / INFERENCE_SETTINGS_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=INFERENCE_SETTINGS_FILE) as info:
        load_inference_settings(checkpoint)
    assert message in str(info.value)


def test_corrupt_json_fails_verification(checkpoint):
    (checkpoint / INFERENCE_SETTINGS_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        verify_checkpoint(checkpoint)


def test_training_settings_take_the_manifest_over_the_start_checkpoint():
    manifest = {"metaworld": {"chunk": 2, "use_proprio": False, "action_dim": 4, "proprio_dim": None}}
    merged = training_settings(manifest, base=TRAINED)
    assert merged.actions["metaworld"].chunk == 2 and merged.actions["bridge"] == TRAINED.actions["bridge"]
    with pytest.raises(InferenceSettingsError, match="inference.metaworld: chunk"):
        training_settings({"metaworld": {"chunk": 0, "use_proprio": False, "action_dim": 4}})


def test_resolve_robot_request():
    assert resolve_robot_request(TRAINED, "metaworld", None, [0.0] * 7) == 4
    assert resolve_robot_request(TRAINED, "metaworld", 4, [0.0] * 7) == 4
    assert resolve_robot_request(TRAINED, "bridge", None, None) == 1
    assert resolve_robot_request(TRAINED, "unrecorded", None, [1.0]) == 1  # no settings: as sent
    assert resolve_robot_request(TRAINED, "unrecorded", 6, None) == 6
    cases = [("metaworld", 8, [0.0] * 7, "chunk_not_trained",
              "chunk 8 requested, but checkpoint X was trained with chunk 4 for dataset metaworld"),
             ("metaworld", None, None, "proprio_required", "no proprio sent, but checkpoint X was trained with "
              "proprio (7 values) for dataset metaworld"),
             ("bridge", None, [0.0], "proprio_not_trained", "proprio sent (1 values), but checkpoint X was "
              "trained without proprio for dataset bridge"),
             ("metaworld", None, [0.0] * 3, "proprio_dim_mismatch", "proprio with 3 values sent, but checkpoint "
              "X was trained with 7 for dataset metaworld")]
    for dataset, chunk, proprio, code, message in cases:
        with pytest.raises(InferenceMismatch) as info:
            resolve_robot_request(TRAINED, dataset, chunk, proprio, "X")
        assert info.value.code == code and message in str(info.value)


def test_a_server_wide_chunk_must_fit_every_dataset():
    check_chunk_override(TRAINED, None)
    check_chunk_override(InferenceSettings(), 5)
    with pytest.raises(InferenceMismatch, match="--chunk 4 requested, but checkpoint X was trained with "
                                                "chunk 1 for dataset bridge"):
        check_chunk_override(TRAINED, 4, "X", flag="--chunk")
