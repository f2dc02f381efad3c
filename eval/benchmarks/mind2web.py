"""`magma eval mind2web`: the Multimodal-Mind2Web offline benchmark.

    magma eval mind2web --data DIR (--checkpoint CKPT | --server URL) [--agent policy|oracle|random]
                        [--max-steps N] --out OUT

Each step is shown exactly as the `mind2web` source type shows it in training
(`magma.layouts.mind2web.prepare_task`): the viewport cut around the target, the target and the
negatives inside it as shuffled marks, the gold previous actions as history (the paper's
offline setting). Agents:

    policy   the model, through serving's UI adapter (`serve.policy.Policy` in process, or
             `--server` through `serve.client`): the unmarked viewport + the marks as client
             marks, so the server draws them with the renderer training used
    oracle   the gold action (must score 1.0 on every metric: proof that the harness is right)
    random   a uniformly random mark and the gold-free operation CLICK (the floor)

Metrics as the Mind2Web paper defines them (Deng et al., 2023, "Mind2Web: Towards a Generalist
Agent for the Web", §4; its scoring code github.com/OSU-NLP-Group/Mind2Web
src/action_prediction/metric.py):

    element_accuracy   the selected element is a positive candidate (the answer's mark is the
                       target's; an answer with a point and no known mark: the point lies in a
                       positive's box)
    operation_f1       token F1 between the predicted and the gold operation strings ("CLICK",
                       "TYPE <value>", "SELECT <value>"): whitespace tokens as sets, case kept,
                       tokens that occur in string.punctuation dropped (the reference's test)
    step_success_rate  element correct and operation F1 == 1
    task_success_rate  every step of the task successful

The three step metrics are macro averages over tasks (the paper reports macro averages);
`micro` holds the plain means over steps. Steps whose row breaks the layout are not scored
(counted under `skipped`, as the data pipeline leaves them out).

Writes OUT/results.json (`{"mind2web": {...}}`), OUT/steps.jsonl (one line per scored step) and
OUT/report.md.
"""
from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from magma.cli import fail, subcommand
from magma.codecs import parse_ui_action, render_ui_action
from magma.layouts.errors import LayoutError
from magma.layouts.mind2web import (PreparedStep, StepView, ViewportOptions, index_tasks, load_task,
                                    operation_string, parquet_files, prepare_task)

AGENTS = ("policy", "oracle", "random")
HISTORY_SENT = 32  # the policy API's limit on history entries (the prompt shows the last few)
METRICS = ("element_accuracy", "operation_f1", "step_success_rate")


# ---------------------------------------------------------------- metrics

def operation_f1(pred: str, gold: str) -> float:
    """Mind2Web's operation F1: whitespace tokens as sets, punctuation tokens dropped."""
    p = {t for t in pred.strip().split() if t not in string.punctuation}
    g = {t for t in gold.strip().split() if t not in string.punctuation}
    if not p and not g:
        return 1.0
    tp = len(p & g)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(p), tp / len(g)
    return 2 * precision * recall / (precision + recall)


def predicted_operation(pred: dict[str, Any]) -> str:
    """A UI answer ({"op", "text", ...}) as a Mind2Web operation string ('' for no answer)."""
    op = pred.get("op")
    if op == "click":
        return "CLICK"
    if op in ("type", "select"):
        return operation_string(op.upper(), pred.get("text") or "")
    return str(op or "").upper()  # scroll: never a Mind2Web operation


def element_correct(pred: dict[str, Any], view: StepView) -> bool:
    """The answer's mark decides; a point (viewport pixels) decides when no known mark is given."""
    mark = pred.get("mark")
    if mark is not None and any(m.id == mark for m in view.marks):
        return mark == view.target_mark
    point = pred.get("point")
    if point is None:
        return False
    x, y = point
    return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in view.positive_boxes)


class StepResult(BaseModel):
    annotation_id: str
    action_uid: str
    step: int
    op: str  # gold Mind2Web op
    gold: str  # the gold action as the model is trained to write it
    gold_operation: str
    predicted_operation: str
    prediction: dict[str, Any]
    element_correct: bool
    operation_f1: float
    step_success: bool
    latency_ms: float


def score_step(prepared: PreparedStep, pred: dict[str, Any], latency_ms: float = 0.0) -> StepResult:
    step = prepared.step
    element = element_correct(pred, prepared.view)
    predicted = predicted_operation(pred)
    f1 = operation_f1(predicted, step.gold_operation)
    return StepResult(annotation_id=step.annotation_id, action_uid=step.action_uid, step=step.index,
                      op=step.op, gold=render_ui_action(prepared.action), gold_operation=step.gold_operation,
                      predicted_operation=predicted, prediction=pred, element_correct=element,
                      operation_f1=f1, step_success=element and f1 == 1.0, latency_ms=round(latency_ms, 2))


def _means(rows: list[StepResult]) -> dict[str, float]:
    n = len(rows)
    return {"element_accuracy": sum(r.element_correct for r in rows) / n,
            "operation_f1": sum(r.operation_f1 for r in rows) / n,
            "step_success_rate": sum(r.step_success for r in rows) / n}


def summarise(results: list[StepResult]) -> dict[str, Any]:
    """Macro (per task, then over tasks) step metrics, task success, micro means, per operation."""
    if not results:
        raise ValueError("no scored steps")
    tasks: dict[str, list[StepResult]] = defaultdict(list)
    for r in results:
        tasks[r.annotation_id].append(r)
    per_task = [_means(rows) for rows in tasks.values()]
    out: dict[str, Any] = {k: sum(t[k] for t in per_task) / len(per_task) for k in METRICS}
    out["task_success_rate"] = sum(all(r.step_success for r in rows) for rows in tasks.values()) / len(tasks)
    out.update(n_steps=len(results), n_tasks=len(tasks), micro=_means(results))
    by_op: dict[str, list[StepResult]] = defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    out["by_operation"] = {op: dict(_means(rows), n_steps=len(rows)) for op, rows in sorted(by_op.items())}
    return out


# ---------------------------------------------------------------- agents

Agent = Callable[[PreparedStep], dict[str, Any]]


def oracle_agent(prepared: PreparedStep) -> dict[str, Any]:
    """The gold action, as the model would write it and the UI adapter would parse it."""
    action = parse_ui_action(render_ui_action(prepared.action))
    return action.to_dict()  # type: ignore[union-attr]  (gold actions always parse)


def random_agent(seed: int = 0) -> Agent:
    def act(prepared: PreparedStep) -> dict[str, Any]:
        rng = random.Random(f"{seed}|{prepared.step.action_uid}")
        mark = rng.choice(prepared.view.marks)
        return {"op": "click", "mark": mark.id, "point": list(mark.centre), "text": None}
    return act


def ui_request(prepared: PreparedStep) -> dict[str, Any]:
    """The /v1/act request of a step: unmarked viewport, its marks, the task, the history."""
    from serve.client.http import encode_image

    return {"adapter": "ui", "instruction": prepared.step.task, "image": encode_image(prepared.image),
            "marks": [{"id": m.id, "box": [float(v) for v in m.box], "text": m.text, "role": m.role}
                      for m in prepared.view.marks],
            "history": prepared.history[-HISTORY_SENT:]}


def policy_agent(backend: Any, refusals: tuple[type[Exception], ...] = ()) -> Agent:
    """`backend.act(request) -> response dict` (Policy or PolicyClient); a request it refuses
    (one of `refusals`: too long a prompt, ...) is an answer with no operation and its error."""
    def act(prepared: PreparedStep) -> dict[str, Any]:
        try:
            resp = backend.act(ui_request(prepared))
        except refusals as exc:
            return {"op": None, "mark": None, "point": None, "text": None,
                    "error": {"code": getattr(exc, "code", "error"), "message": str(exc)}}
        return {k: resp.get(k) for k in ("op", "mark", "point", "text", "direction", "raw", "error")}
    return act


def policy_backend(checkpoint: str | None, server: str | None, token: str | None = None,
                   engine: str = "hf") -> tuple[Any, str, tuple[type[Exception], ...]]:
    """(object with .act, description, the errors it answers a refused request with); raises
    FileNotFoundError / RuntimeError with one line when there is no policy to ask."""
    if server:
        from serve.client.http import PolicyClient, PolicyError

        client = PolicyClient(server, token=token)
        try:
            client.healthz()
        except Exception as exc:
            raise RuntimeError(f"policy server {server} does not answer /healthz ({type(exc).__name__}: "
                               f"{exc}); start it with 'magma serve --checkpoint DIR' or fix --server") from None
        return client, f"server {server}", (PolicyError,)
    if not checkpoint or not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    from serve.policy import Policy, ServeError

    return Policy.from_checkpoint(checkpoint, engine=engine), f"checkpoint {checkpoint} ({engine})", (ServeError,)


# ---------------------------------------------------------------- the run

class Run(BaseModel):
    results: list[StepResult]
    skipped: dict[str, int]
    messages: list[str]


def evaluate(data: str | Path, agent: Agent, opts: ViewportOptions = ViewportOptions(),
             max_steps: int | None = None, progress: bool = False) -> Run:
    """Scores `agent` on every task under `data` (whole tasks, file order, until `max_steps`
    steps are scored: the last task is finished)."""
    from tqdm import tqdm

    refs, file_errors = index_tasks(parquet_files(data))
    errors: list[LayoutError] = list(file_errors.values())
    results: list[StepResult] = []
    for ref in tqdm(refs, desc="mind2web", disable=not progress):
        if max_steps is not None and len(results) >= max_steps:
            break
        task, errs = load_task(ref)
        errors += errs
        if task is None:
            continue
        for prepared in prepare_task(task, opts):
            if isinstance(prepared, LayoutError):
                errors.append(prepared)
                continue
            t0 = time.perf_counter()
            pred = agent(prepared)
            results.append(score_step(prepared, pred, (time.perf_counter() - t0) * 1000))
    skipped = Counter(e.reason for e in errors)
    return Run(results=results, skipped=dict(sorted(skipped.items())), messages=[str(e) for e in errors[:20]])


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def write_outputs(run: Run, out: Path, agent: str, described: str, data: str, opts: ViewportOptions
                  ) -> dict[str, Any]:
    summary = summarise(run.results)
    summary.update(agent=agent, policy=described, skipped=run.skipped, viewport=opts.model_dump())
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"mind2web": summary}, indent=1))
    (out / "steps.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in run.results))
    lines = [f"# Mind2Web ({agent})", "", f"- data: `{data}`", f"- policy: {described}",
             f"- {summary['n_steps']} steps of {summary['n_tasks']} tasks; viewport height "
             f"{opts.viewport_height} px, at most {opts.max_marks} marks", "",
             "| metric | macro (over tasks) | micro (over steps) |", "|---|---|---|"]
    for k in METRICS:
        lines.append(f"| {k} | {_pct(summary[k])} | {_pct(summary['micro'][k])} |")
    lines += [f"| task_success_rate | {_pct(summary['task_success_rate'])} | |", "",
              "| gold operation | steps | element acc | operation F1 | step success |", "|---|---|---|---|---|"]
    for op, m in summary["by_operation"].items():
        lines.append(f"| {op} | {m['n_steps']} | {_pct(m['element_accuracy'])} | {_pct(m['operation_f1'])} "
                     f"| {_pct(m['step_success_rate'])} |")
    if run.skipped:
        lines += ["", "Steps not scored (the row breaks the layout): "
                  + ", ".join(f"{k} {v}" for k, v in run.skipped.items()), ""]
        lines += [f"- {m}" for m in run.messages]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def add_command(sub: argparse._SubParsersAction) -> None:
    from eval.cli import add_policy_options  # eval.cli imports this module when it builds its parser

    p = subcommand(sub, "mind2web", run_mind2web,
                   "Multimodal-Mind2Web offline benchmark: element accuracy, operation F1, step and task "
                   "success (the paper's definitions)", description=__doc__,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a Multimodal-Mind2Web parquet file or a folder of them")
    add_policy_options(p, engine_default="hf")
    p.add_argument("--agent", choices=AGENTS, default="policy")
    p.add_argument("--max-steps", type=int, help="score whole tasks until this many steps are scored")
    p.add_argument("--seed", type=int, default=0, help="the random agent's seed")
    defaults = ViewportOptions()
    p.add_argument("--viewport-height", type=int, default=defaults.viewport_height,
                   help="px of the page shown around the target (must match training)")
    p.add_argument("--max-marks", type=int, default=defaults.max_marks, help="marks per step (as in training)")
    p.add_argument("--out", required=True, help="folder for results.json, steps.jsonl, report.md")


def run_mind2web(args: argparse.Namespace) -> int:
    if args.max_steps is not None and args.max_steps < 1:
        return fail(args._prog, "--max-steps must be >= 1")
    try:
        opts = ViewportOptions(viewport_height=args.viewport_height, max_marks=args.max_marks)
    except ValueError as exc:
        return fail(args._prog, f"bad viewport options: {exc}")
    if not Path(args.data).exists():
        return fail(args._prog, f"--data {args.data} does not exist")
    backend, described, refusals = None, "none", ()
    if args.agent == "policy":
        if not (args.checkpoint or args.server):
            return fail(args._prog, "the policy agent needs --checkpoint DIR or --server URL "
                        "(or use --agent oracle|random)")
        try:
            backend, described, refusals = policy_backend(args.checkpoint, args.server, args.token, args.engine)
        except Exception as exc:  # checkpoint and server errors carry their own message
            return fail(args._prog, f"{type(exc).__name__}: {exc}")
    agent = {"oracle": lambda: oracle_agent, "random": lambda: random_agent(args.seed),
             "policy": lambda: policy_agent(backend, refusals)}[args.agent]()
    try:
        run = evaluate(args.data, agent, opts, args.max_steps, progress=sys.stderr.isatty())
    except LayoutError as exc:
        return fail(args._prog, str(exc))
    finally:
        if backend is not None and hasattr(backend, "close"):
            backend.close()
    if not run.results:
        return fail(args._prog, f"no step of {args.data} could be scored (skipped: {run.skipped}); "
                    + "; ".join(run.messages[:3]), 1)
    summary = write_outputs(run, Path(args.out), args.agent, described, str(args.data), opts)
    print(json.dumps({k: summary[k] for k in ("element_accuracy", "operation_f1", "step_success_rate",
                                              "task_success_rate", "n_steps", "n_tasks", "agent")}))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
