"""Registers the Magma architecture with transformers' Auto classes, lazily.

`import magma` must stay cheap (no torch, no transformers) for processes that need only the
contracts (codecs, prompts, schema, shards), yet `import magma` followed by
`AutoModelForCausalLM.from_pretrained(folder)` must keep working without remote code. So
`install()` puts a finder on `sys.meta_path` that registers each piece right after the
transformers module defining its Auto class has been executed:

    transformers.models.auto.configuration_auto    -> AutoConfig          (MagmaConfig)
    transformers.models.auto.modeling_auto         -> AutoModelForCausalLM (MagmaForCausalLM)
    transformers.models.auto.image_processing_auto -> AutoImageProcessor  (MagmaImageProcessor)
    transformers.models.auto.processing_auto       -> AutoProcessor       (MagmaProcessor)

Those modules import torch themselves, so registering adds only our own modules to what a
process already pays. A module already imported when `install()` runs is registered at once.
Our own model modules import those transformers modules too: a registration whose Magma module
is still being initialised (e.g. `import magma.modeling_magma` pulls in modeling_auto) waits
until that module has finished, which the same finder watches.
`register()` registers everything eagerly; callers that build or load models call it so that
they never depend on the hook.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Callable

_AUTO = "transformers.models.auto."
_lock = threading.RLock()
_done: set[str] = set()


def _config() -> None:
    from transformers import AutoConfig

    from magma.configuration_magma import MagmaConfig
    AutoConfig.register("magma", MagmaConfig, exist_ok=True)


def _model() -> None:
    from transformers import AutoModelForCausalLM

    from magma.configuration_magma import MagmaConfig
    from magma.modeling_magma import MagmaForCausalLM
    AutoModelForCausalLM.register(MagmaConfig, MagmaForCausalLM, exist_ok=True)


def _image_processor() -> None:
    from transformers import AutoImageProcessor

    from magma.configuration_magma import MagmaConfig
    from magma.image_processing_magma import MagmaImageProcessor
    AutoImageProcessor.register(MagmaConfig, slow_image_processor_class=MagmaImageProcessor,
                                exist_ok=True)


def _processor() -> None:
    from transformers import AutoProcessor

    from magma.configuration_magma import MagmaConfig
    from magma.processing_magma import MagmaProcessor
    AutoProcessor.register(MagmaConfig, MagmaProcessor, exist_ok=True)


# transformers module -> what to register once it has been executed (config first: the others
# are keyed by MagmaConfig and AutoConfig must know model_type "magma" to read a folder)
_HOOKS: dict[str, Callable[[], None]] = {
    _AUTO + "configuration_auto": _config,
    _AUTO + "modeling_auto": _model,
    _AUTO + "image_processing_auto": _image_processor,
    _AUTO + "processing_auto": _processor,
}


# transformers module -> the Magma modules its registration imports
_NEEDS: dict[str, tuple[str, ...]] = {
    _AUTO + "configuration_auto": ("magma.configuration_magma",),
    _AUTO + "modeling_auto": ("magma.configuration_magma", "magma.modeling_magma"),
    _AUTO + "image_processing_auto": ("magma.configuration_magma", "magma.image_processing_magma"),
    _AUTO + "processing_auto": ("magma.configuration_magma", "magma.image_processing_magma",
                                "magma.processing_magma"),
}
_OURS = frozenset(m for needs in _NEEDS.values() for m in needs)
_pending: set[str] = set()  # loaded transformers modules whose registration waits for ours


def _initialising(module_name: str) -> bool:
    module = sys.modules.get(module_name)
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _run(name: str) -> None:
    with _lock:
        if name in _done:
            return
        if any(_initialising(m) for m in _NEEDS[name]):
            _pending.add(name)  # its class is not defined yet: finish when that module has
            return
        _pending.discard(name)
        _done.add(name)  # before running: the hook's own imports may re-enter
    # outside the lock: the hook imports, and holding our lock across the import system's own
    # module locks could deadlock two threads; registering twice is harmless (exist_ok)
    try:
        _HOOKS[name]()
    except BaseException:
        with _lock:
            _done.discard(name)
        raise


def _run_pending() -> None:
    for name in [n for n in _HOOKS if n in _pending]:
        _run(name)


def register() -> None:
    """Register every Magma class with its Auto class now (idempotent; imports torch)."""
    for name in _HOOKS:
        importlib.import_module(name)  # its hook registers it, if the finder is installed
        _run(name)


class _Loader(importlib.abc.Loader):
    """The real loader, plus our registration after the module has been executed."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader, self._name = loader, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if self._name in _HOOKS:
            _run(self._name)
        else:  # one of ours finished: registrations waiting for it can run now
            module.__spec__._initializing = False  # importlib clears it only after we return
            _run_pending()

    def __getattr__(self, attr: str):  # get_source, get_code, ... for tools that ask
        return getattr(self._loader, attr)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real spec of the four Auto modules and of ours."""

    def find_spec(self, fullname, path, target=None):
        if (fullname not in _HOOKS or fullname in _done) and fullname not in _OURS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    """Put the finder on sys.meta_path (once) and register what transformers already loaded."""
    with _lock:
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())
    for name in _HOOKS:
        if name in sys.modules:
            _run(name)
