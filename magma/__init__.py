"""Magma-style vision-language-action models: the model and the contracts every stage shares.

`import magma` is cheap: it loads neither torch nor transformers, so processes that need only
the contracts (magma.codecs, magma.prompts, magma.schema, magma.shards, ...) start fast. It
arranges (magma.auto_register) that the architecture is registered with transformers' Auto
classes as soon as those are imported, so `import magma` followed by
`AutoModelForCausalLM.from_pretrained(folder)` / `AutoProcessor.from_pretrained(folder)` /
`AutoConfig.from_pretrained(folder)` works on our checkpoint folders without remote code.
`magma.register()` registers eagerly. The model classes (`magma.MagmaConfig`,
`magma.MagmaForCausalLM`, `magma.MagmaProcessor`, `magma.MagmaImageProcessor`) are imported on
first access. It never imports a stage (data_pipeline, train, serve, eval).
"""
from __future__ import annotations

import importlib
from typing import Any

from magma.auto_register import install as _install
from magma.auto_register import register

__version__ = "0.1.0"

# public name -> the module defining it (PEP 562: imported, with torch, only when asked for)
_LAZY = {
    "MagmaConfig": "magma.configuration_magma",
    "MagmaForCausalLM": "magma.modeling_magma",
    "MagmaProcessor": "magma.processing_magma",
    "MagmaImageProcessor": "magma.image_processing_magma",
}

_install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'magma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["MagmaConfig", "MagmaForCausalLM", "MagmaProcessor", "MagmaImageProcessor", "register",
           "__version__"]
