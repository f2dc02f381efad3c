"""What inference must repeat from training: `inference_settings.json` in a checkpoint folder.

    {"prompt_format": "magma-v1",
     "actions": {"metaworld": {"chunk": 4, "use_proprio": true, "action_dim": 4, "proprio_dim": 7}},
     "ui": {"history_window": 4, "legend_max_marks": 32, "legend_max_text": 24}}

The way openpi rebuilds a policy's transforms from its training config: robot sources record
per-dataset `ActionSettings` in the shard manifest (`inference`), training writes them (with the
UI prompt settings and the prompt format) into every checkpoint it saves, and serve and eval
take their defaults from there. `resolve_robot_request` refuses a request for settings the
checkpoint was not trained with, with one error naming both values.

A checkpoint without the file (older ones, `magma model init`) reads as `InferenceSettings()`:
no dataset entries, so a request's chunk (default 1) and proprio, or its absence, pass as sent.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ConfigDict, Field, ValidationError

from magma.config_io import StrictModel
from magma.config_io import validation_problems as _problems
from magma.prompts import HISTORY_WINDOW, LEGEND_MAX_MARKS, LEGEND_MAX_TEXT

INFERENCE_SETTINGS_FILE = "inference_settings.json"
# The name of the prompt texts and chat format that `magma.prompts` and the processor render.
# Bump it when a change to them means older checkpoints no longer see what they were trained on.
PROMPT_FORMAT = "magma-v1"
DEFAULT_CHUNK = 1  # a dataset the checkpoint has no settings for


class _Strict(StrictModel):
    # Records read back from JSON: no coercion either ("4" is not a chunk).
    model_config = ConfigDict(strict=True)


class ActionSettings(_Strict):
    """How one action dataset's samples were built: `chunk` actions per target, the state vector
    (`proprio_dim` floats) in the prompt or not, `action_dim` numbers per action."""

    chunk: int = Field(ge=1)
    use_proprio: bool
    action_dim: int = Field(ge=1)
    proprio_dim: int | None = Field(default=None, ge=1)  # known when use_proprio


class UISettings(_Strict):
    """UI prompt rendering (magma.prompts): previous actions kept in the history line, and the
    legend's largest number of marks and characters of text per mark."""

    history_window: int = Field(default=HISTORY_WINDOW, ge=0)
    legend_max_marks: int = Field(default=LEGEND_MAX_MARKS, ge=1)
    legend_max_text: int = Field(default=LEGEND_MAX_TEXT, ge=1)


class InferenceSettings(_Strict):
    prompt_format: str = PROMPT_FORMAT
    actions: dict[str, ActionSettings] = Field(default_factory=dict)
    ui: UISettings = Field(default_factory=UISettings)


class InferenceSettingsError(ValueError):
    """An inference_settings.json (or a manifest's `inference`) that cannot be used."""


# The `code` of every InferenceMismatch (serve answers them as 400 errors with this code).
MISMATCH_CODES = ("chunk_not_trained", "proprio_required", "proprio_not_trained", "proprio_dim_mismatch")


class InferenceMismatch(ValueError):
    """A request for settings the checkpoint was not trained with. `code` (one of MISMATCH_CODES)
    is machine-readable; the message names the requested and the trained value."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- building and files

def action_settings_from_manifest(raw: Mapping[str, Any] | None, where: str = "manifest") -> dict[str, ActionSettings]:
    """The manifest's `inference` field ({dataset: {chunk, use_proprio, action_dim, ...}}) as models."""
    out = {}
    for dataset, entry in (raw or {}).items():
        try:
            out[dataset] = ActionSettings.model_validate(entry)
        except ValidationError as exc:
            raise InferenceSettingsError(f"{where}: inference.{dataset}: {_problems(exc)}; rebuild the "
                                         "shards with `magma data build`") from None
    return out


def training_settings(manifest_inference: Mapping[str, Any] | None,
                      base: InferenceSettings | None = None) -> InferenceSettings:
    """The settings a training run records: the starting checkpoint's dataset entries (`base`, for
    fine-tuning) overridden by the manifest's, with this code's prompt format and UI settings
    (UI prompts of every source are rendered by magma.prompts with these constants)."""
    actions = dict(base.actions) if base is not None else {}
    actions.update(action_settings_from_manifest(manifest_inference))
    return InferenceSettings(actions=dict(sorted(actions.items())))


def save_inference_settings(settings: InferenceSettings, folder: str | Path) -> Path:
    path = Path(folder) / INFERENCE_SETTINGS_FILE
    path.write_text(json.dumps(settings.model_dump(mode="json"), indent=1, sort_keys=True) + "\n")
    return path


def read_inference_settings(folder: str | Path) -> InferenceSettings:
    """The folder's settings; `InferenceSettings()` when it has no file. Raises
    InferenceSettingsError for an unreadable file or one in a prompt format this code does not render."""
    path = Path(folder) / INFERENCE_SETTINGS_FILE
    if not path.is_file():
        return InferenceSettings()
    try:
        settings = InferenceSettings.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise InferenceSettingsError(f"{path}: {_problems(exc)}") from None
    if settings.prompt_format != PROMPT_FORMAT:
        raise InferenceSettingsError(
            f"{path}: prompt format {settings.prompt_format!r}, but this code renders {PROMPT_FORMAT!r}; "
            "serve it with the magma version that trained it, or fine-tune it with this one")
    return settings


# ---------------------------------------------------------------- checking requests

def resolve_robot_request(settings: InferenceSettings, dataset: str, chunk: int | None,
                          proprio: Sequence[float] | None, checkpoint: str = "the checkpoint") -> int:
    """The chunk to generate for a robot request: the requested one, else the trained one, else 1.

    Raises InferenceMismatch when the request asks for a chunk the checkpoint was not trained
    with for `dataset`, leaves out proprio it was trained with (or sends one of another length),
    or sends proprio it was trained without. A dataset without settings accepts anything."""
    trained = settings.actions.get(dataset)
    if trained is None:
        return chunk or DEFAULT_CHUNK
    if chunk is not None and chunk != trained.chunk:
        raise InferenceMismatch(
            "chunk_not_trained", f"chunk {chunk} requested, but checkpoint {checkpoint} was trained with "
            f"chunk {trained.chunk} for dataset {dataset}; leave chunk unset to use {trained.chunk}")
    if trained.use_proprio and proprio is None:
        raise InferenceMismatch(
            "proprio_required", f"no proprio sent, but checkpoint {checkpoint} was trained with proprio"
            f"{_dims(trained.proprio_dim)} for dataset {dataset}; send the robot state as 'proprio'")
    if not trained.use_proprio and proprio is not None:
        raise InferenceMismatch(
            "proprio_not_trained", f"proprio sent ({len(proprio)} values), but checkpoint {checkpoint} was "
            f"trained without proprio for dataset {dataset}; leave 'proprio' out")
    if proprio is not None and trained.proprio_dim is not None and len(proprio) != trained.proprio_dim:
        raise InferenceMismatch(
            "proprio_dim_mismatch", f"proprio with {len(proprio)} values sent, but checkpoint {checkpoint} "
            f"was trained with {trained.proprio_dim} for dataset {dataset}")
    return trained.chunk


def check_chunk_override(settings: InferenceSettings, chunk: int | None, checkpoint: str = "the checkpoint",
                         flag: str = "chunk") -> None:
    """A server-wide chunk override (`magma serve --chunk`) must be every trained dataset's chunk."""
    if chunk is None:
        return
    for dataset, trained in sorted(settings.actions.items()):
        if trained.chunk != chunk:
            raise InferenceMismatch(
                "chunk_not_trained", f"{flag} {chunk} requested, but checkpoint {checkpoint} was trained "
                f"with chunk {trained.chunk} for dataset {dataset}; leave {flag} unset to use the trained chunk")


def _dims(n: int | None) -> str:
    return f" ({n} values)" if n else ""

