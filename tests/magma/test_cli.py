import argparse
import subprocess
import sys

import pytest

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


def _exit_code(argv: list[str]) -> int:
    """The status `magma ARGV` exits with (argparse's --help raises SystemExit in some stages)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_help_exits_0(stage, capsys):
    assert _exit_code([stage, "--help"]) == 0
    assert f"magma {stage}" in capsys.readouterr().out


def _subcommands(stage: str) -> list[str]:
    import importlib
    module = importlib.import_module(STAGES[stage][0])
    parser = module.build_parser() if hasattr(module, "build_parser") else None
    actions = [a for a in (parser._actions if parser else []) if isinstance(a, argparse._SubParsersAction)]
    return [name for a in actions for name in a.choices]


@pytest.mark.parametrize("stage,command", [(s, c) for s in ("model", "data", "eval")
                                           for c in _subcommands(s)])
def test_every_subcommand_help_exits_0(stage, command, capsys):
    assert _exit_code([stage, command, "--help"]) == 0
    assert f"magma {stage} {command}" in capsys.readouterr().out


def test_bad_arguments_return_2_with_one_message(capsys):
    assert main(["data", "build", "--config", "x.yaml"]) == 2  # --out missing
    assert "the following arguments are required: --out" in capsys.readouterr().err
    assert main(["data", "build", "--config", "x.yaml", "--out", "o", "--set", "A=1"]) == 2
    assert "--set is now --var" in capsys.readouterr().err  # train's --set sets config keys
    assert main(["eval", "--config", "configs/eval/nope.yaml", "--agents", "random"]) == 2
    assert "eval config not found" in capsys.readouterr().err
