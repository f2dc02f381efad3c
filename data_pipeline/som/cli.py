"""`magma data som`: mark pages and images, writing for each input
`<name>.png` (screenshot or image), `<name>.marked.png` and `<name>.marks.json`."""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from magma.cli import fail, subcommand
from magma.marks import Mark
from data_pipeline.som.image_io import read_image
from data_pipeline.som.rendering import mark_table, render_marks
from data_pipeline.som.page_capture import CaptureError, shared_capturer
from data_pipeline.som.region_proposals import ProposalBackendError, propose_marks
from data_pipeline.build.registry import SkipItem

log = logging.getLogger("data_pipeline.som")
PROG = "magma data som"
PAGE_SUFFIXES = (".html", ".htm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_inputs(spec: str) -> list[tuple[str, str]]:
    """(output name, input) for a URL, an HTML/image file, a .txt of URLs, or a folder."""
    if re.match(r"^(https?|file)://", spec):
        return [(re.sub(r"[^A-Za-z0-9_-]+", "_", spec.split("://", 1)[1]).strip("_")[:80] or "page", spec)]
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (give an HTML file, an image, "
                                "a folder of them, a URL or a .txt of URLs)")
    if path.is_file() and path.suffix == ".txt":
        urls = [u.strip() for u in path.read_text().splitlines() if u.strip() and not u.startswith("#")]
        return [(n, u) for u in urls for n, _ in list_inputs(u)]
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix.lower() in PAGE_SUFFIXES + IMAGE_SUFFIXES)
    root = path.parent if path.is_file() else path
    return [(str(f.relative_to(root).with_suffix("")).replace("/", "__"), str(f)) for f in files]


def mark_one(source: str, viewport: tuple[int, int], max_marks: int,
             sam_checkpoint: str | None) -> tuple[np.ndarray, list[Mark]]:
    if source.startswith(("http://", "https://", "file://")) or Path(source).suffix.lower() in PAGE_SUFFIXES:
        return shared_capturer().capture(source, viewport)
    image = read_image(source)
    return image, propose_marks(image, max_marks=max_marks,
                                backend="sam" if sam_checkpoint else "opencv",
                                sam_checkpoint=sam_checkpoint)


def run_som(input_spec: str, out: Path, viewport: tuple[int, int] = (1280, 800), style: str = "box",
            max_marks: int = 64, sam_checkpoint: str | None = None, progress: bool = True) -> int:
    try:
        inputs = list_inputs(input_spec)
    except FileNotFoundError as exc:
        return fail(PROG, str(exc))
    if not inputs:
        return fail(PROG, f"{input_spec}: no .html or image files found")
    out.mkdir(parents=True, exist_ok=True)
    ok, skipped = 0, {}
    for name, source in tqdm(inputs, desc="som", unit="input", disable=not progress):
        try:
            image, marks = mark_one(source, viewport, max_marks, sam_checkpoint)
        except (CaptureError, SkipItem) as exc:
            skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
            log.warning("skipped %s (%s) %s", source, exc.reason, exc.detail)
            continue
        except ProposalBackendError as exc:
            return fail(PROG, str(exc))
        Image.fromarray(image).save(out / f"{name}.png")
        Image.fromarray(render_marks(image, marks, style=style)).save(out / f"{name}.marked.png")  # type: ignore[arg-type]
        (out / f"{name}.marks.json").write_text(json.dumps(mark_table(marks), indent=1))
        ok += 1
    print(f"{out}: marked {ok} of {len(inputs)} inputs; skipped {skipped or 'none'}")
    return 0 if ok else 1


# ---------------------------------------------------------------- command line

def _viewport(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"viewport must be WIDTHxHEIGHT, e.g. 1280x800, got {text!r}") from None


def run_som_command(args: argparse.Namespace) -> int:
    return run_som(args.input, args.out, viewport=args.viewport, style=args.style,
                   max_marks=args.max_marks, sam_checkpoint=args.sam_checkpoint,
                   progress=not args.quiet)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """`som` in `magma data` (see data_pipeline.cli)."""
    p = subcommand(sub, "som", run_som_command, "mark screens/pages/images: writes <name>.png, "
                   "<name>.marked.png, <name>.marks.json")
    p.add_argument("--input", required=True,
                   help="an HTML file, an image, a folder of them, an http(s)/file URL, or a .txt of URLs")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--viewport", type=_viewport, default=(1280, 800), help="WxH for pages")
    p.add_argument("--style", choices=("box", "dot"), default="box")
    p.add_argument("--max-marks", type=int, default=64, help="max region proposals per image")
    p.add_argument("--sam-checkpoint", default=None,
                   help="use SAM for image marks (needs the segment_anything package)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
