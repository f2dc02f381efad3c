"""Browser-free stand-ins with the real environments' interfaces (for fast tests)."""
from __future__ import annotations

import numpy as np

from eval.envs.metaworld_env import RobotObservation, RobotStepResult
from eval.envs.miniwob_env import StepResult, UIObservation


def _el(ref, tag, text, left, top, w, h, parent=3, value="", classes=""):
    return {"ref": ref, "parent": parent, "id": "", "left": float(left), "top": float(top),
            "width": float(w), "height": float(h), "tag": tag, "text": text, "value": value,
            "classes": classes, "flags": [0, 0, 0, 1]}


class FakeClickButtonEnv:
    """click-button with three buttons; the seed picks the target; success iff the click point
    lies inside the target button."""

    env_name = "miniwob"
    task = "click-button"
    screen_size = (160, 210)

    def __init__(self) -> None:
        self.restarts = 0

    def reset(self, seed: int) -> UIObservation:
        rng = np.random.default_rng(seed)
        names = ["Ok", "Cancel", "Yes"]
        self.target = names[int(rng.integers(3))]
        self.elements = [_el(1, "body", "", 0, 0, 160, 210, parent=0),
                         _el(3, "div", "", 0, 50, 160, 150, parent=1)]
        self.elements += [_el(4 + i, "button", n, 5 + 50 * i, 80 + 10 * i, 40, 20)
                          for i, n in enumerate(names)]
        img = np.full((210, 160, 3), 255, np.uint8)
        img[80:100, 5:45] = 100
        self.obs = UIObservation(f'Click on the "{self.target}" button.', img, self.elements,
                                 {"target": self.target})
        return self.obs

    def step(self, action):
        x, y = action["point"]
        hit = [e for e in self.elements if e["tag"] == "button"
               and e["left"] <= x <= e["left"] + e["width"] and e["top"] <= y <= e["top"] + e["height"]]
        success = bool(hit and hit[0]["text"] == self.target)
        return StepResult(None, 1.0 if success else -1.0, True, success, {})

    def restart(self) -> None:
        self.restarts += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class FakeReachEnv:
    """A point that moves by the action; success when within 0.05 of a seeded goal."""

    env_name = "metaworld"
    task = "reach-v3"
    instruction = "reach the red goal with the gripper"
    camera = "corner"
    image_size = 32
    max_steps = 60

    def reset(self, seed: int) -> RobotObservation:
        rng = np.random.default_rng(seed)
        self.pos = np.zeros(3)
        self.goal = list(rng.uniform(-0.3, 0.3, 3))
        self.t = 0
        return self._obs()

    def _obs(self) -> RobotObservation:
        return RobotObservation(np.zeros((32, 32, 3), np.uint8),
                                np.r_[self.pos, 0.0].astype(np.float32), self.instruction)

    def expert_action(self) -> np.ndarray:
        d = (np.asarray(self.goal) - self.pos) * 10
        return np.r_[np.clip(d, -1, 1), 0.0].astype(np.float32)

    def step(self, action):
        self.pos = self.pos + 0.05 * np.asarray(action[:3])
        self.t += 1
        success = bool(np.linalg.norm(self.pos - np.asarray(self.goal)) < 0.05)
        return RobotStepResult(self._obs(), 0.0, success or self.t >= self.max_steps, success, {})
