"""`magma eval ablation`: the small-scale version of Magma's SoM/ToM ablation.

Training runs on the same recorded demonstrations with the same budget (steps, batch,
ranks, learning rate), scored by the same closed-loop suite on held-out seeds:

    actions_som_tom  : from the shipped backbones; UI and robot action targets plus Set-of-Mark
                       grounding/referring samples on the screens and Trace-of-Mark traces on the
                       robot clips as their own sources, weighted 0.15 against 1.0 for each action
                       source (configs/data/quickstart.yaml: SoM/ToM added to the mix, as Magma
                       adds them to its pretraining data)
    actions_only     : from the shipped backbones; the action targets only
    from_scratch     : actions_som_tom's data from random weights (what the backbones buy)
    inline_som_tom   : (optional arm) SoM / ToM samples inside each environment's action source,
                       about 60% of its samples (the first quickstart mix): SoM/ToM in place of
                       action samples rather than beside them

    magma eval ablation --episodes runs/latest/episodes --out runs/latest/ablation --steps 300

Writes `<out>/ablation.json` and `<out>/ablation.md` (success per task for both arms, with
95% intervals). Each arm's stages log to `<out>/<arm>/logs/`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from magma.cli import fail, subcommand
from eval.quickstart import ROOT, SCRATCH_MODEL, StageFailed, magma_command, run_stage, train_stage

PRETRAINED_MODEL = "configs/model/tiny-pretrained.yaml"
# How each arm changes configs/data/quickstart.yaml, and the model it starts from. Sources with
# `actions: false` are the quickstart's separately weighted SoM / ToM sources.
ARMS = {
    # the quickstart mix as configured: SoM / ToM as separate, lightly weighted sources
    "actions_som_tom": {"aux_sources": True, "inline_som_tom": False, "model": PRETRAINED_MODEL},
    # UI and robot action targets only
    "actions_only": {"aux_sources": False, "inline_som_tom": False, "model": PRETRAINED_MODEL},
    # actions_som_tom from random weights
    "from_scratch": {"aux_sources": True, "inline_som_tom": False, "model": SCRATCH_MODEL},
    # SoM / ToM inside the action sources (half of the batches per environment, mostly SoM/ToM)
    "inline_som_tom": {"aux_sources": False, "inline_som_tom": True, "model": PRETRAINED_MODEL},
}
DEFAULT_ARMS = "actions_som_tom,actions_only,from_scratch"
DEFAULT_EVAL = "configs/eval/ablation.yaml"


def _mix(base: Path, arm: str) -> dict:
    """The quickstart's data mix as one arm sees it."""
    spec = ARMS[arm]
    mix = yaml.safe_load(base.read_text())
    mix["name"] = f"{mix['name']}-{arm}"
    sources = []
    for src in mix["sources"]:
        aux = src["params"].get("actions", True) is False
        if aux:
            if spec["aux_sources"]:
                sources.append(src)
            continue
        if not spec["aux_sources"]:  # the arm decides SoM / ToM inside the action sources
            if src["type"] == "miniwob_episodes":
                src["params"]["som_per_step"] = 1 if spec["inline_som_tom"] else 0
            elif src["type"] == "robot_episodes":
                src["params"]["tom"] = spec["inline_som_tom"]
        sources.append(src)
    mix["sources"] = sources
    return mix


def seed_overrides(seed: int) -> list[str]:
    """Train-config overrides for another draw: model initialisation, data order and the loop's
    own seed together (seed 0 is the quickstart's draw)."""
    return [f"seed={seed}", f"model.seed={seed}", f"data.seed={seed}"]


def run_arm(name: str, episodes: Path, out: Path, steps: int, eval_config: str,
            timings: dict[str, float], seed: int = 0) -> dict:
    arm = out / name
    arm.mkdir(parents=True, exist_ok=True)
    mix_path = arm / "data.yaml"
    mix_path.write_text(yaml.safe_dump(_mix(ROOT / "configs/data/quickstart.yaml", name)))
    run_stage(f"{name} shards", magma_command() + ["data", "build", "--config", str(mix_path),
                                            "--out", str(arm / "shards"),
                                            "--var", f"EPISODES={episodes}"], arm, timings, tag="ablation")
    train_stage(f"{name} train", "configs/train/quickstart.yaml",
                [f"run_dir={arm / 'train'}", f"data.shards={arm / 'shards'}", f"max_steps={steps}",
                 f"checkpoint.every={steps}", f"model.config={ARMS[name]['model']}", *seed_overrides(seed)],
                arm, timings, tag="ablation")
    run_stage(f"{name} eval", magma_command() + ["eval", "--config", eval_config, "--checkpoint",
                                          str(arm / "train" / "final"), "--out", str(arm / "eval")],
              arm, timings, tag="ablation")
    manifest = json.loads((arm / "shards" / "manifest.json").read_text())
    return {"results": json.loads((arm / "eval" / "results.json").read_text()),
            "samples_by_kind": manifest.get("counts_by_kind", {}), "model": ARMS[name]["model"]}


def mean_success(results: dict, tasks: list[tuple[str, str]]) -> float | None:
    """Mean success rate over `tasks` ((env, task) pairs); None if the arm lacks one of them."""
    rates = [results.get(env, {}).get(task, {}).get("success_rate") for env, task in tasks]
    return None if not rates or None in rates else sum(rates) / len(rates)


def table(arms: dict[str, dict], steps: int, seed: int = 0) -> str:
    names = list(arms)
    lines = [f"# SoM/ToM ablation at equal budget ({steps} steps, global batch 16, 2 CPU ranks, "
             f"training seed {seed})", "",
             "| env | task | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    envs = sorted({(env, task) for a in arms.values() for env, tasks in a["results"].items()
                   if isinstance(tasks, dict) for task in tasks})
    for env, task in envs:
        cells = []
        for n in names:
            r = arms[n]["results"].get(env, {}).get(task)
            cells.append("-" if r is None else
                         f"{r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] (n={r['episodes']})")
        lines.append(f"| {env} | {task} | " + " | ".join(cells) + " |")
    means = {n: mean_success(arms[n]["results"], envs) for n in names}
    lines.append("| | mean | " + " | ".join("-" if means[n] is None else f"{means[n]:.2f}" for n in names) + " |")
    if means.get("actions_som_tom") is not None and means.get("actions_only") is not None:
        met = means["actions_som_tom"] >= means["actions_only"]
        lines += ["", f"Paper's direction (actions + SoM + ToM at least as good as actions only, mean held-out "
                  f"success): {'met' if met else 'not met'} ({means['actions_som_tom']:.2f} vs "
                  f"{means['actions_only']:.2f})."]
    lines += ["", "Model each arm started from: " + "; ".join(
        f"{n}: {arms[n].get('model', '?')}" for n in names),
        "", "Training samples by target kind: " + "; ".join(
        f"{n}: {arms[n]['samples_by_kind']}" for n in names)]
    return "\n".join(lines) + "\n"


def add_command(sub: argparse._SubParsersAction) -> None:
    """`ablation` in `magma eval` (see eval.cli)."""
    p = subcommand(sub, "ablation", run, "SoM/ToM ablation at equal budget (trains each arm)",
                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=Path, required=True,
                   help="recorded demonstrations (a quickstart run's episodes/ folder)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=300, help="training steps for each arm")
    p.add_argument("--eval-config", default=DEFAULT_EVAL)
    p.add_argument("--arms", default=DEFAULT_ARMS, help="comma-separated, from " + ", ".join(ARMS))
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of every arm (initialisation and data order; 0 is the quickstart's): "
                        "another value gives another draw of the same comparison")


def run(args: argparse.Namespace) -> int:
    if not (args.episodes / "miniwob").is_dir() or not (args.episodes / "metaworld").is_dir():
        return fail(args._prog, f"{args.episodes} needs miniwob/ and metaworld/ episode folders "
                    "(run `magma quickstart` first and pass RUN/episodes)")
    arms_wanted = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms_wanted if a not in ARMS]
    if unknown:
        return fail(args._prog, f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    arms: dict[str, dict] = {}
    t0 = time.perf_counter()
    try:
        for name in arms_wanted:
            arms[name] = run_arm(name, args.episodes.resolve(), args.out.resolve(), args.steps,
                                 args.eval_config, timings, args.seed)
    except StageFailed as exc:
        return fail(args._prog, str(exc), 1)
    md = table(arms, args.steps, args.seed)
    (args.out / "ablation.md").write_text(md)
    (args.out / "ablation.json").write_text(json.dumps(
        {"steps": args.steps, "seed": args.seed, "arms": arms, "timings_s": timings}, indent=1))
    print(md + f"\nablation done in {time.perf_counter() - t0:.0f} s: {args.out / 'ablation.md'}")
    return 0
