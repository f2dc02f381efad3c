"""`magma data ...`: Set-of-Mark extraction, Trace-of-Mark tracking, shard building, inspection.

    magma data som --input FILE_OR_DIR_OR_URL --out DIR [--viewport 1280x800] [--style box|dot]
    magma data build --config configs/data/MIX.yaml --out DIR [--workers N] [--var NAME=VALUE]
    magma data inspect SHARD_OR_BUILD_DIR [--num 4] [--sheet contact.png]
    magma data track|tom ...   (Trace-of-Mark; data_pipeline.tom.cli)

Each subsystem adds its own commands (`add_commands` in data_pipeline.som.cli and
data_pipeline.tom.cli); `build` and `inspect` belong to the build core.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from magma.cli import fail, run_cli, subcommand
from magma.config_io import ConfigError
from data_pipeline.build.writer import BuildError
from data_pipeline.som.cli import add_commands as add_som_commands
from data_pipeline.tom.cli import add_commands as add_tom_commands


def run_build(args: argparse.Namespace) -> int:
    from data_pipeline.build.mix_config import load_mix_config, parse_var_args
    from data_pipeline.build.writer import build_mix

    mix = load_mix_config(args.config, parse_var_args(args.variables))
    manifest = build_mix(mix, args.out, workers=args.workers, overwrite=args.overwrite,
                         progress=not args.quiet, backend=args.backend)
    print(f"{args.out}/manifest.json: {manifest['num_samples']} samples "
          f"{manifest['counts_by_kind']} from {manifest['counts_by_source']}; "
          f"skipped {manifest['skipped'] or 'none'}")
    if manifest["num_samples"] == 0:
        return fail("magma data build", "nothing usable was produced (see the skipped reasons above)", 1)
    # A source that gave nothing (a decoder missing, a wrong path inside a folder, ...) is never a
    # silent success, even when the other sources of the mix produced samples; its shards folder
    # and manifest are kept, and a rerun after the fix rebuilds only what changed.
    empty = [name for name, n in manifest["counts_by_source"].items() if n == 0]
    if empty:
        details = "; ".join(f"{name}: skipped {manifest['sources'][name].get('skipped') or 'nothing listed'}"
                            for name in empty)
        return fail("magma data build", f"source(s) {', '.join(empty)} produced no samples ({details}); "
                    "fix their input or remove them from the mix", 1)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from data_pipeline.build.inspect import inspect_path

    try:
        return inspect_path(args.path, args.num, args.sheet)
    except (FileNotFoundError, ValueError) as exc:
        return fail("magma data inspect", str(exc))


class _Renamed(argparse.Action):
    """`magma data build --set` was renamed `--var` (train's `--set` overrides config keys)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        parser.error("--set is now --var NAME=VALUE (it defines ${NAME} in the mix config)")


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "build", run_build,
                   "build WebDataset shards + manifest.json from a data mix config (resumable)")
    p.add_argument("--config", required=True, type=Path, help="configs/data/<mix>.yaml")
    p.add_argument("--out", required=True, type=Path, help="output folder (reruns resume here)")
    p.add_argument("--workers", type=int, default=None,
                   help="process pool size (default: the config's; 0 = in this process)")
    p.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE",
                   help="define ${NAME} in the config's params (repeatable; else the environment)")
    p.add_argument("--set", action=_Renamed, help=argparse.SUPPRESS)
    p.add_argument("--backend", choices=("pool", "ray"), default="pool")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild sources whose folder holds a build of a different config")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "inspect", run_inspect,
                   "print a few samples of a shard or build folder and write a contact sheet PNG")
    p.add_argument("path", type=Path, help="a shard .tar, a source folder or a build folder")
    p.add_argument("--num", type=int, default=4, help="samples to print")
    p.add_argument("--sheet", type=Path, default=None,
                   help="contact sheet PNG (default: <path>.contact.png beside a shard, or "
                        "<folder>/contact.png)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma data", description="Set-of-Mark extraction, "
                                "Trace-of-Mark tracking, shard building and inspection.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_som_commands(sub)
    _add_build(sub)
    _add_inspect(sub)
    add_tom_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(build_parser(), argv, errors=(ConfigError, BuildError))


if __name__ == "__main__":
    sys.exit(main())
