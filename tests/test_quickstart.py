"""The quickstart's smoke version end to end (record -> shards -> 2-rank DeepSpeed training from
the shipped backbones -> policy server -> closed-loop eval): every stage produces its artefact,
training lowers the loss and the policy beats the random agent on a held-out task."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.envs
def test_quickstart_fast_runs_every_stage(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "magma.cli", "quickstart", "--fast", "--run-dir", str(run)],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"run folder: {run}" in r.stdout
    # the summary says which backbones the model started from: the ones shipped in backbones/
    assert "backbones: language model backbones/tiny-lm (step " in r.stdout
    assert "vision tower backbones/tiny-convnext (step " in r.stdout
    # demonstrations, shards, checkpoint, metrics, results, report
    assert list((run / "episodes" / "miniwob").glob("*/episode.json"))
    assert list((run / "episodes" / "metaworld").glob("*/episode.json"))
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert manifest["counts_by_kind"].get("action", 0) > 0 and manifest["counts_by_kind"].get("spatial", 0) > 0
    assert (run / "train" / "final" / "model.safetensors").exists()
    assert (run / "train" / "final" / "action_stats.json").exists()
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) >= 2 and rows[-1]["loss"] < rows[0]["loss"] * 0.8, (rows[0], rows[-1])
    results = json.loads((run / "eval" / "results.json").read_text())
    for env in ("miniwob", "metaworld"):
        assert results[env], env
        for _task, res in results[env].items():
            assert 0.0 <= res["success_rate"] <= 1.0 and res["episodes"] > 0
            lo, hi = res["ci95"]
            assert 0.0 <= lo <= res["success_rate"] <= hi <= 1.0
    # a learned skill, not only a lower loss: on a held-out MiniWoB++ task the policy's whole 95%
    # interval is above the random agent's success measured in the same run
    learned = {task: (res["ci95"][0], res["random_baseline"]) for task, res in results["miniwob"].items()}
    assert any(lo > rnd for lo, rnd in learned.values()), learned
    assert (run / "eval" / "report.md").exists()
    assert (run / "timings.json").exists()
