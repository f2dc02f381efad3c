import shutil

import pytest

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
