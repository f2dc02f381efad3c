"""ZeRO-3 model construction: parameters partitioned as they are made, weights read once.

Under ZeRO-3 a rank keeps 1/N of every parameter. Building the full model on every rank and
letting `deepspeed.initialize` partition it afterwards costs a full fp32 copy per rank (about
36 GB of host RAM per rank for an 8B build). Here instead:

1. the skeleton is built under `deepspeed.zero.Init` with weight init switched off, so each
   parameter is cast to the training dtype and partitioned as soon as its module exists;
2. weights are read from the checkpoint's safetensors by rank 0 alone, one module at a time:
   the module's parameters are gathered, rank 0 copies the tensors in, and leaving the gather
   broadcasts them and keeps each rank's partition (`GatheredParameters(modifier_rank=0)`).

A size config (`model.config`: random init, or pretrained backbones) is built once, by rank 0,
exactly as a one-process run builds it, written to `<run_dir>/.zero3-init/` in the training
dtype and loaded as above (then removed), so a ZeRO-3 run starts from the weights any other
run starts from. At scale, write that folder once with `magma model init` and train from it
(`model.checkpoint`).
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch

INIT_DIR = ".zero3-init"


def weight_files(folder: Path) -> dict[str, Path]:
    """Parameter name -> the safetensors file holding it (single file or sharded index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open
    single = folder / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    with safe_open(str(single), framework="pt") as f:
        return {k: single for k in f.keys()}


@contextlib.contextmanager
def _open_all(files: set[Path]) -> Iterator[dict[Path, Any]]:
    from safetensors import safe_open
    with contextlib.ExitStack() as stack:
        yield {p: stack.enter_context(safe_open(str(p), framework="pt")) for p in files}


def zero3_skeleton(config: Any, ds_config: dict[str, Any], dtype: torch.dtype) -> torch.nn.Module:
    """A MagmaForCausalLM whose parameters are partitioned ZeRO-3 placeholders (no values)."""
    import deepspeed
    from transformers.initialization import no_init_weights

    from magma.modeling_magma import MagmaForCausalLM

    # The dtype comes from ds_config's bf16 section: zero.Init ignores `dtype=` when the
    # accelerator lacks fp16 (CPU), so it is checked instead of passed.
    with no_init_weights(), deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = MagmaForCausalLM(config)
    wrong = {p.dtype for p in model.parameters()} - {dtype}
    if wrong:
        raise ValueError(f"ZeRO-3 built {wrong} parameters, the run loads {dtype}: precision and the "
                         "DeepSpeed config's bf16 section disagree")
    model.tie_weights()  # no_init_weights skips post_init's tying as well
    return model


def load_sharded(model: torch.nn.Module, folder: Path) -> None:
    """Fills a ZeRO-3 skeleton from `folder`'s safetensors; only rank 0 reads the files.
    Collective: every rank calls it. A parameter missing from the files is an error."""
    import deepspeed
    import torch.distributed as dist

    is_main = dist.get_rank() == 0
    where = weight_files(folder) if is_main else {}
    names = {id(p): n for n, p in model.named_parameters()}  # first name of a tied parameter
    if is_main:
        missing = sorted(n for n in names.values() if n not in where)
        problem = f"{folder}: weights missing for {missing[:5]}" if missing else ""
    else:
        problem = ""
    box = [problem]
    dist.broadcast_object_list(box, src=0)
    if box[0]:
        raise ValueError(box[0] + " (not a checkpoint of this model; rewrite it with `magma model init`)")
    seen: set[int] = set()
    with _open_all(set(where.values())) as handles, torch.no_grad():
        for module in model.modules():
            params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            if not params:
                continue
            seen.update(id(p) for p in params)
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                if is_main:
                    for p in params:
                        name = names[id(p)]
                        p.data.copy_(handles[where[name]].get_tensor(name))


def local_share(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this rank holds, elements of the whole model) over ZeRO-3 parameters."""
    local = sum(p.ds_tensor.numel() for p in model.parameters() if hasattr(p, "ds_tensor"))
    total = sum(p.ds_numel for p in model.parameters() if hasattr(p, "ds_numel"))
    return local, total


def load_zero3(folder: str | Path, ds_config: dict[str, Any], dtype: torch.dtype):
    """(partitioned model in train mode, processor, action stats) from a checkpoint folder."""
    import magma
    magma.register()  # the Auto classes must know our architecture before loading
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    from magma.action_tokenizer import ACTION_STATS_FILE, load_action_stats
    from magma.checkpoint import verify_checkpoint

    folder = Path(folder)
    verify_checkpoint(folder)
    config = AutoConfig.from_pretrained(folder)
    model = zero3_skeleton(config, ds_config, dtype)
    load_sharded(model, folder)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    stats = load_action_stats(folder) if (folder / ACTION_STATS_FILE).is_file() else {}
    return model, processor, stats


def build_zero3(spec_path: str, seed: int, scratch: Path, ds_config: dict[str, Any], dtype: torch.dtype):
    """A size config under ZeRO-3: rank 0 builds it (the one-process weights), writes it to
    `scratch`, every rank loads it partitioned; `scratch` is removed afterwards."""
    import torch.distributed as dist

    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    error: Exception | None = None
    if dist.get_rank() == 0:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            model, processor = build_model(spec_path, seed=seed, dtype=dtype)
            save_checkpoint(model, processor, scratch)
            del model
        except Exception as exc:  # the other ranks wait below: tell them, then fail alike
            error = exc
    # The other ranks skipped the build: give them rank 0's RNG state (LoRA init, dropout).
    box = [torch.get_rng_state(), None if error is None else f"{type(error).__name__}: {error}"]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[1] is not None:
        raise RuntimeError(f"rank 0 could not build {spec_path}: {box[1]}")
    torch.set_rng_state(box[0])
    try:
        return load_zero3(scratch, ds_config, dtype)
    finally:
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(scratch, ignore_errors=True)
