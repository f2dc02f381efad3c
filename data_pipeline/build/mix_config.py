"""Data mix configs (`configs/data/<mix>.yaml`) with `${VAR}` expansion in source params.

    name: quickstart
    samples_per_shard: 256
    workers: 2
    sources:
      - {name: miniwob, type: miniwob_episodes, weight: 1.0, params: {path: ${EPISODES}/miniwob}}

`${VAR}` in any string param is taken from `variables` (the CLI's `--var VAR=value`) first and
the environment second; an undefined variable is an error naming the source and the param.
Every source's params are then checked against its type's params model, so a bad key fails
here, before any work starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field

from magma.config_io import ConfigError, StrictModel, read_yaml_mapping, validate_config

from data_pipeline.build.registry import SourceConfig, check_source_params

PIPELINE_VERSION = "2"  # 2: manifests carry per-dataset inference settings; snake_case skip reasons
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class MixConfig(StrictModel):
    name: str
    samples_per_shard: int = Field(default=256, ge=1)
    workers: int = Field(default=2, ge=0)
    sources: list[SourceConfig]


def _expand(value: Any, variables: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in variables:
                return variables[name]
            if name in os.environ:
                return os.environ[name]
            raise ConfigError(f"${{{name}}} is not defined", key=where,
                              fix=f"pass --var {name}=VALUE or export {name}")
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, where) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def load_mix_config(path: str | Path, variables: Mapping[str, str] | None = None) -> MixConfig:
    """Reads and validates a mix YAML and every source's params; raises ConfigError naming the
    file, the source and the key."""
    path = Path(path)
    raw = dict(read_yaml_mapping(path, "mix config", "configs/data/"))
    try:
        raw["sources"] = [
            {**s, "params": _expand(s.get("params", {}), variables or {},
                                    f"source {s.get('name')!r} params")}
            if isinstance(s, dict) else s for s in raw.get("sources") or []]
    except ConfigError as exc:
        raise exc.in_file(path) from None
    cfg = validate_config(raw, MixConfig, path)
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"source names must be unique, got {names}", file=path)
    if not cfg.sources:
        raise ConfigError("no sources", file=path)
    for source in cfg.sources:
        try:
            check_source_params(source)
        except ConfigError as exc:
            raise exc.in_file(path) from None
    return cfg


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object (sorted keys) for config identity in manifests."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_var_args(pairs: list[str]) -> dict[str, str]:
    """{'NAME': 'VALUE'} from the CLI's `--var NAME=VALUE` pairs."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"expected NAME=VALUE, got {pair!r}", key="--var",
                              fix="e.g. --var EPISODES=runs/quickstart/episodes")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out
