"""The `magma` command: the front door to every stage.

Each stage owns its command line in `<stage>/cli.py` with `main(argv: list[str]) -> int`;
this module only dispatches, importing a stage when its command runs, so `import magma` never
loads a stage.
"""
from __future__ import annotations

import argparse
import importlib
import sys

STAGES: dict[str, tuple[str, str]] = {
    "model": ("magma.model_cli", "build, inspect and benchmark model checkpoints"),
    "data": ("data_pipeline.cli", "Set-of-Mark / Trace-of-Mark extraction and shard building"),
    "train": ("train.cli", "pretrain or fine-tune on shards (DeepSpeed, CPU or GPU)"),
    "serve": ("serve.cli", "policy server (hf or vLLM engine) for robots and browser agents"),
    "eval": ("eval.cli", "closed-loop evaluation on MiniWoB++ and Meta-World, offline metrics"),
    "demo": ("serve.demo.cli", "Gradio demo (Set-of-Mark, Trace-of-Mark, agent, live)"),
    "quickstart": ("eval.quickstart", "end to end: demos -> shards -> train -> serve -> eval"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="magma", description="Train, serve and evaluate Magma-style agent foundation models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'magma STAGE --help' for a stage's options.")
    sub = p.add_subparsers(dest="stage", metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from magma import __version__
        print(__version__)
        return 0
    stage = argv[0]
    if stage not in STAGES:
        parser.print_usage(sys.stderr)
        print(f"magma: unknown stage {stage!r}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    module_name = STAGES[stage][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"magma {stage}: not implemented yet ({module_name} does not exist)", file=sys.stderr)
            return 3
        raise
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
