"""Environment costs and ceilings for planning eval budgets: per task, env start time, reset
time, steps/s and success of the scripted expert and of the random baseline (uniform mark /
uniform action), measured in the same run on held-out seeds.

    .venv/bin/python bench/eval_envs.py --episodes 10 [--env miniwob|metaworld|both]
"""
from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np

from eval.closed_loop import (RobotExpertAgent, RobotRandomAgent, UIExpertAgent, UIRandomAgent,
                              run_robot_episode, run_ui_episode, _offered_marks)
from eval.envs.metaworld_env import METAWORLD_TASKS, MetaWorldEnv
from eval.envs.miniwob_env import MINIWOB_TASKS, MiniWoBEnv
from eval.splits import split_seeds


def _timed_resets(env, seeds) -> float:
    t = time.perf_counter()
    for s in seeds:
        env.reset(s)
    return (time.perf_counter() - t) / len(seeds) * 1000


def bench_task(env, agents, seeds, runner, max_steps) -> dict:
    row = {"start_s": round(env.start_seconds, 2), "reset_ms": round(_timed_resets(env, seeds[:3]), 1)}
    for agent in agents:
        t = time.perf_counter()
        recs = [runner(env, agent, s, "heldout", max_steps)[0] for s in seeds]
        secs = time.perf_counter() - t
        steps = sum(r.steps for r in recs)
        row[agent.name] = round(sum(r.success for r in recs) / len(recs), 3)
        row[f"{agent.name}_steps_per_s"] = round(steps / secs, 1)
        row[f"{agent.name}_mean_len"] = round(steps / len(recs), 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--env", choices=["miniwob", "metaworld", "both"], default="both")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--tasks", help="comma-separated subset of tasks")
    args = p.parse_args()
    seeds = split_seeds("heldout", args.episodes)
    keep = set(args.tasks.split(",")) if args.tasks else None
    out: dict[str, dict] = {}
    if args.env in ("miniwob", "both"):
        _offered_marks([])
        for task in [t for t in MINIWOB_TASKS if keep is None or t in keep]:
            with MiniWoBEnv(task, episode_seconds=60) as env:
                out.setdefault("miniwob", {})[task] = row = bench_task(
                    env, [UIExpertAgent(task), UIRandomAgent(random.Random(0))], seeds,
                    run_ui_episode, 8)
            print("miniwob", task, json.dumps(row), flush=True)
    if args.env in ("metaworld", "both"):
        for task in [t for t in METAWORLD_TASKS if keep is None or t in keep]:
            with MetaWorldEnv(task, image_size=args.image_size) as env:
                out.setdefault("metaworld", {})[task] = row = bench_task(
                    env, [RobotExpertAgent(env), RobotRandomAgent(np.random.default_rng(0))],
                    seeds, run_robot_episode, None)
            print("metaworld", task, json.dumps(row), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
