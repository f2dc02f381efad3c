"""The SoM/ToM ablation's plumbing: mixes differ only in the SoM/ToM switches; the table reads
both arms' results; missing episodes fail with a clear message."""
from pathlib import Path

from eval.ablation import ARMS, _mix, main, table

ROOT = Path(__file__).resolve().parents[2]


def test_mixes_switch_only_som_and_tom():
    base = ROOT / "configs/data/quickstart.yaml"
    off, on = _mix(base, *ARMS["actions_only"]), _mix(base, *ARMS["actions_som_tom"])
    by_type = lambda m: {s["type"]: s["params"] for s in m["sources"]}  # noqa: E731
    assert by_type(off)["miniwob_episodes"]["som_per_step"] == 0
    assert by_type(off)["robot_episodes"]["tom"] is False
    assert by_type(on)["miniwob_episodes"]["som_per_step"] == 1
    assert by_type(on)["robot_episodes"]["tom"] is True
    for t in ("miniwob_episodes", "robot_episodes"):  # everything else is the same mix
        a, b = dict(by_type(off)[t]), dict(by_type(on)[t])
        for k in ("som_per_step", "tom"):
            a.pop(k, None), b.pop(k, None)
        assert a == b
    assert [s["weight"] for s in off["sources"]] == [s["weight"] for s in on["sources"]]


def test_table_lists_both_arms_per_task():
    r = lambda s: {"success_rate": s, "ci95": [0.1, 0.9], "episodes": 10}  # noqa: E731
    arms = {"actions_only": {"results": {"miniwob": {"click-tab": r(0.3)}}, "samples_by_kind": {}},
            "actions_som_tom": {"results": {"miniwob": {"click-tab": r(0.6)},
                                            "metaworld": {"reach-v3": r(0.5)}},
                                "samples_by_kind": {"spatial": 3}}}
    md = table(arms, 300)
    assert "| miniwob | click-tab | 0.30 [0.10, 0.90] (n=10) | 0.60 [0.10, 0.90] (n=10) |" in md
    assert "| metaworld | reach-v3 | - | 0.50" in md and "300 steps" in md


def test_missing_episodes_is_a_clear_error(tmp_path, capsys):
    assert main(["--episodes", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "needs miniwob/ and metaworld/" in capsys.readouterr().err
