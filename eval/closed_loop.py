"""Closed-loop evaluation: run agents (policy, random baseline, scripted expert) on held-out
seeds and append one JSON line per episode, so nothing measured is lost if the run stops.

The policy is reached through anything with `.act(request: dict) -> dict`: serve's HTTP
`PolicyClient` or an in-process `serve.policy.Policy` (the same request/response dicts).
A server that stops answering raises `PolicyUnavailable`, which ends the run with a clear
message; a crashed browser/simulator ends only its episode, as a failure with its reason.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from eval.splits import Split, split_seeds
from magma.inference_settings import MISMATCH_CODES
# Imported up front, not inside an episode: `import magma` loads torch + transformers (7 s CPU,
# 20+ s on a loaded machine), which would run out MiniWoB's in-page clock mid-episode.
from magma.codecs import ParseError, UIAction, parse_ui_action
from magma.prompts import history_entry
from serve.client.browser import ui_request  # the browser agent's request: the same history


class PolicyUnavailable(RuntimeError):
    """The policy server stopped answering; the run cannot go on."""


class PolicyMismatch(PolicyUnavailable):
    """The policy refuses what the suite asks of it (a chunk or proprio it was not trained with):
    no episode could succeed, so the run stops with the policy's message."""


class ActBackend(Protocol):
    def act(self, request: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class StepTrace:
    """What a filmstrip needs of one step."""

    image: np.ndarray
    action: dict[str, Any]
    marks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EpisodeRecord:
    env: str
    task: str
    agent: str
    seed: int
    split: str
    success: bool
    steps: int
    reason: str | None = None
    instruction: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- policy calls

def _encode_png(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def call_policy(backend: ActBackend, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """-> (response, latency ms). Connection failures and timeouts become PolicyUnavailable;
    error answers (bad request, unparsable output) come back as the response's "error"."""
    t0 = time.perf_counter()
    try:
        response = backend.act(request)
    except Exception as exc:
        name = type(exc).__name__
        status = getattr(exc, "status", None)
        if status is not None and int(status) in (401, 403):
            raise PolicyUnavailable(f"policy server refused the token ({exc}); pass the server's "
                                    "--token to magma eval") from exc
        if status is not None and 400 <= int(status) < 500:  # the server answered: a bad request
            return {"error": {"code": getattr(exc, "code", "bad_request"), "message": str(exc)}}, \
                (time.perf_counter() - t0) * 1000
        if name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError",
                    "ReadError", "WriteError", "PoolTimeout", "TimeoutException") \
                or (status is not None and int(status) >= 500):
            raise PolicyUnavailable(
                f"policy server stopped answering ({name}: {exc}); check that 'magma serve' is "
                "running and reachable, then rerun (episodes measured so far are kept in "
                "episodes.jsonl)") from exc
        raise
    return response, (time.perf_counter() - t0) * 1000


# ---------------------------------------------------------------- agents

def _offered_marks(dom_elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The marks serve's UI adapter offers the model for these DOM elements (the same
    data_pipeline.perception function marks training screens and requests)."""
    from data_pipeline.perception import marks_from_dom_elements

    marks, _ = marks_from_dom_elements(dom_elements)
    return [m.to_dict() for m in marks]


@dataclass
class UIPolicyAgent:
    backend: ActBackend
    name: str = "policy"

    def act(self, obs, history):
        request = ui_request(obs.utterance, _encode_png(obs.screenshot), obs.dom_elements(), history)
        response, latency = call_policy(self.backend, request)
        marks = response.get("marks") or []
        if response.get("error"):
            err = response["error"]
            return None, latency, marks, f"policy_error: {err.get('code')}: {err.get('message')}"
        action = {"op": response.get("op"), "ref": None, "point": response.get("point"),
                  "text": response.get("text"), "direction": response.get("direction"),
                  "mark": response.get("mark"), "raw": response.get("raw")}
        return action, latency, marks, None


@dataclass
class UIRandomAgent:
    """Clicks a mark drawn uniformly from the marks the adapter offers."""

    rng: random.Random
    name: str = "random"

    def act(self, obs, history):
        marks = _offered_marks(obs.dom_elements())
        if not marks:
            return None, None, [], "no_marks"
        m = self.rng.choice(marks)
        return ({"op": "click", "ref": None, "point": list(m["centre"]), "text": None,
                 "direction": None, "mark": m["id"]}, None, marks, None)


@dataclass
class UIExpertAgent:
    task: str
    name: str = "expert"

    def act(self, obs, history):
        from eval.envs.miniwob_experts import NoExpertAction, expert_action

        try:
            return expert_action(self.task, obs), None, [], None
        except NoExpertAction as exc:
            return None, None, [], f"no_expert_action: {exc}"


def _history_entry(action: dict[str, Any]) -> str:
    """The policy's action as training's history names it (its own text, parsed); agents
    without model text (random, expert) get their action's fields without the pixel point."""
    parsed = parse_ui_action(action.get("raw") or "")
    if not isinstance(parsed, ParseError):
        return history_entry(parsed)
    try:
        return history_entry(UIAction(op=action["op"], mark=action.get("mark"),
                                      text=action.get("text"), direction=action.get("direction")))
    except (ValueError, KeyError):
        return str(action.get("op"))


def run_ui_episode(env: Any, agent: Any, seed: int, split: str, max_steps: int,
                   keep_trace: bool = False) -> tuple[EpisodeRecord, list[StepTrace]]:
    t0 = time.perf_counter()
    rec = EpisodeRecord("miniwob", env.task, agent.name, seed, split, False, 0)
    trace: list[StepTrace] = []
    try:
        obs = env.reset(seed)
    except Exception as exc:
        rec.reason = f"env_reset_failed: {type(exc).__name__}: {exc}"
        env.restart()
        return rec, trace
    rec.instruction = obs.utterance
    history: list[str] = []
    for _ in range(max_steps):
        action, latency, marks, error = agent.act(obs, history)
        if latency is not None:
            rec.latencies_ms.append(latency)
        if keep_trace:
            trace.append(StepTrace(obs.screenshot, action or {"error": error or ""}, marks))
        rec.steps += 1
        if error:
            rec.reason = error
            break
        try:
            result = env.step(action)
        except ValueError as exc:  # an action the env cannot execute (e.g. click without point)
            rec.reason = f"invalid_action: {exc}"
            break
        if result.done:
            rec.success = result.success
            rec.reason = None if result.success else (result.info.get("error") or "task_failed")
            break
        history.append(_history_entry(action))
        obs = result.observation
    else:
        rec.reason = "max_steps"
    rec.seconds = time.perf_counter() - t0
    return rec, trace


@dataclass
class RobotPolicyAgent:
    """Asks the policy for an action chunk per observation. `chunk` None: the chunk the checkpoint
    was trained with (an explicit one is checked by the policy); `send_proprio` None: send the
    state exactly when the checkpoint was trained with it (its info), else as told."""

    backend: ActBackend
    chunk: int | None = None
    dataset: str = "metaworld"
    name: str = "policy"
    send_proprio: bool | None = None

    def actions(self, obs) -> tuple[list[np.ndarray] | None, float, str | None]:
        if self.send_proprio is None:
            self.send_proprio = trained_with_proprio(self.backend, self.dataset)
        request = {"adapter": "robot", "instruction": obs.instruction, "image": _encode_png(obs.image),
                   "dataset": self.dataset}
        if self.send_proprio:
            request["proprio"] = [float(v) for v in obs.proprio]
        if self.chunk:
            request["chunk"] = self.chunk
        response, latency = call_policy(self.backend, request)
        if response.get("error"):
            err = response["error"]
            if err.get("code") in MISMATCH_CODES:
                raise PolicyMismatch(f"{err.get('message')} (eval: leave the suite's chunk unset to use "
                                     "the checkpoint's)")
            return None, latency, f"policy_error: {err.get('code')}: {err.get('message')}"
        chunk = response.get("chunk") or ([response["action"]] if response.get("action") else None)
        if not chunk:
            return None, latency, "policy_error: empty action"
        return [np.asarray(a, dtype=np.float32) for a in chunk], latency, None


def trained_with_proprio(backend: Any, dataset: str) -> bool:
    """Whether the checkpoint behind `backend` put the state in `dataset`'s prompts (its /v1/info
    `inference` settings); True when it does not say (older checkpoints, backends without info)."""
    info = getattr(backend, "info", None)
    if info is None:
        return True
    try:
        described = info() or {}
    except Exception as exc:
        raise PolicyUnavailable(f"policy info failed ({type(exc).__name__}: {exc}); check that "
                                "'magma serve' is running and reachable") from exc
    trained = (described.get("inference") or {}).get("actions", {}).get(dataset)
    return bool(trained["use_proprio"]) if trained else True


@dataclass
class RobotRandomAgent:
    rng: np.random.Generator
    name: str = "random"

    def actions(self, obs):
        return [self.rng.uniform(-1.0, 1.0, size=4).astype(np.float32)], None, None


@dataclass
class RobotExpertAgent:
    env: Any
    name: str = "expert"

    def actions(self, obs):
        return [self.env.expert_action()], None, None


def run_robot_episode(env: Any, agent: Any, seed: int, split: str, max_steps: int | None = None,
                      keep_trace: bool = False) -> tuple[EpisodeRecord, list[StepTrace]]:
    t0 = time.perf_counter()
    rec = EpisodeRecord(env.env_name, env.task, agent.name, seed, split, False, 0)
    trace: list[StepTrace] = []
    obs = env.reset(seed)
    rec.instruction = obs.instruction
    limit = max_steps or env.max_steps
    while rec.steps < limit:
        actions, latency, error = agent.actions(obs)
        if latency is not None:
            rec.latencies_ms.append(latency)
        if error:
            rec.reason = error
            break
        done = False
        for a in actions:  # an action chunk runs open loop
            if keep_trace:
                trace.append(StepTrace(obs.image, {"action": [float(v) for v in a]}))
            result = env.step(a)
            rec.steps += 1
            obs = result.observation
            if result.done or rec.steps >= limit:
                done = True
                rec.success = result.success
                rec.reason = None if result.success else (result.info.get("error") or "max_steps")
                break
        if done:
            break
    rec.seconds = time.perf_counter() - t0
    return rec, trace


# ---------------------------------------------------------------- suites

@dataclass
class EnvSuite:
    env: str  # "miniwob" | "metaworld"
    tasks: list[str]
    episodes: int
    baseline_episodes: int | None = None
    max_steps: int | None = None
    image_size: int = 128
    chunk: int | None = None
    episode_seconds: float | None = 120.0  # MiniWoB in-page limit; CPU policies are slow


def append_jsonl(path: Path, record: EpisodeRecord) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def evaluate_suite(suite: EnvSuite, backend: ActBackend | None, out_jsonl: str | Path,
                   split: Split = "heldout", seed_offset: int = 0, agents: Sequence[str] =
                   ("policy", "random", "expert"), traces_per_task: int = 1,
                   progress: bool = True) -> dict[str, list[list[StepTrace]]]:
    """Runs every agent on every task; appends episode records to `out_jsonl`; returns a few
    policy traces per task for filmstrips. Episodes already in the file are not rerun."""
    from eval.record import make_env

    out_jsonl = Path(out_jsonl)
    out_jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["env"], r["task"], r["agent"], r["seed"]) for r in read_jsonl(out_jsonl)}
    agents = [a for a in agents if a != "policy" or backend is not None]
    n_base = suite.baseline_episodes or suite.episodes
    if suite.env == "miniwob" and "random" in agents:
        _offered_marks([])  # import the perception module before any episode clock runs
    total = sum(suite.episodes if a == "policy" else n_base for a in agents) * len(suite.tasks)
    traces: dict[str, list[list[StepTrace]]] = {}
    bar = tqdm(total=total, desc=f"eval {suite.env}", disable=not progress)
    for task in suite.tasks:
        with make_env(suite.env, task, suite.image_size, suite.episode_seconds) as env:
            for agent_name in agents:
                n = suite.episodes if agent_name == "policy" else n_base
                agent = _make_agent(suite, agent_name, env, backend, task)
                for k, seed in enumerate(split_seeds(split, n, seed_offset)):
                    if (env.env_name, task, agent_name, seed) in done:
                        bar.update(1)
                        continue
                    keep = agent_name == "policy" and k < traces_per_task
                    runner = run_ui_episode if suite.env == "miniwob" else run_robot_episode
                    max_steps = suite.max_steps or (6 if suite.env == "miniwob" else None)
                    rec, trace = runner(env, agent, seed, split, max_steps, keep)
                    append_jsonl(out_jsonl, rec)
                    if keep:
                        traces.setdefault(task, []).append(trace)
                    bar.update(1)
                    bar.set_postfix(task=task, agent=agent_name)
    bar.close()
    return traces


def _make_agent(suite: EnvSuite, name: str, env: Any, backend: ActBackend | None, task: str) -> Any:
    """Baselines are seeded per task, so a rerun draws the same random marks/actions."""
    if suite.env == "miniwob":
        if name == "policy":
            return UIPolicyAgent(backend)  # type: ignore[arg-type]
        if name == "random":
            return UIRandomAgent(random.Random(_stable_seed(task)))
        return UIExpertAgent(task)
    if name == "policy":
        return RobotPolicyAgent(backend, chunk=suite.chunk)  # type: ignore[arg-type]
    if name == "random":
        return RobotRandomAgent(np.random.default_rng(_stable_seed(task)))
    return RobotExpertAgent(env)


def _stable_seed(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())
