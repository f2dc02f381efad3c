import shutil

import pytest
import torch

from magma.checkpoint import CheckpointError, load_checkpoint


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("victim", ["config.json", "tokenizer.json", "model.safetensors"])
def test_missing_file_is_named(tiny_checkpoint, tmp_path, victim):
    folder = _copy(tiny_checkpoint, tmp_path / "ck")
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.") if victim != "model.safetensors"
                       else "safetensors"):
        load_checkpoint(folder)


@pytest.mark.parametrize("victim", ["config.json", "model.safetensors", "action_stats.json"])
def test_corrupt_file_is_named(tiny_checkpoint, tmp_path, victim):
    folder = _copy(tiny_checkpoint, tmp_path / "ck")
    data = (folder / victim).read_bytes()
    (folder / victim).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        load_checkpoint(folder)


def test_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(CheckpointError, match="magma model init"):
        load_checkpoint(tmp_path / "nope")


def test_load_gives_stats(tiny_checkpoint):
    model, proc, stats = load_checkpoint(tiny_checkpoint)
    assert set(stats) == {"metaworld"} and stats["metaworld"].dim == 4
    assert model.generation_config.eos_token_id == proc.tokenizer.convert_tokens_to_ids("<|end|>")


def test_magma_release_layout_converts(tiny_model_and_processor, tmp_path):
    """Write a tiny random checkpoint in the public Magma-8B module layout, convert, compare."""
    import re

    import yaml
    from safetensors.torch import save_file

    from magma.build import build_model
    from magma.magma_release import convert_magma_release, map_release_key
    from tests.conftest import TINY_CONFIG

    spec = yaml.safe_load(open(TINY_CONFIG))
    spec["projector"]["norm"] = False
    spec["text"]["tie_word_embeddings"] = False
    cfg = tmp_path / "tiny-release.yaml"
    cfg.write_text(yaml.safe_dump(spec))
    ours, proc = build_model(cfg, seed=3)

    inverse = {
        r"vision_tower\.embeddings\.patch_embeddings\.(.*)": r"stem.0.\1",
        r"vision_tower\.embeddings\.layernorm\.(.*)": r"stem.1.\1",
        r"vision_tower\.encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.(.*)": r"stages.\1.downsample.\2.\3",
        r"vision_tower\.encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.(.*)": r"stages.\1.blocks.\2.conv_dw.\3",
        r"vision_tower\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.(.*)": r"stages.\1.blocks.\2.norm.\3",
        r"vision_tower\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv1\.(.*)": r"stages.\1.blocks.\2.mlp.fc1.\3",
        r"vision_tower\.encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv2\.(.*)": r"stages.\1.blocks.\2.mlp.fc2.\3",
        r"vision_tower\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter": r"stages.\1.blocks.\2.gamma",
    }
    release = {"multi_modal_projector.row_seperator": torch.zeros(1, 1, 256),
               "vision_tower.clip_vision_model.trunk.head.norm.weight": torch.ones(256)}
    for k, v in ours.state_dict().items():
        if k.startswith("vision_tower.layernorm"):
            continue  # pooled-output norm: absent in the release's dense features
        new = k
        for pat, rep in inverse.items():
            if re.fullmatch(pat, k):
                new = "vision_tower.clip_vision_model.trunk." + re.sub(pat, rep, k)
                break
        assert map_release_key(new) == k
        release[new] = v.clone().contiguous()
    src = tmp_path / "release"
    src.mkdir()
    save_file(release, str(src / "model.safetensors"))
    out = convert_magma_release(src, cfg, tmp_path / "converted")
    loaded, lproc, _ = load_checkpoint(out)
    from PIL import Image
    import numpy as np
    img = Image.fromarray(np.full((50, 60, 3), 120, np.uint8))
    inputs = proc(images=[img], text=proc.render_prompt("hi"))
    # The pooled-output LayerNorm is not used for dense features, so logits must match exactly.
    assert torch.equal(loaded(**inputs).logits, ours.eval()(**inputs).logits)
