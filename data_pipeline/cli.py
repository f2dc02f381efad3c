"""`magma data ...`: Set-of-Mark extraction, shard building and inspection.

    magma data som --input FILE_OR_DIR_OR_URL --out DIR [--viewport 1280x800] [--style box|dot]
    magma data build --config configs/data/MIX.yaml --out DIR [--workers N] [--set VAR=VALUE]
    magma data inspect SHARD_OR_BUILD_DIR [--num 4] [--sheet contact.png]
    magma data track|tom ...   (Trace-of-Mark; data_pipeline.tom.cli)
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

SUBCOMMANDS = {
    "som": "mark screens/pages/images: writes <name>.png, <name>.marked.png, <name>.marks.json",
    "build": "build WebDataset shards + manifest.json from a data mix config (resumable)",
    "inspect": "print a few samples of a shard or build folder and write a contact sheet PNG",
    "track": "Trace-of-Mark point tracking on videos (data_pipeline.tom.cli)",
    "tom": "Trace-of-Mark samples from videos/episodes (data_pipeline.tom.cli)",
}


def _error(msg: str, code: int = 2) -> int:
    print(f"magma data: error: {msg}", file=sys.stderr)
    return code


def _dispatch_tom(name: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module("data_pipeline.tom.cli")
    except ModuleNotFoundError as exc:
        if exc.name == "data_pipeline.tom.cli":
            return _error(f"'{name}' is not implemented yet (data_pipeline/tom_cli.py is missing)", 3)
        raise
    return int(getattr(module, f"main_{name}")(argv) or 0)


def _parse_viewport(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"viewport must be WIDTHxHEIGHT, e.g. 1280x800, got {text!r}")


def _som_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma data som", description=SUBCOMMANDS["som"])
    p.add_argument("--input", required=True,
                   help="an HTML file, an image, a folder of them, an http(s)/file URL, or a .txt of URLs")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--viewport", type=_parse_viewport, default=(1280, 800), help="WxH for pages")
    p.add_argument("--style", choices=("box", "dot"), default="box")
    p.add_argument("--max-marks", type=int, default=64, help="max region proposals per image")
    p.add_argument("--sam-checkpoint", default=None,
                   help="use SAM for image marks (needs the segment_anything package)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma data build", description=SUBCOMMANDS["build"])
    p.add_argument("--config", required=True, type=Path, help="configs/data/<mix>.yaml")
    p.add_argument("--out", required=True, type=Path, help="output folder (reruns resume here)")
    p.add_argument("--workers", type=int, default=None,
                   help="process pool size (default: the config's; 0 = in this process)")
    p.add_argument("--set", dest="variables", action="append", default=[], metavar="VAR=VALUE",
                   help="define ${VAR} for the config's params (repeatable; else the environment)")
    p.add_argument("--backend", choices=("pool", "ray"), default="pool")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild sources whose folder holds a build of a different config")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma data inspect", description=SUBCOMMANDS["inspect"])
    p.add_argument("path", type=Path, help="a shard .tar, a source folder or a build folder")
    p.add_argument("--num", type=int, default=4, help="samples to print")
    p.add_argument("--sheet", type=Path, default=None,
                   help="contact sheet PNG (default: <path>.contact.png beside a shard, or "
                        "<folder>/contact.png)")
    return p


def main_som(argv: list[str]) -> int:
    args = _som_parser().parse_args(argv)
    from data_pipeline.som.cli import run_som
    return run_som(args.input, args.out, viewport=args.viewport, style=args.style,
                   max_marks=args.max_marks, sam_checkpoint=args.sam_checkpoint,
                   progress=not args.quiet)


def main_build(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    from data_pipeline.build.mix_config import MixConfigError, load_mix_config, parse_set_args
    from data_pipeline.build.writer import BuildError, build_mix
    try:
        mix = load_mix_config(args.config, parse_set_args(args.variables))
        manifest = build_mix(mix, args.out, workers=args.workers, overwrite=args.overwrite,
                             progress=not args.quiet, backend=args.backend)
    except (MixConfigError, BuildError, KeyError) as exc:
        return _error(str(exc).strip('"'))
    print(f"{args.out}/manifest.json: {manifest['num_samples']} samples "
          f"{manifest['counts_by_kind']} from {manifest['counts_by_source']}; "
          f"skipped {manifest['skipped'] or 'none'}")
    if manifest["num_samples"] == 0:
        return _error("nothing usable was produced (see the skipped reasons above)", 1)
    return 0


def main_inspect(argv: list[str]) -> int:
    args = _inspect_parser().parse_args(argv)
    from data_pipeline.build.inspect import inspect_path
    try:
        return inspect_path(args.path, args.num, args.sheet)
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: magma data {" + ",".join(SUBCOMMANDS) + "} ...\n")
        for name, text in SUBCOMMANDS.items():
            print(f"  {name:8s} {text}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in ("track", "tom"):
        return _dispatch_tom(cmd, rest)
    handlers = {"som": main_som, "build": main_build, "inspect": main_inspect}
    if cmd not in handlers:
        return _error(f"unknown subcommand {cmd!r}; choose from {', '.join(SUBCOMMANDS)}")
    return handlers[cmd](rest)


if __name__ == "__main__":
    sys.exit(main())
