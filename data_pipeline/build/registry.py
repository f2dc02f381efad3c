"""Source types: the registry that `magma data build` draws items and samples from.

API (every source type, SoM, ToM or robot, declares its params and implements three steps):

    class MyParams(StrictModel):    # the source's `params`; unknown keys are errors
        path: str
        per_task: int = 2

    @register_source("my_type")
    class MySource(SourceType):
        params_model = MyParams
        def list_items(self, cfg: SourceConfig) -> list[WorkItem]: ...   # cheap, in the parent
        def prepare(self, cfg, items) -> dict: ...   # optional; whole-dataset pass (e.g. action
                                                     # stats); picklable, stored in the manifest
        def process(self, item, cfg, context) -> list[Sample]: ...   # pure, runs in a worker

`process` raises `SkipItem("short_reason")` for bad input; the writer counts it per reason.
Partial drops inside a usable item (e.g. one zero-size element) go in the first sample's
`meta["_dropped"] = {reason: n}`; the writer removes that key and sums it under "dropped".
`self.params(cfg)` is the validated params model; `magma data build` checks every source's
params (`check_source_params`) before any work starts.
Sample ids are assigned by the writer (`<source>-<item_id>-<k>`), so sources need not care.
If `prepare` returns {"action_stats": {dataset: ActionStats-as-dict}}, those statistics are
merged into the top-level manifest's "action_stats".

`get_source_type(name)` returns a registered instance; the first lookup fills the registry
from `data_pipeline.{som,tom,robot}.sources`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pydantic import Field, ValidationError

from magma.config_io import ConfigError, StrictModel, validation_problems
from magma.schema import Sample

from data_pipeline.build.skips import SkipItem  # noqa: F401  (re-exported: sources raise it)


class SourceConfig(StrictModel):
    """One entry of a mix config's `sources` list; `params` is checked by the source type's
    `params_model` (kept as the raw mapping: it is hashed into the build's identity)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    type: str
    weight: float = Field(default=1.0, ge=0.0)
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class WorkItem:
    """One unit of work (a page, an image, an episode); `payload` must be picklable."""

    item_id: str
    payload: Any


P = TypeVar("P", bound=StrictModel)


def parse_params(model: type[P], cfg: SourceConfig) -> P:
    """`cfg.params` as `model`; bad params -> one ConfigError naming the source, each bad key
    and, for an unknown key, the allowed ones."""
    try:
        return model.model_validate(cfg.params)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, model, prefix="params."),
                          key=f"source {cfg.name!r} ({cfg.type})") from None


class SourceType:
    """Base class; set params_model, override list_items and process (and prepare when a
    dataset pass is needed)."""

    type_name: str = ""
    params_model: type[StrictModel] = StrictModel  # every source type sets its own

    def params(self, cfg: SourceConfig) -> Any:
        """`cfg.params` validated by this type's `params_model` (raises ConfigError)."""
        return parse_params(self.params_model, cfg)

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
        model = getattr(cls, "params_model", None)
        if not (isinstance(model, type) and issubclass(model, StrictModel)) or model is StrictModel:
            raise TypeError(f"source type {type_name!r} ({cls.__name__}) must set params_model "
                            "to a StrictModel subclass describing its params")
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
                   "data_pipeline.robot.sources", "data_pipeline.public.video_datasets",
                   "data_pipeline.public.ui_sources", "data_pipeline.public.mind2web",
                   "data_pipeline.robot.rlds"):
        importlib.import_module(module)


def get_source_type(name: str) -> SourceType:
    if name not in _REGISTRY:
        _load_builtin_sources()
    if name not in _REGISTRY:
        raise KeyError(f"unknown source type {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_source_params(cfg: SourceConfig) -> None:
    """Raises ConfigError when `cfg.type` is not registered or its params do not validate;
    run on every source before a build starts so no worker meets a bad key."""
    try:
        source = get_source_type(cfg.type)
    except KeyError:
        raise ConfigError(f"unknown type {cfg.type!r}", key=f"source {cfg.name!r}",
                          fix=f"registered: {', '.join(registered_source_types())}") from None
    source.params(cfg)


def registered_source_types() -> list[str]:
    _load_builtin_sources()
    return sorted(_REGISTRY)
