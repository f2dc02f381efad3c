"""Data mix configs (`configs/data/<mix>.yaml`) with `${VAR}` expansion in source params.

    name: quickstart
    samples_per_shard: 256
    workers: 2
    sources:
      - {name: miniwob, type: miniwob_episodes, weight: 1.0, params: {path: ${EPISODES}/miniwob}}

`${VAR}` in any string param is taken from `variables` (the CLI's `--set VAR=value`) first and
the environment second; an undefined variable is an error naming the source and the param.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from magma.config_io import read_yaml_mapping, validate_config

from data_pipeline.build.registry import SourceConfig

PIPELINE_VERSION = "som-1"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    samples_per_shard: int = Field(default=256, ge=1)
    workers: int = Field(default=2, ge=0)
    sources: list[SourceConfig]


class MixConfigError(ValueError):
    pass


def _expand(value: Any, variables: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in variables:
                return variables[name]
            if name in os.environ:
                return os.environ[name]
            raise MixConfigError(f"{where}: ${{{name}}} is not defined; pass --set {name}=VALUE "
                                 f"or export {name}")
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def load_mix_config(path: str | Path, variables: Mapping[str, str] | None = None) -> MixConfig:
    """Reads and validates a mix YAML; raises MixConfigError with the file and the problem."""
    path = Path(path)
    raw = dict(read_yaml_mapping(path, "mix config", "configs/data/", MixConfigError))
    raw["sources"] = [
        {**s, "params": _expand(s.get("params", {}), variables or {},
                                f"{path}: source {s.get('name')!r} params")}
        if isinstance(s, dict) else s for s in raw.get("sources") or []]
    cfg = validate_config(raw, MixConfig, path, MixConfigError)
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise MixConfigError(f"{path}: source names must be unique, got {names}")
    if not cfg.sources:
        raise MixConfigError(f"{path}: no sources")
    return cfg


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object (sorted keys) for config identity in manifests."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_set_args(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise MixConfigError(f"--set expects NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out
