"""`magma eval mind2web`: the paper's metrics on hand-computed cases, the oracle at 1.0, the random
floor, and a random-init tiny checkpoint through serving's UI path, on parquet files written
from the published Multimodal-Mind2Web layout (tests/data_public/mind2web_rows.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_public"))
from mind2web_rows import El, flight_task, row, write_parquet

from eval.benchmarks.mind2web import (StepResult, element_correct, operation_f1,
                                      predicted_operation, summarise, ui_request)
from eval.cli import main
from magma.layouts.mind2web import StepView, ViewportOptions, iter_tasks, prepare_task

VIEW = ["--viewport-height", "200"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("m2w")
    rows = []
    for aid in ("a", "b", "c"):
        rows += flight_task(aid)[0]
    for k in range(4):  # one-step click tasks with ten negatives around the target
        target = El(f"t{k}", "button", (20, 700 + 10 * k, 60, 20), f"Go {k}")
        negs = [El(f"n{k}-{j}", "a", (100 + (j % 3) * 60, 640 + 15 * j, 50, 12), f"link {j}") for j in range(10)]
        rows.append(row(f"click{k}", f"click{k}-0", 0, ["[button]  Go -> CLICK"], target, negs))
    write_parquet(folder / "test_task-00000-of-00001.parquet", rows)
    return folder


def run(data: Path, out: Path, *extra: str) -> dict:
    assert main(["mind2web", "--data", str(data), "--out", str(out), *VIEW, *extra]) == 0
    return json.loads((out / "results.json").read_text())["mind2web"]


def test_operation_f1_hand_computed():
    # {TYPE, new, york} vs {TYPE, york}: precision 2/3, recall 1 -> F1 0.8
    assert operation_f1("TYPE new york", "TYPE york") == pytest.approx(0.8)
    assert operation_f1("CLICK", "CLICK") == 1.0
    assert operation_f1("CLICK", "TYPE york") == 0.0
    assert operation_f1("SELECT Business", "SELECT business") == pytest.approx(0.5)  # case kept
    assert operation_f1("TYPE a , b", "TYPE a b") == 1.0  # punctuation tokens dropped
    assert operation_f1("", "CLICK") == 0.0
    assert predicted_operation({"op": "type", "text": "new york"}) == "TYPE new york"
    assert predicted_operation({"op": "click", "text": "Search"}) == "CLICK"  # a click's label is no value
    assert predicted_operation({"op": None}) == ""


def test_element_correct_by_mark_or_by_point():
    from magma.marks import Mark

    view = StepView((0, 0, 100, 100), [Mark(0, (0, 0, 10, 10)), Mark(1, (50, 50, 60, 60))], 1, ["x", "y"],
                    [(50, 50, 60, 60)])
    assert element_correct({"mark": 1}, view) and not element_correct({"mark": 0, "point": [55, 55]}, view)
    assert element_correct({"mark": 9, "point": [55, 55]}, view)  # unknown mark: the point decides
    assert not element_correct({"point": [5, 5]}, view) and not element_correct({}, view)


def _result(task: str, n: int, ok: bool) -> StepResult:
    return StepResult(annotation_id=task, action_uid=f"{task}{n}", step=n, op="CLICK", gold="", gold_operation="CLICK",
                      predicted_operation="CLICK" if ok else "", prediction={}, element_correct=ok,
                      operation_f1=1.0 if ok else 0.0, step_success=ok, latency_ms=0.0)


def test_summary_is_macro_over_tasks():
    rows = [_result("A", 0, True), _result("B", 0, True), _result("B", 1, False), _result("B", 2, False)]
    s = summarise(rows)
    assert s["step_success_rate"] == pytest.approx((1 + 1 / 3) / 2) and s["micro"]["step_success_rate"] == 0.5
    assert s["task_success_rate"] == 0.5 and (s["n_steps"], s["n_tasks"]) == (4, 2)


def test_oracle_scores_one_and_random_is_the_floor(data, tmp_path):
    oracle = run(data, tmp_path / "oracle", "--agent", "oracle")
    assert {k: oracle[k] for k in ("element_accuracy", "operation_f1", "step_success_rate", "task_success_rate")} \
        == {"element_accuracy": 1.0, "operation_f1": 1.0, "step_success_rate": 1.0, "task_success_rate": 1.0}
    assert (oracle["n_steps"], oracle["n_tasks"], oracle["agent"]) == (13, 7, "oracle")
    rnd = run(data, tmp_path / "random", "--agent", "random")
    assert rnd["element_accuracy"] < 0.5 and rnd["step_success_rate"] < 0.5 and rnd["task_success_rate"] < 0.5
    # random always clicks: operation F1 is 1 on the CLICK steps only (7 of 13), 0 on TYPE/SELECT
    assert rnd["micro"]["operation_f1"] == pytest.approx(7 / 13)
    assert (tmp_path / "random" / "report.md").read_text().startswith("# Mind2Web (random)")
    steps = [json.loads(line) for line in (tmp_path / "oracle" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 13 and steps[0]["predicted_operation"] == steps[0]["gold_operation"]
    limited = run(data, tmp_path / "limited", "--agent", "oracle", "--max-steps", "4")
    assert (limited["n_steps"], limited["n_tasks"]) == (6, 2)  # whole tasks: 3 + 3 steps


def test_bad_invocations_exit_2(data, tmp_path, capsys):
    assert main(["mind2web", "--data", str(data), "--out", str(tmp_path)]) == 2  # policy needs a model
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["mind2web", "--data", str(tmp_path / "none"), "--agent", "oracle", "--out", str(tmp_path)]) == 2


def test_the_policy_sees_what_training_showed(data, tiny_checkpoint, tmp_path):
    """The request the benchmark sends renders, inside serving, to the training sample's prompt
    and marked image (the same viewport, marks, legend and history)."""
    from data_pipeline.build.registry import SourceConfig
    from data_pipeline.build.writer import build_source, iter_shard
    from serve.policy import Policy

    src = SourceConfig(name="m2w", type="mind2web", params={"path": str(data), "viewport_height": 200})
    m = build_source(src, tmp_path / "shards", 64, workers=0, progress=False)
    samples = {(s.episode, s.frame): s for n in m["shards"] for s in iter_shard(tmp_path / "shards" / n)}
    policy = Policy.from_checkpoint(tiny_checkpoint)
    (task,) = [t for t in iter_tasks(data) if getattr(t, "annotation_id", "") == "b"]
    for prepared in prepare_task(task, ViewportOptions(viewport_height=200)):
        gen, _ = policy.prepare_act(ui_request(prepared))
        sample = samples[("b", prepared.step.index)]
        assert sample.conversation[0].content.replace("<image>", "") in gen.prompt
        assert np.array_equal(np.asarray(gen.images[0].convert("RGB")), sample.images[0])
    assert isinstance(gen.images[0], Image.Image)


def test_policy_on_a_tiny_checkpoint_end_to_end(data, tiny_checkpoint, tmp_path):
    res = run(data, tmp_path / "policy", "--checkpoint", str(tiny_checkpoint), "--max-steps", "2")
    assert res["agent"] == "policy" and res["n_steps"] == 3 and 0.0 <= res["step_success_rate"] <= 1.0
    steps = [json.loads(line) for line in (tmp_path / "policy" / "steps.jsonl").read_text().splitlines()]
    # every step was answered by the model (raw text) or refused with a typed error, never a crash
    assert all(isinstance(s["prediction"].get("raw"), str) or s["prediction"].get("error") for s in steps)
    assert "checkpoint" in res["policy"]


def test_rows_off_the_layout_are_not_scored_but_counted(tmp_path, capsys):
    rows, _ = flight_task("a")
    rows[1] = dict(rows[1], operation=json.dumps({"op": "DRAG", "original_op": "DRAG", "value": ""}))
    write_parquet(tmp_path / "d.parquet", rows)
    res = run(tmp_path / "d.parquet", tmp_path / "out", "--agent", "oracle")
    assert res["n_steps"] == 2 and res["skipped"] == {"unknown_operation": 1} and res["task_success_rate"] == 1.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "unknown_operation 1" in report and f"{tmp_path / 'd.parquet'} row 1" in report
    assert main(["mind2web", "--help"]) == 0 and "operation_f1" in capsys.readouterr().out
