"""MiniWoB++ (miniwob 1.1.0) in headless Debian chromium, behind a small uniform interface.

Actions are the recorder's UI action dicts ({"op", "ref", "point", "text", "direction"}); a
click with a pixel point is executed as a coordinate click (what a vision policy does), one with
only an element ref as an element click. A browser that crashes mid-episode is restarted and
the episode ends as a failure whose reason is kept.
"""
from __future__ import annotations

import logging
import os
import time
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from magma.browser import CHROMIUM_ARGS

CHROMIUM_BINARY = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without these, chromium phones home (no network here) and stalls or slows episode starts.
CHROMIUM_FLAGS = ("--headless", *CHROMIUM_ARGS)
# The keys of a DOM element in the recorder format (interfaces.md); json-safe values.
DOM_KEYS = ("ref", "left", "top", "width", "height", "tag", "text", "value", "classes", "flags")

# Tasks with a DOM-oracle expert (eval/envs/miniwob_experts.py) that the expert solves.
MINIWOB_TASKS = ("click-button", "click-link", "click-checkboxes", "enter-text", "click-dialog",
                 "click-tab", "focus-text", "click-test", "click-test-2", "click-dialog-2",
                 "click-option", "focus-text-2", "enter-password", "login-user",
                 "click-collapsible")


class EnvCrash(RuntimeError):
    """The browser died or stopped answering; the episode is a failure with this reason."""


def _patch_chromium_flags() -> None:
    """miniwob builds its driver options with `webdriver.ChromeOptions()` and has no option for
    extra flags, so its module-level `webdriver` name is pointed at a proxy whose ChromeOptions
    adds ours. Idempotent."""
    from miniwob import selenium_instance
    from selenium import webdriver

    if getattr(selenium_instance.webdriver, "_magma_patched", False):
        return

    class FlaggedChromeOptions(webdriver.ChromeOptions):
        def __init__(self) -> None:
            super().__init__()
            for flag in CHROMIUM_FLAGS:
                self.add_argument(flag)

    selenium_instance.webdriver = types.SimpleNamespace(
        ChromeOptions=FlaggedChromeOptions, Chrome=webdriver.Chrome, _magma_patched=True)


def configure_chromium(binary: str = CHROMIUM_BINARY, driver: str = CHROMEDRIVER) -> None:
    """Points miniwob at the local chromium (otherwise Selenium tries to download one)."""
    for path, what in ((binary, "chromium"), (driver, "chromedriver")):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} not found at {path}: install Debian 'chromium' and "
                                    "'chromium-driver' (apt-get install chromium chromium-driver)")
    os.environ.setdefault("MINIWOB_CHROME_BINARY", binary)
    os.environ.setdefault("MINIWOB_CHROMEDRIVER", driver)
    _patch_chromium_flags()


def _json_safe_element(e: dict[str, Any]) -> dict[str, Any]:
    """A miniwob element (numpy boxes and flags) -> plain dict with ints/floats/strs."""
    out = {"ref": int(e["ref"]), "parent": int(e["parent"]), "id": str(e.get("id", ""))}
    for k in ("left", "top", "width", "height"):
        out[k] = float(np.asarray(e[k]).reshape(-1)[0])
    for k in ("tag", "text", "value", "classes"):
        out[k] = str(e[k])
    out["flags"] = [int(v) for v in np.asarray(e["flags"]).reshape(-1)]
    return out


@dataclass
class UIObservation:
    utterance: str
    screenshot: np.ndarray  # [H, W, 3] uint8, pixel coords == DOM coords
    elements: list[dict[str, Any]]  # json-safe, DOM_KEYS plus parent and id (for experts)
    fields: dict[str, str] = field(default_factory=dict)

    def dom_elements(self) -> list[dict[str, Any]]:
        """The elements in the recorder format (exactly DOM_KEYS)."""
        return [{k: e[k] for k in DOM_KEYS} for e in self.elements]


@dataclass
class StepResult:
    observation: UIObservation | None  # None once the episode is done
    reward: float
    done: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)  # "error": reason when the browser crashed


def element_centre(e: dict[str, Any]) -> list[float]:
    return [e["left"] + e["width"] / 2.0, e["top"] + e["height"] / 2.0]


class MiniWoBEnv:
    """One MiniWoB++ task in one headless chromium; reset(seed) -> observation, step(action)."""

    env_name = "miniwob"

    def __init__(self, task: str, data_mode: str = "train",
                 episode_seconds: float | None = None) -> None:
        """`episode_seconds` overrides MiniWoB's in-page time limit (10 s): a policy on CPU can
        need seconds per step. Success uses the raw reward, which ignores elapsed time."""
        configure_chromium()
        from miniwob.environment import MiniWoBEnvironment

        self.task = task
        self.episode_seconds = episode_seconds
        html = os.path.join(os.path.dirname(__import__("miniwob").__file__), "html", "miniwob",
                            f"{task}.html")
        if not os.path.exists(html):
            raise ValueError(f"unknown MiniWoB++ task {task!r} (no {html}); known tasks with an "
                             f"expert: {', '.join(MINIWOB_TASKS)}")
        t0 = time.perf_counter()
        self._env = MiniWoBEnvironment(subdomain=task, data_mode=data_mode)
        self.start_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ gym-ish API
    def reset(self, seed: int) -> UIObservation:
        try:
            self._set_time_limit()
            obs, _ = self._env.reset(seed=int(seed))
        except Exception as exc:  # a dead browser: start a fresh one and retry once
            logging.warning("miniwob %s: reset failed (%s); restarting chromium", self.task, exc)
            self.restart()
            self._set_time_limit()
            obs, _ = self._env.reset(seed=int(seed))
        return self._observation(obs)

    def _set_time_limit(self) -> None:
        if self.episode_seconds:
            ms = int(self.episode_seconds * 1000)
            self._env.instance.driver.execute_script(f"core.EPISODE_MAX_TIME = {ms};")

    def step(self, action: dict[str, Any]) -> StepResult:
        try:
            miniwob_actions = self._to_miniwob(action)
            for a in miniwob_actions:
                obs, reward, done, _, info = self._env.step(a)
                if done:
                    break
        except ValueError:
            raise
        except Exception as exc:
            reason = f"browser crashed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logging.warning("miniwob %s: %s; restarting chromium", self.task, reason)
            self.restart()
            return StepResult(None, 0.0, True, False, {"error": reason})
        success = bool(done and float(info.get("raw_reward", reward)) > 0)
        return StepResult(None if done else self._observation(obs), float(reward), bool(done),
                          success, {"reason": info.get("reason")})

    def restart(self) -> None:
        """Kill the browser and start a fresh one (used after a crash)."""
        try:
            self._env._hard_reset_instance()
        except Exception as exc:
            raise EnvCrash(f"miniwob {self.task}: chromium could not be restarted: {exc}") from exc

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:
            pass

    def __enter__(self) -> "MiniWoBEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def screen_size(self) -> tuple[int, int]:
        """(width, height) of screenshots."""
        inst = self._env.instance
        return int(inst.task_width), int(inst.task_height)

    # ------------------------------------------------------------ conversion
    def _observation(self, obs: dict[str, Any]) -> UIObservation:
        elements = [_json_safe_element(e) for e in obs["dom_elements"]]
        return UIObservation(str(obs["utterance"]), np.asarray(obs["screenshot"], dtype=np.uint8),
                             elements, {str(k): str(v) for k, v in obs["fields"]})

    def _to_miniwob(self, action: dict[str, Any]) -> list[dict[str, Any]]:
        from miniwob.action import ActionTypes

        make = self._env.create_action
        op, ref, point, text = (action.get("op"), action.get("ref"), action.get("point"),
                                action.get("text"))
        coords = None if point is None else np.asarray(point, dtype=np.float32)
        if op == "click":
            if coords is not None:
                return [make(ActionTypes.CLICK_COORDS, coords=coords)]
            if ref is not None:
                return [make(ActionTypes.CLICK_ELEMENT, ref=int(ref))]
        elif op == "type" and text is not None:
            if ref is not None:
                return [make(ActionTypes.FOCUS_ELEMENT_AND_TYPE_TEXT, ref=int(ref), text=str(text))]
            focus = [make(ActionTypes.CLICK_COORDS, coords=coords)] if coords is not None else []
            return focus + [make(ActionTypes.TYPE_TEXT, text=str(text))]
        elif op == "scroll":
            w, h = self.screen_size
            at = coords if coords is not None else np.asarray([w / 2, h / 2], dtype=np.float32)
            kind = ActionTypes.SCROLL_UP_COORDS if action.get("direction") == "up" else \
                ActionTypes.SCROLL_DOWN_COORDS
            return [make(kind, coords=at)]
        elif op in ("noop", "wait"):  # wait: let an animation finish (experts only)
            if op == "wait":
                time.sleep(0.3)
            return [make(ActionTypes.NONE)]
        raise ValueError(f"UI action {action!r} cannot be executed: click needs a point or ref, "
                         "type needs text, scroll a direction")
