"""Source types: the registry that `magma data build` draws items and samples from.

API (every source type, SoM or ToM, implements the same three steps):

    @register_source("my_type")
    class MySource(SourceType):
        def list_items(self, cfg: SourceConfig) -> list[WorkItem]: ...   # cheap, in the parent
        def prepare(self, cfg, items) -> dict: ...   # optional; whole-dataset pass (e.g. action
                                                     # stats); picklable, stored in the manifest
        def process(self, item, cfg, context) -> list[Sample]: ...   # pure, runs in a worker

`process` raises `SkipItem("short reason")` for bad input; the writer counts it per reason.
Partial drops inside a usable item (e.g. one zero-size element) go in the first sample's
`meta["_dropped"] = {reason: n}`; the writer removes that key and sums it under "dropped".
Sample ids are assigned by the writer (`<source>-<item_id>-<k>`), so sources need not care.
If `prepare` returns {"action_stats": {dataset: ActionStats-as-dict}}, those statistics are
merged into the top-level manifest's "action_stats".

`get_source_type(name)` returns a registered instance; importing this module fills the
registry from `data_pipeline.{som,tom,robot}.sources`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from magma.schema import Sample

from data_pipeline.build.skips import SkipItem  # noqa: F401  (re-exported: sources raise it)


class SourceConfig(BaseModel):
    """One entry of a mix config's `sources` list."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    type: str
    weight: float = Field(default=1.0, ge=0.0)
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    """One unit of work (a page, an image, an episode); `payload` must be picklable."""

    item_id: str
    payload: Any


class SourceType:
    """Base class; override list_items and process (and prepare when a dataset pass is needed)."""

    type_name: str = ""

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        raise NotImplementedError

    def prepare(self, cfg: SourceConfig, items: list[WorkItem]) -> dict[str, Any]:
        return {}

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list[Sample]:
        raise NotImplementedError


_REGISTRY: dict[str, SourceType] = {}
S = TypeVar("S", bound=type)


def register_source(type_name: str) -> Callable[[S], S]:
    """Class decorator: registers an instance of the class under `type_name`."""

    def wrap(cls: S) -> S:
        if type_name in _REGISTRY and type(_REGISTRY[type_name]) is not cls:
            raise ValueError(f"source type {type_name!r} registered twice "
                             f"({type(_REGISTRY[type_name]).__name__} and {cls.__name__})")
        instance = cls()
        instance.type_name = type_name
        _REGISTRY[type_name] = instance
        return cls

    return wrap


def _load_builtin_sources() -> None:
    for module in ("data_pipeline.som.sources", "data_pipeline.tom.sources",
                   "data_pipeline.robot.sources"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def get_source_type(name: str) -> SourceType:
    if name not in _REGISTRY:
        _load_builtin_sources()
    if name not in _REGISTRY:
        raise KeyError(f"unknown source type {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def registered_source_types() -> list[str]:
    _load_builtin_sources()
    return sorted(_REGISTRY)
