"""Run folder outputs: results.json, report.md, plots (matplotlib) and episode filmstrips.

results.json = {"miniwob": {TASK: {"success_rate", "ci95": [lo, hi], "episodes",
"random_baseline", "expert", ...}}, "metaworld": {...}} built from episodes.jsonl alone, so a
report can be rebuilt from the episodes of an interrupted run (`magma eval report RUN`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from eval.closed_loop import StepTrace, read_jsonl
from eval.metrics import summarise

RESULTS = "results.json"
REPORT = "report.md"
EPISODES = "episodes.jsonl"
CLICK_TASK_PREFIX = "click-"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_results(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    results = summarise(read_jsonl(run_dir / EPISODES))
    (run_dir / RESULTS).write_text(json.dumps(results, indent=1))
    return results


# ---------------------------------------------------------------- plots

def plot_success(results: dict[str, Any], path: Path) -> Path | None:
    rows = [(env, task, r) for env, tasks in results.items() for task, r in tasks.items()]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    width = 0.27
    for k, (agent, colour) in enumerate((("policy", "tab:blue"), ("random", "tab:gray"),
                                         ("expert", "tab:green"))):
        vals, lo, hi = [], [], []
        for _, _, r in rows:
            a = r["agents"].get(agent)
            v = a["success_rate"] if a else float("nan")
            vals.append(v)
            lo.append(max(0.0, v - a["ci95"][0]) if a else 0)  # float noise at 0 and 1
            hi.append(max(0.0, a["ci95"][1] - v) if a else 0)
        ax.bar(x + (k - 1) * width, vals, width, yerr=[lo, hi], capsize=2, color=colour,
               label=agent)
    ax.set_xticks(x, [f"{t}\n({e})" for e, t, _ in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(records: list[dict[str, Any]], path: Path) -> Path | None:
    lat = [v for r in records if r["agent"] == "policy" for v in r.get("latencies_ms", [])]
    if not lat:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lat, bins=min(40, max(5, len(lat) // 3)), color="tab:blue")
    ax.set_xlabel("policy latency per call (ms)")
    ax.set_ylabel("calls")
    ax.set_title(f"n={len(lat)}, median {np.median(lat):.0f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(metrics_jsonl: str | Path, path: Path) -> Path | None:
    """Loss curves from training's metrics.jsonl ({"step", "loss", "loss_<kind>", ...})."""
    recs = read_jsonl(metrics_jsonl)
    recs = [r for r in recs if "step" in r and "loss" in r]
    if not recs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = ["loss"] + sorted({k for r in recs for k in r if k.startswith("loss_")})
    for key in keys:
        pts = [(r["step"], r[key]) for r in recs
               if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts), label=key, lw=1.5 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- filmstrips

def draw_step(trace: StepTrace, scale: int = 2) -> np.ndarray:
    """One frame with the offered marks (boxes + ids) and the action (click point / typed text /
    robot action vector) drawn on it."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(trace.image, dtype=np.uint8)).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    d = ImageDraw.Draw(img)
    for m in trace.marks:
        x0, y0, x1, y1 = (v * scale for v in m["box"])
        d.rectangle([x0, y0, x1, y1], outline=(255, 0, 0))
        d.text((x0 + 1, y0 + 1), str(m["id"]), fill=(255, 0, 0))
    a = trace.action or {}
    if a.get("point"):
        x, y = (v * scale for v in a["point"])
        d.ellipse([x - 5, y - 5, x + 5, y + 5], outline=(0, 90, 255), width=2)
        d.line([x - 8, y, x + 8, y], fill=(0, 90, 255))
        d.line([x, y - 8, x, y + 8], fill=(0, 90, 255))
    label = ""
    if a.get("op"):
        label = f"{a['op']}" + (f" M{a['mark']}" if a.get("mark") is not None else "") + \
            (f" '{a['text']}'" if a.get("text") else "")
    elif a.get("action") is not None:
        label = "[" + " ".join(f"{v:+.2f}" for v in a["action"]) + "]"
    elif a.get("error"):
        label = str(a["error"])
    if label:
        d.rectangle([0, img.height - 12, img.width, img.height], fill=(0, 0, 0))
        d.text((2, img.height - 12), label[:48], fill=(255, 255, 0))
    return np.asarray(img)


def write_filmstrip(trace: Sequence[StepTrace], path: Path, max_frames: int = 6) -> Path | None:
    if not trace:
        return None
    from PIL import Image

    idx = np.unique(np.linspace(0, len(trace) - 1, min(max_frames, len(trace))).round().astype(int))
    frames = [draw_step(trace[i]) for i in idx]
    h = max(f.shape[0] for f in frames)
    strip = np.concatenate([np.pad(f, ((0, h - f.shape[0]), (0, 2), (0, 0)), constant_values=255)
                            for f in frames], axis=1)
    Image.fromarray(strip).save(path)
    return path


# ---------------------------------------------------------------- report.md

def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


# issue 16's Meta-World targets: success floor per task, on at least this many held-out episodes
METAWORLD_TARGETS = {"reach-v3": 0.6, "button-press-v3": 0.5}
METAWORLD_MIN_EPISODES = 10


def target_lines(results: dict[str, Any]) -> tuple[list[str], bool]:
    """The issue's targets, checked honestly on what this run measured -> (lines, all met)."""
    lines, all_met = [], True
    mw = results.get("miniwob", {})
    clicks = [r for t, r in mw.items() if t.startswith(CLICK_TASK_PREFIX) and r.get("episodes")]
    if clicks:
        mean = sum(r["success_rate"] for r in clicks) / len(clicks)
        all_met &= mean >= 0.8
        lines.append(f"- MiniWoB++ click tasks mean success {_fmt(mean)} (target >= 80%): "
                     f"{'met' if mean >= 0.8 else 'NOT met'}")
    for env, tasks in results.items():
        for task, r in tasks.items():
            if not r.get("episodes") or r.get("random_baseline") is None:
                continue
            above = r["ci95"][0] > r["random_baseline"]
            all_met &= above
            lines.append(f"- {env}/{task}: CI lower end {_fmt(r['ci95'][0])} vs random "
                         f"{_fmt(r['random_baseline'])}: {'above' if above else 'NOT above'}")
    for task, floor in METAWORLD_TARGETS.items():
        r = results.get("metaworld", {}).get(task)
        if r and r.get("episodes"):
            met = r["success_rate"] >= floor and r["episodes"] >= METAWORLD_MIN_EPISODES
            all_met &= met
            lines.append(f"- Meta-World {task} {_fmt(r['success_rate'])} on {r['episodes']} episodes "
                         f"(target >= {_fmt(floor)} on >= {METAWORLD_MIN_EPISODES}): "
                         f"{'met' if met else 'NOT met'}")
    return lines, all_met


def write_report(run_dir: str | Path, results: dict[str, Any], run_info: dict[str, Any],
                 plots: dict[str, Path | None], filmstrips: list[Path]) -> Path:
    run_dir = Path(run_dir)
    out = [f"# Evaluation report: {run_info.get('name', run_dir.name)}", ""]
    for k in ("policy", "split", "started", "seconds"):
        if k in run_info:
            out.append(f"- {k}: {run_info[k]}")
    out.append("")
    for env, tasks in results.items():
        out += [f"## {env}", "",
                "| task | policy success [95% CI] | episodes | random | expert | mean steps | "
                "latency p50 (ms) | failures |",
                "|---|---|---|---|---|---|---|---|"]
        for task, r in tasks.items():
            ci = f" [{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]" if r.get("ci95") else ""
            lat = (r.get("latency_ms") or {}).get("p50")
            fails = ", ".join(f"{k} {v}" for k, v in (r.get("failure_reasons") or {}).items())
            out.append(f"| {task} | {_fmt(r['success_rate'])}{ci} | {r['episodes']} | "
                       f"{_fmt(r['random_baseline'])} | {_fmt(r['expert'])} | "
                       f"{r.get('mean_steps', 0):.1f} | {'–' if lat is None else f'{lat:.0f}'} | "
                       f"{fails} |")
        out.append("")
    targets, all_met = target_lines(results)
    if targets:
        out += ["## Targets", ""] + targets + [""]
        if not all_met:
            out += ["Where a target is not met: the best configuration found, what limits it and the "
                    "SoM/ToM ablation (`magma eval ablation`) are in the README's status section.", ""]
    out += ["## Plots", ""]
    for title, p in plots.items():
        out.append(f"![{title}]({p.relative_to(run_dir)})" if p else f"- {title}: no data")
    if filmstrips:
        out += ["", "## Filmstrips (first policy episode per task)", ""]
        out += [f"![{p.stem}]({p.relative_to(run_dir)})" for p in filmstrips]
    path = run_dir / REPORT
    path.write_text("\n".join(out) + "\n")
    return path


def build_report(run_dir: str | Path, run_info: dict[str, Any] | None = None,
                 traces: dict[str, list[list[StepTrace]]] | None = None,
                 training_metrics: str | Path | None = None) -> dict[str, Any]:
    """results.json + plots + filmstrips + report.md for a run folder with episodes.jsonl."""
    run_dir = Path(run_dir)
    results = write_results(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    plots = {"success per task": plot_success(results, plots_dir / "success.png"),
             "policy latency": plot_latency(read_jsonl(run_dir / EPISODES), plots_dir / "latency.png")}
    if training_metrics and Path(training_metrics).exists():
        plots["training loss"] = plot_losses(training_metrics, plots_dir / "loss.png")
    strips: list[Path] = []
    if traces:
        (run_dir / "filmstrips").mkdir(exist_ok=True)
        for task, episodes in traces.items():
            for k, trace in enumerate(episodes):
                p = write_filmstrip(trace, run_dir / "filmstrips" / f"{task}-{k}.png")
                if p:
                    strips.append(p)
    write_report(run_dir, results, run_info or {}, plots, strips)
    return results
