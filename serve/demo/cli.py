"""`magma demo`: the Gradio demo on a checkpoint (in-process hf engine) or a running server."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from magma.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="magma demo",
        description="Gradio demo with Set-of-Mark, Trace-of-Mark, Agent and Live tabs. "
                    "Give --checkpoint (model loaded here, hf engine) or --server (a `magma serve` URL).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint folder (config.json, weights, tokenizer, action_stats.json)")
    src.add_argument("--server", help="URL of a running policy server, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", default=os.environ.get("MAGMA_SERVE_TOKEN"),
                   help="bearer token for --server (default: $MAGMA_SERVE_TOKEN)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=8.0, help="largest accepted upload (default 8 MB)")
    p.add_argument("--max-video-seconds", type=float, default=20.0, help="longest accepted video (default 20 s)")
    p.add_argument("--max-video-frames", type=int, default=48, help="frames decoded for Trace-of-Mark (default 48)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (with --checkpoint)")
    p.set_defaults(run=run_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


def run_demo(args: argparse.Namespace) -> int:
    if not 0 < args.port <= 65535:
        print(f"magma demo: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    if args.max_upload_mb <= 0 or args.max_video_seconds <= 0 or args.max_video_frames < 2:
        print("magma demo: limits must be positive (--max-upload-mb, --max-video-seconds) and "
              "--max-video-frames at least 2", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from serve.demo.backend import DemoError, LocalBackend, RemoteBackend
    from serve.demo.logic import DemoLimits

    limits = DemoLimits(max_upload_mb=args.max_upload_mb, max_video_seconds=args.max_video_seconds,
                        max_video_frames=args.max_video_frames)
    try:
        if args.checkpoint:
            if not Path(args.checkpoint).is_dir():
                print(f"magma demo: --checkpoint {args.checkpoint} is not a folder; make one with "
                      "`magma model init --config configs/model/tiny.yaml --out DIR`", file=sys.stderr)
                return 2
            if args.threads:
                import torch
                torch.set_num_threads(args.threads)
            backend = LocalBackend.from_checkpoint(args.checkpoint)
        else:
            backend = RemoteBackend(args.server, token=args.token)
            backend.info()  # fail now, not on the first click
    except DemoError as exc:
        print(f"magma demo: {exc}", file=sys.stderr)
        return 2

    from serve.demo.app import build_app, launch

    print(f"magma demo: {backend.name} -> http://{args.host}:{args.port}", flush=True)
    try:
        launch(build_app(backend, limits), host=args.host, port=args.port, limits=limits)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"magma demo: cannot listen on {args.host}:{args.port} ({exc}); choose another --port",
              file=sys.stderr)
        return 2
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
