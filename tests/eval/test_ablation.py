"""The SoM/ToM ablation's plumbing: arms differ only in the SoM/ToM switches; the table reads
both arms' results; missing episodes fail with a clear message."""
from pathlib import Path

from eval.ablation import ARMS, _mix, table
from eval.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_arms_switch_only_som_and_tom():
    base = ROOT / "configs/data/quickstart.yaml"
    arms = {a: _mix(base, a) for a in ARMS}
    names = lambda m: [s["name"] for s in m["sources"]]  # noqa: E731
    by_type = lambda m: {s["type"]: s["params"] for s in m["sources"]  # noqa: E731
                         if s["params"].get("actions", True)}
    # the SoM/ToM arm adds the quickstart's separate SoM / ToM sources to the action sources
    assert names(arms["actions_som_tom"]) == ["miniwob", "miniwob_som", "metaworld", "metaworld_tom"]
    assert names(arms["actions_only"]) == names(arms["inline_som_tom"]) == ["miniwob", "metaworld"]
    assert arms["from_scratch"]["sources"] == arms["actions_som_tom"]["sources"]  # only the model differs
    assert ARMS["from_scratch"]["model"] == "configs/model/tiny.yaml"
    assert {ARMS[a]["model"] for a in ("actions_som_tom", "actions_only", "inline_som_tom")} == {
        "configs/model/tiny-pretrained.yaml"}
    # the action sources are the same in the SoM/ToM arm and the actions-only arm
    assert by_type(arms["actions_som_tom"]) == by_type(arms["actions_only"])
    off, on = by_type(arms["actions_only"]), by_type(arms["inline_som_tom"])
    assert off["miniwob_episodes"]["som_per_step"] == 0 and off["robot_episodes"]["tom"] is False
    assert on["miniwob_episodes"]["som_per_step"] == 1 and on["robot_episodes"]["tom"] is True
    for t in ("miniwob_episodes", "robot_episodes"):  # everything else is the same
        a, b = dict(off[t]), dict(on[t])
        for k in ("som_per_step", "tom"):
            a.pop(k, None), b.pop(k, None)
        assert a == b
    # the quickstart's own SoM / ToM sources carry no action samples
    aux = [s for s in arms["actions_som_tom"]["sources"] if s["params"].get("actions") is False]
    assert {s["name"] for s in aux} == {"miniwob_som", "metaworld_tom"}
    assert {s["weight"] for s in aux} == {0.15}


def test_table_lists_both_arms_per_task():
    r = lambda s: {"success_rate": s, "ci95": [0.1, 0.9], "episodes": 10}  # noqa: E731
    arms = {"actions_only": {"results": {"miniwob": {"click-tab": r(0.3)}}, "samples_by_kind": {}},
            "actions_som_tom": {"results": {"miniwob": {"click-tab": r(0.6)},
                                            "metaworld": {"reach-v3": r(0.5)}},
                                "samples_by_kind": {"spatial": 3}}}
    md = table(arms, 300)
    assert "| miniwob | click-tab | 0.30 [0.10, 0.90] (n=10) | 0.60 [0.10, 0.90] (n=10) |" in md
    assert "| metaworld | reach-v3 | - | 0.50" in md and "300 steps" in md
    assert "| | mean | - | 0.55 |" in md  # the actions-only arm lacks reach-v3: no mean
    arms["actions_only"]["results"]["metaworld"] = {"reach-v3": r(0.9)}
    md = table(arms, 300)
    assert "| | mean | 0.60 | 0.55 |" in md and "not met (0.55 vs 0.60)" in md


def test_missing_episodes_is_a_clear_error(tmp_path, capsys):
    assert main(["ablation", "--episodes", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "needs miniwob/ and metaworld/" in capsys.readouterr().err


def test_a_seed_changes_every_training_seed_and_each_is_a_real_config_key():
    from eval.ablation import seed_overrides
    from train.config import load_train_config

    cfg = load_train_config(ROOT / "configs/train/quickstart.yaml", seed_overrides(3))
    assert (cfg.seed, cfg.model.seed, cfg.data.seed) == (3, 3, 3)
    base = load_train_config(ROOT / "configs/train/quickstart.yaml", seed_overrides(0))
    assert (base.seed, base.model.seed, base.data.seed) == (0, 0, 0)  # seed 0 is the quickstart's draw
