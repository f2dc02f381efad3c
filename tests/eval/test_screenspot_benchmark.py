"""`magma eval screenspot` on a ScreenSpot folder written from the published layout.

Layout (github.com/njucckevin/SeeClick, the ScreenSpot release read by pretrain/screenspot_test.py):
screenspot_{mobile,desktop,web}.json, lists of {"img_filename", "bbox": [x, y, w, h] in pixels,
"instruction", "data_type": "text"|"icon", "data_source"}, images in screenspot_imgs/.
"""
from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.benchmarks.screenspot import PolicyAgent, run_benchmark
from eval.cli import main

SCREENS = {"mobile": ("mobile_{}.png", (120, 200), ("ios", "android")),
           "desktop": ("pc_{}.png", (320, 200), ("windows", "macos")),
           "web": ("web_{}.png", (300, 180), ("shop", "gitlab"))}
PER_SPLIT = 100


def write_folder(root: Path, per_split: int = PER_SPLIT, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "screenspot_imgs").mkdir(parents=True, exist_ok=True)
    for split, (pattern, (w, h), sources) in SCREENS.items():
        records = []
        for k in range(2):
            pixels = rng.integers(0, 255, (h, w, 3), np.uint8)
            Image.fromarray(pixels).save(root / "screenspot_imgs" / pattern.format(k))
        for i in range(per_split):
            bw, bh = int(rng.integers(1, w // 2)), int(rng.integers(1, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            records.append({"img_filename": pattern.format(i % 2), "bbox": [x, y, bw, bh],
                            "instruction": f"{split} target {i}", "data_type": ("text", "icon")[i % 2],
                            "data_source": sources[i % 2]})
        (root / f"screenspot_{split}.json").write_text(json.dumps(records))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("screenspot"))


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["screenspot"]


def test_oracle_scores_one_everywhere_and_writes_the_schema(data: Path, tmp_path: Path):
    assert main(["screenspot", "--data", str(data), "--agent", "oracle", "--out", str(tmp_path), "-q"]) == 0
    r = _results(tmp_path)
    assert r["agent"] == "oracle" and r["overall"]["accuracy"] == 1.0 and r["overall"]["n"] == 3 * PER_SPLIT
    assert set(r["by_split"]) == {"mobile", "desktop", "web"} and set(r["by_type"]) == {"text", "icon"}
    assert all(c["accuracy"] == 1.0 and c["n"] == PER_SPLIT for c in r["by_split"].values())
    assert all(c["n"] == PER_SPLIT // 2 for c in r["by_split_type"].values()) and len(r["by_split_type"]) == 6
    assert r["errors"] == {} and r["skipped"] == {}
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * PER_SPLIT and all(row["hit"] for row in rows)
    assert "| mobile | 100.0 (50) | 100.0 (50) | 100.0 (100) |" in (tmp_path / "report.md").read_text()


def test_random_agent_lands_near_its_expected_value(data: Path, tmp_path: Path):
    assert main(["screenspot", "--data", str(data), "--agent", "random", "--seed", "3", "--out", str(tmp_path),
                 "-q"]) == 0
    r = _results(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    p = np.array([row["chance"] for row in rows])
    # the expected accuracy of a uniform click is the mean box area fraction; 4 sigma of a
    # sum of Bernoullis with those probabilities (the draw is seeded, so this is deterministic)
    sigma = math.sqrt(float(np.sum(p * (1 - p)))) / len(p)
    assert r["overall"]["chance"] == pytest.approx(float(p.mean()))
    assert 0.02 < r["overall"]["chance"] < 0.3
    assert abs(r["overall"]["accuracy"] - r["overall"]["chance"]) < 4 * sigma
    assert r["overall"]["accuracy"] < 0.5  # far from the oracle
    assert r["seed"] == 3
    # uniform over the whole screen: relative coordinates spread over [0, 1] with mean 1/2
    rel = np.array([[row["point"][0] / row["size"][0], row["point"][1] / row["size"][1]] for row in rows])
    assert rel.min() >= 0 and rel.max() <= 1 and np.allclose(rel.mean(0), 0.5, atol=0.06)
    assert (rel.min(0) < 0.03).all() and (rel.max(0) > 0.97).all()


def test_max_samples_keeps_the_splits_and_bad_records_are_counted(tmp_path: Path):
    root = write_folder(tmp_path / "ss", per_split=10)
    web = json.loads((root / "screenspot_web.json").read_text())
    web += [{"img_filename": "web_missing.png", "bbox": [1, 1, 4, 4], "instruction": "gone",
             "data_type": "text", "data_source": "shop"},
            {"img_filename": "web_0.png", "bbox": [1, 1, 4, 4], "instruction": "odd type",
             "data_type": "button", "data_source": "shop"}]
    (root / "screenspot_web.json").write_text(json.dumps(web))
    assert main(["screenspot", "--data", str(root), "--agent", "oracle", "--max-samples", "9",
                 "--out", str(tmp_path / "o"), "-q"]) == 0
    r = _results(tmp_path / "o")
    assert r["overall"]["n"] == 9 and {s: c["n"] for s, c in r["by_split"].items()} == {
        "mobile": 3, "desktop": 3, "web": 3}
    assert main(["screenspot", "--data", str(root), "--agent", "oracle", "--splits", "web",
                 "--out", str(tmp_path / "w"), "-q"]) == 0
    r = _results(tmp_path / "w")
    assert r["overall"] == {"accuracy": 1.0, "n": 10, "hits": 10, "chance": r["overall"]["chance"]}
    assert r["skipped"] == {"missing_image": 1, "unknown_data_type": 1}


def test_bad_invocations_fail_with_one_message(data: Path, tmp_path: Path, capsys):
    assert main(["screenspot", "--data", str(data), "--out", str(tmp_path)]) == 2  # policy needs a model
    assert "needs --checkpoint DIR or --server URL" in capsys.readouterr().err
    assert main(["screenspot", "--data", str(tmp_path), "--agent", "oracle", "--out", str(tmp_path / "o")]) == 2
    assert "none of screenspot_mobile.json" in capsys.readouterr().err
    assert main(["screenspot", "--data", str(data), "--agent", "oracle", "--splits", "tv",
                 "--out", str(tmp_path)]) == 2
    assert main(["screenspot", "--data", str(data), "--server", "http://127.0.0.1:9",
                 "--out", str(tmp_path / "s")]) == 4  # nothing listens on port 9
    assert "does not answer /healthz" in capsys.readouterr().err


class _Backend:
    """Answers like the policy server: the box centre in pixels for even instructions, a typed
    error for odd ones, a refused request (an exception with a code) for the last."""

    def __init__(self, boxes: dict[str, list[float]]):
        self.boxes, self.requests = boxes, []

    def act(self, request: dict) -> dict:
        self.requests.append(request)
        n = int(request["instruction"].rsplit(" ", 1)[1])
        if n == 9:
            err = RuntimeError("too large")
            err.code = "image_too_large"  # type: ignore[attr-defined]
            raise err
        if n % 2:
            return {"kind": "ui", "point": None, "raw": "Mark 3",
                    "error": {"code": "unparsable_ui_action", "message": "..."}}
        x0, y0, x1, y1 = self.boxes[request["instruction"]]
        return {"kind": "ui", "op": "click", "point": [(x0 + x1) / 2, (y0 + y1) / 2], "raw": "click at (1,2)"}


def test_policy_agent_scores_pixel_points_and_counts_errors_as_misses(tmp_path: Path):
    root = write_folder(tmp_path / "ss", per_split=10)
    from magma.layouts.screenspot import read_screenspot

    records, _ = read_screenspot(root, ("mobile",))
    backend = _Backend({r.instruction: list(r.box) for r in records})
    r = run_benchmark(root, PolicyAgent(backend), tmp_path / "out", splits=("mobile",), progress=False)["screenspot"]
    assert r["overall"]["n"] == 10 and r["overall"]["hits"] == 5
    assert r["errors"] == {"image_too_large": 1, "unparsable_ui_action": 4}
    req = backend.requests[0]
    assert req["adapter"] == "ui" and req["instruction"] == "mobile target 0" and not req.get("dom_elements")
    with Image.open(root / "screenspot_imgs" / "mobile_0.png") as im:  # the file's own PNG bytes
        import base64
        import io
        assert Image.open(io.BytesIO(base64.b64decode(req["image"]))).size == im.size


def test_the_benchmark_asks_what_the_screenspot_source_trains(tmp_path: Path):
    """The policy agent's request, through serving's UI adapter, renders the very user turn of
    the `screenspot` source's click samples, and the adapter maps the trained answer back onto
    a pixel inside the box."""
    from data_pipeline.build.registry import SourceConfig
    from data_pipeline.build.writer import build_source, iter_shard
    from serve.adapters.ui import prepare_ui, ui_response
    from serve.api import ActRequest
    from serve.engines.base import GenerationOutput

    root = write_folder(tmp_path / "ss", per_split=2)
    m = build_source(SourceConfig(name="ss", type="screenspot", params={"path": str(root)}), tmp_path / "b", 16,
                     workers=0, progress=False)
    samples = [s for n in m["shards"] for s in iter_shard(tmp_path / "b" / n)]
    class Recorder:
        requests: list[dict] = []

        def act(self, request: dict) -> dict:
            self.requests.append(request)
            return {"kind": "ui", "point": None, "raw": ""}

    backend = Recorder()
    run_benchmark(root, PolicyAgent(backend), tmp_path / "out", progress=False)
    from magma.layouts.screenspot import read_screenspot

    records = {r.instruction: r for r in read_screenspot(root)[0]}
    trained = {s.conversation[0].content: s.conversation[1].content for s in samples}
    assert len(trained) == len(backend.requests) == 6
    for request in backend.requests:
        with Image.open(records[request["instruction"]].image_path(root)) as im:
            gen, ctx = prepare_ui(ActRequest.model_validate(request), im.convert("RGB"), lambda user: user)
        answer = trained[gen.prompt]  # the prompt served is the prompt trained
        out = ui_response(GenerationOutput(token_ids=[], text=answer, finish_reason="stop"), ctx)
        assert out.error is None and records[request["instruction"]].contains(*out.point)


# ---------------------------------------------------------------- a real (tiny, random) model

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model, processor = build_model("configs/model/tiny.yaml")
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(model, processor, folder, {})
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_policy_runs_in_process_and_over_http_with_the_same_answers(data: Path, tiny_checkpoint, tmp_path: Path):
    import uvicorn

    from serve.policy import Policy
    from serve.server import ServerSettings, create_app

    n = 4
    assert main(["screenspot", "--data", str(data), "--checkpoint", str(tiny_checkpoint), "--max-samples", str(n),
                 "--out", str(tmp_path / "local"), "-q"]) == 0
    local = _results(tmp_path / "local")
    assert local["agent"] == "policy" and local["overall"]["n"] == n and "checkpoint" in local["policy"]
    assert set(local["by_split"]) <= {"mobile", "desktop", "web"} and 0.0 <= local["overall"]["accuracy"] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "local" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(row["point"] is not None or row["error"] for row in rows)
    assert all(row["raw"] for row in rows if row["error"] != "no_point")  # the model's text is kept

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Policy.from_checkpoint(tiny_checkpoint), ServerSettings()),
                                           host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.1)
        assert main(["screenspot", "--data", str(data), "--server", f"http://127.0.0.1:{port}",
                     "--max-samples", str(n), "--out", str(tmp_path / "http"), "-q"]) == 0
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    remote = [json.loads(line) for line in (tmp_path / "http" / "predictions.jsonl").read_text().splitlines()]
    # greedy decoding of the same checkpoint through the same adapter: the same answers
    assert [(r["raw"], r["point"], r["hit"]) for r in remote] == [(r["raw"], r["point"], r["hit"]) for r in rows]
