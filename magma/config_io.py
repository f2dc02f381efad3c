"""The one config idiom: `StrictModel` for every config, `ConfigError` for every bad one.

Every stage's config (model sizes, data mixes and their source params, training, evaluation,
serve options) is a `StrictModel` (unknown keys are errors) read through `read_yaml_mapping`
and `validate_config`, so a bad config reads the same everywhere:

    FILE: KEY: PROBLEM (FIX)

naming the parts that are known (a config built in code has no file).
"""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["ConfigError", "StrictModel", "read_yaml_mapping", "validate_config",
           "validation_problems"]


class StrictModel(BaseModel):
    """Base of every config and params model: a key the model does not define is an error."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used. `str()` reads 'FILE: KEY: PROBLEM (FIX)' with the parts
    given; the parts stay readable as attributes for callers that want them."""

    def __init__(self, problem: str, *, file: str | Path | None = None, key: str | None = None,
                 fix: str | None = None) -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        text = ": ".join([*([str(file)] if file else []), *([key] if key else []), problem])
        super().__init__(f"{text} ({fix})" if fix else text)

    def in_file(self, file: str | Path) -> "ConfigError":
        """The same error, naming the file it was found in."""
        return ConfigError(self.problem, file=file, key=self.key, fix=self.fix)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation (`X`, `X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple, dict):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def allowed_keys(model: type[BaseModel], loc: tuple[Any, ...] = ()) -> list[str] | None:
    """The keys a mapping at `loc` inside `model` may hold (None when `loc` leaves the models)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):  # an index into a list of models
            continue
        field = current.model_fields.get(str(part))
        current = _model_in(field.annotation) if field is not None else None
    return sorted(current.model_fields) if current is not None else None


def validation_problems(exc: ValidationError, model: type[BaseModel] | None = None,
                        prefix: str = "") -> str:
    """'a.b: msg; c: msg' for every error pydantic found (each key after `prefix`); given the
    `model`, an unknown key lists the allowed ones."""
    problems = []
    for e in exc.errors():
        where = prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else prefix.rstrip(".") or "(top)"
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(model, tuple(e["loc"][:-1])) if model is not None else None
            problems.append(f"{where}: unknown key" +
                            (f"; allowed: {', '.join(allowed)}" if allowed else ""))
        else:
            problems.append(f"{where}: {e['msg']}")
    return "; ".join(problems)


def read_yaml_mapping(path: str | Path, what: str, hint: str) -> dict[str, Any]:
    """The YAML file as a dict; `what` names the kind of config, `hint` where to find examples."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", file=path, fix=f"see {hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({exc})", file=path) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a {what} must be a mapping of keys to values", file=path)
    return raw


def validate_config(raw: dict[str, Any], model: type[M], path: str | Path | None = None) -> M:
    """`raw` as a `model`; any problem -> one ConfigError naming the file and every bad key."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, model), file=path) from None
