"""The report's target lines (issue 16's floors) and the quickstart summary that repeats them."""
from __future__ import annotations

import json

from eval.quickstart import _summary
from eval.report import target_lines


def _r(rate: float, lo: float, rand: float, n: int) -> dict:
    return {"success_rate": rate, "ci95": [lo, 1.0], "random_baseline": rand, "episodes": n}


def test_meta_world_floors_and_episode_count() -> None:
    res = {"metaworld": {"reach-v3": _r(0.6, 0.31, 0.0, 10), "button-press-v3": _r(0.6, 0.31, 0.0, 5)}}
    lines, met = target_lines(res)
    assert any("reach-v3 60% on 10 episodes (target >= 60% on >= 10): met" in ln for ln in lines)
    assert any("button-press-v3" in ln and "on 5 episodes" in ln and ln.endswith("NOT met") for ln in lines)
    assert met is False
    lines, met = target_lines({"metaworld": {"reach-v3": _r(0.5, 0.2, 0.0, 10)}})
    assert met is False and lines[-1].endswith("NOT met")


def test_summary_repeats_the_reporttarget_lines(tmp_path) -> None:
    (tmp_path / "eval").mkdir()
    res = {"miniwob": {"click-tab": _r(1.0, 0.89, 0.34, 30)}, "metaworld": {"reach-v3": _r(0.6, 0.31, 0.0, 10)}}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(res))
    lines, _ = target_lines(res)
    (tmp_path / "eval" / "report.md").write_text("# r\n\n## Targets\n\n" + "\n".join(lines) + "\n\n## Next\n\n- x\n")
    text = _summary(tmp_path, {"train": 1.0})
    assert "targets:" in text and "  MiniWoB++ click tasks mean success 100% (target >= 80%): met" in text
    assert "reach-v3 60% on 10 episodes" in text and "  x" not in text.split("targets:")[1].split("report:")[0]


def test_summary_points_to_the_measured_limit_only_when_a_target_is_not_met(tmp_path) -> None:
    (tmp_path / "eval").mkdir()
    met = {"miniwob": {"click-tab": _r(1.0, 0.89, 0.34, 30)}}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(met))
    assert "what limits the targets not met" not in _summary(tmp_path, {"train": 1.0})
    short = {"miniwob": {"click-button": _r(0.43, 0.27, 0.30, 30)}}
    (tmp_path / "eval" / "results.json").write_text(json.dumps(short))
    text = _summary(tmp_path, {"train": 1.0})
    assert "NOT met" in text and "what limits the targets not met, measured: the README's status section" in text
