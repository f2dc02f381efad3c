"""BrowserGym's MiniWoB++ tasks (`browsergym/miniwob.<task>`, browsergym-core + browsergym-miniwob
0.14.x) behind the same small interface as `MiniWoBEnv`: reset(seed) -> UIObservation,
step(ui action dict) -> StepResult, restart(), close().

Observation: BrowserGym's screenshot (its miniwob tasks zoom the page by `_bgym_scale_factor`, 1.5,
so element boxes are scaled the same way and stay in screenshot pixels), its goal as the
instruction, and MiniWoB-style `dom_elements` rebuilt from its DOM snapshot (tags, classes, text,
input values) with the boxes of its `extra_element_properties` for every element that has a
BrowserGym id (`bid`). Elements follow MiniWoB's own conventions (miniwob/html/core/core.js
`getDOMInfo`): lower-case tags, `input_<type>`, text-only elements are leaves carrying their text,
other text nodes become `t` pseudo-elements with negative refs, zero-size elements (and what they
hold) are left out. So `data_pipeline.perception.marks_from_dom_elements` marks a BrowserGym screen
exactly as it marks a recorded MiniWoB++ screen, and the DOM experts read it unchanged.

Action: our UI action dict -> one string of BrowserGym's high-level action set. An element (the
action's `ref`, or the element behind its `mark`) with a bid is acted on by bid (`click("12")`,
`fill("12", "text")`, `select_option("12", "x")`); otherwise the pixel point is used
(`mouse_click(x, y)`, which BrowserGym maps back through the zoom).

Chromium: BrowserGym launches two browsers per episode (the task's and its chat window's) and
passes an executable only to the first, so `use_local_chromium` makes Debian chromium the default
of the shared Playwright's `chromium.launch` (there is no browser download here).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import numpy as np

from eval.envs.miniwob_env import StepResult, UIObservation
from magma.browser import CHROMIUM as CHROMIUM_EXECUTABLE
ENV_PREFIX = "browsergym/miniwob."
TEXT_MAX = 256  # miniwob.constants.TEXT_MAX_LENGTH
# Elements MiniWoB's getDOMInfo leaves out (its own display, not part of the task).
SKIPPED_IDS = frozenset({"reward-display", "sync-task-cover", "click-canvas", "query"})
SCROLL_PIXELS = 100.0
# BrowserGym 0.14 action subsets we emit: bid actions, coordinate actions, and chat/noop.
ACTION_SUBSETS = ("chat", "bid", "coord")
INSTALL_HINT = ("install it beside the project without touching its playwright: pip install --no-deps "
                "browsergym-core==0.14.3 browsergym-miniwob==0.14.3 && pip install 'lxml>=4.9,<6' "
                "'beautifulsoup4>=4.12' (measured on playwright 1.65.2; a plain 'pip install "
                "browsergym-core' would pin playwright 1.44)")

_ELEMENT_NODE, _TEXT_NODE = 1, 3


class BrowserGymUnavailable(RuntimeError):
    """browsergym (or a piece it needs: the miniwob pages, chromium) is missing; the message says
    what and how to install it."""


def require_browsergym() -> None:
    """Raises BrowserGymUnavailable (one line: what is missing, how to install) unless
    browsergym.core and browsergym.miniwob import."""
    try:
        import browsergym.core
        import browsergym.miniwob  # noqa: F401
    except ImportError as exc:
        raise BrowserGymUnavailable(f"browsergym is not importable ({exc}); {INSTALL_HINT}") from None


def versions() -> dict[str, str | None]:
    """Installed versions of what the harness runs on (None where not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("browsergym-core", "browsergym-miniwob", "playwright", "miniwob", "gymnasium"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def miniwob_pages_url() -> str:
    """The `file://` URL (with a trailing slash) of the MiniWoB++ pages inside the miniwob package:
    what BrowserGym's MINIWOB_URL wants."""
    try:
        import miniwob
    except ImportError:
        raise BrowserGymUnavailable("the MiniWoB++ pages ship inside the 'miniwob' package, which is "
                                    "not installed: pip install miniwob==1.1.0") from None
    pages = os.path.join(os.path.dirname(miniwob.__file__), "html", "miniwob")
    if not os.path.isfile(os.path.join(pages, "click-button.html")):
        raise BrowserGymUnavailable(f"no MiniWoB++ pages in {pages}: reinstall miniwob==1.1.0")
    return "file://" + pages + "/"


def use_local_chromium(executable: str = CHROMIUM_EXECUTABLE) -> None:
    """Makes `executable` the default browser of BrowserGym's shared Playwright (both of its
    launches). Idempotent; an explicit `executable_path` still wins."""
    if not os.path.exists(executable):
        raise BrowserGymUnavailable(f"chromium not found at {executable}: apt-get install chromium")
    from browsergym.core import _get_global_playwright

    chromium = _get_global_playwright().chromium
    if getattr(chromium, "_magma_executable", None) == executable:
        return
    launch = getattr(chromium, "_magma_launch", chromium.launch)

    def launch_local(**kwargs: Any):
        kwargs.setdefault("executable_path", executable)
        return launch(**kwargs)

    chromium._magma_launch = launch
    chromium._magma_executable = executable
    chromium.launch = launch_local


# ---------------------------------------------------------------- observation

class _Snapshot:
    """The main document of a CDP `DOMSnapshot.captureSnapshot` answer (BrowserGym's
    `dom_object`), indexed by node."""

    def __init__(self, dom: dict[str, Any]) -> None:
        self.strings: list[str] = dom["strings"]
        doc = dom["documents"][0]
        nodes = doc["nodes"]
        self.parent: list[int] = nodes["parentIndex"]
        self.type: list[int] = nodes["nodeType"]
        self.name: list[int] = nodes["nodeName"]
        self.value: list[int] = nodes["nodeValue"]
        self.attributes: list[list[int]] = nodes["attributes"]
        rare = nodes.get("inputValue") or {"index": [], "value": []}
        self.input_value = dict(zip(rare["index"], rare["value"]))
        self.checked = set((nodes.get("inputChecked") or {"index": []})["index"])
        self.children: list[list[int]] = [[] for _ in self.parent]
        for i, p in enumerate(self.parent):
            if p >= 0:
                self.children[p].append(i)
        layout = doc["layout"]
        self.bounds = dict(zip(layout["nodeIndex"], layout["bounds"]))
        layout_text = layout.get("text") or [-1] * len(layout["nodeIndex"])
        # Line fragments of rendered text (CDP `textBoxes`): node -> [(bounds, text of the line)].
        node_of_layout = layout["nodeIndex"]
        boxes = doc.get("textBoxes") or {"layoutIndex": [], "bounds": [], "start": [], "length": []}
        self.lines: dict[int, list[tuple[list[float], str]]] = {}
        for li, b, start, length in zip(boxes["layoutIndex"], boxes["bounds"], boxes["start"], boxes["length"]):
            line = self.s(layout_text[li])[start:start + length]
            self.lines.setdefault(node_of_layout[li], []).append((b, line))
        self.scroll = (float(doc.get("scrollOffsetX", 0.0)), float(doc.get("scrollOffsetY", 0.0)))

    def s(self, idx: int) -> str:
        return "" if idx is None or idx < 0 else self.strings[idx]

    def attrs(self, i: int) -> dict[str, str]:
        a = self.attributes[i] if i < len(self.attributes) else []
        return {self.s(a[k]): self.s(a[k + 1]) for k in range(0, len(a) - 1, 2)}

    def tag(self, i: int) -> str:
        return self.s(self.name[i]).lower()

    def find(self, tag: str) -> int | None:
        return next((i for i in range(len(self.parent))
                     if self.type[i] == _ELEMENT_NODE and self.tag(i) == tag), None)


def elements_from_snapshot(dom: dict[str, Any], extra_properties: dict[str, dict[str, Any]],
                           scale: float = 1.0, focused_bid: str | None = None,
                           bid_attribute: str = "bid") -> list[dict[str, Any]]:
    """BrowserGym's `dom_object` + `extra_element_properties` -> MiniWoB-style elements in
    MiniWoB's order (pre-order from <body>): json-safe dicts with ref, parent, id, left, top,
    width, height, tag, text, value, classes, flags ([focused, tampered, targeted, is_leaf];
    tampered and targeted are always 0: BrowserGym does not track them) and `bid` (None for text
    pseudo-elements and unmarked elements). Boxes are screenshot pixels: the bid's bbox when
    BrowserGym gives one, else the snapshot's layout box minus the scroll offset, times `scale`.
    Refs: the bid when it is a number, else a fresh positive number; text nodes count down
    from -1 (as MiniWoB's do)."""
    snap = _Snapshot(dom)
    body = snap.find("body")
    if body is None:
        return []
    used = {int(b) for b in extra_properties if str(b).isdigit()}
    counters = {"next": max(used, default=0) + 1, "text": -1}

    def scaled(b: Sequence[float]) -> tuple[float, float, float, float]:
        return ((b[0] - snap.scroll[0]) * scale, (b[1] - snap.scroll[1]) * scale, b[2] * scale, b[3] * scale)

    def box_of(i: int, bid: str | None) -> tuple[float, float, float, float] | None:
        if bid is not None and bid in extra_properties:  # BrowserGym's box (None: not rendered)
            bbox = extra_properties[bid].get("bbox")
            return None if bbox is None else tuple(float(v) for v in bbox)  # type: ignore[return-value]
        b = snap.bounds.get(i)
        return None if b is None else scaled(b)

    def text_children(i: int, parent_ref: int) -> list[dict[str, Any]]:
        """One `t` per rendered line of a text node (MiniWoB splits text nodes the same way:
        one pseudo-element per client rect)."""
        lines = snap.lines.get(i)
        if lines is None:  # no line boxes: the node's own box
            b = snap.bounds.get(i)
            lines = [] if b is None else [(b, snap.s(snap.value[i]))]
        out: list[dict[str, Any]] = []
        for b, text in lines:
            text, box = text.strip(), scaled(b)
            if not text or box[2] <= 0 or box[3] <= 0:
                continue
            out.append({"ref": counters["text"], "parent": parent_ref, "id": "", "left": box[0], "top": box[1],
                        "width": box[2], "height": box[3], "tag": "t", "text": text[:TEXT_MAX], "value": "",
                        "classes": "", "flags": [0, 0, 0, 1], "bid": None})
            counters["text"] -= 1
        return out

    def visit(i: int, parent_ref: int) -> list[dict[str, Any]] | None:
        attrs = snap.attrs(i)
        if attrs.get("id", "") in SKIPPED_IDS:
            return None
        bid = attrs.get(bid_attribute)
        box = box_of(i, bid)
        if box is None or box[2] <= 0 or box[3] <= 0:
            return None
        if bid is not None and bid.isdigit():
            ref = int(bid)
        else:
            ref = counters["next"]
            counters["next"] += 1
        tag = snap.tag(i)
        value = ""
        if tag == "input":
            kind = (attrs.get("type") or "text").lower()
            tag = f"input_{kind}"
            value = ("True" if i in snap.checked else "") if kind in ("checkbox", "radio") else \
                snap.s(snap.input_value.get(i, -1))
        elif tag == "textarea":
            value = snap.s(snap.input_value.get(i, -1))
        kids = [c for c in snap.children[i]
                if snap.type[c] == _ELEMENT_NODE
                or (snap.type[c] == _TEXT_NODE and snap.s(snap.value[c]).strip())]
        element = {"ref": ref, "parent": parent_ref, "id": attrs.get("id", ""), "left": box[0], "top": box[1],
                   "width": box[2], "height": box[3], "tag": tag, "text": None, "value": value[:TEXT_MAX],
                   "classes": attrs.get("class", ""), "flags": [int(bid is not None and bid == focused_bid), 0, 0, 0],
                   "bid": bid}
        below: list[dict[str, Any]] = []
        if all(snap.type[c] == _TEXT_NODE for c in kids):
            element["text"] = " ".join(snap.s(snap.value[c]).strip() for c in kids)
        else:
            for c in kids:
                if snap.type[c] == _TEXT_NODE:
                    below += text_children(c, ref)
                else:
                    below += visit(c, ref) or []
            direct = [e for e in below if e["parent"] == ref]
            if direct and len(direct) == len(below) and all(e["tag"] == "t" for e in direct):
                # miniwob.dom.DOMElement: an element whose children are all text is a leaf
                element["text"], below = " ".join(e["text"] for e in direct), []
        element["flags"][3] = int(element["text"] is not None)
        element["text"] = (element["text"] or "")[:TEXT_MAX]
        return [element] + below

    return visit(body, 0) or []


def task_fields(task: str, goal: str) -> dict[str, str]:
    """MiniWoB++'s own fields for a goal (miniwob.fields' per-task extractors), {} when the task
    has none or the goal does not match: what the DOM experts read beside the utterance."""
    try:
        from miniwob.fields import get_field_extractor

        return {str(k): str(v) for k, v in get_field_extractor(task)(goal)}
    except Exception:  # no extractor for this task, or the goal does not match its pattern
        return {}


def task_area(elements: Sequence[dict[str, Any]]) -> tuple[int, int] | None:
    """(width, height) in screenshot pixels from the top-left corner to the far edges of MiniWoB's
    task area (the `#wrap` element, 160x210 CSS px at the page's origin), None without one."""
    wrap = next((e for e in elements if e.get("id") == "wrap"), None)
    if wrap is None:
        return None
    return int(np.ceil(wrap["left"] + wrap["width"])), int(np.ceil(wrap["top"] + wrap["height"]))


def observation_from_browsergym(obs: dict[str, Any], task: str, scale: float,
                                crop_to_task: bool = False) -> UIObservation:
    """One BrowserGym observation -> our UIObservation (screenshot, goal, MiniWoB-style elements).
    `crop_to_task`: keep only the task area (what MiniWoB's own screenshots show; the crop starts
    at the origin, so element boxes stay as they are)."""
    elements = elements_from_snapshot(obs["dom_object"], obs.get("extra_element_properties") or {}, scale,
                                      obs.get("focused_element_bid") or None)
    goal = str(obs.get("goal") or "")
    screenshot = np.asarray(obs["screenshot"], dtype=np.uint8)[..., :3]
    area = task_area(elements) if crop_to_task else None
    if area is not None:
        screenshot = screenshot[:area[1], :area[0]]
    return UIObservation(goal, np.ascontiguousarray(screenshot), elements, task_fields(task, goal))


# ---------------------------------------------------------------- action

def _num(v: float) -> str:
    return f"{float(v):.1f}"


def resolve_element(action: dict[str, Any], elements: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The element an action names: its `ref`, else the element behind its `mark` (marks are made
    from these elements by data_pipeline.perception, exactly as serve's UI adapter makes them)."""
    by_ref = {e["ref"]: e for e in elements}
    if action.get("ref") is not None:
        return by_ref.get(int(action["ref"]))
    if action.get("mark") is None:
        return None
    from data_pipeline.perception import marks_from_dom_elements

    from eval.envs.miniwob_env import DOM_KEYS

    _, ref_to_mark = marks_from_dom_elements([{k: e[k] for k in DOM_KEYS} for e in elements])
    ref = next((r for r, m in ref_to_mark.items() if m == int(action["mark"])), None)
    return by_ref.get(ref) if ref is not None else None


def to_browsergym_action(action: dict[str, Any], elements: Sequence[dict[str, Any]]) -> str:
    """Our UI action dict ({"op", "ref", "mark", "point", "text", "direction"}) -> a BrowserGym
    high-level action string. Raises ValueError for an action that names nothing executable."""
    op = action.get("op")
    text = action.get("text")
    point = action.get("point")
    element = resolve_element(action, elements) if op in ("click", "type", "select") else None
    bid = element.get("bid") if element else None
    if op == "click":
        if bid is not None:
            return f"click({bid!r})"
        if point is not None:
            return f"mouse_click({_num(point[0])}, {_num(point[1])})"
    elif op == "type" and text is not None:
        if bid is not None:
            return f"fill({bid!r}, {str(text)!r})"
        if point is not None:
            return f"mouse_click({_num(point[0])}, {_num(point[1])})\nkeyboard_type({str(text)!r})"
    elif op == "select" and text is not None and bid is not None:
        return f"select_option({bid!r}, {str(text)!r})"
    elif op == "scroll":
        dx, dy = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}.get(
            action.get("direction") or "down", (0.0, 1.0))
        return f"scroll({_num(dx * SCROLL_PIXELS)}, {_num(dy * SCROLL_PIXELS)})"
    elif op == "noop":
        return "noop(0)"
    elif op == "wait":  # let an animation finish (experts only)
        return "noop(300)"
    raise ValueError(f"UI action {action!r} cannot be executed in BrowserGym: click needs an element "
                     "with a bid or a point, type needs text, select an element with a bid")


# ---------------------------------------------------------------- env

class BrowserGymEnv:
    """One `browsergym/miniwob.<task>` env; reset(seed) -> UIObservation, step(action)."""

    env_name = "browsergym"

    def __init__(self, task: str, chromium: str = CHROMIUM_EXECUTABLE,
                 pre_observation_delay: float | None = None, crop_to_task: bool = False) -> None:
        """`pre_observation_delay`: BrowserGym's wait after each action (default 0.5 s, kept
        unless given: it lets the page's events settle, which its scoring assumes).
        `crop_to_task`: screenshots cut to MiniWoB's task area (BrowserGym's own are the whole
        332x214 viewport, zoomed 1.5x; the task area is its top-left 160x210)."""
        self.crop_to_task = crop_to_task
        require_browsergym()
        os.environ.setdefault("MINIWOB_URL", miniwob_pages_url())
        import gymnasium as gym
        import browsergym.miniwob  # noqa: F401  (registers the browsergym/miniwob.* ids)
        from browsergym.core.action.highlevel import HighLevelActionSet

        use_local_chromium(chromium)
        self.task = task
        self.env_id = ENV_PREFIX + task
        if self.env_id not in gym.registry:
            known = sorted(k[len(ENV_PREFIX):] for k in gym.registry if k.startswith(ENV_PREFIX))
            raise ValueError(f"unknown BrowserGym task {self.env_id!r}; known: {', '.join(known)}")
        self._make_kwargs: dict[str, Any] = {
            "action_mapping": HighLevelActionSet(subsets=list(ACTION_SUBSETS)).to_python_code}
        if pre_observation_delay is not None:
            self._make_kwargs["pre_observation_delay"] = float(pre_observation_delay)
        self._env = gym.make(self.env_id, **self._make_kwargs)
        self._elements: list[dict[str, Any]] = []
        self.reset_seconds: list[float] = []  # each reset launches the browsers anew
        self.step_seconds: list[float] = []
        self.action_errors: list[str] = []
        self.actions: list[str] = []  # every BrowserGym action string sent, in order

    def _scale(self) -> float:
        page = getattr(self._env.unwrapped, "page", None)
        return float(getattr(page, "_bgym_scale_factor", 1.0))

    def _observation(self, obs: dict[str, Any]) -> UIObservation:
        ui = observation_from_browsergym(obs, self.task, self._scale(), self.crop_to_task)
        self._elements = ui.elements
        return ui

    def reset(self, seed: int) -> UIObservation:
        t0 = time.perf_counter()
        try:
            obs, _ = self._env.reset(seed=int(seed))
        except Exception as exc:  # a dead browser: start afresh and retry once
            logging.warning("browsergym %s: reset failed (%s); restarting", self.task, exc)
            self.restart()
            obs, _ = self._env.reset(seed=int(seed))
        self.reset_seconds.append(time.perf_counter() - t0)
        return self._observation(obs)

    def step(self, action: dict[str, Any]) -> StepResult:
        code = to_browsergym_action(action, self._elements)  # ValueError: not executable
        self.actions.append(code)
        t0 = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = self._env.step(code)
        except Exception as exc:
            reason = f"browser crashed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logging.warning("browsergym %s: %s; restarting", self.task, reason)
            self.restart()
            return StepResult(None, 0.0, True, False, {"error": reason, "action": code})
        self.step_seconds.append(time.perf_counter() - t0)
        error = str(obs.get("last_action_error") or "")
        if error:
            self.action_errors.append(error.splitlines()[0])
        done = bool(terminated or truncated)
        success = bool(done and float(reward) > 0)
        task_info = info.get("task_info") or {}
        return StepResult(None if done else self._observation(obs), float(reward), done, success,
                          {"action": code, "action_error": error or None,
                           "reason": task_info.get("REWARD_REASON")})

    def restart(self) -> None:
        self.close()
        import gymnasium as gym

        self._env = gym.make(self.env_id, **self._make_kwargs)

    def close(self) -> None:
        try:
            self._env.close()
        except Exception:
            pass

    def __enter__(self) -> "BrowserGymEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
