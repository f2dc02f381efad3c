"""Record scripted-expert demonstrations in the `magma.episode` recorder format.

`record_episodes(env="miniwob"|"metaworld", tasks, episodes, split, out)` writes one folder per
successful expert episode directly under `out` (what the data pipeline's `miniwob_episodes` /
`robot_episodes` sources read) and a `split_manifest.json` listing every seed used per task
and split, so held-out seeds can be checked to never reach training. Reruns skip episodes
already on disk, so an interrupted recording resumes.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from magma.episode import EPISODE_META, Episode, EpisodeMeta
from eval.splits import Split, split_seeds

SPLIT_MANIFEST = "split_manifest.json"
MAX_UI_STEPS = 12
# MiniWoB's in-page 10 s limit measures a loaded 2-core machine as much as the expert; success
# is judged on the raw reward, which ignores elapsed time.
UI_EPISODE_SECONDS = 60.0


@dataclass
class RecordStats:
    recorded: int = 0
    skipped_existing: int = 0
    expert_failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    seconds: float = 0.0


def episode_id(env: str, task: str, split: str, seed: int) -> str:
    return f"{env}-{task}-{split}-s{seed:07d}"


def record_miniwob_episode(env: Any, task: str, seed: int, split: Split) -> tuple[Episode | None, str]:
    """One DOM-oracle episode -> (Episode, "") or (None, failure reason)."""
    from eval.envs.miniwob_experts import NoExpertAction, expert_action

    obs = env.reset(seed)
    utterance = obs.utterance
    images, steps = [], []
    for _ in range(MAX_UI_STEPS):
        try:
            action = expert_action(task, obs)
        except NoExpertAction as exc:
            return None, f"no_expert_action: {exc}"
        if action["op"] != "wait":  # waiting for an animation is not a demonstrated step
            images.append(obs.screenshot)
            steps.append({"dom_elements": obs.dom_elements(), "action": action})
        result = env.step(action)
        if result.done:
            if not result.success:
                return None, result.info.get("error") or "expert_failed"
            meta = EpisodeMeta(episode_id=episode_id("miniwob", task, split, seed), env="miniwob",
                               task=task, instruction=utterance, action_space="ui", seed=seed,
                               split=split, success=True,
                               meta={"screen_size": list(env.screen_size)})
            return Episode(meta, np.stack(images), steps=steps), ""
        obs = result.observation
    return None, "too_many_steps"


def record_metaworld_episode(env: Any, task: str, seed: int, split: Split) -> tuple[Episode | None, str]:
    obs = env.reset(seed)
    goal = env.goal
    images, actions, proprio = [], [], []
    while True:
        action = env.expert_action()
        images.append(obs.image)
        proprio.append(obs.proprio)
        actions.append(action)
        result = env.step(action)
        if result.done:
            break
        obs = result.observation
    if not result.success:
        return None, result.info.get("error") or "expert_failed"
    meta = EpisodeMeta(episode_id=episode_id("metaworld", task, split, seed), env="metaworld",
                       task=task, instruction=env.instruction, action_space="robot", seed=seed,
                       split=split, success=True, fps=80.0,
                       meta={"camera": env.camera, "image_size": env.image_size, "goal": goal,
                             "dataset": "metaworld"})
    return Episode(meta, np.stack(images), actions=np.stack(actions).astype(np.float32),
                   proprio=np.stack(proprio).astype(np.float32)), ""


def make_env(env: str, task: str, image_size: int = 128,
             episode_seconds: float | None = None) -> Any:
    if env == "miniwob":
        from eval.envs.miniwob_env import MiniWoBEnv
        return MiniWoBEnv(task, episode_seconds=episode_seconds)
    if env == "metaworld":
        from eval.envs.metaworld_env import MetaWorldEnv
        return MetaWorldEnv(task, image_size=image_size)
    raise ValueError(f"unknown env {env!r}; choose miniwob or metaworld")


def _update_manifest(out: Path, env: str, task: str, split: str, seeds: list[int],
                     recorded: list[str], failures: dict[str, int]) -> None:
    path = out / SPLIT_MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"env": env, "tasks": {}}
    entry = manifest["tasks"].setdefault(task, {}).setdefault(split, {"seeds": [], "episodes": [],
                                                                      "expert_failures": {}})
    entry["seeds"] = sorted(set(entry["seeds"]) | set(seeds))
    entry["episodes"] = sorted(set(entry["episodes"]) | set(recorded))
    for k, v in failures.items():
        entry["expert_failures"][k] = entry["expert_failures"].get(k, 0) + v
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)


def record_episodes(env: str, tasks: Sequence[str], episodes: int, split: Split, out: str | Path,
                    seed_offset: int = 0, image_size: int = 128, progress: bool = True) -> RecordStats:
    """Records `episodes` expert episodes per task on `split` seeds into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = split_seeds(split, episodes, seed_offset)
    runner = record_miniwob_episode if env == "miniwob" else record_metaworld_episode
    stats = RecordStats()
    t0 = time.perf_counter()
    bar = tqdm(total=len(tasks) * len(seeds), desc=f"record {env}", disable=not progress)
    for task in tasks:
        recorded: list[str] = []
        failures: dict[str, int] = {}
        todo = [s for s in seeds
                if not (out / episode_id(env, task, split, s) / EPISODE_META).exists()]
        stats.skipped_existing += len(seeds) - len(todo)
        recorded += [episode_id(env, task, split, s) for s in seeds if s not in todo]
        bar.update(len(seeds) - len(todo))
        if todo:
            with make_env(env, task, image_size, UI_EPISODE_SECONDS) as instance:
                for seed in todo:
                    episode, reason = runner(instance, task, seed, split)
                    if episode is None:
                        key = reason.split(":")[0]
                        failures[key] = failures.get(key, 0) + 1
                    else:
                        episode.save(out)
                        recorded.append(episode.meta.episode_id)
                        stats.recorded += 1
                    bar.update(1)
        for k, v in failures.items():
            stats.expert_failures[k] = stats.expert_failures.get(k, 0) + v
        _update_manifest(out, env, task, split, seeds, recorded, failures)
    bar.close()
    stats.seconds = time.perf_counter() - t0
    return stats


def stats_to_dict(stats: RecordStats) -> dict[str, Any]:
    return asdict(stats)
