from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magma.codecs import is_error, parse_mark, parse_point
from magma.config_io import ConfigError
from data_pipeline.build.writer import build_source, iter_shard
from data_pipeline.build.registry import (SourceConfig, SourceType, check_source_params,
                                          get_source_type, register_source, registered_source_types)

PAGES = Path(__file__).parent / "pages"


def samples_of(out: Path, manifest: dict) -> list:
    return [s for n in manifest["shards"] for s in iter_shard(out / n)]


def test_registry_lists_som_types_and_rejects_unknown():
    assert {"verbal", "images", "html", "ui_annotations", "miniwob_episodes"} <= set(registered_source_types())
    with pytest.raises(KeyError, match="unknown source type"):
        get_source_type("nope")
    with pytest.raises(ValueError):
        SourceConfig(name="x", type="verbal", bogus=1)


# The params each SoM source type takes (docs/data_formats.md); anything else is refused.
SOM_PARAMS = {
    "verbal": {"path", "caption_prompt"},
    "images": {"path", "max_marks", "sam_checkpoint", "tasks", "per_task", "legend", "style", "split"},
    "html": {"path", "viewport", "timeout_s", "tasks", "per_task", "legend", "style", "split"},
    "ui_annotations": {"path", "tasks", "per_task", "legend", "style", "split"},
    "miniwob_episodes": {"path", "som_per_step", "tasks", "only_success", "actions", "dataset"},
}


@pytest.mark.parametrize("type_name,keys", SOM_PARAMS.items())
def test_som_params_are_typed_and_an_unknown_key_lists_the_allowed_ones(type_name, keys):
    check_source_params(SourceConfig(name="s", type=type_name, params={"path": "x"}))
    with pytest.raises(ConfigError) as err:
        check_source_params(SourceConfig(name="s", type=type_name, params={"path": "x", "bogus": 1}))
    assert str(err.value) == (f"source 's' ({type_name}): params.bogus: unknown key; "
                              f"allowed: {', '.join(sorted(keys))}")
    with pytest.raises(ConfigError, match="params.path: Field required"):
        check_source_params(SourceConfig(name="s", type=type_name, params={}))


def test_som_params_defaults_and_bad_values():
    p = get_source_type("images").params(SourceConfig(name="s", type="images", params={"path": "x"}))
    assert (p.max_marks, p.per_task, p.tasks, p.legend, p.style, p.split) == \
        (16, 2, ["grounding", "referring", "point", "box"], False, "box", "train")
    m = get_source_type("miniwob_episodes").params(
        SourceConfig(name="s", type="miniwob_episodes", params={"path": "x"}))
    assert (m.som_per_step, m.tasks, m.only_success, m.actions, m.dataset) == \
        (1, ["grounding", "referring"], True, True, None)
    with pytest.raises(ConfigError, match=r"params.tasks: .*unknown tasks \['nope'\]"):
        check_source_params(SourceConfig(name="s", type="html", params={"path": "x", "tasks": ["nope"]}))
    with pytest.raises(ConfigError, match="params.style"):
        check_source_params(SourceConfig(name="s", type="images", params={"path": "x", "style": "ring"}))
    with pytest.raises(ConfigError, match="unknown type 'imagez'.*registered: .*images"):
        check_source_params(SourceConfig(name="s", type="imagez", params={"path": "x"}))


def test_unknown_params_key_is_refused_before_the_build_starts(tmp_path, capsys):
    from data_pipeline.cli import main
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "mix.yaml").write_text(
        "name: m\nsources:\n"
        "  - {name: ok, type: verbal, params: {path: '${DATA}/images'}}\n"
        "  - {name: imgs, type: images, params: {path: '${DATA}/images', max_mark: 3}}\n")
    out = tmp_path / "out"
    assert main(["build", "--config", str(tmp_path / "mix.yaml"), "--var", f"DATA={tmp_path}",
                 "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mix.yaml'}: source 'imgs' (images): params.max_mark: unknown key; " \
           "allowed: legend, max_marks, path, per_task, sam_checkpoint, split, style, tasks" in err
    assert err.count("error:") == 1
    assert not out.exists()  # refused before any source was listed or processed


def test_a_source_type_must_declare_its_params():
    with pytest.raises(TypeError, match="must set params_model"):
        @register_source("no_params")
        class NoParams(SourceType):
            pass
    assert "no_params" not in registered_source_types()


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
    assert m["skipped"] == {"page_failed_to_load": 1}
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


def test_data_cli_lists_every_command_and_refuses_unknown_ones(capsys):
    from data_pipeline.cli import main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("som", "build", "inspect", "track", "tom"))
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert main(["track"]) == 2  # --input and --out are required
    assert "--input" in capsys.readouterr().err


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


def test_skip_reasons_have_one_spelling() -> None:
    # Manifest keys are summed across builds and grepped by users: snake_case, always.
    from data_pipeline.build.skips import SkipItem

    assert SkipItem("unreadable_image", "a.png").reason == "unreadable_image"
    for bad in ("unreadable image", "Unreadable", "bad-json", ""):
        with pytest.raises(ValueError, match="snake_case"):
            SkipItem(bad)
