"""What trains: the named recipes in configs/train/ and the freeze switches. Each recipe loads,
and two steps of it on the micro model change the parameters it means to train (by about the
rate it gives them) and leave every other parameter bitwise unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magma.build import build_model
from magma.checkpoint import save_checkpoint
from train.config import load_train_config
from train.loop import train

from conftest import DEVICE_OVERRIDES, EXACT, HERE, REPO

RECIPES = ("align-projector", "finetune-full", "finetune-lora", "finetune-module-lr")
PARTS = {"vision": "vision_tower.", "projector": "multi_modal_projector.", "language": "language_model."}
# Micro scale for any recipe: the recipes' packing rows and warmup are sized for real runs.
MICRO = ("max_steps=2", "micro_batch_size=4", "grad_accum=1", "optim.warmup_steps=0", "checkpoint.every=0",
         "data.packing=false", "data.max_length=", "data.num_workers=0", "log.progress=false",
         "log.tensorboard=false", "dist.engine=torch")

pytestmark = pytest.mark.skipif(not EXACT, reason="bitwise unchanged-weight checks need CPU fp32")


@pytest.fixture(scope="module")
def micro_checkpoint(tmp_path_factory) -> Path:
    model, processor = build_model(HERE / "micro_model.yaml", seed=0)
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("micro") / "ckpt")


def recipe_path(name: str) -> Path:
    return REPO / "configs" / "train" / f"{name}.yaml"


def run(config: Path, run_dir: Path, shards: Path, *overrides: str):
    cfg = load_train_config(config, [f"run_dir={run_dir}", f"data.shards={shards}", *MICRO,
                                     *DEVICE_OVERRIDES, *overrides])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cfg, train(cfg)
    finally:
        torch.set_num_threads(threads)


def max_change(before: dict, after: dict) -> dict[str, float]:
    """Largest absolute weight change per part (0.0: every tensor of it bitwise unchanged)."""
    assert before.keys() == after.keys()
    out = {}
    for part, prefix in PARTS.items():
        keys = [k for k in before if k.startswith(prefix)]
        assert keys, part
        out[part] = max(float((after[k] - before[k]).abs().max()) for k in keys)
    return out


@pytest.mark.parametrize("name", [*RECIPES, "quickstart", "tiny"])
def test_every_named_config_loads_and_validates(name):
    cfg = load_train_config(recipe_path(name))
    assert cfg.max_steps > 0


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_what_it_means_to_and_nothing_else(name, micro_checkpoint, shards, tmp_path):
    cfg, result = run(recipe_path(name), tmp_path / "run", shards, f"model.checkpoint={micro_checkpoint}")
    assert result.final_step == 2
    before = load_file(micro_checkpoint / "model.safetensors")
    after = load_file(tmp_path / "run" / "final" / "model.safetensors")
    change = max_change(before, after)
    o, m = cfg.optim, cfg.model
    trains = {"vision": not m.freeze_vision and not m.lora.enabled or "vision" in m.lora.modules_to_save,
              "projector": not m.freeze_projector and not m.lora.enabled or "projector" in m.lora.modules_to_save,
              "language": not m.freeze_language or m.lora.enabled}
    assert any(trains.values())
    for part, trained in trains.items():
        if not trained:
            assert change[part] == 0.0, (name, part, change)
            continue
        # Adam's first steps move a weight by about its rate (cosine: x1 then x0.55 of it).
        rate = getattr(o, f"{part}_lr") or o.lr
        if m.lora.enabled and part == "language":
            assert change[part] > 0, (name, change)  # B @ A merged in: not a per-weight rate
        else:
            assert 0.5 * rate < change[part] <= 1.6 * rate, (name, part, rate, change)


def test_module_lr_recipe_has_one_group_per_module_at_its_rate(micro_checkpoint):
    from train.engines import param_groups
    from train.model_setup import build_training_model, module_of_parameters

    cfg = load_train_config(recipe_path("finetune-module-lr"), [f"model.checkpoint={micro_checkpoint}"])
    model, _, _ = build_training_model(cfg.model)
    groups = param_groups(cfg, model)
    assert [(g["name"], g["lr"]) for g in groups] == [("language", 1e-5), ("projector", 1e-4), ("vision", 2e-6)]
    owner = module_of_parameters(model)
    for g in groups:
        assert {owner[id(p)] for p in g["params"]} == {g["name"]}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_lora_recipe_exports_the_adapter_alone_and_merges_back_to_the_final_weights(
        micro_checkpoint, shards, tmp_path):
    from train.lora import merge_adapter

    # r=4: the recipe's r=64 is as wide as the micro model's hidden size
    run(recipe_path("finetune-lora"), tmp_path / "run", shards, f"model.checkpoint={micro_checkpoint}",
        "model.lora.r=4")
    adapter = tmp_path / "run" / "final" / "adapter"
    lora = load_file(adapter / "adapter_model.safetensors")
    assert lora and all("lora_" in k for k in lora)
    trained = load_file(adapter / "trainables.safetensors")
    assert trained and all(k.startswith("multi_modal_projector.") for k in trained)
    size = sum(p.stat().st_size for p in adapter.glob("*.safetensors"))
    assert size < (tmp_path / "run" / "final" / "model.safetensors").stat().st_size / 2
    merged = merge_adapter(adapter, tmp_path / "merged")  # base recorded in adapter_config.json
    final = load_file(tmp_path / "run" / "final" / "model.safetensors")
    again = load_file(merged / "model.safetensors")
    assert final.keys() == again.keys()
    for k in final:
        torch.testing.assert_close(again[k], final[k], rtol=0, atol=1e-7, msg=k)
    assert (merged / "action_stats.json").read_text() == (tmp_path / "run" / "final" / "action_stats.json").read_text()


def test_merge_without_a_recorded_base_names_the_fix(shards, tmp_path):
    from train.lora import merge_adapter

    run(HERE / "micro_train.yaml", tmp_path / "run", shards, "model.lora.enabled=true", "max_steps=1")
    with pytest.raises(ValueError, match="records no base checkpoint.*--base"):
        merge_adapter(tmp_path / "run" / "final" / "adapter", tmp_path / "merged")


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_vision_alone_keeps_the_tower_bitwise_and_trains_the_rest(freeze, micro_checkpoint, shards, tmp_path):
    """LoRA off (PEFT would freeze every non-adapter weight anyway). The freeze=False run is the
    control: without the switch the tower does change, so the freeze=True assertion can fail."""
    run(HERE / "micro_train.yaml", tmp_path / "run", shards, "model.config=",
        f"model.checkpoint={micro_checkpoint}", f"model.freeze_vision={str(freeze).lower()}", "max_steps=3")
    change = max_change(load_file(micro_checkpoint / "model.safetensors"),
                        load_file(tmp_path / "run" / "final" / "model.safetensors"))
    assert change["projector"] > 0 and change["language"] > 0, change
    assert (change["vision"] == 0.0) is freeze, change


def test_nothing_to_train_is_refused_with_the_fix(micro_checkpoint):
    from train.model_setup import build_training_model

    cfg = load_train_config(HERE / "micro_train.yaml", ["model.freeze_vision=true", "model.freeze_projector=true",
                                                        "model.freeze_language=true"])
    with pytest.raises(ValueError, match="no trainable parameters.*projector-only alignment"):
        build_training_model(cfg.model)


@pytest.mark.parametrize("overrides, message", [
    (["model.freeze_vision=true", "optim.vision_lr=1e-4"], "optim.vision_lr is set but the vision does not train"),
    (["model.lora.enabled=true", "optim.projector_lr=1e-4"], "optim.projector_lr is set"),
    (["model.freeze_projector=true", "model.lora.enabled=true", "model.lora.modules_to_save=[projector]"],
     "modules_to_save names.*freeze_projector"),
    (["model.lora.modules_to_save=[lm_head]"], "modules_to_save"),
])
def test_contradictory_trainable_settings_are_refused(overrides, message):
    from magma.config_io import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_train_config(HERE / "micro_train.yaml", overrides)


def test_train_cli_routes_options_to_run_and_refuses_bad_merge_input(tmp_path, capsys):
    from train.cli import main

    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2  # `magma train --config` is `run`
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["merge-lora", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not an adapter folder" in capsys.readouterr().err
