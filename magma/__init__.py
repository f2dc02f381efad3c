"""Magma-style vision-language-action models: the model and the contracts every stage shares.

Importing `magma` registers the architecture with transformers' Auto classes, so that
`AutoModelForCausalLM.from_pretrained(folder)` and `AutoProcessor.from_pretrained(folder)` work
on our checkpoint folders without remote code. It never imports a stage (data_pipeline, train,
serve, eval).
"""
from __future__ import annotations

from transformers import (AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoProcessor)

from magma.configuration_magma import MagmaConfig
from magma.image_processing_magma import MagmaImageProcessor
from magma.modeling_magma import MagmaForCausalLM
from magma.processing_magma import MagmaProcessor

__version__ = "0.1.0"

AutoConfig.register("magma", MagmaConfig, exist_ok=True)
AutoModelForCausalLM.register(MagmaConfig, MagmaForCausalLM, exist_ok=True)
AutoImageProcessor.register(MagmaConfig, slow_image_processor_class=MagmaImageProcessor,
                            exist_ok=True)
AutoProcessor.register(MagmaConfig, MagmaProcessor, exist_ok=True)

__all__ = ["MagmaConfig", "MagmaForCausalLM", "MagmaProcessor", "MagmaImageProcessor", "__version__"]
