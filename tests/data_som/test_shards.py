from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magma.config_io import ConfigError
from magma.schema import sample_from_tar_members
from data_pipeline.build.mix_config import load_mix_config
from magma.shards import read_manifest
from data_pipeline.build.writer import BuildError, build_mix, iter_shard
from data_pipeline.som.synthetic import synthetic_image, write_synthetic_som_data

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "data" / "tiny_som.yaml"


def all_ids(out: Path) -> list[str]:
    top = read_manifest(out)
    ids = []
    for src in top.sources.values():
        for shard in src.shards:
            ids.extend(s.id for s in iter_shard(out / src.dir / shard))
    return ids


@pytest.fixture(scope="module")
def som_data(tmp_path_factory):
    return write_synthetic_som_data(tmp_path_factory.mktemp("som") / "data", seed=1)


def test_tiny_mix_builds_with_layout_counts_and_targets(som_data, tmp_path):
    mix = load_mix_config(TINY, {"SOM_DATA": str(som_data)})
    top = build_mix(mix, tmp_path / "out", workers=0, progress=False)
    assert set(top["sources"]) == {"verbal", "images", "screens", "miniwob"}
    assert top["num_samples"] == sum(top["counts_by_source"].values()) > 0
    assert set(top["counts_by_kind"]) == {"verbal", "spatial", "action"}
    for name, src in top["sources"].items():
        sizes = [sum(1 for _ in iter_shard(tmp_path / "out" / src["dir"] / s)) for s in src["shards"]]
        assert sizes == src["shard_sizes"] and sum(sizes) == src["num_samples"]
        assert all(n == mix.samples_per_shard for n in sizes[:-1])
        assert (tmp_path / "out" / name / "manifest.json").exists()
    ids = all_ids(tmp_path / "out")
    assert len(ids) == len(set(ids)) == top["num_samples"]
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for i in ids)
    # UI action targets use the codec, on the marked screen, with the marks legend in the prompt
    shard = tmp_path / "out" / "miniwob" / top["sources"]["miniwob"]["shards"][0]
    actions = [s for s in iter_shard(shard) if s.primary_kind == "action"]
    assert actions
    from magma.codecs import parse_ui_action, is_error
    for s in actions:
        act = parse_ui_action(s.conversation[-1].content)
        # actions on marked elements name the mark (and, for clicks, its label), no point:
        # the executor clicks the mark's centre
        assert not is_error(act) and act.mark is not None and act.point is None
        assert "Marks:\n" in s.conversation[0].content and s.dataset == "miniwob"
        marks = s.meta["marks"]
        assert 0 <= act.mark < len(marks)
        if act.op == "click" and act.text is not None:
            assert f'"{act.text}" Mark {act.mark}' in s.conversation[0].content  # the legend line


def test_rerun_is_a_no_op_and_other_config_is_refused(som_data, tmp_path):
    mix = load_mix_config(TINY, {"SOM_DATA": str(som_data)})
    first = build_mix(mix, tmp_path / "out", workers=0, progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("shard-*.tar")}
    assert build_mix(mix, tmp_path / "out", workers=0, progress=False) == first
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("shard-*.tar")} == before
    changed = mix.model_copy(update={"samples_per_shard": 3})
    with pytest.raises(BuildError, match="--overwrite"):
        build_mix(changed, tmp_path / "out", workers=0, progress=False)


def test_pool_and_inline_give_identical_shards(som_data, tmp_path):
    mix = load_mix_config(TINY, {"SOM_DATA": str(som_data)})
    a = build_mix(mix, tmp_path / "a", workers=0, progress=False)
    b = build_mix(mix, tmp_path / "b", workers=2, progress=False)
    assert a == b
    for p in (tmp_path / "a").rglob("shard-*.tar"):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()


def test_undefined_variable_is_a_clear_error(tmp_path):
    os.environ.pop("SOM_DATA", None)
    with pytest.raises(ConfigError, match=r"\$\{SOM_DATA\}.*--var SOM_DATA="):
        load_mix_config(TINY)


def _write_bad_inputs(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "images" / "empty.png").write_bytes(b"")
    (root / "images" / "garbage.png").write_bytes(b"not a png at all")
    Image.fromarray(synthetic_image(np.random.default_rng(0))).save(root / "images" / "good.png")
    ann = root / "ann"
    ann.mkdir()
    Image.fromarray(np.full((100, 200, 3), 200, np.uint8)).save(ann / "s.png")
    (ann / "no_elements.json").write_text(json.dumps({"image": "s.png"}))
    (ann / "out_of_range.json").write_text(json.dumps(
        {"image": "s.png", "elements": [{"box": [10, 10, 500, 50], "text": "Big", "role": "button"}]}))
    (ann / "broken.json").write_text("{")
    (ann / "missing_image.json").write_text(json.dumps({"image": "nope.png", "elements": []}))
    (ann / "ok.json").write_text(json.dumps({"image": "s.png", "elements": [
        {"box": [10, 10, 60, 30], "text": "Go", "role": "button"},
        {"box": [70, 10, 70, 30], "text": "Flat", "role": "button"},  # zero width: dropped
        {"box": [0.5, 0.5, 0.9, 0.9], "text": "x"}], "box_units": "pixels"}))


def _run_cli(capsys, caplog, *args: str) -> tuple[int, str]:
    """`magma data ...` in this process (a subprocess would pay the ~10 s torch import)."""
    from data_pipeline.cli import main
    caplog.clear()
    code = main(list(args))
    return code, capsys.readouterr().err + caplog.text


def test_bad_inputs_are_counted_and_exit_code_reflects_usability(tmp_path, capsys, caplog):
    _write_bad_inputs(tmp_path / "in")
    (tmp_path / "in" / "empty_dir").mkdir()
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"""name: bad
samples_per_shard: 4
workers: 0
sources:
  - {{name: imgs, type: images, params: {{path: "{tmp_path}/in/images"}}}}
  - {{name: ann, type: ui_annotations, params: {{path: "{tmp_path}/in/ann"}}}}
  - {{name: gone, type: verbal, params: {{path: "{tmp_path}/in/does_not_exist"}}}}
  - {{name: empty, type: images, params: {{path: "{tmp_path}/in/empty_dir"}}}}
""")
    code, err = _run_cli(capsys, caplog, "build", "--config", str(cfg), "--out", str(tmp_path / "out"), "-q")
    # the sources that gave nothing are named and the build is not a success, but what the
    # others produced is written (manifest and shards) and kept
    assert code == 1 and "source(s) gone, empty produced no samples" in err, err
    assert "path_not_found" in err and "no_items" in err
    top = read_manifest(tmp_path / "out")
    assert top.skipped == {"empty_image": 1, "unreadable_image": 1, "missing_field": 1,
                              "box_out_of_range": 1, "bad_json": 1, "missing_image": 1,
                              "path_not_found": 1, "no_items": 1}
    assert top.dropped == {"element with zero or negative size": 1}
    assert top.counts_by_source["imgs"] > 0 and top.counts_by_source["ann"] > 0
    assert "garbage.png" in err and "out_of_range" in err  # a log line names the item
    # nothing usable at all -> non-zero exit, and the earlier build is untouched
    (tmp_path / "in" / "images" / "good.png").unlink()
    only_bad = tmp_path / "only_bad.yaml"
    only_bad.write_text(cfg.read_text().split("  - {name: ann")[0])
    code, err = _run_cli(capsys, caplog, "build", "--config", str(only_bad), "--out", str(tmp_path / "out2"), "-q")
    assert code == 1 and "nothing usable" in err
    assert read_manifest(tmp_path / "out") == top
    code, err = _run_cli(capsys, caplog, "build", "--config", str(tmp_path / "nope.yaml"),
                         "--out", str(tmp_path / "o3"))
    assert code == 2 and "not found" in err


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "build finished before it could be killed"
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_kill_9_during_build_then_rerun_gives_identical_manifest(tmp_path, capsys, caplog):
    data = tmp_path / "data"
    write_synthetic_som_data(data, n_images=48, n_annotations=12, n_episodes=10, seed=5)
    args = ["build", "--config", str(TINY), "--var", f"SOM_DATA={data}", "-q", "--workers", "2"]
    reference = tmp_path / "ref"
    code, err = _run_cli(capsys, caplog, *args, "--out", str(reference))
    assert code == 0, err
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_pipeline.cli", *args, "--out", str(out)]

    def items_done() -> int:
        return len(list(out.glob("*/.work/*/items/*.json")))

    # kill while items are processed, then while shards are being packed / written
    for ready in (lambda: items_done() >= 3,
                  lambda: len(list(out.glob("*/shard-*.tar"))) >= 1):
        proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _kill_when(proc, ready)
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "manifest.json").exists()
    code, err = _run_cli(capsys, caplog, *args, "--out", str(out))
    assert code == 0, err
    assert read_manifest(out) == read_manifest(reference)
    ids = all_ids(out)
    assert len(ids) == len(set(ids)) == read_manifest(out).num_samples
    assert sorted(ids) == sorted(all_ids(reference))
    for p in reference.rglob("shard-*.tar"):
        assert p.read_bytes() == (out / p.relative_to(reference)).read_bytes()
    assert not list(out.rglob("*.tmp*")) and not list(out.glob("*/.work"))


def test_shard_members_decode_back(som_data, tmp_path):
    mix = load_mix_config(TINY, {"SOM_DATA": str(som_data)})
    build_mix(mix, tmp_path / "o", workers=0, progress=False)
    import tarfile
    shard = next((tmp_path / "o" / "images").glob("shard-*.tar"))
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        key = names[0].split(".")[0]
        members = {n.split(".", 1)[1]: tar.extractfile(n).read() for n in names if n.startswith(key + ".")}
    s = sample_from_tar_members(key, members)
    assert s.images[0].dtype == np.uint8 and s.id == key
    assert Counter(n.split(".", 1)[1] for n in names)["json"] == len(set(n.split(".")[0] for n in names))


@pytest.mark.slow
def test_ray_backend_gives_the_same_manifest_as_the_pool(tmp_path):
    ray = pytest.importorskip("ray")
    data = tmp_path / "data"
    write_synthetic_som_data(data, n_images=3, n_annotations=2, n_episodes=2, seed=2)
    mix = load_mix_config(TINY, {"SOM_DATA": str(data)})
    try:
        by_ray = build_mix(mix, tmp_path / "ray", workers=2, progress=False, backend="ray")
    finally:
        ray.shutdown()
    assert by_ray == build_mix(mix, tmp_path / "pool", workers=2, progress=False)
