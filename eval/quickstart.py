"""`magma quickstart [--fast]`: the whole stack end to end on one machine.

record expert demonstrations (MiniWoB++, Meta-World; training seeds only) -> build shards
(SoM + ToM + actions + verbal) -> train the tiny model from the backbones shipped in backbones/
(`--from-scratch`: from random weights; 2 CPU ranks, DeepSpeed ZeRO-2) ->
start the policy server -> closed-loop evaluation on held-out seeds -> summary + report.

Each stage runs through its own `magma` command in a subprocess (the stages never import each
other); its output goes to `<run>/logs/<stage>.log` and its wall time is printed. The run folder
holds the checkpoint, `metrics.jsonl` from training and the eval `results.json`; `runs/latest`
points at it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from magma.cli import fail, run_cli

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Plan:
    """Sizes of one quickstart run (`--fast` shrinks every stage)."""

    miniwob_tasks: list[str]
    metaworld_tasks: list[str]
    miniwob_train_episodes: int  # per task
    metaworld_train_episodes: int  # per task
    train_config: str
    eval_config: str
    train_overrides: list[str] = field(default_factory=list)
    ranks: int = 2


# Trained on the tasks the quickstart evaluates (configs/eval/quickstart.yaml), training seeds only.
FULL = Plan(
    miniwob_tasks=["click-button", "click-link", "click-tab", "click-test-2", "click-dialog-2",
                   "focus-text-2"],
    metaworld_tasks=["reach-v3", "button-press-v3"],
    miniwob_train_episodes=60, metaworld_train_episodes=30,
    train_config="configs/train/quickstart.yaml", eval_config="configs/eval/quickstart.yaml")

FAST = Plan(
    miniwob_tasks=["click-test-2", "focus-text-2"], metaworld_tasks=["reach-v3"],
    miniwob_train_episodes=20, metaworld_train_episodes=4,
    train_config="configs/train/quickstart.yaml", eval_config="configs/eval/fast.yaml",
    train_overrides=["max_steps=120", "checkpoint.every=60", "log.every=10"])


SCRATCH_MODEL = "configs/model/tiny.yaml"  # the same sizes, random weights


class StageFailed(RuntimeError):
    pass


def model_config_of(train_config: Path) -> Path | None:
    """The model config a train config names, resolved as training resolves it (from the repository
    root, where the quickstart's stages run); None when it names none."""
    import yaml

    model = (yaml.safe_load(train_config.read_text()) or {}).get("model", {})
    if not model.get("config"):
        return None
    path = Path(model["config"])
    return path if path.is_absolute() else ROOT / path


def missing_backbones(train_config: str) -> list[Path]:
    """The pretrained folders the train config's model spec names that are not on disk."""
    from magma.model_config import load_model_spec

    config = model_config_of(ROOT / train_config)
    if config is None:
        return []
    spec = load_model_spec(config)
    named = [p for p in (spec.text.pretrained, spec.vision.pretrained) if p]
    return [ROOT / p for p in named if not (ROOT / p).exists()]


def magma_command() -> list[str]:
    return [sys.executable, "-m", "magma.cli"]


def train_stage(name: str, config: str, overrides: list[str], run: Path,
                timings: dict[str, float], ranks: int = 2, tag: str = "quickstart") -> None:
    """`train` on `ranks` CPU ranks through torchrun (one thread each: the ranks share the cores)."""
    env = stage_env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={ranks}", "-m", "train", "--config", config]
    for o in overrides:
        cmd += ["--set", o]
    run_stage(name, cmd, run, timings, env=env, tag=tag)


def stage_env() -> dict[str, str]:
    env = dict(os.environ)
    cache = ROOT / ".cache"
    env.setdefault("TORCH_EXTENSIONS_DIR", str(cache / "torch_extensions"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("MINIWOB_CHROME_BINARY", "/usr/bin/chromium")
    env.setdefault("MINIWOB_CHROMEDRIVER", "/usr/bin/chromedriver")
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_stage(name: str, cmd: list[str], run: Path, timings: dict[str, float],
              env: dict[str, str] | None = None, tag: str = "quickstart") -> None:
    log = run / "logs" / f"{name.replace(' ', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n[{tag}] == {name} ==  $ {' '.join(cmd)}\n[{tag}]    log: {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or stage_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if line.startswith(("[", "magma")) or "error" in line.lower():
                print("    " + line.rstrip()[:200], flush=True)
        rc = proc.wait()
    timings[name] = time.perf_counter() - t0
    print(f"[{tag}]    {name}: {timings[name]:.0f} s", flush=True)
    if rc != 0:
        tail = log.read_text().splitlines()[-15:]
        raise StageFailed(f"stage '{name}' failed (exit {rc}); last lines of {log}:\n  " +
                          "\n  ".join(tail))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, run: Path, timings: dict[str, float]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = run / "logs" / "serve.log"
    cmd = magma_command() + ["serve", "--checkpoint", str(checkpoint), "--engine", "hf",
                      "--host", "127.0.0.1", "--port", str(port)]
    print(f"\n[quickstart] == serve ==  $ {' '.join(cmd)}\n[quickstart]    log: {log}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=stage_env(), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import httpx
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StageFailed(f"policy server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                timings["serve (start)"] = time.perf_counter() - t0
                print(f"[quickstart]    server up at {url} in {timings['serve (start)']:.0f} s")
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_server(proc)
    raise StageFailed(f"policy server did not answer /healthz within 180 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _backbones_line(run: Path) -> str | None:
    """Which backbones the run's model started from (its train config's model spec)."""
    from magma.model_config import load_model_spec

    cfg = run / "train" / "config.yaml"
    path = model_config_of(cfg) if cfg.exists() else None
    if path is None:
        return None
    named = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        spec = load_model_spec(path)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        return f"backbones: unknown (model config {named}: {exc})"

    def described(folder: str | None) -> str:
        if not folder:
            return "random init (from scratch)"
        probe = ROOT / folder / "probe.json"  # written by `magma backbones pretrain-*`
        if probe.exists():
            record = json.loads(probe.read_text())
            lookup = ""  # the LM's own legend-lookup probe: what limits the lookup tasks, measured
            if "mark_id/ui_click" in record and "chance/ui_click" in record:
                lookup = (f"; its legend-lookup probe {record['mark_id/ui_click']:.2f}, "
                          f"chance {record['chance/ui_click']:.2f}")
            return f"{folder} (step {record.get('step')} of {record.get('of_steps', record.get('step'))}{lookup})"
        return folder

    return (f"backbones: language model {described(spec.text.pretrained)}; vision tower "
            f"{described(spec.vision.pretrained)} (model config {named})")


def _summary(run: Path, timings: dict[str, float]) -> str:
    lines = ["", "=" * 72, f"quickstart run: {run}", "-" * 72, "stage times:"]
    lines += [f"  {k:22s} {v:7.0f} s" for k, v in timings.items()]
    lines.append(f"  {'total':22s} {sum(timings.values()):7.0f} s")
    backbones = _backbones_line(run)
    if backbones:
        lines.append(backbones)
    metrics = run / "train" / "metrics.jsonl"
    if metrics.exists():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        if rows:
            first, last = rows[0], rows[-1]
            lines.append(f"training loss: {first['loss']:.3f} (step {first['step']}) -> "
                         f"{last['loss']:.3f} (step {last['step']})")
    results = run / "eval" / "results.json"
    if results.exists():
        res = json.loads(results.read_text())
        lines.append(f"{'env':10s} {'task':18s} {'success':>8s} {'95% CI':>14s} {'random':>7s} "
                     f"{'expert':>7s} {'n':>4s}")
        for env in ("miniwob", "metaworld"):
            for task, r in sorted(res.get(env, {}).items()):
                lo, hi = r.get("ci95", [float("nan")] * 2)
                exp = r.get("expert")
                lines.append(f"{env:10s} {task:18s} {r['success_rate']:8.2f} [{lo:5.2f}, {hi:5.2f}] "
                             f"{r.get('random_baseline', float('nan')):7.2f} "
                             f"{exp if exp is None else format(exp, '7.2f')!s:>7s} {r['episodes']:4d}")
        from eval.report import target_lines

        targets, all_met = target_lines(res)  # the report's check: met, or the shortfall
        lines += ["targets:"] + [f"  {ln[2:]}" for ln in targets]
        if not all_met:
            lines.append("  (what limits the targets not met, measured: the README's status section)")
    report = run / "eval" / "report.md"
    if report.exists():
        lines.append(f"report: {report}")
    lines += [f"run folder: {run}", "=" * 72]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma quickstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true", help="smoke version (~5 minutes: 120 steps on two tasks it learns)")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/<time>[-fast]")
    p.add_argument("--from-scratch", action="store_true",
                   help=f"start from random weights ({SCRATCH_MODEL}) instead of the shipped backbones")
    p.set_defaults(run=run_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


def run_quickstart(args: argparse.Namespace) -> int:
    plan = FAST if args.fast else FULL
    if args.from_scratch:
        plan = replace(plan, train_overrides=[f"model.config={SCRATCH_MODEL}", *plan.train_overrides])
    else:
        missing = missing_backbones(plan.train_config)
        if missing:
            return fail("magma quickstart", f"the backbones {', '.join(map(str, missing))} are missing: "
                        "they ship in the repository (git lfs? a partial checkout?); rebuild them with the "
                        "commands in backbones/README.md, or run with --from-scratch")
    run = args.run_dir or ROOT / "runs" / (time.strftime("%Y%m%d-%H%M%S") + ("-fast" if args.fast else ""))
    run = run.resolve()
    run.mkdir(parents=True, exist_ok=True)
    latest = ROOT / "runs" / "latest"
    latest.parent.mkdir(exist_ok=True)
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run, target_is_directory=True)
    timings: dict[str, float] = {}
    episodes = run / "episodes"
    server = None
    try:
        run_stage("record miniwob", magma_command() + [
            "eval", "record", "--env", "miniwob", "--tasks", ",".join(plan.miniwob_tasks),
            "--episodes", str(plan.miniwob_train_episodes), "--split", "train",
            "--out", str(episodes / "miniwob")], run, timings)
        run_stage("record metaworld", magma_command() + [
            "eval", "record", "--env", "metaworld", "--tasks", ",".join(plan.metaworld_tasks),
            "--episodes", str(plan.metaworld_train_episodes), "--split", "train",
            "--out", str(episodes / "metaworld")], run, timings)
        run_stage("build shards", magma_command() + [
            "data", "build", "--config", "configs/data/quickstart.yaml", "--out", str(run / "shards"),
            "--var", f"EPISODES={episodes}"], run, timings)
        train_stage("train", plan.train_config,
                    [f"run_dir={run / 'train'}", f"data.shards={run / 'shards'}", *plan.train_overrides],
                    run, timings, ranks=plan.ranks)
        server, url = start_server(run / "train" / "final", run, timings)
        run_stage("eval", magma_command() + ["eval", "--config", plan.eval_config, "--server", url,
                                      "--out", str(run / "eval"),
                                      "--training-metrics", str(run / "train" / "metrics.jsonl")],
                  run, timings)
    except StageFailed as exc:
        print(f"\n[quickstart] FAILED: {exc}", file=sys.stderr)
        print(_summary(run, timings))
        return 1
    finally:
        if server is not None:
            stop_server(server)
    (run / "timings.json").write_text(json.dumps(timings, indent=1))
    print(_summary(run, timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
