import subprocess
import sys

from magma.cli import STAGES, main


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("model", "data", "train", "serve", "eval", "demo", "quickstart"):
        assert stage in out and stage in STAGES


def test_unknown_stage_is_a_clear_error(capsys):
    assert main(["bogus"]) == 2
    assert "unknown stage 'bogus'" in capsys.readouterr().err


def test_model_init_and_info(tmp_path):
    out = tmp_path / "ck"
    r = subprocess.run([sys.executable, "-m", "magma.cli", "model", "init", "--config",
                        "configs/model/tiny.yaml", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").exists() and (out / "action_stats.json").exists()
    r = subprocess.run([sys.executable, "-m", "magma.cli", "model", "info", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "parameters" in r.stdout
    r = subprocess.run([sys.executable, "-m", "magma.cli", "model", "init", "--config",
                        "configs/model/nope.yaml", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "model config not found" in r.stderr
