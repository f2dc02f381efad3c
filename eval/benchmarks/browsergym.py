"""`magma eval browsergym`: the policy as a BrowserGym agent on `browsergym/miniwob.*` tasks (an
external harness: BrowserGym launches the page, scores the episode and executes our actions).

    magma eval browsergym --tasks click-button,click-link --episodes 10 \
        (--checkpoint CKPT | --server URL) [--agent policy|oracle|random] --out OUT

Agents (comma-separated in --agent): `policy` (the model through serving's UI adapter, the same
request as `magma eval`), `oracle` (MiniWoB++'s DOM experts of eval/envs/miniwob_experts.py, fed
the BrowserGym page as MiniWoB-style elements) and `random` (a mark drawn uniformly from the marks
the adapter offers). Seeds are held-out seeds (eval.splits); BrowserGym turns a seed into the page
with its own generator, so seed k here is not MiniWoBEnv's page k.

Writes OUT/episodes.jsonl (one line per episode; a rerun resumes), OUT/results.json
    {"browsergym": {"tasks": {task: {agent: {"success_rate", "ci95", "episodes", "successes",
                     "mean_steps", "latency_ms", "failure_reasons"}}},
                    "overall": {agent: {"success_rate", "ci95", "episodes", "successes"}},
                    "timing": {"reset_s", "env_step_s", "policy_ms": {"mean", "p50", "p95"}},
                    "versions": {...}, "policy": "...", "max_steps": N,
                    "screenshot": "viewport"|"task area"}}
and OUT/report.md. browsergym is an optional install (see eval.envs.browsergym_env.INSTALL_HINT);
without it the command fails with that one line.
"""
from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from magma.cli import fail, subcommand

DEFAULT_TASKS = ("click-button", "click-link", "click-tab", "click-test-2", "focus-text-2")
AGENTS = ("policy", "oracle", "random")
EPISODES = "episodes.jsonl"
RESULTS = "results.json"
REPORT = "report.md"
MAX_STEPS = 6  # the closed-loop suite's MiniWoB step budget


def _summary(values: Sequence[float], ndigits: int = 3) -> dict[str, float | None]:
    from eval.metrics import _percentile

    if not values:
        return {"mean": None, "p50": None, "p95": None}
    return {"mean": round(sum(values) / len(values), ndigits), "p50": round(_percentile(list(values), 0.5), ndigits),
            "p95": round(_percentile(list(values), 0.95), ndigits)}


def make_agent(name: str, task: str, backend: Any) -> Any:
    """The closed-loop suite's UI agents under this benchmark's names (random seeded per task)."""
    from eval.closed_loop import UIExpertAgent, UIPolicyAgent, UIRandomAgent

    if name == "policy":
        return UIPolicyAgent(backend)
    if name == "random":
        return UIRandomAgent(random.Random(zlib.crc32(task.encode())))
    if name == "oracle":
        return UIExpertAgent(task, name="oracle")
    raise ValueError(f"unknown agent {name!r}; agents: {', '.join(AGENTS)}")


def run_benchmark(tasks: Sequence[str], episodes: int, agents: Sequence[str], backend: Any, out: str | Path,
                  max_steps: int = MAX_STEPS, seed_offset: int = 0, chromium: str | None = None,
                  pre_observation_delay: float | None = None, crop_to_task: bool = False,
                  progress: bool = True) -> list[dict[str, Any]]:
    """Runs every agent on every task for `episodes` held-out seeds, appending one record per
    episode to OUT/episodes.jsonl (episodes already there are not rerun); returns all records.
    A record is the closed-loop EpisodeRecord (env "browsergym") plus `reset_s`, `env_step_s`
    (seconds per BrowserGym step, policy time excluded), `actions` (the BrowserGym action strings)
    and `action_errors` (BrowserGym's `last_action_error`s)."""
    from tqdm import tqdm

    from eval.closed_loop import read_jsonl, run_ui_episode
    from eval.envs.browsergym_env import CHROMIUM_EXECUTABLE, BrowserGymEnv
    from eval.splits import split_seeds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / EPISODES
    done = {(r["task"], r["agent"], r["seed"]) for r in read_jsonl(path)}
    seeds = split_seeds("heldout", episodes, seed_offset)
    bar = tqdm(total=len(tasks) * len(agents) * len(seeds), desc="browsergym", disable=not progress)
    for task in tasks:
        todo = [(a, s) for a in agents for s in seeds if (task, a, s) not in done]
        bar.update(len(agents) * len(seeds) - len(todo))
        if not todo:
            continue
        with BrowserGymEnv(task, chromium or CHROMIUM_EXECUTABLE, pre_observation_delay, crop_to_task) as env:
            for agent_name, seed in todo:
                agent = make_agent(agent_name, task, backend)
                before = [len(env.reset_seconds), len(env.step_seconds), len(env.actions), len(env.action_errors)]
                rec, _ = run_ui_episode(env, agent, seed, "heldout", max_steps)
                rec.env = "browsergym"
                line = asdict(rec) | {
                    "reset_s": env.reset_seconds[before[0]:], "env_step_s": env.step_seconds[before[1]:],
                    "actions": env.actions[before[2]:], "action_errors": env.action_errors[before[3]:]}
                with open(path, "a") as f:  # one line per episode, flushed: a stopped run keeps it
                    f.write(json.dumps(line) + "\n")
                bar.update(1)
                bar.set_postfix(task=task, agent=agent_name)
    bar.close()
    return read_jsonl(path)


def summarise(records: Sequence[dict[str, Any]], agents: Sequence[str] = AGENTS) -> dict[str, Any]:
    """Episode records -> the "browsergym" block of results.json (without versions/policy)."""
    from eval.metrics import rate_summary, wilson_interval

    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["task"], r["agent"]), []).append(r)
    tasks: dict[str, dict[str, Any]] = {}
    for (task, agent), recs in sorted(by.items()):
        tasks.setdefault(task, {})[agent] = rate_summary(recs)
    overall: dict[str, Any] = {}
    for agent in [a for a in agents if any(a == ag for _, ag in by)]:
        recs = [r for (_, ag), v in by.items() if ag == agent for r in v]
        wins = sum(1 for r in recs if r["success"])
        lo, hi = wilson_interval(wins, len(recs))
        overall[agent] = {"success_rate": wins / len(recs), "ci95": [lo, hi], "episodes": len(recs),
                          "successes": wins}
    timing = {"reset_s": _summary([v for r in records for v in r.get("reset_s", [])]),
              "env_step_s": _summary([v for r in records for v in r.get("env_step_s", [])]),
              "policy_ms": _summary([v for r in records if r["agent"] == "policy"
                                     for v in r.get("latencies_ms", [])], 1)}
    return {"tasks": tasks, "overall": overall, "timing": timing}


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def write_report(out: str | Path, results: dict[str, Any]) -> Path:
    block = results["browsergym"]
    lines = ["# BrowserGym MiniWoB++ (browsergym/miniwob.*)", "",
             f"- policy: {block.get('policy')}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in (block.get('versions') or {}).items())}",
             f"- held-out seeds, at most {block.get('max_steps')} steps per episode; the policy saw the "
             f"{block.get('screenshot', 'viewport')} screenshot", "",
             "| task | agent | success [95% CI] | episodes | mean steps | policy p50 (ms) | failures |",
             "|---|---|---|---|---|---|---|"]
    for task, per_agent in block["tasks"].items():
        for agent, r in per_agent.items():
            lat = (r.get("latency_ms") or {}).get("p50")
            fails = ", ".join(f"{k} {v}" for k, v in (r.get("failure_reasons") or {}).items())
            lines.append(f"| {task} | {agent} | {_fmt(r['success_rate'])} [{_fmt(r['ci95'][0])}, "
                         f"{_fmt(r['ci95'][1])}] | {r['episodes']} | {r['mean_steps']:.1f} | "
                         f"{'–' if lat is None else f'{lat:.0f}'} | {fails} |")
    lines += ["", "| agent | overall success [95% CI] | episodes |", "|---|---|---|"]
    for agent, r in block["overall"].items():
        lines.append(f"| {agent} | {_fmt(r['success_rate'])} [{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}] | "
                     f"{r['episodes']} |")
    t = block["timing"]
    lines += ["", "Timing (seconds; a reset launches BrowserGym's two browsers anew; an env step includes "
              "BrowserGym's wait before it observes): "
              f"reset mean {t['reset_s']['mean']}, p95 {t['reset_s']['p95']}; env step mean "
              f"{t['env_step_s']['mean']}, p95 {t['env_step_s']['p95']}; policy call p50 "
              f"{t['policy_ms']['p50']} ms.", ""]
    path = Path(out) / REPORT
    path.write_text("\n".join(lines))
    return path


def build_results(out: str | Path, agents: Sequence[str], policy: str, max_steps: int,
                  crop_to_task: bool = False) -> dict[str, Any]:
    """results.json + report.md from OUT/episodes.jsonl."""
    from eval.closed_loop import read_jsonl
    from eval.envs.browsergym_env import versions

    block = summarise(read_jsonl(Path(out) / EPISODES), agents)
    block |= {"versions": versions(), "policy": policy, "max_steps": max_steps,
              "screenshot": "task area" if crop_to_task else "viewport"}
    results = {"browsergym": block}
    (Path(out) / RESULTS).write_text(json.dumps(results, indent=1))
    write_report(out, results)
    return results


# ---------------------------------------------------------------- CLI

def add_command(sub: argparse._SubParsersAction) -> None:
    from eval.cli import add_policy_options  # eval.cli imports this module when it builds its parser

    p = subcommand(sub, "browsergym", run_command,
                   "the policy as a BrowserGym agent on browsergym/miniwob.* tasks (optional install)",
                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated MiniWoB++ task names")
    p.add_argument("--episodes", type=int, default=10, help="held-out seeds per task and agent")
    p.add_argument("--agent", default="policy", help="comma-separated subset of policy,oracle,random")
    add_policy_options(p, engine_default="hf")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS)
    p.add_argument("--seed-offset", type=int, default=0, help="start this many seeds into the held-out split")
    p.add_argument("--chromium", help="chromium executable (default /usr/lib/chromium/chromium)")
    p.add_argument("--pre-observation-delay", type=float,
                   help="BrowserGym's wait after each action in seconds (its default 0.5)")
    # The model is trained on MiniWoB's own 160x210 task-area screenshots; on BrowserGym's whole
    # zoomed viewport the quickstart checkpoint mostly answers unparsable text (measured 0.04 vs
    # 0.58 overall on five tasks), so the task area is the default view.
    p.add_argument("--full-viewport", dest="crop_task_area", action="store_false",
                   help="send the policy BrowserGym's whole viewport instead of MiniWoB's task area (the "
                   "default, as the model's training screenshots are); use a fresh --out per setting")
    p.add_argument("--crop-task-area", dest="crop_task_area", action="store_true", default=True,
                   help=argparse.SUPPRESS)  # the default; kept so earlier command lines still run
    p.add_argument("--out", required=True, help="folder for episodes.jsonl, results.json, report.md")


def run_command(args: argparse.Namespace) -> int:
    from eval.closed_loop import PolicyUnavailable
    from eval.envs.browsergym_env import BrowserGymUnavailable, require_browsergym

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    agents = [a.strip() for a in args.agent.split(",") if a.strip()]
    unknown = [a for a in agents if a not in AGENTS]
    if not tasks or not agents or unknown or args.episodes < 1 or args.max_steps < 1:
        return fail(args._prog, f"give tasks, agents from {','.join(AGENTS)} (got {args.agent!r}), "
                    "--episodes >= 1 and --max-steps >= 1")
    if "policy" in agents and not (args.checkpoint or args.server):
        return fail(args._prog, "the policy agent needs --checkpoint DIR or --server URL "
                    "(or --agent oracle,random)")
    try:
        require_browsergym()
    except BrowserGymUnavailable as exc:
        return fail(args._prog, str(exc))
    backend, described = None, "not evaluated"
    if "policy" in agents:
        from eval.cli import make_backend
        from eval.config import PolicyConfig

        cfg = SimpleNamespace(policy=PolicyConfig(checkpoint=args.checkpoint, server=args.server,
                                                  token=args.token, engine=args.engine))
        try:
            backend, described = make_backend(cfg)
        except (PolicyUnavailable, FileNotFoundError) as exc:
            return fail(args._prog, str(exc), 4 if isinstance(exc, PolicyUnavailable) else 2)
    t0 = time.perf_counter()
    try:
        run_benchmark(tasks, args.episodes, agents, backend, args.out, args.max_steps, args.seed_offset,
                      args.chromium, args.pre_observation_delay, args.crop_task_area)
    except PolicyUnavailable as exc:
        return fail(args._prog, f"{exc} (run folder: {args.out})", 4)
    except (BrowserGymUnavailable, ValueError) as exc:
        return fail(args._prog, str(exc))
    results = build_results(args.out, agents, described, args.max_steps, args.crop_task_area)
    for task, per_agent in results["browsergym"]["tasks"].items():
        for agent, r in per_agent.items():
            print(f"{task:18} {agent:7} {r['success_rate']:.2f} [{r['ci95'][0]:.2f},{r['ci95'][1]:.2f}] "
                  f"n={r['episodes']}")
    print(f"{time.perf_counter() - t0:.0f} s; report: {Path(args.out) / REPORT}")
    return 0
