"""The tiny ConvNeXt pretraining: generated screens/scenes and their targets, pretrain_vision's
folder loaded through `vision.pretrained`, and exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from magma.model_config import load_model_spec
from magma.pretrained import load_vision_tower, read_vision_source
from train.backbones import screens as sc
from train.backbones import vision as vis

MICRO = vis.VisionRecipe(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], image_size=64, batch_size=3,
                         probe_images=6, probe_every=2, checkpoint_every=2, log_every=1, warmup=1)
GRID = 7  # the quickstart's 224 px views -> 7 x 7 cells


def _draw(kind: str, seed: int, marks: bool | None = True) -> sc.Drawn:
    rng = np.random.default_rng([seed, 1])
    return sc.draw_ui(rng, kind=kind, marks=marks) if kind in sc.UI_LAYOUTS else sc.draw_scene(rng, kind=kind)


def _same_targets(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", list(sc.UI_LAYOUTS) + ["reach", "press", "pick"])
def test_images_and_targets_are_a_function_of_the_seed(kind):
    a, b, c = _draw(kind, 3, None), _draw(kind, 3, None), _draw(kind, 4, None)
    assert np.array_equal(a.image, b.image) and _same_targets(sc.cell_targets(a, GRID), sc.cell_targets(b, GRID))
    assert not np.array_equal(a.image, c.image)
    size = sc.UI_SIZE if kind in sc.UI_LAYOUTS else sc.SCENE_SIZE
    assert a.image.shape == (size[1], size[0], 3) and a.roles.shape == (size[1], size[0])


def test_batches_are_a_function_of_seed_and_step():
    r = MICRO.sized()
    proc = vis.processor_for(r)

    def batch(seed, step):
        return vis.collate(vis.draw_batch(np.random.default_rng([seed, step]), r), r, proc)

    one, again, other = batch(0, 5), batch(0, 5), batch(0, 6)
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not torch.equal(one["pixel_values"], other["pixel_values"])


def test_pixel_values_are_the_processors():
    """The tower is fed exactly as fine-tuning feeds it: the whole screen stretched to the view."""
    r = vis.VisionRecipe().sized()
    assert (r.image_size, r.grid, r.hidden_sizes, r.depths) == (224, 7, [32, 64, 128, 256], [2, 2, 2, 2])
    d = _draw("buttons", 0)
    from magma.image_processing_magma import MagmaImageProcessor
    expected = MagmaImageProcessor(image_size=224).preprocess([d.image])["pixel_values"]
    got = vis.collate([d], r, vis.processor_for(r))["pixel_values"].numpy()
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("kind", list(sc.UI_LAYOUTS))
def test_tags_are_drawn_where_the_targets_say(kind):
    for seed in range(4):
        marked, plain = _draw(kind, seed, True), _draw(kind, seed, False)
        h, w = plain.roles.shape
        assert np.array_equal(marked.roles, plain.roles) and marked.marks and not plain.marks
        changed = (marked.image != plain.image).any(-1)
        allowed = np.zeros_like(changed)
        for m in marked.marks:
            x0, y0, x1, y1 = m.box
            allowed[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True  # the box drawn just outside
            tx0, ty0, tx1, ty1 = m.tag
            allowed[ty0:ty1, tx0:tx1] = True
            tag = marked.image[ty0:ty1, tx0:tx1]
            fill = (tag == np.asarray(sc.colour_of_mark(m.id))).all(-1)
            assert fill.mean() > 0.4, f"tag {m.id} not filled with its colour"
            assert (~fill).sum() >= 3, f"tag {m.id} has no digit in it"
        assert not (changed & ~allowed).any(), "pixels changed outside the recorded marks"
        tag = sc.cell_targets(marked, GRID)["tag"]
        for m in marked.marks:
            r, c = sc.cell_of((m.tag[0] + m.tag[2]) / 2, (m.tag[1] + m.tag[3]) / 2, w, h, GRID)
            assert tag[r, c] in (1 + m.id, -1)
        in_cells = sorted(int(v) - 1 for v in tag.ravel() if v > 0)
        assert len(set(in_cells)) == len(in_cells) and set(in_cells) <= {m.id for m in marked.marks}


def test_marks_are_in_reading_order_with_ordered_or_random_ids():
    orders = set()
    for seed in range(12):
        d = _draw("buttons", seed)
        boxes, ids = [m.box for m in d.marks], [m.id for m in d.marks]
        assert sc.reading_order(boxes) == list(range(len(boxes)))
        assert len(set(ids)) == len(ids) and all(0 <= i < sc.MAX_MARKS for i in ids)
        orders.add(ids == list(range(len(ids))))
    assert orders == {True, False}  # both numberings occur


@pytest.mark.parametrize("kind", ["buttons", "tabs", "scatter", "dialog", "checkboxes", "links"])
def test_labels_and_the_instruction_target(kind):
    for seed in range(4):
        d = _draw(kind, seed, False)
        h, w = d.roles.shape
        t = sc.cell_targets(d, GRID)
        assert d.labels
        for lb in d.labels:
            x0, y0, x1, y1 = lb.box
            region = d.image[y0:y1, x0:x1].astype(int).reshape(-1, 3)
            colours, counts = np.unique(region, axis=0, return_counts=True)
            ink = np.abs(region - colours[counts.argmax()]).sum(-1) > 150  # glyphs against the face colour
            assert ink.sum() >= 5, f"no text drawn for {sc.WORDS[lb.word]!r}"
            r, c = sc.cell_of((x0 + x1) / 2, (y0 + y1) / 2, w, h, GRID)
            assert t["word"][r, c] in (1 + lb.word, -1)
        for q, cell in zip(t["queries"], t["query_cell"]):
            assert [lb.word for lb in d.labels].count(q) == 1
            lb = next(lb for lb in d.labels if lb.word == q)
            assert cell == np.ravel_multi_index(sc.cell_of((lb.box[0] + lb.box[2]) / 2, (lb.box[1] + lb.box[3]) / 2,
                                                            w, h, GRID), (GRID, GRID))
        # the instruction names the target element by the word on it (dialog: "x" is the close button)
        if kind in ("buttons", "scatter", "tabs", "links"):
            named = next(lb for lb in d.labels if lb.element == d.target)
            assert sc.WORDS[named.word].lower() in d.instruction.lower()
        x0, y0, x1, y1 = d.target
        assert t["target_cell"] == np.ravel_multi_index(sc.cell_of((x0 + x1) / 2, (y0 + y1) / 2, w, h, GRID),
                                                        (GRID, GRID))
        assert (d.image[:sc.BAR_HEIGHT] == (255, 255, 0)).all(-1).mean() > 0.8  # the instruction bar


@pytest.mark.parametrize("kind", ["reach", "press", "pick"])
def test_scene_points_show_their_things(kind):
    colours = {"gripper": [(235, 235, 235), (40, 220, 220)]}
    for seed in range(5):
        d = _draw(kind, seed)
        h, w = d.roles.shape
        t = sc.cell_targets(d, GRID)
        assert "gripper" in d.points or t["point_cell"][sc.POINTS.index("gripper")] == -1
        for k, name in enumerate(sc.POINTS):
            if name not in d.points:
                assert t["point_cell"][k] == -1
                continue
            x, y = d.points[name]
            r, c = sc.cell_of(x, y, w, h, GRID)
            assert t["point_cell"][k] == r * GRID + c
            assert np.allclose((c + t["point_off"][k][0]) * w / GRID, x, atol=0.1)
            assert np.allclose((r + t["point_off"][k][1]) * h / GRID, y, atol=0.1)
            xi, yi, reach = int(round(x)), int(round(y)), 6 if name == "gripper" else 1
            patch = d.roles[max(0, yi - reach):yi + reach + 1, max(0, xi - reach):xi + reach + 1]
            assert (patch == sc.ROLE_ID[sc._POINT_ROLE[name]]).any()
            if name in colours:  # the two fingers are drawn around the gripper point
                near = d.image[max(0, yi - 8):yi + 3, max(0, xi - 8):xi + 9].astype(int)
                for ref in colours[name]:
                    assert (np.abs(near - ref).max(-1) <= 16).any()
        roles = t["roles"]
        assert roles[sc.ROLES.index("table")].sum() > 0 and roles[sc.ROLES.index("arm")].sum() > 0
        assert roles[:sc.ROLES.index("table")].sum() == 0  # no UI roles in a scene


def _pixels(n: int = 4) -> torch.Tensor:
    r = MICRO.sized()
    drawn = [sc.draw_example(np.random.default_rng([9, i])) for i in range(n)]
    return vis.collate(drawn, r, vis.processor_for(r))["pixel_values"]


def _trained_tower(out, dtype=torch.bfloat16) -> torch.nn.Module:
    """The run's last checkpointed tower (as saved: cast to `dtype`), contiguous, fp32."""
    state = torch.load(out / ".work" / "state.pt", map_location="cpu", weights_only=False)["model"]
    tower = vis.build_tower(MICRO.sized())
    tower.load_state_dict({k[len("tower."):]: v for k, v in state.items() if k.startswith("tower.")})
    return tower.to(dtype).float().eval()


def test_pretrain_vision_writes_a_folder_vision_pretrained_loads(tmp_path):
    out = tmp_path / "tower"
    probe = vis.pretrain_vision(out, steps=3, recipe=MICRO)
    assert {"role_f1", "tag_acc", "locate_acc", "point_err_px", "kind_acc"} <= probe.keys()
    record = json.loads((out / "probe.json").read_text())
    assert record["step"] == 3 and record["chance"]["kind_acc"] == round(1 / len(sc.KINDS), 4)
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and any("probe" in r for r in log)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "micro-pretrained-tower", "image_size": 64,
        "vision": {"pretrained": str(out), "depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64],
                   "feature_stage": 3},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2}}))
    source = read_vision_source(load_model_spec(spec_file))
    assert source.kind == "hf_folder" and tuple(source.image_mean) == MICRO.image_mean
    assert tuple(source.image_std) == MICRO.image_std
    loaded = load_vision_tower(source)
    x = _pixels()
    with torch.no_grad():
        got = loaded(x).last_hidden_state
        want = _trained_tower(out)(x).last_hidden_state
    assert got.shape == (4, 64, 2, 2)
    assert torch.equal(got, want)
    assert (out / "model.safetensors").stat().st_size < 15e6


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    vis.pretrain_vision(whole, steps=5, recipe=MICRO)
    cut = tmp_path / "cut"
    calls = {"n": 0}
    real = vis.draw_batch

    def interrupted(rng, recipe):
        calls["n"] += 1
        if calls["n"] == 4:  # step 4: the state on disk is step 2's (checkpoint_every=2)
            raise KeyboardInterrupt
        return real(rng, recipe)

    monkeypatch.setattr(vis, "draw_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vis.pretrain_vision(cut, steps=5, recipe=MICRO)
    monkeypatch.setattr(vis, "draw_batch", real)
    assert torch.load(cut / ".work" / "state.pt", weights_only=False)["step"] == 2
    vis.pretrain_vision(cut, steps=5, recipe=MICRO)
    a = torch.load(whole / ".work" / "state.pt", weights_only=False)
    b = torch.load(cut / ".work" / "state.pt", weights_only=False)
    assert a["step"] == b["step"] == 5
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "training_log.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("probe")) for r in rows]

    assert losses(whole) == losses(cut)
    # without resume the checkpoint is ignored: a fresh run from step 0
    vis.pretrain_vision(cut, steps=5, recipe=MICRO, resume=False)
    c = torch.load(cut / ".work" / "state.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])
