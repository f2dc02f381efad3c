"""Adapters for LIBERO and SimplerEnv: they run only where those packages are installed.

Neither is installable here (no weights/assets can be downloaded), so each adapter checks for
its package first and raises `EnvUnavailable` with one line saying what is missing and how to
install it; `available_optional_envs()` lets suites skip them cleanly.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.envs.metaworld_env import RobotObservation, RobotStepResult


class EnvUnavailable(RuntimeError):
    """The environment's package is not installed; the suite skips it and says so."""


_REQUIREMENTS = {
    "libero": ("libero", "pip install libero (and its assets; see the LIBERO README)"),
    "simplerenv": ("simpler_env", "pip install simpler-env mani-skill2-real2sim (GPU rendering)"),
}


def available_optional_envs() -> dict[str, bool]:
    return {name: importlib.util.find_spec(mod) is not None for name, (mod, _) in _REQUIREMENTS.items()}


def _require(name: str) -> None:
    module, how = _REQUIREMENTS[name]
    if importlib.util.find_spec(module) is None:
        raise EnvUnavailable(f"{name}: python package {module!r} is not installed; {how}")


@dataclass
class LiberoEnv:
    """A LIBERO task (suite name + task index) with the agent-view camera, 7-D actions."""

    suite: str
    task_index: int
    image_size: int = 128
    env_name = "libero"

    def __post_init__(self) -> None:
        _require("libero")
        from libero.libero import benchmark  # type: ignore[import-not-found]
        from libero.libero.envs import OffScreenRenderEnv  # type: ignore[import-not-found]

        task = benchmark.get_benchmark_dict()[self.suite]().get_task(self.task_index)
        self.instruction = task.language
        self._env = OffScreenRenderEnv(bddl_file_name=task.bddl_file,
                                       camera_heights=self.image_size,
                                       camera_widths=self.image_size)

    def reset(self, seed: int) -> RobotObservation:
        self._env.seed(int(seed))
        return self._observation(self._env.reset())

    def step(self, action: np.ndarray) -> RobotStepResult:
        obs, reward, done, info = self._env.step(np.asarray(action, dtype=np.float64))
        success = bool(self._env.check_success())
        return RobotStepResult(self._observation(obs), float(reward), bool(done or success),
                               success, dict(info))

    def _observation(self, obs: dict[str, Any]) -> RobotObservation:
        image = np.ascontiguousarray(obs["agentview_image"][::-1]).astype(np.uint8)
        proprio = np.concatenate([obs["robot0_eef_pos"], obs["robot0_gripper_qpos"]]).astype(np.float32)
        return RobotObservation(image, proprio, self.instruction)

    def close(self) -> None:
        self._env.close()


@dataclass
class SimplerEnv:
    """A SimplerEnv task (e.g. 'google_robot_pick_coke_can'), 7-D end-effector actions."""

    task: str
    env_name = "simplerenv"

    def __post_init__(self) -> None:
        _require("simplerenv")
        import simpler_env  # type: ignore[import-not-found]
        from simpler_env.utils.env.observation_utils import (  # type: ignore[import-not-found]
            get_image_from_maniskill2_obs_dict)

        self._env = simpler_env.make(self.task)
        self._get_image = get_image_from_maniskill2_obs_dict
        self.instruction = ""

    def reset(self, seed: int) -> RobotObservation:
        obs, _ = self._env.reset(seed=int(seed))
        self.instruction = self._env.get_language_instruction()
        return self._observation(obs)

    def step(self, action: np.ndarray) -> RobotStepResult:
        obs, reward, terminated, truncated, info = self._env.step(np.asarray(action))
        success = bool(info.get("success", False))
        return RobotStepResult(self._observation(obs), float(reward),
                               bool(terminated or truncated), success, dict(info))

    def _observation(self, obs: dict[str, Any]) -> RobotObservation:
        image = np.asarray(self._get_image(self._env, obs), dtype=np.uint8)
        proprio = np.asarray(obs["agent"]["eef_pos"], dtype=np.float32)
        return RobotObservation(image, proprio, self.instruction)

    def close(self) -> None:
        self._env.close()
