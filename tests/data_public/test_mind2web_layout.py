"""Multimodal-Mind2Web: the layout reader (magma.layouts.mind2web) and the `mind2web` source type,
on parquet files written by pyarrow from the published column spec (mind2web_rows.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from magma.codecs import is_error, parse_ui_action
from magma.layouts.errors import LayoutError
from magma.layouts.mind2web import (ViewportOptions, index_tasks, iter_tasks, load_task, parquet_files,
                                    parse_step, prepare_task, read_rows)
from magma.prompts import history_entry, render_history
from data_pipeline.build.registry import SourceConfig, get_source_type
from data_pipeline.build.writer import build_source, iter_shard

from mind2web_rows import PAGE_W, TARGET_RGB, El, flight_task, row, write_parquet

VIEW = 200  # viewport height in these tests (the pages are 1400 px tall)


def build(tmp_path: Path, data: Path, **params) -> tuple[dict, list]:
    src = SourceConfig(name="m2w", type="mind2web",
                       params={"path": str(data), "viewport_height": VIEW, **params})
    m = build_source(src, tmp_path / "out", 64, workers=0, progress=False)
    samples = [s for n in m["shards"] for s in iter_shard(tmp_path / "out" / n)]
    return m, sorted(samples, key=lambda s: (s.episode, s.frame))


def answer(sample):
    action = parse_ui_action(sample.conversation[-1].content)
    assert not is_error(action), sample.conversation[-1].content
    return action


def test_steps_are_cut_to_a_viewport_around_the_target_and_the_answer_is_its_mark(tmp_path):
    rows, targets = flight_task("task-a")
    # rows out of step order, the task split over two files (as the Hub shards split tasks)
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", [rows[2], rows[0]])
    write_parquet(tmp_path / "data" / "train-00001-of-00002.parquet", [rows[1]])
    m, samples = build(tmp_path, tmp_path / "data")
    assert m["num_items"] == 1 and m["skipped"] == {} and m["counts_by_kind"] == {"action": 3}
    assert [s.frame for s in samples] == [0, 1, 2] and {s.episode for s in samples} == {"task-a"}
    for s, target in zip(samples, targets):
        assert s.images[0].shape == (VIEW, PAGE_W, 3) and s.source == "public/mind2web"
        x0, y0, x1, y1 = s.meta["window"]
        tx, ty, tw, th = target.rect
        assert (x0, x1, y1 - y0) == (0, PAGE_W, VIEW)
        assert y0 <= ty and ty + th <= y1  # the whole target is in the viewport
        mark = s.meta["marks"][answer(s).mark]
        assert mark["box"] == [tx - x0, ty - y0, tx + tw - x0, ty + th - y0]
        cx, cy = (int(v) for v in mark["centre"])
        assert tuple(s.images[0][cy, cx]) == TARGET_RGB  # the cut shows the target at its mark
        # every mark lies in the viewport; the far links (y=30 on the page) are not marks
        assert all(0 <= mk["centre"][1] < VIEW for mk in s.meta["marks"])
        assert not any(mk["text"].startswith("Far") for mk in s.meta["marks"])
        assert s.dataset == "mind2web" and s.meta["split"] == "train"


def test_type_and_select_carry_their_value_verbatim_and_clicks_name_the_label(tmp_path):
    rows, _ = flight_task("task-a")
    write_parquet(tmp_path / "d.parquet", rows)
    _, samples = build(tmp_path, tmp_path / "d.parquet")
    ops = [answer(s) for s in samples]
    assert [(a.op, a.text) for a in ops] == [("type", 'São Paulo "Centro"'), ("select", "Business"),
                                             ("click", "Search")]
    assert [s.meta["operation"] for s in samples] == ['TYPE São Paulo "Centro"', "SELECT Business", "CLICK"]
    # the label of a mark: the element's text in cleaned_html, else its naming attribute
    legend = samples[0].conversation[0].content
    assert f'input "From" Mark {ops[0].mark}' in legend
    assert f'button "Search" Mark {ops[2].mark}' in samples[2].conversation[0].content


def test_history_holds_the_previous_steps_in_order(tmp_path):
    rows, _ = flight_task("task-a")
    write_parquet(tmp_path / "d.parquet", rows)
    _, samples = build(tmp_path, tmp_path / "d.parquet")
    answers = [s.conversation[-1].content for s in samples]
    prompts = [s.conversation[0].content for s in samples]
    assert "History:" not in prompts[0]
    assert f"History: {render_history(answers[:1])}\n" in prompts[1]
    assert f"History: {answers[0]} | {answers[1]}\n" in prompts[2]
    assert prompts[2].startswith("<image>Task: Find flights\nMarks:\n") and prompts[2].endswith("Next action?")


def test_marks_are_capped_shuffled_and_deterministic(tmp_path):
    rows = []
    for k in range(12):  # one-step tasks, 20 negatives beside each target
        target = El(f"t{k}", "button", (20, 900 + 10 * k, 60, 20), f"Go {k}")
        negs = [El(f"n{k}-{j}", "a", (100 + (j % 4) * 50, 860 + 12 * j, 40, 10), f"link {j}")
                for j in range(20)]
        rows.append(row(f"task{k:02d}", f"u{k}", 0, ["[button]  Go -> CLICK"], target, negs))
    write_parquet(tmp_path / "d.parquet", rows)
    _, samples = build(tmp_path, tmp_path / "d.parquet", max_marks=6)
    assert len(samples) == 12 and all(len(s.meta["marks"]) == 6 for s in samples)
    ids = [answer(s).mark for s in samples]
    assert len(set(ids)) >= 3, ids  # the answer's id is no constant
    assert all(s.meta["marks"][i]["text"] == f"Go {k}" for k, (s, i) in enumerate(zip(samples, ids)))
    tops = {s.meta["window"][1] - (900 + 10 * k) for k, s in enumerate(samples)}
    assert len(tops) >= 3  # nor is the target's place in the viewport
    _, again = build(tmp_path / "again", tmp_path / "d.parquet", max_marks=6)
    assert [s.conversation[-1].content for s in again] == [s.conversation[-1].content for s in samples]
    assert all(np.array_equal(a.images[0], b.images[0]) for a, b in zip(again, samples))


def test_bad_rows_are_left_out_by_reason_naming_file_and_row(tmp_path, caplog):
    rows, _ = flight_task("task-a")
    reprs = ["[button]  Go -> CLICK"]
    ok = El("ok", "button", (20, 600, 60, 20), "Go")
    bad_rows = [
        rows[0], rows[1],
        row("task-a", "bad-op", 2, rows[0]["action_reprs"], ok, [], "HOVER"),  # op must be CLICK/TYPE/SELECT
        row("task-b", "no-pos", 0, reprs, None, [ok]),
        row("task-c", "bad-rect", 0, reprs, El("r", "a", "10,20,abc"), []),
        row("task-d", "hidden", 0, reprs, El("h", "a", "-1,-1,-1,-1"), [ok]),
        row("task-e", "bad-json", 0, reprs, ok, [], operation="{op: CLICK"),
        row("task-f", "no-image", 0, reprs, ok, [], screenshot={"bytes": None, "path": None}),
        row("task-g", "bad-index", 3, reprs, ok, []),
    ]
    write_parquet(tmp_path / "data" / "a.parquet", bad_rows)
    (tmp_path / "data" / "b.parquet").write_bytes(b"not parquet at all")
    write_parquet_missing = tmp_path / "data" / "c.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"annotation_id": ["x"], "confirmed_task": ["t"]}), write_parquet_missing)
    with caplog.at_level("WARNING"):
        m, samples = build(tmp_path, tmp_path / "data")
    assert [s.frame for s in samples] == [0, 1]  # task-a keeps its two good steps
    assert m["dropped"] == {"unknown_operation": 1}
    assert m["skipped"] == {"no_positive_candidate": 1, "bad_bounding_box": 1, "target_not_visible": 1,
                            "bad_json": 1, "missing_screenshot": 1, "bad_step_index": 1,
                            "unreadable_parquet": 1, "missing_field": 1}
    details = {s["reason"]: s["detail"] for s in m["skipped_items"]}
    a = str(tmp_path / "data" / "a.parquet")
    assert f"{a} row 3" in details["no_positive_candidate"] and "row 4" in details["bad_bounding_box"]
    assert "10,20,abc" in details["bad_bounding_box"] and "action_uid hidden" in details["target_not_visible"]
    assert "b.parquet" in details["unreadable_parquet"]
    assert "c.parquet" in details["missing_field"] and "pos_candidates" in details["missing_field"]
    assert any(f"{a} row 2" in r.getMessage() and "HOVER" in r.getMessage() for r in caplog.records)


def test_layout_functions_on_their_own(tmp_path):
    rows, _ = flight_task("task-a")
    f = write_parquet(tmp_path / "d.parquet", rows, row_group_size=1)
    assert parquet_files(tmp_path) == [f]
    refs, errors = index_tasks([f])
    assert errors == {} and refs == [("task-a", [(str(f), 0), (str(f), 1), (str(f), 2)])]
    recs = read_rows(f, [2, 0])  # only the row groups holding them
    assert [r["action_uid"] for r in recs] == ["task-a-s2", "task-a-s0"]
    step = parse_step(recs[1], str(f), 0)
    assert (step.op, step.value, step.index, step.original_op) == ("TYPE", 'São Paulo "Centro"', 0, "TYPE")
    assert step.target.box == (20.0, 1100.0, 140.0, 1124.0) and step.target.text == "From"
    assert step.action_repr.startswith("[textbox]  From -> TYPE")
    assert len(step.negatives) == 10 and {n.text for n in step.negatives} >= {"Near 0", "Search", "Far link 2"}
    with pytest.raises(LayoutError) as err:
        parse_step(dict(recs[1], operation=json.dumps({"op": "DRAG", "value": ""})), str(f), 0)
    assert err.value.reason == "unknown_operation" and f"{f} row 0" in str(err.value)
    task, errs = load_task(refs[0])
    assert errs == [] and [s.index for s in task.steps] == [0, 1, 2]
    (only,) = [t for t in iter_tasks(f)]
    prepared = list(prepare_task(only, ViewportOptions(viewport_height=VIEW)))
    assert prepared[0].history == [] and prepared[2].history == [history_entry(p.action) for p in prepared[:2]]
    assert prepared[2].image.shape == (VIEW, PAGE_W, 3)
    with pytest.raises(LayoutError) as err:
        parquet_files(tmp_path / "nowhere")
    assert err.value.reason == "path_not_found"


def test_registered_with_typed_params():
    source = get_source_type("mind2web")
    cfg = SourceConfig(name="m", type="mind2web", params={"path": "x", "max_marks": 40})
    with pytest.raises(ValueError, match="max_marks"):
        source.params(cfg)
    with pytest.raises(ValueError, match="allowed|viewport_height"):
        source.params(SourceConfig(name="m", type="mind2web", params={"path": "x", "viewport": 3}))
