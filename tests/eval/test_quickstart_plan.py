"""The quickstart's start: the shipped backbones are where its model config says, a missing one
is named with the way out, and --from-scratch swaps in the random-init sizes."""
import json
from pathlib import Path

import yaml

from eval.quickstart import SCRATCH_MODEL, _backbones_line, missing_backbones
from magma.model_config import load_model_spec

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_backbones_are_where_the_quickstart_looks():
    assert missing_backbones("configs/train/quickstart.yaml") == []
    spec = load_model_spec(ROOT / "configs/model/tiny-pretrained.yaml")
    scratch = load_model_spec(ROOT / SCRATCH_MODEL)
    assert spec.text.pretrained and spec.vision.pretrained and not scratch.text.pretrained
    for folder in (spec.text.pretrained, spec.vision.pretrained):
        record = json.loads((ROOT / folder / "probe.json").read_text())
        assert 0 < record["step"] <= record["of_steps"]
        assert (ROOT / folder / "command.txt").read_text().startswith("magma backbones pretrain-")
        assert (ROOT / folder / "model.safetensors").stat().st_size < 30 * 2 ** 20


def test_a_missing_backbone_is_named(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump({"name": "t", "text": {"pretrained": str(tmp_path / "no-lm")},
                                     "vision": {"depths": [1, 1], "hidden_sizes": [8, 16]}, "image_size": 64}))
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({"model": {"config": str(model)}}))
    assert missing_backbones(str(train)) == [tmp_path / "no-lm"]


def test_the_summary_names_the_backbones_and_their_step(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "config.yaml").write_text(
        yaml.safe_dump({"model": {"config": "configs/model/tiny-pretrained.yaml"}}))
    line = _backbones_line(tmp_path)
    lm = json.loads((ROOT / "backbones/tiny-lm/probe.json").read_text())
    assert f"language model backbones/tiny-lm (step {lm['step']} of {lm['of_steps']}; its legend-lookup " \
           f"probe {lm['mark_id/ui_click']:.2f}, chance {lm['chance/ui_click']:.2f})" in line
    (tmp_path / "train" / "config.yaml").write_text(yaml.safe_dump({"model": {"config": SCRATCH_MODEL}}))
    assert "language model random init (from scratch)" in _backbones_line(tmp_path)
