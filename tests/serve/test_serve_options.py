"""`magma serve` options: one schema (ServeOptions) for the --config YAML and the flags."""
from __future__ import annotations

from pathlib import Path

import pytest

from magma.config_io import ConfigError
from serve.cli import ServeOptions, main, parse_options

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_is_valid_and_flags_override_it():
    opts = parse_options(["--config", str(REPO / "configs/serve/tiny.yaml"), "--checkpoint", "ckpt",
                          "--port", "9000"])
    assert opts == ServeOptions(checkpoint="ckpt", port=9000, threads=2)
    assert opts.chunk is None  # the checkpoint's trained chunk


def test_yaml_values_become_defaults(tmp_path):
    (tmp_path / "serve.yaml").write_text("checkpoint: from-yaml\nchunk: 4\nmax_batch: 3\n")
    opts = parse_options(["--config", str(tmp_path / "serve.yaml")])
    assert (opts.checkpoint, opts.chunk, opts.max_batch) == ("from-yaml", 4, 3)


@pytest.mark.parametrize("yaml_text, argv, message", [
    ("chunks: 2\n", [], "chunks: unknown key; allowed: checkpoint, chunk, engine, host, max_batch, "
                        "max_body_mb, port, threads, timeout, token"),
    ("port: 70000\n", [], "port: Input should be less than or equal to 65535"),
    ("", ["--port", "0"], "--port: Input should be greater than or equal to 1"),
    ("", ["--chunk", "0"], "--chunk: Input should be greater than or equal to 1"),
])
def test_a_bad_option_is_one_clear_error(tmp_path, capsys, yaml_text, argv, message):
    (tmp_path / "serve.yaml").write_text(yaml_text)
    argv = ["--config", str(tmp_path / "serve.yaml"), "--checkpoint", "ckpt", *argv]
    with pytest.raises(ConfigError) as info:
        parse_options(argv)
    assert message in str(info.value)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_the_checkpoint_is_required():
    with pytest.raises(ConfigError, match="--checkpoint: no checkpoint"):
        parse_options([])
