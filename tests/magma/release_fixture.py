"""A tiny random folder in the layout of the public Magma-8B release, and an independent
reference of the release's forward, written from its published code (microsoft/Magma:
magma/image_processing_magma.py, image_tower_magma.py, modeling_magma.py; the HF model card).

Same key names, config fields and file set as microsoft/Magma-8B, tiny sizes:

- tokenizer: Llama-3 layout (tests/fake_tokenizers.py) plus `<pad>` then `<image>` (the release's
  converter adds them in that order: image_token_index = pad + 1), and `<image_start>` /
  `<image_end>`; the embedding padded to a multiple of 64 rows, beyond the tokenizer;
- vision_tower.clip_vision_model.trunk.*: a timm ConvNeXt whose layer scale is stored as
  `blocks.N.weight` (as in the release's safetensors), its head.norm, and the CLIP head.proj;
- multi_modal_projector.proj.{0,2}, row_seperator [1, 1, D], img_{start,end}_seperator;
- language_model.*: a Llama causal LM; two shards with a model.safetensors.index.json.

Nothing here imports magma's converter: the reference computes what the release computes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # the release's preprocessor_config.json
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TRUNK = "vision_tower.clip_vision_model.trunk."
DEPTHS, DIMS = [1, 1, 2, 1], [8, 16, 24, 32]
HIDDEN = 128  # 2 heads of 64 (vLLM's CPU attention), 1 key-value head (grouped queries as in Llama-3)
BASE = 64  # base_img_size: a crop gives 2 x 2 feature cells (stride 32)
CROPS = 4
TIMM_XXLARGE_EPS = 1e-5  # timm convnext_xxlarge norm_eps (the release's vision_backbone)
SYSTEM = "You are agent that can see, talk and act."  # the model card's system turn


def release_tokenizer():
    from fake_tokenizers import llama3_tokenizer

    tok = llama3_tokenizer(600)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_tokens(["<image>"], special_tokens=True)
    tok.add_tokens(["<image_start>", "<image_end>"], special_tokens=True)
    return tok


def _text_config(vocab: int, tok) -> dict:
    return {"_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "architectures": ["LlamaForCausalLM"],
            "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "hidden_act": "silu", "hidden_size": HIDDEN,
            "initializer_range": 0.02, "intermediate_size": 256, "max_position_embeddings": 8192,
            "mlp_bias": False, "model_type": "llama", "num_attention_heads": 2, "num_hidden_layers": 2,
            "num_key_value_heads": 1, "pad_token_id": tok.pad_token_id, "pretraining_tp": 1,
            "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.44.2",
            "use_cache": True, "vocab_size": vocab}


def _trunk_weights(g: torch.Generator) -> dict[str, torch.Tensor]:
    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    w = {"stem.0.weight": r(DIMS[0], 3, 4, 4), "stem.0.bias": r(DIMS[0]),
         "stem.1.weight": 1 + r(DIMS[0]), "stem.1.bias": r(DIMS[0])}
    for s, (depth, dim) in enumerate(zip(DEPTHS, DIMS)):
        if s:
            w[f"stages.{s}.downsample.0.weight"] = 1 + r(DIMS[s - 1])
            w[f"stages.{s}.downsample.0.bias"] = r(DIMS[s - 1])
            w[f"stages.{s}.downsample.1.weight"] = r(dim, DIMS[s - 1], 2, 2)
            w[f"stages.{s}.downsample.1.bias"] = r(dim)
        for b in range(depth):
            p = f"stages.{s}.blocks.{b}."
            w.update({p + "conv_dw.weight": r(dim, 1, 7, 7), p + "conv_dw.bias": r(dim),
                      p + "norm.weight": 1 + r(dim), p + "norm.bias": r(dim),
                      p + "mlp.fc1.weight": r(4 * dim, dim), p + "mlp.fc1.bias": r(4 * dim),
                      p + "mlp.fc2.weight": r(dim, 4 * dim), p + "mlp.fc2.bias": r(dim),
                      p + "weight": 0.5 + r(dim)})  # layer scale, saved as `weight` by the release
    w["head.norm.weight"], w["head.norm.bias"] = 1 + r(DIMS[-1]), r(DIMS[-1])
    return w


def write_release_folder(folder: Path, seed: int = 0) -> Path:
    """Write the fixture release folder; returns it."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = release_tokenizer()
    tok.save_pretrained(folder)
    vocab = math.ceil(len(tok) / 64) * 64  # resize_token_embeddings(pad_to_multiple_of=64)
    text = _text_config(vocab, tok)
    vision = {"img_anyres_strategy": "crop", "img_size": BASE, "max_num_crops": CROPS,
              "mm_hidden_size": DIMS[-1], "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False,
              "mm_use_im_start_end": True, "vision_backbone": "convnextxxlarge",
              "vision_feature_layer": "clip_vis_dense", "hidden_size": HIDDEN}
    config = {"_name_or_path": "microsoft/Magma-8B", "architectures": ["MagmaForCausalLM"],
              "auto_map": {"AutoConfig": "microsoft/Magma-8B--configuration_magma.MagmaConfig",
                           "AutoModelForCausalLM": "microsoft/Magma-8B--modeling_magma.MagmaForCausalLM"},
              "image_token_index": tok.convert_tokens_to_ids("<image>"), "img_size": BASE,
              "mm_use_image_start_end": True, "model_type": "magma", "text_config": text,
              "tokenizer_vocab_size": len(tok), "torch_dtype": "bfloat16", "vision_config": vision,
              # MagmaConfig copies the text config's fields to the top level as well
              **{k: v for k, v in text.items() if k not in ("_name_or_path", "architectures", "model_type")}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoProcessor": "processing_magma.MagmaProcessor",
                     "AutoImageProcessor": "image_processing_magma.MagmaImageProcessor"},
        "anyres_strategy": "crop", "base_img_size": BASE, "do_convert_rgb": True, "image_mean": CLIP_MEAN,
        "image_processor_type": "MagmaImageProcessor", "image_std": CLIP_STD, "num_crops": CROPS,
        "processor_class": "MagmaProcessor"}, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}))

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in text.items() if k != "torch_dtype"}))
    state = {"language_model." + k: v.detach().clone() for k, v in lm.state_dict().items()}
    state.update({TRUNK + k: v for k, v in _trunk_weights(g).items()})
    state["vision_tower.clip_vision_model.head.proj.weight"] = torch.randn(16, DIMS[-1], generator=g)
    proj = "multi_modal_projector."
    state.update({proj + "proj.0.weight": torch.randn(HIDDEN, DIMS[-1], generator=g) * 0.2,
                  proj + "proj.0.bias": torch.randn(HIDDEN, generator=g) * 0.1,
                  proj + "proj.2.weight": torch.randn(HIDDEN, HIDDEN, generator=g) * 0.2,
                  proj + "proj.2.bias": torch.randn(HIDDEN, generator=g) * 0.1,
                  proj + "row_seperator": torch.randn(1, 1, HIDDEN, generator=g),
                  proj + "img_start_seperator": torch.randn(1, HIDDEN, generator=g),
                  proj + "img_end_seperator": torch.randn(1, HIDDEN, generator=g)})
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": [k for k in keys if not k.startswith("language_model.")],
              "model-00002-of-00002.safetensors": [k for k in keys if k.startswith("language_model.")]}
    for name, names in shards.items():
        save_file({k: state[k].contiguous() for k in names}, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(v.numel() * 4 for v in state.values())},
         "weight_map": {k: n for n, names in shards.items() for k in names}}, indent=2))
    return folder


def load_release_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


# ---------------------------------------------------------------- the release's computation

def best_resolution(width: int, height: int, max_crops: int = CROPS, base: int = BASE) -> tuple[int, int]:
    """image_processing_magma.select_best_resolution over its grid pinpoints: (height, width)."""
    pinpoints = [(i * base, j * base) for i in range(1, max_crops + 1) for j in range(1, max_crops // i + 1)]
    best, best_eff, best_waste = None, 0, float("inf")
    for w, h in pinpoints:
        scale = min(w / width, h / height)
        eff = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (w, h), eff, waste
    return best[1], best[0]


def release_pixels(image) -> tuple[torch.Tensor, tuple[int, int]]:
    """ToTensor + Normalize(CLIP), bilinear resize to the best resolution, unfold into crops."""
    x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    h, w = best_resolution(image.width, image.height)
    x = F.interpolate(x[None], size=(h, w), mode="bilinear")
    patches = x.unfold(2, BASE, BASE).unfold(3, BASE, BASE)
    grid = (h // BASE, w // BASE)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(grid[0] * grid[1], -1, BASE, BASE), grid


def _ln2d(x, w, b):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), w, b, TIMM_XXLARGE_EPS).permute(0, 3, 1, 2)


def trunk_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """timm ConvNeXt trunk.stem then trunk.stages ('clip_vis_dense'), norm eps of convnext_xxlarge."""
    def p(k):
        return state[TRUNK + k]

    x = _ln2d(F.conv2d(x, p("stem.0.weight"), p("stem.0.bias"), stride=4), p("stem.1.weight"), p("stem.1.bias"))
    for s, depth in enumerate(DEPTHS):
        if s:
            x = _ln2d(x, p(f"stages.{s}.downsample.0.weight"), p(f"stages.{s}.downsample.0.bias"))
            x = F.conv2d(x, p(f"stages.{s}.downsample.1.weight"), p(f"stages.{s}.downsample.1.bias"), stride=2)
        for b in range(depth):
            q = f"stages.{s}.blocks.{b}."
            y = F.conv2d(x, p(q + "conv_dw.weight"), p(q + "conv_dw.bias"), padding=3, groups=x.shape[1])
            y = y.permute(0, 2, 3, 1)
            y = F.layer_norm(y, (y.shape[-1],), p(q + "norm.weight"), p(q + "norm.bias"), TIMM_XXLARGE_EPS)
            y = F.linear(F.gelu(F.linear(y, p(q + "mlp.fc1.weight"), p(q + "mlp.fc1.bias"))),
                         p(q + "mlp.fc2.weight"), p(q + "mlp.fc2.bias"))
            x = x + (y * p(q + "weight")).permute(0, 3, 1, 2)
    return x


def image_features(state: dict[str, torch.Tensor], crops: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """modeling_magma 'crop' strategy: tower, projector, crops joined into one map, row separator."""
    f = trunk_forward(state, crops).permute(0, 2, 3, 1)
    pj = "multi_modal_projector."
    f = F.linear(F.gelu(F.linear(f, state[pj + "proj.0.weight"], state[pj + "proj.0.bias"])),
                 state[pj + "proj.2.weight"], state[pj + "proj.2.bias"])
    f = f.view(grid[0], grid[1], *f.shape[1:]).permute(0, 2, 1, 3, 4).flatten(2, 3).flatten(0, 1)
    f = torch.cat([f, state[pj + "row_seperator"].repeat(f.shape[0], 1, 1)], dim=1)
    return f.flatten(0, 1)


def release_input_ids(tok, prompt: str) -> list[int]:
    """The release's processor: `tokenizer(text)`, one `<image>` id per image (no expansion)."""
    return tok(prompt)["input_ids"]


def release_logits(folder: Path, tok, prompt: str, image) -> tuple[torch.Tensor, list[int]]:
    """(logits [L, vocab] float, the merged sequence as ids with each <image> expanded) for one
    image and one unpadded prompt, the way MagmaForCausalLM.forward merges and runs the LM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((Path(folder) / "config.json").read_text())
    state = load_release_state(folder)
    text = {k: v for k, v in config["text_config"].items() if k != "torch_dtype"}
    lm = LlamaForCausalLM(LlamaConfig(**text)).eval()
    lm.load_state_dict({k[len("language_model."):]: v for k, v in state.items() if k.startswith("language_model.")})
    ids = torch.tensor(release_input_ids(tok, prompt))
    image_id = config["image_token_index"]
    crops, grid = release_pixels(image)
    with torch.no_grad():
        feats = image_features(state, crops, grid)
        safe = ids.clone()
        safe[ids == image_id] = 0
        emb = lm.get_input_embeddings()(safe)
        at = int((ids == image_id).nonzero()[0])
        merged = torch.cat([emb[:at], feats, emb[at + 1:]])[None]
        logits = lm(inputs_embeds=merged).logits[0].float()
    expanded = ids[:at].tolist() + [image_id] * feats.shape[0] + ids[at + 1:].tolist()
    return logits, expanded
