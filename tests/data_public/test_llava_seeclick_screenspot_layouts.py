"""LLaVA, SeeClick and ScreenSpot layouts -> samples.

Fixtures are written with json + PIL from the published layouts, field names and value
conventions exactly as the datasets publish them:
  LLaVA      github.com/haotian-liu/LLaVA docs/Data.md, llava_v1_5_mix665k.json records
             ({"id", "image", "conversations": [{"from": "human"|"gpt", "value"}]}; text-only
             ShareGPT records carry "model" and no "image"; OCR-VQA puts "<image>" last)
  SeeClick   github.com/njucckevin/SeeClick readme_data.md (web: img_filename, url, elements
             [{instruction, bbox [left, top, right, bottom] in 0..1, data_type text|hover}];
             mobile: flat {img_filename, instruction, bbox})
  ScreenSpot the SeeClick repo's ScreenSpot release and pretrain/screenspot_test.py
             (screenspot_{mobile,desktop,web}.json: img_filename, bbox [x, y, w, h] pixels,
             instruction, data_type text|icon, data_source; images in screenspot_imgs/)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from magma.codecs import denormalize_point, is_error, parse_box, parse_point, parse_ui_action
from magma.layouts.errors import LayoutError
from magma.layouts.json_records import RawRecord, read_json_records
from magma.layouts.llava import parse_llava_record
from magma.layouts.screenspot import read_screenspot
from magma.layouts.seeclick import parse_seeclick_record
from magma.schema import IMAGE_PLACEHOLDER
from data_pipeline.build.registry import SourceConfig, check_source_params
from data_pipeline.build.writer import build_source, iter_shard


def _png(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(path)


def _build(tmp_path: Path, name: str, type_: str, params: dict) -> tuple[dict, list]:
    out = tmp_path / f"out-{name}"
    m = build_source(SourceConfig(name=name, type=type_, params=params), out, 64, workers=0, progress=False)
    return m, [s for n in m["shards"] for s in iter_shard(out / n)]


# ---------------------------------------------------------------- LLaVA

ANSWER_1 = "The bus in the image is white and red."
ANSWER_2 = "The back of the bus features an advertisement.\n\n1. It is  large;\n2. it is colourful. "
LLAVA_RECORDS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                       {"from": "gpt", "value": ANSWER_1},
                       {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                       {"from": "gpt", "value": ANSWER_2}]},
    {"id": "1573250572", "image": "ocr_vqa/images/1573250572.jpg",  # OCR-VQA: the token comes last
     "conversations": [{"from": "human", "value": "Who wrote this book?\n<image>"},
                       {"from": "gpt", "value": "Lonely Planet"}]},
    {"id": "i6IyJda_0", "model": "",  # a ShareGPT text-only record
     "conversations": [{"from": "human", "value": "How to tell if a customer segment is well segmented?"},
                       {"from": "gpt", "value": "1. Homogeneity: ..."}]},
    {"id": "sys_1", "image": "coco/train2017/000000033471.jpg",  # no token: placed before the first turn
     "conversations": [{"from": "system", "value": "You are a helpful assistant."},
                       {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A bus."}]},
    {"id": "bard_1", "conversations": [{"from": "human", "value": "hi"}, {"from": "bard", "value": "hello"}]},
    {"id": "gone_1", "image": "coco/train2017/missing.jpg",
     "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "?"}]},
    {"id": "tok_1", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                      {"from": "gpt", "value": "?"}]},
    {"id": "order_1", "conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "hi"}]},
]


@pytest.fixture
def llava_dir(tmp_path: Path) -> Path:
    root = tmp_path / "llava"
    _png(root / "images/coco/train2017/000000033471.jpg", 64, 48)
    _png(root / "images/ocr_vqa/images/1573250572.jpg", 40, 60, seed=1)
    (root / "llava_v1_5_mix_tiny.json").write_text(json.dumps(LLAVA_RECORDS, indent=2))
    return root


def test_llava_answers_verbatim_image_token_anywhere_and_text_only_kept(llava_dir: Path, tmp_path: Path):
    m, samples = _build(tmp_path, "llava", "llava", {"path": str(llava_dir / "llava_v1_5_mix_tiny.json"),
                                                      "image_root": str(llava_dir / "images")})
    by_id = {s.meta["id"]: s for s in samples}
    assert set(by_id) == {"000000033471", "1573250572", "i6IyJda_0", "sys_1"}
    bus = by_id["000000033471"]
    assert [(t.role, t.content, t.kind) for t in bus.conversation] == [
        ("user", IMAGE_PLACEHOLDER + "What are the colors of the bus in the image?", None),
        ("assistant", ANSWER_1, "verbal"),
        ("user", "What feature can be seen on the back of the bus?", None),
        ("assistant", ANSWER_2, "verbal")]  # multi-turn kept, answers byte for byte
    assert len(bus.images) == 1 and bus.images[0].shape == (48, 64, 3)
    ocr = by_id["1573250572"]
    assert ocr.conversation[0].content == IMAGE_PLACEHOLDER + "Who wrote this book?"
    assert ocr.images[0].shape == (60, 40, 3)
    text = by_id["i6IyJda_0"]
    assert text.images == [] and IMAGE_PLACEHOLDER not in text.conversation[0].content
    assert text.conversation[1].content == "1. Homogeneity: ..."
    sys_ = by_id["sys_1"]
    assert [t.role for t in sys_.conversation] == ["system", "user", "assistant"]
    assert sys_.conversation[1].content == IMAGE_PLACEHOLDER + "Describe it."
    assert m["skipped"] == {"bad_record": 1, "image_token_mismatch": 1, "missing_image": 1,
                            "unknown_speaker": 1}
    details = {s["reason"]: s["detail"] for s in m["skipped_items"]}
    assert "record 4 (id 'bard_1')" in details["unknown_speaker"] and "'bard'" in details["unknown_speaker"]
    assert "llava_v1_5_mix_tiny.json: record 5 (id 'gone_1')" in details["missing_image"]
    assert "missing.jpg" in details["missing_image"]
    assert m["counts_by_kind"] == {"verbal": 4}


def test_llava_jsonl_keeps_good_lines_and_counts_a_bad_one(tmp_path: Path):
    f = tmp_path / "sharegpt4v_tiny.jsonl"
    good = {"id": "sa_1", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}
    f.write_text(json.dumps(good) + "\n{not json\n\n" + json.dumps(dict(good, id=7)) + "\n")
    m, samples = _build(tmp_path, "sg", "llava", {"path": str(f)})
    assert sorted(s.meta["id"] for s in samples) == ["7", "sa_1"]
    assert m["skipped"] == {"bad_json": 1}
    assert "sharegpt4v_tiny.jsonl: line 2" in m["skipped_items"][0]["detail"]


def test_llava_record_parser_rejects_what_the_layout_does_not_allow():
    def parse(rec):
        return parse_llava_record(RawRecord("f.json", 0, "f.json: record 0", rec))

    ok = parse(LLAVA_RECORDS[0])
    assert ok.images == ["coco/train2017/000000033471.jpg"] and len(ok.turns) == 4 and not ok.text_only
    with pytest.raises(LayoutError, match="end with gpt") as e:
        parse({"id": "x", "conversations": [{"from": "human", "value": "a"}]})
    assert e.value.reason == "bad_record"
    with pytest.raises(LayoutError, match="2 '<image>' tokens for 1 image"):
        parse({"id": "x", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "<image><image>a"}, {"from": "gpt", "value": "b"}]})
    with pytest.raises(LayoutError, match="gpt or system turn"):
        parse({"id": "x", "image": "a.jpg", "conversations": [
            {"from": "human", "value": "a"}, {"from": "gpt", "value": "<image>b"}]})


# ---------------------------------------------------------------- SeeClick

SEECLICK_WEB = [
    {"img_filename": "web_0001.png", "url": "https://example.org/",
     "elements": [{"instruction": "Sign in", "bbox": [0.8125, 0.0208, 0.875, 0.0625], "data_type": "text"},
                  {"instruction": "Shopping cart", "bbox": [0.9, 0.01, 0.95, 0.06], "data_type": "hover"},
                  {"instruction": "Footer link", "bbox": [0.1, 0.95, 0.3, 1.2], "data_type": "text"},
                  {"instruction": "Reversed", "bbox": [0.5, 0.5, 0.4, 0.6], "data_type": "text"},
                  {"instruction": "Hairline", "bbox": [0.5001, 0.3, 0.5003, 0.4], "data_type": "text"}]},
    {"img_filename": "web_0002.png", "url": "https://example.com/a",
     "elements": [{"instruction": "Read more about the 2024 report", "bbox": [0.0, 0.0, 1.0, 0.25],
                   "data_type": "text"}]},
    {"img_filename": "web_gone.png", "url": "https://example.com/b",
     "elements": [{"instruction": "never seen", "bbox": [0.1, 0.1, 0.2, 0.2], "data_type": "text"}]},
]
# a RICOSCA / widget-captioning record: flat, same box convention
SEECLICK_MOBILE = [{"img_filename": "mobile_0001.jpg", "instruction": "open settings",
                    "bbox": [0.02, 0.9, 0.2, 0.98]}]


@pytest.fixture
def seeclick_dir(tmp_path: Path) -> Path:
    root = tmp_path / "seeclick"
    _png(root / "imgs/web_0001.png", 320, 192)
    _png(root / "imgs/web_0002.png", 256, 256, seed=2)
    _png(root / "imgs/mobile_0001.jpg", 90, 160, seed=3)
    (root / "ann").mkdir()
    (root / "ann/seeclick_web.json").write_text(json.dumps(SEECLICK_WEB))
    (root / "ann/ricosca.json").write_text(json.dumps(SEECLICK_MOBILE))
    return root


def _inside_fraction_box(point, size, box) -> bool:
    x, y = denormalize_point(point, *size)
    w, h = size
    return box[0] * w <= x <= box[2] * w and box[1] * h <= y <= box[3] * h


def test_seeclick_targets_lie_inside_their_boxes_and_bad_elements_are_counted(seeclick_dir: Path,
                                                                               tmp_path: Path):
    m, samples = _build(tmp_path, "sc", "seeclick", {"path": str(seeclick_dir / "ann"),
                                                      "image_root": str(seeclick_dir / "imgs"),
                                                      "tasks": ["click", "point", "box"]})
    boxes = {el["instruction"]: el["bbox"] for r in SEECLICK_WEB + [{"elements": SEECLICK_MOBILE}]
             for el in r["elements"]}
    got = {}
    for s in samples:
        user, answer = s.conversation[0].content, s.conversation[1]
        instruction = next(i for i in boxes if f'"{i}"' in user or f"Task: {i}\n" in user)
        size = (s.images[0].shape[1], s.images[0].shape[0])
        if s.meta["task"] == "click":
            a = parse_ui_action(answer.content)
            assert answer.kind == "action" and a.op == "click" and a.mark is None
            assert user == f"{IMAGE_PLACEHOLDER}Task: {instruction}\nNext action?"
            assert _inside_fraction_box(a.point, size, boxes[instruction])
        elif s.meta["task"] == "point":
            assert answer.kind == "spatial"
            assert _inside_fraction_box(parse_point(answer.content), size, boxes[instruction])
        else:
            b = parse_box(answer.content)
            assert not is_error(b) and tuple(s.meta["target_box"]) == b
        got.setdefault(instruction, set()).add(s.meta["task"])
    assert got == {i: {"click", "point", "box"} for i in
                   ("Sign in", "Shopping cart", "Read more about the 2024 report", "open settings")}
    # the exact conversion: fractions -> cells of [0, 1000), once
    (sign_in,) = [s for s in samples if "Sign in" in s.conversation[0].content and s.meta["task"] == "box"]
    assert sign_in.conversation[1].content == "[812,20,875,62]"
    (read,) = [s for s in samples if "Read more" in s.conversation[0].content and s.meta["task"] == "click"]
    assert read.conversation[1].content == "click at (500,125)" and read.meta["url"] == "https://example.com/a"
    assert m["dropped"] == {"bad_box": 1, "box_outside_image": 1, "box_too_small": 1}
    assert m["skipped"] == {"missing_image": 1}
    assert "seeclick_web.json: record 2 (web_gone.png)" in m["skipped_items"][0]["detail"]
    assert m["counts_by_kind"] == {"action": 4, "spatial": 8}


def test_seeclick_element_errors_name_the_file_record_and_element():
    screen, problems = parse_seeclick_record(RawRecord("w.json", 0, "w.json: record 0", SEECLICK_WEB[0]))
    assert [e.instruction for e in screen.elements] == ["Sign in", "Shopping cart", "Hairline"]
    assert [p.reason for p in problems] == ["box_outside_image", "bad_box"]
    assert str(problems[0]).startswith("w.json: record 0 (web_0001.png): element 2: bbox")


def test_seeclick_downscaled_screens_keep_their_targets(seeclick_dir: Path, tmp_path: Path):
    _, full = _build(tmp_path, "full", "seeclick", {"path": str(seeclick_dir / "ann/seeclick_web.json"),
                                                     "image_root": str(seeclick_dir / "imgs")})
    _, small = _build(tmp_path, "small", "seeclick", {"path": str(seeclick_dir / "ann/seeclick_web.json"),
                                                       "image_root": str(seeclick_dir / "imgs"), "max_side": 64})
    assert [s.conversation for s in full] == [s.conversation for s in small]
    assert max(small[0].images[0].shape[:2]) == 64 and small[0].images[0].shape[:2] == (38, 64)


# ---------------------------------------------------------------- ScreenSpot

SCREENSPOT_MOBILE = [
    {"img_filename": "mobile_8f0c.png", "bbox": [10, 200, 60, 30], "instruction": "open the menu",
     "data_type": "icon", "data_source": "android"},
    {"img_filename": "mobile_8f0c.png", "bbox": [100, 20, 80, 16], "instruction": "search for apps",
     "data_type": "text", "data_source": "android"},
    {"img_filename": "mobile_gone.png", "bbox": [1, 1, 5, 5], "instruction": "not there", "data_type": "text",
     "data_source": "ios"},
    {"img_filename": "mobile_8f0c.png", "bbox": [150, 300, 90, 40], "instruction": "past the edge",
     "data_type": "text", "data_source": "ios"},
]
SCREENSPOT_WEB = [
    {"img_filename": "web_3b0a.png", "bbox": [42, 110, 197, 70], "instruction": "view the details of the item",
     "data_type": "text", "data_source": "shop"},
    {"img_filename": "web_3b0a.png", "bbox": [5, 5, 20, 20], "instruction": "go home",
     "data_type": "widget", "data_source": "gitlab"},
]


def write_screenspot(root: Path) -> Path:
    _png(root / "screenspot_imgs/mobile_8f0c.png", 200, 320)
    _png(root / "screenspot_imgs/web_3b0a.png", 400, 240, seed=4)
    (root / "screenspot_mobile.json").write_text(json.dumps(SCREENSPOT_MOBILE))
    (root / "screenspot_web.json").write_text(json.dumps(SCREENSPOT_WEB))
    return root


def test_screenspot_reader_converts_boxes_once_and_carries_the_split(tmp_path: Path):
    records, problems = read_screenspot(write_screenspot(tmp_path / "ss"))
    assert [(r.split, r.instruction, r.box) for r in records[:2]] == [
        ("mobile", "open the menu", (10.0, 200.0, 70.0, 230.0)),
        ("mobile", "search for apps", (100.0, 20.0, 180.0, 36.0))]
    assert {r.split for r in records} == {"mobile", "web"}  # desktop file absent: not an error
    assert [p.reason for p in problems] == ["unknown_data_type"]
    assert "screenspot_web.json: record 1 (web_3b0a.png)" in str(problems[0])
    assert records[0].contains(10, 230) and not records[0].contains(9.9, 215)  # edges count
    with pytest.raises(LayoutError, match="none of screenspot_mobile.json") as e:
        read_screenspot(tmp_path)
    assert e.value.reason == "path_not_found"


def test_screenspot_source_grounds_inside_boxes_and_counts_skips(tmp_path: Path):
    root = write_screenspot(tmp_path / "ss")
    m, samples = _build(tmp_path, "ss", "screenspot", {"path": str(root), "tasks": ["click", "box"]})
    clicks = {s.conversation[0].content: s for s in samples if s.meta["task"] == "click"}
    assert len(clicks) == 3 and all(s.meta["split"] == "heldout" for s in samples)
    menu = clicks[f"{IMAGE_PLACEHOLDER}Task: open the menu\nNext action?"]
    assert menu.meta["screenspot_split"] == "mobile" and menu.meta["data_type"] == "icon"
    # centre (40, 215) on 200x320 -> cell (200, 671), exactly the codec's floor(x / w * 1000)
    assert menu.conversation[1].content == "click at (200,671)"
    for s in clicks.values():
        rec = next(r for r in SCREENSPOT_MOBILE + SCREENSPOT_WEB
                   if s.conversation[0].content == f"{IMAGE_PLACEHOLDER}Task: {r['instruction']}\nNext action?")
        x, y, w, h = rec["bbox"]
        px, py = denormalize_point(parse_ui_action(s.conversation[1].content).point,
                                   s.images[0].shape[1], s.images[0].shape[0])
        assert x <= px <= x + w and y <= py <= y + h
    assert m["skipped"] == {"box_outside_image": 1, "missing_image": 1, "unknown_data_type": 1}
    assert m["counts_by_kind"] == {"action": 3, "spatial": 3}


def test_a_mix_of_the_three_builds_through_magma_data_build(llava_dir: Path, seeclick_dir: Path,
                                                            tmp_path: Path):
    from data_pipeline.cli import main

    root = write_screenspot(tmp_path / "ss")
    mix = {"name": "public-ui", "samples_per_shard": 8, "workers": 0, "sources": [
        {"name": "llava", "type": "llava", "params": {"path": "${D}/llava", "image_root": "${D}/llava/images"}},
        {"name": "seeclick", "type": "seeclick", "params": {"path": "${D}/seeclick/ann",
                                                             "image_root": "${D}/seeclick/imgs"}},
        {"name": "screenspot", "type": "screenspot", "params": {"path": str(root)}}]}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mix))
    out = tmp_path / "shards"
    assert main(["build", "--config", str(tmp_path / "mix.yaml"), "--var", f"D={tmp_path}", "--out", str(out),
                 "-q"]) == 0
    top = json.loads((out / "manifest.json").read_text())
    assert top["counts_by_source"] == {"llava": 4, "seeclick": 4, "screenspot": 3}
    assert top["splits"]["screenspot"] == {"heldout": 3}
    assert top["skipped"]["missing_image"] == 3


def test_params_are_checked_before_the_build():
    from magma.config_io import ConfigError

    with pytest.raises(ConfigError, match="params.tasks"):
        check_source_params(SourceConfig(name="s", type="seeclick", params={"path": "x", "tasks": ["tap"]}))
    with pytest.raises(ConfigError, match="params.image_dir: unknown key"):
        check_source_params(SourceConfig(name="s", type="llava", params={"path": "x", "image_dir": "y"}))
    with pytest.raises(ConfigError, match="params.path"):
        check_source_params(SourceConfig(name="s", type="screenspot", params={}))


def test_json_records_read_lists_and_lines(tmp_path: Path):
    (tmp_path / "a.json").write_text('[{"a": 1}, 2]')
    assert [r.value for r in read_json_records(tmp_path / "a.json")] == [{"a": 1}, 2]
    (tmp_path / "b.json").write_text('[{"a": 1},')
    with pytest.raises(LayoutError, match="b.json: not valid JSON") as e:
        read_json_records(tmp_path / "b.json")
    assert e.value.reason == "bad_json"
