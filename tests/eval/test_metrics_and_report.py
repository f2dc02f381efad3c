import json

import pytest
from hypothesis import given, strategies as st

from eval.closed_loop import EpisodeRecord, append_jsonl, read_jsonl
from eval.metrics import summarise, wilson_interval
from eval.report import EPISODES, build_report
from eval.splits import HELDOUT_SEED_BASE, split_of_seed, split_seeds


def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_rate_and_narrows(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1.0
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_seed_splits_are_disjoint():
    train = set(split_seeds("train", 1000))
    held = set(split_seeds("heldout", 1000))
    assert not train & held
    assert all(split_of_seed(s) == "heldout" for s in held) and min(held) == HELDOUT_SEED_BASE
    assert split_seeds("train", 3, offset=10) == [10, 11, 12]
    with pytest.raises(ValueError):
        split_seeds("test", 1)  # type: ignore[arg-type]


def _records():
    out = []
    for agent, wins, n in (("policy", 7, 10), ("random", 3, 10), ("expert", 10, 10)):
        for i in range(n):
            out.append(EpisodeRecord("miniwob", "click-button", agent, 10**6 + i, "heldout",
                                     i < wins, 1, None if i < wins else "task_failed",
                                     latencies_ms=[100.0 + i] if agent == "policy" else []))
    out.append(EpisodeRecord("metaworld", "reach-v3", "policy", 10**6, "heldout", False, 60,
                             "max_steps", latencies_ms=[50.0] * 15))
    return out


def test_results_json_schema_and_report(tmp_path):
    for r in _records():
        append_jsonl(tmp_path / EPISODES, r)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "loss": 3.0 / s, "loss_action": 2.0 / s})
                                 for s in range(1, 20)))
    results = build_report(tmp_path, {"name": "t"}, None, metrics)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    cb = on_disk["miniwob"]["click-button"]
    for key in ("success_rate", "ci95", "episodes", "random_baseline", "expert"):
        assert key in cb
    assert cb["success_rate"] == 0.7 and cb["episodes"] == 10
    assert cb["random_baseline"] == 0.3 and cb["expert"] == 1.0
    assert cb["ci95"] == pytest.approx(list(wilson_interval(7, 10)))
    reach = on_disk["metaworld"]["reach-v3"]
    assert reach["random_baseline"] is None and reach["failure_reasons"] == {"max_steps": 1}
    report = (tmp_path / "report.md").read_text()
    assert "| click-button | 70%" in report and "NOT met" in report
    for name in ("success.png", "latency.png", "loss.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000


def test_summarise_without_policy_keeps_baselines():
    recs = [r.__dict__ for r in _records() if r.agent != "policy"]
    res = summarise(recs)["miniwob"]["click-button"]
    assert res["success_rate"] is None and res["episodes"] == 0 and res["expert"] == 1.0


def test_jsonl_append_survives_partial_runs(tmp_path):
    path = tmp_path / "e.jsonl"
    recs = _records()[:3]
    for r in recs:
        append_jsonl(path, r)
    assert [r["seed"] for r in read_jsonl(path)] == [r.seed for r in recs]


@given(st.integers(1, 500), st.data())
def test_wilson_interval_always_contains_the_rate(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
