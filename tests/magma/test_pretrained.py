"""`text.pretrained` / `vision.pretrained`: `magma model init` from random "pretrained" backbones
written by transformers itself (tests/fake_backbones.py), and one error per bad input."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from fake_backbones import (OPEN_CLIP_CONVNEXT_XXLARGE_KEYS, XXLARGE_DEPTHS, XXLARGE_WIDTHS, random_convnext,
                            write_convnext_folder, write_llama_folder, write_open_clip_convnext_file,
                            write_qwen2_folder)
from PIL import Image

from magma.config_io import ConfigError
from magma.image_processing_magma import CLIP_MEAN, CLIP_STD


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    convnext_dir, convnext = write_convnext_folder(root / "convnext")
    clip_file, clip_tower = write_open_clip_convnext_file(root / "open_clip_convnext.safetensors", seed=1)
    return {"llama": write_llama_folder(root / "llama"), "qwen2": write_qwen2_folder(root / "qwen2"),
            "convnext_dir": convnext_dir, "convnext": convnext, "clip_file": clip_file, "clip_tower": clip_tower}


def write_spec(path, text: dict, vision: dict, **extra):
    spec = {"name": "from-pretrained-test", "image_size": 64, "text": text, "vision": vision, **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


def init(spec_path, out) -> int:
    from magma.model_cli import main
    return main(["init", "--config", str(spec_path), "--out", str(out)])


CASES = {"llama+open_clip_file": ("llama", "clip_file", "clip_tower"),
         "qwen2+convnext_folder": ("qwen2", "convnext_dir", "convnext")}


@pytest.fixture(scope="module", params=list(CASES))
def initialised(request, sources, tmp_path_factory):
    lm_key, vision_key, tower_key = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    spec = write_spec(root / "spec.yaml", {"pretrained": str(sources[lm_key])},
                      {"pretrained": str(sources[vision_key])})
    assert init(spec, root / "ckpt") == 0
    from magma.checkpoint import load_checkpoint
    model, processor, _ = load_checkpoint(root / "ckpt")
    return request.param, model, processor, sources[lm_key], sources[tower_key]


def _source_lm_and_tokenizer(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(folder))


def test_text_only_logits_are_the_source_lms(initialised):
    _, model, _, lm_dir, _ = initialised
    src, src_tok = _source_lm_and_tokenizer(lm_dir)
    n = len(src_tok)
    ids = torch.randint(0, n, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = src(input_ids=ids).logits
    torch.testing.assert_close(ours[..., :n], theirs[..., :n], atol=1e-5, rtol=0)
    emb, src_emb = model.get_input_embeddings().weight, src.get_input_embeddings().weight
    assert emb.shape[0] >= src_emb.shape[0]
    torch.testing.assert_close(emb[:n], src_emb[:n], atol=0, rtol=0)


def test_new_token_rows_start_at_the_source_mean(initialised):
    _, model, processor, lm_dir, _ = initialised
    src, src_tok = _source_lm_and_tokenizer(lm_dir)
    n, total = len(src_tok), len(processor.tokenizer)
    assert total > n  # at least <image> and the action tokens were added
    for ours, theirs in ((model.get_input_embeddings().weight, src.get_input_embeddings().weight),
                         (model.get_output_embeddings().weight, src.get_output_embeddings().weight)):
        mean = theirs[:n].mean(0)
        torch.testing.assert_close(ours[n:total], mean.expand(total - n, -1), atol=1e-6, rtol=0)


def test_source_token_ids_are_unchanged_and_the_tokenizer_is_the_lms(initialised):
    _, _, processor, lm_dir, _ = initialised
    _, src_tok = _source_lm_and_tokenizer(lm_dir)
    tok = processor.tokenizer
    for token, i in src_tok.get_vocab().items():
        assert tok.convert_tokens_to_ids(token) == i
    text = "Click on the red button at (12,345)."
    assert tok(text, add_special_tokens=False)["input_ids"] == src_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<image>") >= len(src_tok)


def test_end_of_turn_and_pad_are_resolved_from_the_tokenizer(initialised):
    case, model, processor, lm_dir, _ = initialised
    _, src_tok = _source_lm_and_tokenizer(lm_dir)
    tok, gen = processor.tokenizer, model.generation_config
    eot, pad = ("<|eot_id|>", "<pad>") if case.startswith("llama") else ("<|im_end|>", "<|endoftext|>")
    assert gen.eos_token_id == tok.convert_tokens_to_ids(eot) == processor.eot_token_id
    assert tok.pad_token == pad and gen.pad_token_id == tok.pad_token_id
    # Llama-3 has no pad token (one is added after the source ids); Qwen2's is its own.
    assert (tok.pad_token_id >= len(src_tok)) == case.startswith("llama")


def test_vision_features_are_the_source_towers(initialised):
    _, model, _, _, tower = initialised
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.vision_tower(pixels, output_hidden_states=True)
        theirs = tower(pixels, output_hidden_states=True)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5, rtol=0)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert model.config.vision_config.depths == tower.config.depths
    assert model.config.vision_config.hidden_sizes == tower.config.hidden_sizes


def test_image_normalisation_is_the_towers(initialised):
    case, _, processor, _, _ = initialised
    ip = processor.image_processor
    if case.endswith("open_clip_file"):
        assert ip.image_mean == pytest.approx(CLIP_MEAN) and ip.image_std == pytest.approx(CLIP_STD)
    else:  # the folder's preprocessor_config.json
        assert ip.image_mean == pytest.approx([0.5] * 3) and ip.image_std == pytest.approx([0.25] * 3)


def test_generate_on_an_image_prompt(initialised):
    _, model, processor, _, _ = initialised
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8))
    inputs = processor(images=[image], text=processor.render_prompt("What is in the image?"))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == model.config.tokens_per_view  # one 64px view, stride 32 -> 2x2 cells


def test_tokenizer_path_defaults_to_text_pretrained(sources, tmp_path):
    from magma.model_config import load_model_spec
    spec = load_model_spec(write_spec(tmp_path / "s.yaml", {"pretrained": str(sources["llama"])},
                                      {"depths": [1, 1], "hidden_sizes": [8, 16]}))
    assert spec.tokenizer.path == str(sources["llama"]) and spec.tokenizer.builtin_bpe_vocab is None


def test_agreeing_shape_keys_are_accepted_and_a_random_tower_beside_a_pretrained_lm(sources, tmp_path):
    from magma.build import build_model
    spec = write_spec(tmp_path / "s.yaml", {"pretrained": str(sources["llama"]), "model_type": "llama",
                                            "hidden_size": 64, "num_key_value_heads": 1, "rope_theta": 500000.0},
                      {"depths": [1, 1], "hidden_sizes": [8, 16], "image_mean": [0.1, 0.2, 0.3]})
    model, processor = build_model(spec)
    assert model.config.get_text_config().hidden_size == 64
    assert processor.image_processor.image_mean == pytest.approx([0.1, 0.2, 0.3])


def test_bare_timm_file_gives_its_features_and_imagenet_statistics(tmp_path):
    """A timm ConvNeXt saved alone (bare names, classifier head.fc, a training-checkpoint
    wrapper) beside a random LM; bfloat16 weights when asked."""
    from fake_backbones import timm_name

    from magma.build import build_model
    from magma.image_processing_magma import IMAGENET_MEAN

    tower = random_convnext(seed=5, layer_scale=False)
    state = {timm_name(k): v for k, v in tower.state_dict().items()}
    state["head.fc.weight"], state["head.fc.bias"] = torch.randn(10, 64), torch.zeros(10)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, tmp_path / "timm.bin")
    spec = write_spec(tmp_path / "s.yaml", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                            "num_attention_heads": 2},
                      {"pretrained": str(tmp_path / "timm.bin")}, tokenizer={"builtin_bpe_vocab": 300})
    model, processor = build_model(spec)
    assert processor.image_processor.image_mean == pytest.approx(IMAGENET_MEAN)
    assert model.config.vision_config.layer_scale_init_value == 0.0
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.vision_tower(pixels).last_hidden_state,
                                   tower(pixels).last_hidden_state, atol=1e-5, rtol=0)
    bf16, _ = build_model(spec, dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_layer_norm_eps_of_the_source_is_kept(sources, tmp_path):
    """timm's convnext_xxlarge uses LayerNorm eps 1e-5 (transformers' ConvNeXt: 1e-6): a tower
    with that eps gives the same features through a saved and reloaded checkpoint."""
    from magma.checkpoint import load_checkpoint
    from magma.convnext_keys import set_layer_norm_eps

    tower = random_convnext(seed=3)
    set_layer_norm_eps(tower, 1e-5)
    path, _ = write_open_clip_convnext_file(tmp_path / "eps.pt", model=tower)
    spec = write_spec(tmp_path / "s.yaml", {"pretrained": str(sources["qwen2"])},
                      {"pretrained": str(path), "norm_eps": 1e-5})
    assert init(spec, tmp_path / "ck") == 0
    model, _, _ = load_checkpoint(tmp_path / "ck")
    eps = {m.eps for m in model.vision_tower.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-5}
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 1e-3
    with torch.no_grad():
        torch.testing.assert_close(model.vision_tower(pixels).last_hidden_state,
                                   tower(pixels).last_hidden_state, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the open_clip layout itself


def _xxlarge_meta_state() -> dict[str, torch.Tensor]:
    """Every trunk tensor of open_clip's convnext_xxlarge, on the meta device (names per timm)."""
    state, prev = {}, 3
    w0 = XXLARGE_WIDTHS[0]
    for name, shape in (("stem.0.weight", (w0, 3, 4, 4)), ("stem.0.bias", (w0,)),
                        ("stem.1.weight", (w0,)), ("stem.1.bias", (w0,))):
        state["visual.trunk." + name] = torch.empty(shape, device="meta")
    prev = w0
    for s, (depth, w) in enumerate(zip(XXLARGE_DEPTHS, XXLARGE_WIDTHS)):
        p = f"visual.trunk.stages.{s}."
        if s:
            for name, shape in (("downsample.0.weight", (prev,)), ("downsample.0.bias", (prev,)),
                                ("downsample.1.weight", (w, prev, 2, 2)), ("downsample.1.bias", (w,))):
                state[p + name] = torch.empty(shape, device="meta")
        for b in range(depth):
            for name, shape in (("gamma", (w,)), ("conv_dw.weight", (w, 1, 7, 7)), ("conv_dw.bias", (w,)),
                                ("norm.weight", (w,)), ("norm.bias", (w,)), ("mlp.fc1.weight", (4 * w, w)),
                                ("mlp.fc1.bias", (4 * w,)), ("mlp.fc2.weight", (w, 4 * w)), ("mlp.fc2.bias", (w,))):
                state[p + f"blocks.{b}.{name}"] = torch.empty(shape, device="meta")
        prev = w
    for name, shape in (("visual.trunk.head.norm.weight", (prev,)), ("visual.trunk.head.norm.bias", (prev,)),
                        ("visual.head.proj.weight", (1024, prev))):
        state[name] = torch.empty(shape, device="meta")
    return state


def test_real_open_clip_xxlarge_names_map_onto_convnextmodel():
    from transformers import ConvNextConfig, ConvNextModel

    from magma.convnext_keys import convnext_config_from_state, split_trunk_state_dict, timm_norm_eps

    state = _xxlarge_meta_state()
    for name, shape in OPEN_CLIP_CONVNEXT_XXLARGE_KEYS.items():  # the expansion holds the real names
        assert tuple(state[name].shape) == shape, name
    split = split_trunk_state_dict(state)
    assert split.kind == "open_clip" and not split.unknown and split.dropped == ["visual.head.proj.weight"]
    layout = convnext_config_from_state(split.state)
    assert (layout.depths, layout.hidden_sizes, layout.patch_size, layout.layer_scale) == \
        (XXLARGE_DEPTHS, XXLARGE_WIDTHS, 4, True)
    assert timm_norm_eps(layout.depths, layout.hidden_sizes) == 1e-5
    with torch.device("meta"):
        hf = ConvNextModel(ConvNextConfig(depths=XXLARGE_DEPTHS, hidden_sizes=XXLARGE_WIDTHS))
    expected = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in split.state.items()} == expected
    # The same tower inside the Magma-8B release (vision_tower.clip_vision_model = open_clip's visual)
    release = {k.replace("visual.", "vision_tower.clip_vision_model.", 1): v for k, v in state.items()}
    release["language_model.lm_head.weight"] = torch.empty(8, 8, device="meta")
    split = split_trunk_state_dict(release)
    assert split.kind == "magma_release" and not split.unknown and split.state.keys() == expected.keys()
    assert sorted(split.dropped) == ["language_model.lm_head.weight", "vision_tower.clip_vision_model.head.proj.weight"]


def test_fixture_file_uses_the_real_open_clip_names(sources):
    """The fake open_clip file holds every real convnext_xxlarge name whose stage/block exists
    in the tiny tower (so the fixture is not written from magma's own map)."""
    from safetensors import safe_open
    with safe_open(str(sources["clip_file"]), framework="pt") as f:
        keys = set(f.keys())
    depths = sources["clip_tower"].config.depths
    checked = 0
    for name in OPEN_CLIP_CONVNEXT_XXLARGE_KEYS:
        m = re.search(r"stages\.(\d+)\.(?:blocks\.(\d+)\.)?", name)
        if m and (int(m.group(1)) >= len(depths) or (m.group(2) and int(m.group(2)) >= depths[int(m.group(1))])):
            continue
        assert name in keys, name
        checked += 1
    assert checked >= 18


# ---------------------------------------------------------------- bad input: one error each


def _build_error(spec_path) -> ConfigError:
    from magma.build import build_model
    with pytest.raises(ConfigError) as info:
        build_model(spec_path)
    return info.value


def test_folder_without_config_json_is_refused(sources, tmp_path):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    err = _build_error(write_spec(tmp_path / "s.yaml", {"pretrained": str(empty)},
                                  {"pretrained": str(sources["clip_file"])}))
    assert str(empty) in str(err) and "no config.json" in str(err) and "text.pretrained takes" in str(err)


def test_encoder_only_folder_is_refused(sources, tmp_path):
    from transformers import BertConfig, BertModel
    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    err = _build_error(write_spec(tmp_path / "s.yaml", {"pretrained": str(folder)},
                                  {"pretrained": str(sources["clip_file"])}))
    msg = str(err)
    assert str(folder / "config.json") in msg and "'bert' (BertModel) is not a causal language model" in msg
    assert "Llama, Qwen2" in msg


def test_vision_file_with_unknown_keys_is_refused(sources, tmp_path):
    from safetensors.torch import load_file, save_file
    state = load_file(str(sources["clip_file"]))
    state["visual.trunk.stages.0.blocks.0.mlp.grn.weight"] = torch.ones(16)  # ConvNeXt-V2
    state["visual.trunk.norm_pre.weight"] = torch.ones(64)
    bad = tmp_path / "v2.safetensors"
    save_file(state, str(bad))
    err = _build_error(write_spec(tmp_path / "s.yaml", {"pretrained": str(sources["qwen2"])},
                                  {"pretrained": str(bad)}))
    msg = str(err)
    assert str(bad) in msg and "visual.trunk.stages.0.blocks.0.mlp.grn.weight" in msg
    assert "visual.trunk.norm_pre.weight" in msg and "ConvNeXt-V2" in msg


def test_shapes_that_disagree_with_the_spec_are_refused(sources, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", {"pretrained": str(sources["llama"]), "hidden_size": 128,
                                            "num_hidden_layers": 2},
                      {"pretrained": str(sources["clip_file"])})
    msg = str(_build_error(spec))
    assert str(spec) in msg and "text.hidden_size is 128 but config.json has 64" in msg
    assert str(sources["llama"] / "config.json") in msg and "num_hidden_layers" not in msg
    spec = write_spec(tmp_path / "v.yaml", {"pretrained": str(sources["llama"])},
                      {"pretrained": str(sources["convnext_dir"]), "depths": [3, 3, 9, 3]})
    msg = str(_build_error(spec))
    assert "vision.depths is [3, 3, 9, 3] but the source has [2, 2, 2, 2]" in msg
    assert str(sources["convnext_dir"]) in msg


def test_hub_id_is_refused_nothing_is_downloaded(sources, tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", {"pretrained": "meta-llama/Meta-Llama-3-8B"},
                      {"pretrained": str(sources["clip_file"])})
    msg = str(_build_error(spec))
    assert "'meta-llama/Meta-Llama-3-8B' is not a local path" in msg and "nothing is downloaded" in msg
    assert "download it yourself" in msg and "give the local folder" in msg and str(spec) in msg
    assert init(spec, tmp_path / "out") == 2  # the CLI: one line, exit 2
    assert "nothing is downloaded" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
