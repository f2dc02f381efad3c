from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magma.codecs import is_error, parse_mark, parse_point
from data_pipeline.build.writer import build_source, iter_shard
from data_pipeline.build.registry import SourceConfig, get_source_type, registered_source_types

PAGES = Path(__file__).parent / "pages"


def samples_of(out: Path, manifest: dict) -> list:
    return [s for n in manifest["shards"] for s in iter_shard(out / n)]


def test_registry_lists_som_types_and_rejects_unknown():
    assert {"verbal", "images", "html", "ui_annotations", "miniwob_episodes"} <= set(registered_source_types())
    with pytest.raises(KeyError, match="unknown source type"):
        get_source_type("nope")
    with pytest.raises(ValueError):
        SourceConfig(name="x", type="verbal", bogus=1)


def test_verbal_conversations_pass_through_unchanged(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    conv = [{"role": "user", "content": "<image>What colour?"},
            {"role": "assistant", "content": "Black."}]
    (tmp_path / "qa.jsonl").write_text(json.dumps({"image": "a.png", "conversation": conv}) + "\n")
    src = SourceConfig(name="qa", type="verbal", params={"path": str(tmp_path / "qa.jsonl")})
    m = build_source(src, tmp_path / "out", 4, workers=0, progress=False)
    (s,) = samples_of(tmp_path / "out", m)
    assert [(t.role, t.content, t.kind) for t in s.conversation] == [
        ("user", "<image>What colour?", None), ("assistant", "Black.", "verbal")]


@pytest.mark.browser
def test_html_source_marks_pages_and_counts_failed_ones(tmp_path):
    urls = tmp_path / "pages.txt"
    urls.write_text(f"{(PAGES / 'form.html').as_uri()}\n{(tmp_path / 'gone.html').as_uri()}\n")
    src = SourceConfig(name="web", type="html", params={"path": str(urls), "viewport": [640, 480],
                                                       "per_task": 1})
    m = build_source(src, tmp_path / "out", 16, workers=1, progress=False)
    assert m["skipped"] == {"page failed to load": 1}
    samples = samples_of(tmp_path / "out", m)
    from collections import Counter
    kinds = Counter(s.conversation[0].content[len("<image>"):].split(" ")[0] for s in samples)
    # one of each per page (per_task=1), plus point/box on one unlabelled mark (password field)
    assert kinds == {"Which": 1, "What": 1, "Point": 2, "Box": 2}, kinds
    for s in samples:
        assert s.images[0].shape == (480, 640, 3)
        text = s.conversation[-1].content
        if "Which mark" in s.conversation[0].content:
            mark = parse_mark(text)
            assert not is_error(mark) and s.meta["marks"][mark]["id"] == mark
        if "Point to" in s.conversation[0].content:
            assert not is_error(parse_point(text))


def test_inspect_prints_samples_and_writes_a_contact_sheet(tmp_path, capsys):
    from data_pipeline.cli import main
    from data_pipeline.som.synthetic import write_synthetic_som_data
    data = write_synthetic_som_data(tmp_path / "d", n_images=2, n_annotations=1, n_episodes=1)
    src = SourceConfig(name="imgs", type="images", params={"path": str(data / "images")})
    m = build_source(src, tmp_path / "out", 4, workers=0, progress=False)
    shard = tmp_path / "out" / m["shards"][0]
    assert main(["inspect", str(shard), "--num", "3", "--sheet", str(tmp_path / "sheet.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("== imgs-") == 3 and "assistant[spatial]" in out
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[0] > 100 and sheet.std() > 0
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_track_and_tom_dispatch_or_say_not_implemented(capsys):
    import importlib.util
    from data_pipeline.cli import main
    if importlib.util.find_spec("data_pipeline.tom.cli") is None:
        assert main(["track"]) == 3
        assert "not implemented yet" in capsys.readouterr().err
    assert main(["bogus"]) == 2
    assert main(["--help"]) == 0


def _ui_episode(root, seed: int) -> None:
    from magma.episode import Episode, EpisodeMeta
    buttons = [{"ref": 1, "tag": "button", "text": "okay", "left": 2, "top": 60, "width": 40, "height": 20},
               {"ref": 2, "tag": "button", "text": "next", "left": 50, "top": 60, "width": 40, "height": 20}]
    Episode(EpisodeMeta(episode_id=f"ep{seed}", env="miniwob", task="click-button",
                        instruction='Click on the "next" button.', action_space="ui", success=True),
            images=np.full((1, 100, 100, 3), 200, np.uint8),
            steps=[{"action": {"op": "click", "ref": 2}, "dom_elements": buttons}]).save(root)


@pytest.mark.parametrize("actions, kinds", [(True, {"action", "spatial", "verbal"}),
                                            (False, {"spatial", "verbal"})])
def test_miniwob_episodes_actions_switch(tmp_path, actions, kinds):
    """`actions: false` gives a SoM-only source of the same screens (weighted on its own)."""
    for seed in (0, 1):
        _ui_episode(tmp_path / "eps", seed)
    src = SourceConfig(name="mw", type="miniwob_episodes",
                       params={"path": str(tmp_path / "eps"), "som_per_step": 1, "actions": actions})
    m = build_source(src, tmp_path / "out", 16, workers=0, progress=False)
    samples = samples_of(tmp_path / "out", m)
    assert {s.primary_kind for s in samples} == kinds
    acts = [s for s in samples if s.primary_kind == "action"]
    assert all(s.conversation[-1].content == 'click "next" Mark 1' for s in acts) and len(acts) == 2 * actions
