"""`magma eval screenspot`: GUI grounding accuracy on ScreenSpot (SeeClick, Cheng et al. 2024).

    magma eval screenspot --data DIR (--checkpoint CKPT | --server URL) [--agent policy|oracle|random]
                          [--max-samples N] [--splits mobile,desktop,web] [--seed 0] --out OUT

Writes OUT/results.json, OUT/report.md and OUT/predictions.jsonl (one line per sample).

Metric, as SeeClick's pretrain/screenspot_test.py computes it: a sample counts when the
predicted click point lies inside the target's box, edges included. Accuracy is hits / samples
overall (over all samples, not a mean of the splits), per split (mobile, desktop, web), per
element type (text, icon) and per split and type (the paper's table). An answer without a point
(unparsable text, a mark, a request error) is a miss, counted under `errors` by its code.

Agents:
  oracle  the box centre: must score 1.0 (proof that reading, boxes and hit test agree)
  random  a uniform point on the screen (seeded); its expected accuracy is the mean fraction of
          the screen the target box covers, reported for every agent as `chance`
  policy  the model through serving: the request a UI client sends for a screenshot without
          marks, {"adapter": "ui", "instruction", "image"}, answered by the same adapter that
          serves it (prompt `Task: <instruction>\\nNext action?`, answer `click at (x,y)`), in
          process (`--checkpoint`, built as `magma serve` builds it) or over HTTP (`--server`,
          serve.client); the response's `point` is in screen pixels.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from magma.cli import fail, subcommand
from magma.layouts.errors import LayoutError
from magma.layouts.screenspot import SCREENSPOT_SPLITS, SCREENSPOT_TYPES, ScreenSpotRecord, read_screenspot
from eval.closed_loop import PolicyUnavailable

AGENTS = ("policy", "oracle", "random")
RESULTS, REPORT, PREDICTIONS = "results.json", "report.md", "predictions.jsonl"


@dataclass
class Prediction:
    point: tuple[float, float] | None  # screen pixels; None: the agent gave no point
    raw: str = ""
    error: str | None = None  # a code, e.g. unparsable_ui_action, image_too_large


class Agent(Protocol):
    name: str

    def predict(self, rec: ScreenSpotRecord, image: Path, size: tuple[int, int]) -> Prediction: ...


class OracleAgent:
    name = "oracle"

    def predict(self, rec: ScreenSpotRecord, image: Path, size: tuple[int, int]) -> Prediction:
        x0, y0, x1, y1 = rec.box
        return Prediction(((x0 + x1) / 2, (y0 + y1) / 2))


class RandomAgent:
    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, rec: ScreenSpotRecord, image: Path, size: tuple[int, int]) -> Prediction:
        return Prediction((float(self.rng.uniform(0, size[0])), float(self.rng.uniform(0, size[1]))))


class PolicyAgent:
    """Any backend with `.act(request) -> response dict`: serve.policy.Policy or
    serve.client.PolicyClient. Request errors (4xx, ServeError) are misses with their code."""

    name = "policy"

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def predict(self, rec: ScreenSpotRecord, image: Path, size: tuple[int, int]) -> Prediction:
        from serve.client import encode_image
        from serve.client.browser import ui_request

        # a browser agent's first step on a page without DOM boxes: no marks, no history
        request = ui_request(rec.instruction, _image_b64(image, encode_image), [], [])
        try:
            resp = self.backend.act(request)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, str):  # ServeError / PolicyError: this request was refused
                return Prediction(None, error=code)
            raise PolicyUnavailable(f"the policy stopped answering at {rec.where}: "
                                    f"{type(exc).__name__}: {exc}") from exc
        point = resp.get("point")
        error = (resp.get("error") or {}).get("code")
        if point is None and error is None:
            error = "no_point"  # e.g. a mark the screen does not have, or an op without a target
        return Prediction(tuple(point) if point is not None else None, resp.get("raw", ""), error)


def _image_b64(path: Path, encode_image: Any) -> str:
    # The file's own bytes when serving can decode them; other formats go as PNG.
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return encode_image(str(path))
    from PIL import Image

    with Image.open(path) as im:
        return encode_image(im.convert("RGB"))


# ---------------------------------------------------------------- scoring

def _size(path: Path) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None


def box_fraction(box: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """The fraction of the screen the box covers (clipped to the screen): a uniform random
    click's chance of a hit."""
    w, h = size
    bw = max(0.0, min(box[2], w) - max(box[0], 0.0))
    bh = max(0.0, min(box[3], h) - max(box[1], 0.0))
    return bw * bh / float(w * h)


def subsample(records: list[ScreenSpotRecord], n: int | None) -> list[ScreenSpotRecord]:
    """`n` records evenly spaced over the list (splits keep their proportions); all if n is None."""
    if n is None or n >= len(records):
        return records
    return [records[int(i * len(records) / n)] for i in range(n)]


def score(records: list[ScreenSpotRecord], folder: Path, agent: Agent, progress: bool = True
          ) -> tuple[list[dict[str, Any]], Counter]:
    """One row per scored record, and the records skipped (by reason: missing_image)."""
    rows, skipped = [], Counter()
    for rec in tqdm(records, desc=f"screenspot ({agent.name})", unit="sample", disable=not progress,
                    dynamic_ncols=True):
        path = rec.image_path(folder)
        size = _size(path)
        if size is None:
            skipped["missing_image"] += 1
            continue
        t0 = time.perf_counter()
        pred = agent.predict(rec, path, size)
        hit = pred.point is not None and rec.contains(*pred.point)
        rows.append({"split": rec.split, "data_type": rec.data_type, "data_source": rec.data_source,
                     "img_filename": rec.img_filename, "instruction": rec.instruction,
                     "box": list(rec.box), "size": list(size), "chance": box_fraction(rec.box, size),
                     "hit": hit, "latency_ms": round((time.perf_counter() - t0) * 1e3, 2), **{
                         k: v for k, v in asdict(pred).items()}})
    return rows, skipped


def _cell(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    hits = sum(r["hit"] for r in rows)
    return {"accuracy": hits / n if n else None, "n": n, "hits": hits,
            "chance": sum(r["chance"] for r in rows) / n if n else None}


def summarize(rows: list[dict[str, Any]], agent: str, skipped: Counter, problems: Counter,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results.json body: {"screenspot": {overall, by_split, by_type, by_split_type, ...}}."""
    splits = [s for s in SCREENSPOT_SPLITS if any(r["split"] == s for r in rows)]
    types = [t for t in SCREENSPOT_TYPES if any(r["data_type"] == t for r in rows)]
    return {"screenspot": {
        "agent": agent,
        "overall": _cell(rows),
        "by_split": {s: _cell([r for r in rows if r["split"] == s]) for s in splits},
        "by_type": {t: _cell([r for r in rows if r["data_type"] == t]) for t in types},
        "by_split_type": {f"{s}/{t}": _cell([r for r in rows if r["split"] == s and r["data_type"] == t])
                          for s in splits for t in types},
        "errors": dict(sorted(Counter(r["error"] for r in rows if r["error"]).items())),
        "skipped": dict(sorted((skipped + problems).items())),
        **(extra or {}),
    }}


def _pct(cell: dict[str, Any] | None) -> str:
    if not cell or cell["accuracy"] is None:
        return "-"
    return f"{100 * cell['accuracy']:.1f} ({cell['n']})"


def report_markdown(results: dict[str, Any]) -> str:
    r = results["screenspot"]
    lines = [f"# ScreenSpot: {r['agent']} agent", "",
             "A sample counts when the predicted click point lies inside the target box (edges "
             "included). Accuracy in % (samples).", "",
             "| split | text | icon | all |", "|---|---|---|---|"]
    for s, cell in r["by_split"].items():
        lines.append(f"| {s} | {_pct(r['by_split_type'].get(f'{s}/text'))} | "
                     f"{_pct(r['by_split_type'].get(f'{s}/icon'))} | {_pct(cell)} |")
    lines.append(f"| **all** | {_pct(r['by_type'].get('text'))} | {_pct(r['by_type'].get('icon'))} | "
                 f"**{_pct(r['overall'])}** |")
    chance = r["overall"]["chance"]
    lines += ["", f"- uniform random click expects {100 * chance:.2f}% (mean box area / screen area)"
              if chance is not None else "- no samples scored"]
    if r.get("policy"):
        lines.append(f"- policy: {r['policy']}")
    if r["errors"]:
        lines.append("- answers without a usable point (misses): " +
                     ", ".join(f"{k} {v}" for k, v in r["errors"].items()))
    if r["skipped"]:
        lines.append("- records not scored: " + ", ".join(f"{k} {v}" for k, v in r["skipped"].items()))
    return "\n".join(lines) + "\n"


def run_benchmark(data: Path, agent: Agent, out: Path, max_samples: int | None = None,
                  splits: tuple[str, ...] = SCREENSPOT_SPLITS, progress: bool = True,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores `agent` on the ScreenSpot folder `data` and writes OUT/{results.json, report.md,
    predictions.jsonl}; returns the results. Raises LayoutError when no split file is there."""
    records, problems = read_screenspot(data, splits)
    records = subsample(records, max_samples)
    t0 = time.perf_counter()
    rows, skipped = score(records, data, agent, progress)
    results = summarize(rows, agent.name, skipped, Counter(p.reason for p in problems),
                        {"data": str(data), "seconds": round(time.perf_counter() - t0, 2), **(extra or {})})
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text(json.dumps(results, indent=1))
    (out / REPORT).write_text(report_markdown(results))
    with open(out / PREDICTIONS, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return results


# ---------------------------------------------------------------- command line

def add_command(sub: argparse._SubParsersAction) -> None:
    """`screenspot` in `magma eval` (see eval.cli)."""
    from eval.cli import add_policy_options  # eval.cli imports this module when it builds its parser

    p = subcommand(sub, "screenspot", run, "GUI grounding accuracy on a ScreenSpot folder",
                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="folder with screenspot_{mobile,desktop,web}.json and screenspot_imgs/")
    add_policy_options(p, engine_default="hf")
    p.add_argument("--agent", choices=AGENTS, default="policy")
    p.add_argument("--max-samples", type=int, help="score this many samples, evenly spaced over the splits")
    p.add_argument("--splits", default=",".join(SCREENSPOT_SPLITS), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=0, help="random agent's seed")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and report.md")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _policy_backend(args: argparse.Namespace) -> tuple[Any, str]:
    from eval.cli import make_backend
    from eval.config import PolicyConfig

    policy = PolicyConfig(checkpoint=args.checkpoint, server=args.server, token=args.token, engine=args.engine)
    return make_backend(SimpleNamespace(policy=policy))  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if not splits or any(s not in SCREENSPOT_SPLITS for s in splits):
        return fail(args._prog, f"--splits takes a subset of {','.join(SCREENSPOT_SPLITS)}, got {args.splits!r}")
    if args.max_samples is not None and args.max_samples < 1:
        return fail(args._prog, "--max-samples must be >= 1")
    backend, extra = None, {}
    if args.agent == "policy":
        if not (args.checkpoint or args.server):
            return fail(args._prog, "the policy agent needs --checkpoint DIR or --server URL "
                        "(or pass --agent oracle|random)")
        try:
            backend, described = _policy_backend(args)
        except PolicyUnavailable as exc:  # the server does not answer /healthz
            return fail(args._prog, str(exc), 4)
        except Exception as exc:  # a missing or unusable checkpoint
            return fail(args._prog, f"{type(exc).__name__}: {exc}")
        agent: Agent = PolicyAgent(backend)
        extra["policy"] = described
    else:
        agent = OracleAgent() if args.agent == "oracle" else RandomAgent(args.seed)
        extra["seed"] = args.seed if args.agent == "random" else None
    try:
        results = run_benchmark(args.data, agent, args.out, args.max_samples, splits, not args.quiet, extra)
    except LayoutError as exc:
        return fail(args._prog, str(exc))
    except PolicyUnavailable as exc:
        return fail(args._prog, str(exc), 4)
    finally:
        if backend is not None and hasattr(backend, "close"):
            backend.close()
    r = results["screenspot"]
    if not r["overall"]["n"]:
        return fail(args._prog, f"no sample could be scored ({r['skipped']}); check {args.data}", 1)
    print(report_markdown(results) + f"\nresults: {args.out / RESULTS}")
    return 0
