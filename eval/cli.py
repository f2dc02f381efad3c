"""`magma eval`: closed-loop evaluation suites, expert recording, report rebuilding.

  magma eval [run] --config configs/eval/quickstart.yaml --checkpoint DIR | --server URL [--out RUN]
  magma eval record --env miniwob|metaworld --tasks a,b --episodes N --split train --out DIR
  magma eval report RUN_DIR [--training-metrics metrics.jsonl]
  magma eval offline --checkpoint DIR --shards DIR [--split heldout] [--max-samples N]
  magma eval ablation --episodes RUN/episodes --out DIR [--steps N]   (SoM/ToM ablation)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from magma.cli import fail, run_cli, subcommand
from magma.config_io import ConfigError
from eval.config import EvalConfig, load_eval_config


# ---------------------------------------------------------------- record

def _add_record(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "record", run_record,
                   "record scripted-expert demonstrations (recorder format)")
    p.add_argument("--env", required=True, choices=["miniwob", "metaworld"])
    p.add_argument("--tasks", required=True, help="comma-separated task names")
    p.add_argument("--episodes", type=int, required=True, help="episodes (seeds) per task")
    p.add_argument("--split", default="train", choices=["train", "heldout"])
    p.add_argument("--seed-offset", type=int, default=0, help="start this many seeds into the split")
    p.add_argument("--image-size", type=int, default=128, help="Meta-World camera size (px)")
    p.add_argument("--out", required=True, help="folder for episode folders + split_manifest.json")


def run_record(args: argparse.Namespace) -> int:
    from eval.record import record_episodes, stats_to_dict

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or args.episodes < 1:
        return fail(args._prog, "give at least one task in --tasks and --episodes >= 1")
    try:
        stats = record_episodes(args.env, tasks, args.episodes, args.split, args.out,
                                seed_offset=args.seed_offset, image_size=args.image_size)
    except (ValueError, FileNotFoundError) as exc:
        return fail(args._prog, str(exc))
    print(json.dumps(stats_to_dict(stats)))
    return 0


# ---------------------------------------------------------------- evaluate

def add_policy_options(p: argparse.ArgumentParser, engine_default: str | None = None) -> None:
    """The options every evaluation takes to reach a policy: a checkpoint (in process) or a server."""
    p.add_argument("--checkpoint", help="checkpoint folder (in-process policy)")
    p.add_argument("--server", help="policy server URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--token", help="bearer token for the server")
    p.add_argument("--engine", choices=["hf", "vllm"], default=engine_default, help="in-process engine")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "run", run_suite,
                   "closed-loop evaluation (the default: 'magma eval --config ...' runs it)",
                   description="Closed-loop evaluation on held-out seeds of MiniWoB++ and "
                   "Meta-World, with random and scripted-expert baselines measured in the same run.")
    p.add_argument("--config", required=True, help="configs/eval/<suite>.yaml")
    add_policy_options(p)
    p.add_argument("--out", help="run folder (default: <config out>/<name>-<timestamp>)")
    p.add_argument("--episodes", type=int, help="override policy episodes per task")
    p.add_argument("--training-metrics", help="training metrics.jsonl for the loss plot")
    p.add_argument("--agents", help="comma-separated subset of policy,random,expert")


def _apply_overrides(cfg: EvalConfig, args: argparse.Namespace) -> EvalConfig:
    data = cfg.model_dump()
    pol = data["policy"]
    for key in ("checkpoint", "server", "token", "engine"):
        if getattr(args, key):
            pol[key] = getattr(args, key)
    if args.training_metrics:
        data["training_metrics"] = args.training_metrics
    if args.agents:
        data["agents"] = [a.strip() for a in args.agents.split(",") if a.strip()]
    if args.episodes:
        for env in ("miniwob", "metaworld"):
            if data.get(env):
                data[env]["episodes"] = args.episodes
    return EvalConfig.model_validate(data)


def make_backend(cfg: EvalConfig) -> tuple[Any, str]:
    """-> (object with .act(dict), description). HTTP client when a server is given."""
    if cfg.policy.server:
        from serve.client.http import PolicyClient
        from eval.closed_loop import PolicyUnavailable

        client = PolicyClient(cfg.policy.server, token=cfg.policy.token, timeout=cfg.policy.timeout_s)
        try:
            client.healthz()
        except Exception as exc:
            raise PolicyUnavailable(f"policy server {cfg.policy.server} does not answer /healthz "
                                    f"({type(exc).__name__}: {exc}); start it with 'magma serve "
                                    "--checkpoint DIR' or fix --server") from None
        return client, f"server {cfg.policy.server}"
    if cfg.policy.checkpoint:
        if not Path(cfg.policy.checkpoint).is_dir():
            raise FileNotFoundError(f"checkpoint folder {cfg.policy.checkpoint} does not exist")
        from serve.policy import Policy

        return Policy.from_checkpoint(cfg.policy.checkpoint, engine=cfg.policy.engine), \
            f"checkpoint {cfg.policy.checkpoint} ({cfg.policy.engine})"
    return None, "none (baselines only)"


def run_eval(cfg: EvalConfig, run_dir: str | Path) -> dict[str, Any]:
    """Runs the suite into `run_dir` (resumes from its episodes.jsonl) and builds the report."""
    from eval.closed_loop import EnvSuite, evaluate_suite
    from eval.report import EPISODES, build_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "eval_config.json").write_text(cfg.model_dump_json(indent=1))
    backend, described = make_backend(cfg) if "policy" in cfg.agents else (None, "not evaluated")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.perf_counter()
    traces: dict[str, Any] = {}
    for env in ("miniwob", "metaworld"):
        suite_cfg = getattr(cfg, env)
        if suite_cfg is None:
            continue
        suite = EnvSuite(env=env, **suite_cfg.model_dump())
        traces.update(evaluate_suite(suite, backend, run_dir / EPISODES, split=cfg.split,
                                     seed_offset=cfg.seed_offset, agents=cfg.agents,
                                     traces_per_task=cfg.filmstrips))
    info = {"name": cfg.name, "policy": described, "split": cfg.split, "started": started,
            "seconds": round(time.perf_counter() - t0, 1)}
    (run_dir / "run.json").write_text(json.dumps(info, indent=1))
    return build_report(run_dir, info, traces, cfg.training_metrics)


def print_summary(results: dict[str, Any], run_dir: Path) -> None:
    print(f"{'env':10} {'task':18} {'policy':>8} {'ci95':>13} {'random':>7} {'expert':>7} {'n':>4}")
    for env, tasks in results.items():
        for task, r in tasks.items():
            sr = "-" if r["success_rate"] is None else f"{r['success_rate']:.2f}"
            ci = "-" if not r.get("ci95") else f"[{r['ci95'][0]:.2f},{r['ci95'][1]:.2f}]"
            rb = "-" if r["random_baseline"] is None else f"{r['random_baseline']:.2f}"
            ex = "-" if r["expert"] is None else f"{r['expert']:.2f}"
            print(f"{env:10} {task:18} {sr:>8} {ci:>13} {rb:>7} {ex:>7} {r['episodes']:>4}")
    print(f"report: {run_dir / 'report.md'}")


def run_suite(args: argparse.Namespace) -> int:
    from eval.closed_loop import PolicyUnavailable

    try:
        cfg = _apply_overrides(load_eval_config(args.config), args)
    except ValueError as exc:  # ConfigError, or an override the config model refuses
        return fail(args._prog, str(exc))
    if "policy" in cfg.agents and not (cfg.policy.server or cfg.policy.checkpoint):
        return fail(args._prog, "no policy: pass --checkpoint DIR or --server URL "
                    "(or --agents random,expert)")
    run_dir = Path(args.out) if args.out else \
        Path(cfg.out) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        results = run_eval(cfg, run_dir)
    except PolicyUnavailable as exc:
        return fail(args._prog, f"{exc} (run folder: {run_dir})", 4)
    except FileNotFoundError as exc:
        return fail(args._prog, str(exc))
    print_summary(results, run_dir)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "report", run_report,
                   "rebuild results.json, plots and report.md from a run's episodes.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--training-metrics")


def run_report(args: argparse.Namespace) -> int:
    from eval.report import EPISODES, build_report

    run_dir = Path(args.run_dir)
    if not (run_dir / EPISODES).exists():
        return fail(args._prog, f"{run_dir / EPISODES} not found: not an eval run folder")
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    print_summary(build_report(run_dir, info, None, args.training_metrics), run_dir)
    return 0


def _add_offline(sub: argparse._SubParsersAction) -> None:
    p = subcommand(sub, "offline", run_offline,
                   "teacher-forced mark accuracy, action token accuracy and action L1 of a "
                   "checkpoint on held-out shards")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True, help="shard folder (searched for *.tar) or one .tar")
    p.add_argument("--split", default="heldout", help="meta split to keep ('all' keeps every sample)")
    p.add_argument("--max-samples", type=int, default=200)
    p.add_argument("--out", help="write the metrics JSON here too")


def run_offline(args: argparse.Namespace) -> int:
    from eval.offline import offline_metrics

    if not Path(args.shards).exists():
        return fail(args._prog, f"shards {args.shards} not found")
    try:
        metrics = offline_metrics(args.checkpoint, args.shards,
                                  None if args.split == "all" else args.split, args.max_samples)
    except Exception as exc:  # checkpoint errors carry their own message
        return fail(args._prog, f"{type(exc).__name__}: {exc}")
    text = json.dumps(metrics, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from eval import ablation
    from eval.benchmarks import browsergym, mind2web, screenspot

    p = argparse.ArgumentParser(prog="magma eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_record(sub)
    _add_report(sub)
    _add_offline(sub)
    ablation.add_command(sub)
    screenspot.add_command(sub)
    mind2web.add_command(sub)
    browsergym.add_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")  # `magma eval --config ...` is `magma eval run --config ...`
    return run_cli(build_parser(), argv, errors=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
