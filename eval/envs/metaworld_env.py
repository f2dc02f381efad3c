"""Meta-World 3.1.1 (MuJoCo) rendered offscreen from a fixed camera, with its scripted experts.

Goals are drawn from the task's own random reset space with a generator seeded by the episode
seed, so training seeds and held-out seeds give different goal positions (recorded per
episode). Rendering defaults to OSMesa: with EGL, closing one environment blanks the images
of every other one open in the process (measured here), and OSMesa is as fast on these CPUs.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METAWORLD_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "button-press-v3", "drawer-open-v3")
INSTRUCTIONS = {
    "reach-v3": "reach the red goal with the gripper",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "button-press-v3": "press the button",
    "drawer-open-v3": "open the drawer",
}
# Step caps well above the experts' episode lengths (measured 40-120 steps), below Meta-World's 500.
MAX_STEPS = {"reach-v3": 150, "push-v3": 200, "pick-place-v3": 200, "button-press-v3": 150,
             "drawer-open-v3": 150}
# The policy's state vector: hand xyz, gripper opening, and the goal's offset from the hand
# (xyz). Meta-World's goal-observable observation carries the goal (its MT1/MT10 policies see
# it); we give it relative to the hand because the reach expert's action is a clipped multiple
# of exactly that offset. Without it the goal is only a few red pixels in the image and the
# quickstart's tiny model stayed at 0/5 on reach-v3 (README, "Meta-World").
PROPRIO_DIM = 7
ACTION_DIM = 4


def configure_offscreen_gl() -> str:
    """Chooses the offscreen GL backend before mujoco is imported (MUJOCO_GL wins if set)."""
    backend = os.environ.setdefault("MUJOCO_GL", "osmesa")
    if backend == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    elif backend == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    return backend


@dataclass
class RobotObservation:
    image: np.ndarray  # [H, W, 3] uint8, upright
    proprio: np.ndarray  # [PROPRIO_DIM] float32; sent when the checkpoint was trained with it
    instruction: str


@dataclass
class RobotStepResult:
    observation: RobotObservation
    reward: float
    done: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)


class MetaWorldEnv:
    """One Meta-World task; reset(seed) draws the goal from that seed; step(action[4])."""

    env_name = "metaworld"

    def __init__(self, task: str, image_size: int = 128, camera: str = "corner",
                 max_steps: int | None = None, fast_render: bool = True) -> None:
        configure_offscreen_gl()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; e.g. {', '.join(METAWORLD_TASKS)}")
        if not 16 <= image_size <= 224:
            raise ValueError(f"image_size must be in [16, 224], got {image_size}")
        self.task, self.camera, self.image_size = task, camera, image_size
        self.instruction = INSTRUCTIONS.get(task, task.rsplit("-v", 1)[0].replace("-", " "))
        self.max_steps = max_steps or MAX_STEPS.get(task, 200)
        self.fast_render = fast_render
        t0 = time.perf_counter()
        env = ALL_V3_ENVIRONMENTS[task](render_mode="rgb_array", camera_name=camera,
                                        width=image_size, height=image_size)
        # What MT1's "goal observable" classes do, minus their fixed-at-init goal: the goal is
        # in the state (the scripted experts read it) and re-drawn from our seed at each reset.
        env._partially_observable = False
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        try:  # cached with the goal hidden (zeros); recomputed on next use
            del env.sawyer_observation_space
        except AttributeError:
            pass
        self._env = env
        self._expert = ENV_POLICY_MAP[task]()
        self._state: np.ndarray | None = None
        self._t = 0
        self._flags_set = False
        self.start_seconds = time.perf_counter() - t0

    def reset(self, seed: int) -> RobotObservation:
        self._env.seed(int(seed))
        self._state, _ = self._env.reset()
        self._t = 0
        return self._observation()

    def step(self, action: np.ndarray | list[float]) -> RobotStepResult:
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"Meta-World action must have {ACTION_DIM} numbers, got {a.shape}")
        try:
            self._state, reward, _, truncated, info = self._env.step(a)
        except Exception as exc:  # simulator blew up: end the episode as a failure with a reason
            reason = f"simulator error: {type(exc).__name__}: {exc}"
            logging.warning("metaworld %s: %s", self.task, reason)
            return RobotStepResult(self._observation(), 0.0, True, False, {"error": reason})
        self._t += 1
        success = bool(info.get("success", 0.0))
        done = success or truncated or self._t >= self.max_steps
        return RobotStepResult(self._observation(), float(reward), done, success,
                               {"step": self._t})

    def expert_action(self) -> np.ndarray:
        """Meta-World's scripted policy on the true state (the ceiling for closed-loop scores)."""
        assert self._state is not None, "reset() first"
        return np.clip(self._expert.get_action(self._state), -1.0, 1.0).astype(np.float32)

    @property
    def goal(self) -> list[float]:
        return [float(v) for v in self._env._target_pos]

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:
            pass

    def __enter__(self) -> "MetaWorldEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _render(self) -> np.ndarray:
        img = self._env.render()
        if self.fast_render and not self._flags_set:
            self._disable_costly_effects()
            img = self._env.render()
        # The corner camera renders upside down.
        return np.ascontiguousarray(np.flipud(img)).astype(np.uint8)

    def _disable_costly_effects(self) -> None:
        """Shadows, reflections and skybox off: ~3x faster software rendering (measured)."""
        import mujoco

        viewer = self._env.mujoco_renderer._get_viewer("rgb_array")
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            viewer.scn.flags[flag] = 0
        self._flags_set = True

    def _observation(self) -> RobotObservation:
        assert self._state is not None
        return RobotObservation(self._render(), self.state_vector(), self.instruction)

    def state_vector(self) -> np.ndarray:
        """[hand x, y, z, gripper, goal - hand x, y, z] (PROPRIO_DIM floats)."""
        assert self._state is not None
        hand, gripper, goal = self._state[0:3], self._state[3:4], self._state[36:39]
        return np.concatenate([hand, gripper, goal - hand]).astype(np.float32)
