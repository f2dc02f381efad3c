"""Random "pretrained" backbones written with transformers itself (import as `fake_backbones`).

- `write_llama_folder` / `write_qwen2_folder`: tiny `LlamaForCausalLM` / `Qwen2ForCausalLM`
  folders (`save_pretrained`, head_dim 32 so vLLM's CPU attention can run them) holding the
  Llama-3-style / ChatML tokenizer of `fake_tokenizers`. The Qwen2 one ties its embeddings and
  pads its vocabulary past the tokenizer, as the published Qwen2 models do.
- `write_convnext_folder`: a `ConvNextModel` folder with a `preprocessor_config.json`.
- `write_open_clip_convnext_file`: an open_clip CLIP checkpoint (`visual.trunk.*` ConvNeXt,
  `visual.head.proj`, a few text-tower keys) made from a random `ConvNextModel` by renaming
  its keys to timm's names. The renaming table below is written from timm's module layout
  (timm/models/convnext.py: `stem` Sequential(conv, norm), `stages.N.downsample`
  Sequential(norm, conv), `stages.N.blocks.M.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}`,
  `head.norm`) and open_clip's `TimmModel` (`trunk`, `head.proj`), not from magma's map;
  `OPEN_CLIP_CONVNEXT_XXLARGE_KEYS` lists real names of laion's CLIP-convnext_xxlarge
  (open_clip config `convnext_xxlarge`, the tower Magma-8B uses) to hold the fixture to.

Every tensor is random (layer scale and norms too), so a wrong mapping changes the outputs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

import fake_tokenizers

# Real state-dict names (and shapes) of open_clip's `convnext_xxlarge` CLIP model
# (hf-hub:laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg; timm convnext_xxlarge trunk:
# depths 3-4-30-3, widths 384-768-1536-3072; embed_dim 1024, linear projection without bias).
OPEN_CLIP_CONVNEXT_XXLARGE_KEYS: dict[str, tuple[int, ...]] = {
    "visual.trunk.stem.0.weight": (384, 3, 4, 4),
    "visual.trunk.stem.0.bias": (384,),
    "visual.trunk.stem.1.weight": (384,),
    "visual.trunk.stem.1.bias": (384,),
    "visual.trunk.stages.0.blocks.0.gamma": (384,),
    "visual.trunk.stages.0.blocks.0.conv_dw.weight": (384, 1, 7, 7),
    "visual.trunk.stages.0.blocks.0.conv_dw.bias": (384,),
    "visual.trunk.stages.0.blocks.0.norm.weight": (384,),
    "visual.trunk.stages.0.blocks.0.norm.bias": (384,),
    "visual.trunk.stages.0.blocks.0.mlp.fc1.weight": (1536, 384),
    "visual.trunk.stages.0.blocks.0.mlp.fc1.bias": (1536,),
    "visual.trunk.stages.0.blocks.0.mlp.fc2.weight": (384, 1536),
    "visual.trunk.stages.0.blocks.0.mlp.fc2.bias": (384,),
    "visual.trunk.stages.1.downsample.0.weight": (384,),
    "visual.trunk.stages.1.downsample.0.bias": (384,),
    "visual.trunk.stages.1.downsample.1.weight": (768, 384, 2, 2),
    "visual.trunk.stages.1.downsample.1.bias": (768,),
    "visual.trunk.stages.1.blocks.3.gamma": (768,),
    "visual.trunk.stages.2.blocks.29.mlp.fc2.weight": (1536, 6144),
    "visual.trunk.stages.3.downsample.1.weight": (3072, 1536, 2, 2),
    "visual.trunk.stages.3.blocks.2.conv_dw.weight": (3072, 1, 7, 7),
    "visual.trunk.head.norm.weight": (3072,),
    "visual.trunk.head.norm.bias": (3072,),
    "visual.head.proj.weight": (1024, 3072),
}
XXLARGE_DEPTHS, XXLARGE_WIDTHS = [3, 4, 30, 3], [384, 768, 1536, 3072]

# transformers ConvNextModel name -> timm ConvNeXt name (regex, replacement), per timm's layout.
_HF_TO_TIMM = [
    (r"embeddings\.patch_embeddings\.", "stem.0."),
    (r"embeddings\.layernorm\.", "stem.1."),
    (r"encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.", r"stages.\1.downsample.\2."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.", r"stages.\1.blocks.\2.conv_dw."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.", r"stages.\1.blocks.\2.norm."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv1\.", r"stages.\1.blocks.\2.mlp.fc1."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv2\.", r"stages.\1.blocks.\2.mlp.fc2."),
    (r"encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter$", r"stages.\1.blocks.\2.gamma"),
    (r"^layernorm\.", "head.norm."),
]


def timm_name(hf_name: str) -> str:
    for pattern, repl in _HF_TO_TIMM:
        new, n = re.subn(pattern, repl, hf_name)
        if n:
            return new
    raise KeyError(f"no timm name for {hf_name}")


# ------------------------------------------------------------------------------------ LMs


def _save_lm(model, tokenizer, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fake_tokenizers.save(tokenizer, folder)
    return folder


def write_llama_folder(folder: str | Path, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (2 layers, hidden 64, 2 heads of 32, GQA 1 kv head) with the
    Llama-3-style tokenizer; vocab_size = the tokenizer's size (as Llama-3's)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = fake_tokenizers.llama3_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         rope_theta=500000.0, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return _save_lm(LlamaForCausalLM(config).eval(), tok, Path(folder))


def write_qwen2_folder(folder: str | Path, seed: int = 0, vocab_padding: int = 13) -> Path:
    """A random Qwen2ForCausalLM (tied embeddings, qkv bias) with the ChatML tokenizer; its
    vocabulary is `vocab_padding` rows larger than the tokenizer (Qwen2's are padded too)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = fake_tokenizers.qwen2_tokenizer()
    config = Qwen2Config(vocab_size=len(tok) + vocab_padding, hidden_size=64, intermediate_size=160,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    return _save_lm(Qwen2ForCausalLM(config).eval(), tok, Path(folder))


# ------------------------------------------------------------------------------------ ConvNeXt


def random_convnext(depths=(2, 2, 2, 2), hidden_sizes=(16, 32, 48, 64), seed: int = 0, layer_scale: bool = True):
    """A ConvNextModel whose every tensor is random (gamma and norms included)."""
    from transformers import ConvNextConfig, ConvNextModel

    config = ConvNextConfig(depths=list(depths), hidden_sizes=list(hidden_sizes), num_stages=len(depths),
                            layer_scale_init_value=1e-6 if layer_scale else 0.0)
    torch.manual_seed(seed)
    model = ConvNextModel(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale_parameter"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    return model


def write_convnext_folder(folder: str | Path, seed: int = 0,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> tuple[Path, object]:
    """(folder, the source ConvNextModel): `save_pretrained` plus a preprocessor_config.json."""
    folder = Path(folder)
    model = random_convnext(seed=seed)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ConvNextImageProcessor", "image_mean": list(mean), "image_std": list(std)}))
    return folder, model


def open_clip_state_dict(model, embed_dim: int = 24) -> dict[str, torch.Tensor]:
    """The state dict an open_clip CLIP model with this ConvNeXt trunk would save."""
    state = {"visual.trunk." + timm_name(k): v.clone() for k, v in model.state_dict().items()}
    width = model.config.hidden_sizes[-1]
    g = torch.Generator().manual_seed(1)
    state["visual.head.proj.weight"] = torch.randn(embed_dim, width, generator=g)
    # A few text-tower keys: a whole CLIP checkpoint holds them beside the visual tower.
    state["positional_embedding"] = torch.randn(77, embed_dim, generator=g)
    state["token_embedding.weight"] = torch.randn(100, embed_dim, generator=g)
    state["ln_final.weight"] = torch.ones(embed_dim)
    state["text_projection"] = torch.randn(embed_dim, embed_dim, generator=g)
    state["logit_scale"] = torch.tensor(4.6)
    return state


def write_open_clip_convnext_file(path: str | Path, seed: int = 0, model=None) -> tuple[Path, object]:
    """(file, the source ConvNextModel): an open_clip-named `.safetensors` (or `.bin`/`.pt`) file."""
    from safetensors.torch import save_file

    path = Path(path)
    model = model if model is not None else random_convnext(seed=seed)
    state = {k: v.contiguous() for k, v in open_clip_state_dict(model).items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path, model
