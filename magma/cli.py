"""The `magma` command: the front door to every stage, and the one dispatch style they share.

Each stage owns its command line in `<stage>/cli.py` with `main(argv: list[str] | None) -> int`;
this module only dispatches, importing a stage when its command runs, so `import magma` never
loads a stage. Every stage's `main` has the same shape:

    def build_parser() -> argparse.ArgumentParser:       # subcommands through `subcommand`
        p = argparse.ArgumentParser(prog="magma STAGE")
        sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
        subcommand(sub, "build", run_build, "what it does").add_argument(...)
        return p

    def run_build(args: argparse.Namespace) -> int: ...   # 0 done, 1 nothing produced, 2 bad input

    def main(argv: list[str] | None = None) -> int:
        return run_cli(build_parser(), argv, errors=(ConfigError, ...))

A stage without subcommands sets `p.set_defaults(run=...)` on its one parser. Bad arguments
and the expected `errors` give one message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

Command = Callable[[argparse.Namespace], int]

STAGES: dict[str, tuple[str, str]] = {
    "model": ("magma.model_cli", "build, inspect and benchmark model checkpoints"),
    "data": ("data_pipeline.cli", "Set-of-Mark / Trace-of-Mark extraction and shard building"),
    "train": ("train.cli", "pretrain or fine-tune on shards (DeepSpeed, CPU or GPU)"),
    "backbones": ("train.backbones.cli", "pretrain the embedded default's tiny LM and ConvNeXt tower here"),
    "serve": ("serve.cli", "policy server (hf or vLLM engine) for robots and browser agents"),
    "eval": ("eval.cli", "closed-loop evaluation on MiniWoB++ and Meta-World, offline metrics"),
    "demo": ("serve.demo.cli", "Gradio demo (Set-of-Mark, Trace-of-Mark, agent, live)"),
    "quickstart": ("eval.quickstart", "end to end: demos -> shards -> train -> serve -> eval"),
}


def subcommand(sub: Any, name: str, run: Command, help: str, **kwargs: Any
               ) -> argparse.ArgumentParser:
    """A subcommand parser (from `add_subparsers`) whose parsed arguments run `run(args)`."""
    p = sub.add_parser(name, help=help, description=kwargs.pop("description", help), **kwargs)
    p.set_defaults(run=run, _prog=p.prog)
    return p


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None,
            errors: tuple[type[Exception], ...] = ()) -> int:
    """Parses `argv` and returns `args.run(args)`; argparse's own errors (usage + message) and
    the expected `errors` (one line: '<prog>: error: <message>') return 2 instead of raising."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the help or the usage and the problem
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except errors as exc:
        return fail(getattr(args, "_prog", parser.prog), str(exc))


def fail(prog: str, message: str, code: int = 2) -> int:
    """Prints '<prog>: error: <message>' on stderr and returns `code` (for `return fail(...)`)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


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
    module = importlib.import_module(STAGES[stage][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
