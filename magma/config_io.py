"""Reading YAML configs into pydantic models with one clear error (file, key, problem).

Every stage's config loader (model sizes, data mixes, training, evaluation) goes through
`read_yaml_mapping` and `validate_config`, so bad configs read the same everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def validation_problems(exc: ValidationError) -> str:
    """'a.b: msg; c: msg' for every error pydantic found."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                     for e in exc.errors())


def read_yaml_mapping(path: str | Path, what: str, hint: str,
                      error: type[ValueError] = ConfigFileError) -> dict[str, Any]:
    """The YAML file as a dict; `what` names the kind of config, `hint` where to find examples."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: {what} not found (see {hint})") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(f"{path}: a {what} must be a mapping of keys to values")
    return raw


def validate_config(raw: dict[str, Any], model: type[M], path: str | Path,
                    error: type[ValueError] = ConfigFileError) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path}: {validation_problems(exc)}") from None
