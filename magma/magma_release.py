"""Convert a checkpoint in the layout of the public Magma-8B release (microsoft/Magma-8B).

A release folder holds `config.json`, `model*.safetensors` (+ index), `preprocessor_config.json`
and the tokenizer files. Its weights are three modules:

    vision_tower.clip_vision_model.trunk.*    an open_clip / timm ConvNeXt (magma.convnext_keys)
    vision_tower.clip_vision_model.head.*     the CLIP projection head: unused for dense features
    multi_modal_projector.proj.{0,2}.*        Linear - GELU - Linear (Linear alone: `proj.0`)
    multi_modal_projector.row_seperator       [1, 1, D]: the learnt vector that ends each feature row
    multi_modal_projector.img_{start,end}_seperator   defined by the release, never used in its forward
    language_model.*                          a Hugging Face causal LM (Llama-3-8B), our names too

Everything is read from the folder: the LM's config from `config.json` (`text_config`), the
tower's sizes from the weights' shapes, the crop grid and normalisation from
`preprocessor_config.json`. The checkpoint written keeps the release's behaviour:

- tokenizer and vocabulary: the release's own files; every id unchanged, the embedding matrix
  as large as the release's (Magma-8B pads it beyond the tokenizer to a multiple of 64);
- actions: the `reuse_last` scheme on the last 256 ids of the base vocabulary
  (`tokenizer.vocab_size - 256` ..), highest id = lowest bin, with the release's `openvla`
  binning (id `vocab_size - digitize(a, linspace(-1, 1, 256))`, decoded to the 255 edge
  midpoints, clipped at 254), as the release's agents encode and decode;
- images: CLIP mean/std, the release's crop grid and row-major crop order (`crop_strategy="grid"`,
  no global view) and the learnt row separator (`MagmaConfig.row_separator`);
- prompts: the release's chat template; `release_prompt` renders its documented prompt.

Dropped, and reported: the CLIP projection head and the two image start/end vectors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from magma.action_tokenizer import N_ACTION_BINS, ActionStats
from magma.config_io import ConfigError
from magma.convnext_keys import (TRUNK_PREFIXES, convnext_config_from_state, split_trunk_state_dict,
                                 timm_norm_eps)

__all__ = ["RELEASE_SYSTEM_PROMPT", "ReleaseFolder", "convert_dataset_statistics", "convert_magma_release",
           "map_release_state_dict", "read_release_folder", "release_magma_config", "release_prompt"]

TRUNK = TRUNK_PREFIXES["magma_release"]  # vision_tower.clip_vision_model.trunk.
_TOWER_HEAD = "vision_tower.clip_vision_model.head."
_PROJ = "multi_modal_projector."
_ROW_SEP = _PROJ + "row_seperator"  # the release's spelling
_UNUSED = (_PROJ + "img_start_seperator", _PROJ + "img_end_seperator")

# The release's documented prompt (model card, lmms-eval and SimplerEnv agents): this system
# turn, then the user turn with one image placeholder per image (wrapped in start/end tokens
# when config.json says `mm_use_image_start_end`) and a newline before the text.
RELEASE_SYSTEM_PROMPT = "You are agent that can see, talk and act."
IMAGE_START, IMAGE_END = "<image_start>", "<image_end>"

# timm definitions by the name the release's config gives its tower (`vision_backbone`).
_BACKBONE_EPS = {"convnextxxlarge": 1e-5}


@dataclass
class ReleaseFolder:
    """What a release folder says about itself (nothing converted yet)."""

    path: Path
    config: dict[str, Any]
    text_config: dict[str, Any]
    vision: dict[str, Any]
    preprocessor: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    files: list[Path] = field(default_factory=list)

    @property
    def image_token_id(self) -> int:
        tid = self.config.get("image_token_index", self.config.get("image_token_id"))
        if not isinstance(tid, int):
            raise ConfigError("no integer image_token_index", file=self.path / "config.json",
                              fix="a Magma release config names the id of <image> there")
        return tid

    @property
    def image_start_end(self) -> bool:
        return bool(self.config.get("mm_use_image_start_end", self.vision.get("mm_use_image_start_end", False)))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"missing ({what})", file=path,
                          fix="point convert-magma at a folder in the Magma-8B release layout") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON ({exc})", file=path) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", file=path)
    return data


def _weight_files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index, "the shard index").get("weight_map", {}).values()))
        files = [src / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ConfigError(f"lists shards that are not in the folder: {missing[:3]}", file=index,
                              fix="download every model-*.safetensors file of the release")
        return files
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ConfigError("no *.safetensors weights", file=src,
                          fix="the release's model-0000N-of-0000M.safetensors files belong in this folder")
    return files


def _weight_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from the safetensors headers (no weights are read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    shapes[key] = tuple(st.get_slice(key).get_shape())
        except Exception as exc:
            raise ConfigError(f"not a readable safetensors file ({exc})", file=f) from None
    return shapes


def read_release_folder(src: str | Path) -> ReleaseFolder:
    """Configs and weight shapes of a release folder; ConfigError naming the file otherwise."""
    src = Path(src)
    if not src.is_dir():
        raise ConfigError("not a local folder", file=src,
                          fix="download microsoft/Magma-8B (e.g. `huggingface-cli download microsoft/Magma-8B "
                              "--local-dir DIR`) and pass DIR; nothing is downloaded here")
    config = _read_json(src / "config.json", "the release's model config")
    text = config.get("text_config")
    if text is None:
        text = _top_level_text_config(config)
    if not isinstance(text, dict) or "hidden_size" not in text:
        raise ConfigError("no text_config object (nor the language model's fields at the top level)",
                          file=src / "config.json",
                          fix="a Magma release config.json carries its language model's config under text_config")
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ConfigError("no vision_config object", file=src / "config.json",
                          fix="a Magma release config.json describes its tower under vision_config")
    pre_path = src / "preprocessor_config.json"
    preprocessor = _read_json(pre_path, "the release's image processor config") if pre_path.is_file() else {}
    files = _weight_files(src)
    return ReleaseFolder(path=src, config=config, text_config=dict(text), vision=dict(vision),
                         preprocessor=preprocessor, shapes=_weight_shapes(files), files=files)


def _top_level_text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The release's MagmaConfig copies its text config's fields to the top level: read them
    there when `text_config` is absent (a Llama config's keys only)."""
    from transformers import CONFIG_MAPPING

    model_type = "llama"
    known = set(CONFIG_MAPPING[model_type]().to_dict()) | {"rope_theta", "rope_scaling"}
    return {"model_type": model_type, **{k: v for k, v in config.items() if k in known and k != "model_type"}}


def _meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def map_release_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Release names -> ours (magma.modeling_magma), and the release keys deliberately dropped.
    A key the release layout does not define raises ConfigError (a different model)."""
    tower = {k: v for k, v in state.items() if k.startswith(TRUNK)}
    dropped = [k for k in state if k.startswith(_TOWER_HEAD) or k in _UNUSED]
    split = split_trunk_state_dict(tower)
    if split is None:
        raise ConfigError(f"no ConvNeXt trunk under {TRUNK!r} (no {TRUNK}stem.0.weight)",
                          fix="convert-magma reads the Magma-8B release layout only")
    if split.unknown:
        raise ConfigError(f"vision weights the ConvNeXt map does not know: {split.unknown[:3]}",
                          fix="the release's tower is a timm ConvNeXt; other towers are not supported")
    out = {"vision_tower." + k: v for k, v in split.state.items()}
    dropped += split.dropped
    unknown = []
    for key, value in state.items():
        if key.startswith("language_model.") or key.startswith(_PROJ + "proj."):
            out[key] = value
        elif key == _ROW_SEP:
            out[_PROJ + "row_separator"] = value.reshape(-1)
        elif not (key.startswith(TRUNK) or key in dropped):
            unknown.append(key)
    if unknown:
        raise ConfigError(f"weights outside the release layout: {unknown[:3]}",
                          fix="convert-magma reads vision_tower / multi_modal_projector / language_model only")
    return out, dropped


def _check(cond: bool, problem: str, rel: ReleaseFolder, fix: str | None = None,
           file: str = "config.json") -> None:
    if not cond:
        raise ConfigError(problem, file=rel.path / file, fix=fix)


def release_magma_config(rel: ReleaseFolder):
    """Our MagmaConfig for a release folder, from its configs and weight shapes."""
    from transformers import ConvNextConfig

    from magma.configuration_magma import MagmaConfig

    shapes, vision, pre = rel.shapes, rel.vision, rel.preprocessor
    ours, _ = map_release_state_dict(_meta(shapes))
    layout = convnext_config_from_state({k[len("vision_tower."):]: v for k, v in ours.items()
                                         if k.startswith("vision_tower.")})
    # The model's strategy decides (the release's image processor always cuts crops): 'crop'
    # encodes each crop; 'global' would stitch them back and encode the whole canvas.
    strategy = vision.get("img_anyres_strategy", "crop")
    _check(strategy == "crop", f"vision_config.img_anyres_strategy {strategy!r} is not supported", rel,
           "the Magma-8B release uses 'crop' (crops encoded one by one, read as one feature map)")
    layer = vision.get("vision_feature_layer", "clip_vis_dense")
    _check(layer == "clip_vis_dense", f"vision_feature_layer {layer!r} is not supported", rel,
           "the release takes the trunk's last stage ('clip_vis_dense')")
    image_size = int(pre.get("base_img_size", vision.get("img_size", rel.config.get("img_size", 512))))
    max_crops = int(pre.get("num_crops", vision.get("max_num_crops", 1)))
    stride = layout.patch_size * 2 ** (len(layout.depths) - 1)
    _check(image_size % stride == 0, f"crop size {image_size} is not a multiple of the tower's stride {stride}",
           rel, file="preprocessor_config.json")

    p0, p2 = shapes.get(_PROJ + "proj.0.weight"), shapes.get(_PROJ + "proj.2.weight")
    text_hidden = int(rel.text_config.get("hidden_size", 0))
    _check(p0 is not None and p0 == (text_hidden, layout.hidden_sizes[-1]),
           f"projector proj.0 {p0} does not map the tower's {layout.hidden_sizes[-1]} channels to the "
           f"LM's hidden_size {text_hidden}", rel, file=rel.files[0].name)
    _check(p2 is None or p2 == (text_hidden, text_hidden), f"projector proj.2 {p2} is not {text_hidden}^2",
           rel, file=rel.files[0].name)
    row_sep = _ROW_SEP in shapes and vision.get("mm_use_row_seperator", True) is not False
    if _ROW_SEP in shapes:
        n = 1
        for d in shapes[_ROW_SEP]:
            n *= d
        _check(n == text_hidden, f"row_seperator has {n} values, not hidden_size {text_hidden}", rel,
               file=rel.files[0].name)

    text = {k: v for k, v in rel.text_config.items() if k not in ("auto_map", "_name_or_path")}
    emb = shapes.get("language_model.model.embed_tokens.weight")
    _check(emb is not None, "no language_model.model.embed_tokens.weight", rel, file=rel.files[0].name)
    vocab = int(text.get("vocab_size", emb[0]))
    _check(vocab == emb[0], f"text_config.vocab_size {vocab} but the embedding has {emb[0]} rows", rel)
    head = shapes.get("language_model.lm_head.weight")
    tied = head is None
    _check(tied or head[0] == emb[0], f"lm_head has {head and head[0]} rows, the embedding {emb[0]}", rel)
    text["tie_word_embeddings"] = tied

    backbone = str(vision.get("vision_backbone", ""))
    eps = _BACKBONE_EPS.get(backbone, timm_norm_eps(layout.depths, layout.hidden_sizes))
    conv = ConvNextConfig(depths=layout.depths, hidden_sizes=layout.hidden_sizes, patch_size=layout.patch_size,
                          num_channels=layout.num_channels, num_stages=len(layout.depths),
                          image_size=image_size, layer_scale_init_value=1e-6 if layout.layer_scale else 0.0)
    return MagmaConfig(vision_config=conv.to_dict(), text_config=text, image_token_id=rel.image_token_id,
                       image_size=image_size, max_crops=max_crops, vision_feature_stage=-1,
                       projector_type="mlp2x_gelu" if p2 is not None else "linear", projector_norm=False,
                       action_bins=N_ACTION_BINS, tie_word_embeddings=tied, row_separator=row_sep,
                       vision_norm_eps=eps)


def _release_tokenizer(rel: ReleaseFolder, config, tokenizer_dir: str | Path | None):
    from transformers import AutoTokenizer

    folder = Path(tokenizer_dir) if tokenizer_dir else rel.path
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise ConfigError("no tokenizer files (tokenizer.json, tokenizer_config.json)", file=folder,
                          fix="the release ships its tokenizer beside the weights; pass --tokenizer DIR otherwise")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    image_id = tok.convert_tokens_to_ids("<image>")
    if image_id != config.image_token_id:
        raise ConfigError(f"<image> is id {image_id} in the tokenizer but image_token_index "
                          f"{config.image_token_id} in config.json", file=folder / "tokenizer.json",
                          fix="use the tokenizer files of the same release")
    vocab = config.get_text_config().vocab_size
    if len(tok) > vocab:
        raise ConfigError(f"the tokenizer has {len(tok)} ids but the embedding only {vocab} rows",
                          file=folder / "tokenizer.json", fix="use the tokenizer files of the same release")
    if tok.vocab_size < N_ACTION_BINS:
        raise ConfigError(f"base vocabulary of {tok.vocab_size} ids cannot hold {N_ACTION_BINS} action bins",
                          file=folder / "tokenizer.json")
    return tok


def _build_processor(rel: ReleaseFolder, config, tok):
    from magma.image_processing_magma import CLIP_MEAN, CLIP_STD, MagmaImageProcessor
    from magma.processing_magma import MagmaProcessor

    pre = rel.preprocessor
    image_processor = MagmaImageProcessor(
        image_size=config.image_size, max_crops=config.max_crops, crop_strategy="grid",
        image_mean=tuple(pre.get("image_mean", CLIP_MEAN)), image_std=tuple(pre.get("image_std", CLIP_STD)))
    if tok.chat_template is None:
        raise ConfigError("the tokenizer has no chat template", file=rel.path / "tokenizer_config.json",
                          fix="the release's tokenizer_config.json carries its Llama-3 chat template")
    # The release's processor calls `tokenizer(text)`: the tokenizer's own bos comes before the
    # chat template's (Llama-3: two), in its training as in its serving; we keep that.
    return MagmaProcessor(image_processor, tok, tokens_per_view=config.tokens_per_view,
                          chat_template=tok.chat_template, eot_token=tok.eos_token,
                          action_tokens="reuse_last", action_token_start=tok.vocab_size - N_ACTION_BINS,
                          action_binning="openvla",
                          row_separator=config.row_separator, add_special_tokens=True)


def _load_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _cross_check(config, spec_path: str | Path) -> None:
    """Architecture shapes a size config states must agree with the release's (--config)."""
    from magma.model_config import load_model_spec

    spec = load_model_spec(spec_path)
    text, vis = config.get_text_config(), config.vision_config
    pairs = [("vision.depths", list(spec.vision.depths or []) or None, vis.depths),
             ("vision.hidden_sizes", list(spec.vision.hidden_sizes or []) or None, vis.hidden_sizes),
             ("image_size", spec.image_size, config.image_size), ("max_crops", spec.max_crops, config.max_crops)]
    # Not the vocabulary: the release's tokenizer and embedding decide it, whatever its size.
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads"):
        pairs.append((f"text.{key}", getattr(spec.text, key, None), getattr(text, key, None)))
    for key, want, have in pairs:
        if want is not None and want != have:
            raise ConfigError(f"{key} is {want} but the release has {have}", file=spec_path,
                              fix="drop --config (sizes come from the release) or fix the size config")


def _floats(entry: dict[str, Any], key: str, default: list[float]) -> list[float]:
    return [float(v) for v in entry.get(key, default)]


def convert_dataset_statistics(path: str | Path) -> dict[str, ActionStats]:
    """OpenVLA-style `dataset_statistics.json` (the release's fine-tuned agents) -> ours.

    A dimension the statistics' `mask` leaves unnormalised (the gripper) gets q01/q99 = -1/1, on
    which normalising and un-normalising are the identity (with the [-1, 1] clip both apply),
    exactly as the release passes those values through."""
    raw = _read_json(Path(path), "action statistics")
    out: dict[str, ActionStats] = {}
    for name, entry in raw.items():
        act = entry.get("action") if isinstance(entry, dict) else None
        if not isinstance(act, dict) or "q01" not in act or "q99" not in act:
            continue
        mask = act.get("mask", [True] * len(act["q01"]))
        q01 = [float(v) if m else -1.0 for v, m in zip(act["q01"], mask)]
        q99 = [float(v) if m else 1.0 for v, m in zip(act["q99"], mask)]
        n = len(q01)
        out[name] = ActionStats(q01=q01, q99=q99, mean=_floats(act, "mean", [0.0] * n),
                                std=_floats(act, "std", [1.0] * n), min=_floats(act, "min", q01),
                                max=_floats(act, "max", q99), count=int(entry.get("num_transitions", 0)))
    return out


def convert_magma_release(src: str | Path, out: str | Path, config_path: str | Path | None = None,
                          tokenizer_dir: str | Path | None = None, log=print) -> Path:
    """Rewrite a release folder as one of our checkpoint folders; returns `out`.

    `config_path`: an optional size config whose stated shapes must agree with the release's."""
    from magma.checkpoint import save_checkpoint
    from magma.modeling_magma import MagmaForCausalLM

    rel = read_release_folder(src)
    config = release_magma_config(rel)
    if config_path is not None:
        _cross_check(config, config_path)
    tok = _release_tokenizer(rel, config, tokenizer_dir)
    processor = _build_processor(rel, config, tok)
    state, dropped = map_release_state_dict(_load_weights(rel.files))
    with torch.device("meta"):
        model = MagmaForCausalLM(config)
    expected = set(model.state_dict())
    tied = {"language_model.lm_head.weight"} if config.tie_word_embeddings else set()
    missing, unexpected = sorted(expected - set(state) - tied), sorted(set(state) - expected)
    if missing or unexpected:
        raise ConfigError(f"converted weights do not fit the model: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]}", file=rel.path)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.eval()
    _set_generation(model, processor, rel)
    stats_file = rel.path / "dataset_statistics.json"
    stats = convert_dataset_statistics(stats_file) if stats_file.is_file() else {}
    if dropped:
        log(f"convert-magma: left out {len(dropped)} release weights its forward does not use "
            f"(e.g. {dropped[0]})")
    return save_checkpoint(model, processor, out, action_stats=stats)


def _set_generation(model, processor, rel: ReleaseFolder) -> None:
    gen = rel.path / "generation_config.json"
    release = _read_json(gen, "generation config") if gen.is_file() else {}
    tok = processor.tokenizer
    model.generation_config.eos_token_id = processor.eot_token_id
    model.generation_config.pad_token_id = release.get("pad_token_id", tok.pad_token_id)
    model.generation_config.bos_token_id = release.get("bos_token_id", tok.bos_token_id)


def release_prompt(processor, text: str, n_images: int = 1, image_start_end: bool = True,
                   system: str | None = RELEASE_SYSTEM_PROMPT) -> str:
    """The release's documented prompt for one user turn, through the checkpoint's chat
    template: system turn, then per image `<image>` (inside `<image_start>`/`<image_end>` when the
    release's config says `mm_use_image_start_end`) and a newline, then `text`."""
    image = f"{IMAGE_START}<image>{IMAGE_END}" if image_start_end else "<image>"
    content = (image + "\n") * n_images + text if n_images else text
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
