"""DOM-oracle experts for MiniWoB++: read the utterance (and miniwob's parsed fields), find the
element by its text in the DOM, act on it. Stateless: each call looks at the current DOM
(checkbox values, typed text) to choose the next step, so a restarted episode needs no memory.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from eval.envs.miniwob_env import UIObservation, element_centre

Element = dict[str, Any]
Action = dict[str, Any]


class NoExpertAction(RuntimeError):
    """The expert found no element matching the instruction (counted as an expert failure)."""


def _click(e: Element) -> Action:
    return {"op": "click", "ref": e["ref"], "point": element_centre(e), "text": None,
            "direction": None}


def _type(e: Element, text: str) -> Action:
    return {"op": "type", "ref": e["ref"], "point": element_centre(e), "text": text,
            "direction": None}


def _find(obs: UIObservation, pred: Callable[[Element], bool], what: str) -> Element:
    for e in obs.elements:
        if e["width"] > 0 and e["height"] > 0 and pred(e):
            return e
    raise NoExpertAction(f"no element for {what!r} in {obs.utterance!r}")


def _quoted(utterance: str) -> str:
    m = re.search(r'"([^"]*)"', utterance)
    if not m:
        raise NoExpertAction(f"no quoted target in {utterance!r}")
    return m.group(1)


def _target(obs: UIObservation) -> str:
    return obs.fields.get("target") or _quoted(obs.utterance)


def _submit(obs: UIObservation, label: str = "submit") -> Action:
    return _click(_find(obs, lambda e: e["tag"] == "button" and e["text"].strip().lower() == label,
                        label))


def _inputs(obs: UIObservation, tags: tuple[str, ...]) -> list[Element]:
    return [e for e in obs.elements if e["tag"] in tags and e["width"] > 0]


def _labelled_inputs(obs: UIObservation, tag: str) -> dict[str, Element]:
    """label text -> the checkbox/radio inside the same <label> (text is a sibling pseudo-node)."""
    by_parent = {e["parent"]: e for e in obs.elements if e["tag"] == tag}
    return {e["text"].strip(): by_parent[e["parent"]] for e in obs.elements
            if e["tag"] == "t" and e["parent"] in by_parent}


# ---------------------------------------------------------------- per-task experts

def click_button(obs: UIObservation) -> Action:
    t = _target(obs)
    return _click(_find(obs, lambda e: e["tag"] == "button" and e["text"].strip() == t, t))


def click_link(obs: UIObservation) -> Action:
    t = _target(obs)
    return _click(_find(obs, lambda e: e["tag"] in ("span", "a") and "alink" in e["classes"]
                        and e["text"].strip() == t, t))


def click_test(obs: UIObservation) -> Action:
    return _click(_find(obs, lambda e: e["tag"] == "button", "button"))


def click_dialog(obs: UIObservation) -> Action:
    return _click(_find(obs, lambda e: "ui-dialog-titlebar-close" in e["classes"], "x"))


def click_dialog_2(obs: UIObservation) -> Action:
    return click_dialog(obs) if _target(obs).strip().lower() == "x" else click_button(obs)


def click_tab(obs: UIObservation) -> Action:
    k = obs.fields.get("target") or re.search(r"#(\d+)", obs.utterance).group(1)
    t = f"Tab #{k}"
    return _click(_find(obs, lambda e: e["tag"] == "a" and e["text"].strip() == t, t))


def focus_text(obs: UIObservation) -> Action:
    return _click(_find(obs, lambda e: e["tag"] == "input_text", "textbox"))


def focus_text_2(obs: UIObservation) -> Action:
    k = int(obs.fields.get("target") or re.search(r"(\d+)", obs.utterance).group(1))
    boxes = _inputs(obs, ("input_text",))
    if not 1 <= k <= len(boxes):
        raise NoExpertAction(f"textbox #{k} of {len(boxes)}")
    return _click(boxes[k - 1])


def _check_then_submit(obs: UIObservation, tag: str, wanted: set[str]) -> Action:
    inputs = _labelled_inputs(obs, tag)
    missing = wanted - set(inputs)
    if missing:
        raise NoExpertAction(f"no {tag} labelled {sorted(missing)}")
    for label, box in inputs.items():
        checked = box["value"].lower() == "true"
        if checked != (label in wanted):  # toggle what is wrong, then submit
            return _click(box)
    return _submit(obs)


def click_checkboxes(obs: UIObservation) -> Action:
    wanted = {v for k, v in obs.fields.items() if k.startswith("target")}
    return _check_then_submit(obs, "input_checkbox", wanted)


def click_option(obs: UIObservation) -> Action:
    return _check_then_submit(obs, "input_radio", {_target(obs)})


def _fill_then_submit(obs: UIObservation, values: list[tuple[Element, str]], button: str) -> Action:
    for box, text in values:
        if box["value"] != text:
            return _type(box, text)
    return _submit(obs, button)


def enter_text(obs: UIObservation) -> Action:
    box = _find(obs, lambda e: e["tag"] == "input_text", "text field")
    return _fill_then_submit(obs, [(box, _target(obs))], "submit")


def enter_password(obs: UIObservation) -> Action:
    boxes = _inputs(obs, ("input_password",))
    return _fill_then_submit(obs, [(b, _target(obs)) for b in boxes], "submit")


def login_user(obs: UIObservation) -> Action:
    user = _find(obs, lambda e: e["tag"] == "input_text", "username")
    pw = _find(obs, lambda e: e["tag"] == "input_password", "password")
    return _fill_then_submit(obs, [(user, obs.fields["username"]), (pw, obs.fields["password"])],
                             "login")


WAIT: Action = {"op": "wait", "ref": None, "point": None, "text": None, "direction": None}


def click_collapsible(obs: UIObservation) -> Action:
    header = _find(obs, lambda e: e["tag"] == "h3" and "ui-accordion-header" in e["classes"], "section")
    if "ui-accordion-header-collapsed" in header["classes"]:
        return _click(header)
    submit = _submit(obs)
    button = next(e for e in obs.elements if e["ref"] == submit["ref"])
    panel = next((e for e in obs.elements if e["ref"] == button["parent"]), None)
    if panel and button["top"] + button["height"] > panel["top"] + panel["height"] + 0.5:
        return WAIT  # the section is still sliding open: the button would move under the click
    return submit


EXPERTS: dict[str, Callable[[UIObservation], Action]] = {
    "click-button": click_button,
    "click-link": click_link,
    "click-checkboxes": click_checkboxes,
    "enter-text": enter_text,
    "click-dialog": click_dialog,
    "click-tab": click_tab,
    "focus-text": focus_text,
    "click-test": click_test,
    "click-test-2": click_button,
    "click-dialog-2": click_dialog_2,
    "click-option": click_option,
    "focus-text-2": focus_text_2,
    "enter-password": enter_password,
    "login-user": login_user,
    "click-collapsible": click_collapsible,
}


def expert_action(task: str, obs: UIObservation) -> Action:
    """The oracle's next action for `task` (raises NoExpertAction when it cannot find one)."""
    try:
        expert = EXPERTS[task]
    except KeyError:
        raise ValueError(f"no MiniWoB++ expert for {task!r}; tasks: {', '.join(EXPERTS)}") from None
    return expert(obs)
