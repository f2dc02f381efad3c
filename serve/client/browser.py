"""Browser agent: a live Playwright page driven by the policy server's UI adapter.

Each step: screenshot + DOM boxes of interactive elements (MiniWoB-style dicts) -> POST
/v1/act (adapter "ui") -> execute click / type / scroll / select at the returned pixels.

    python -m serve.client.browser --url file:///tmp/page.html --instruction "click OK" \
        --server http://127.0.0.1:8000 [--token T] [--steps 5]
"""
from __future__ import annotations

import argparse
import base64
import sys
from dataclasses import dataclass, field
from typing import Any

from magma.browser import launch_chromium, screenshot_png

# Interactive elements in DOM order with their boxes (viewport pixels, CSS px = screenshot px).
DOM_JS = """() => {
  const sel = 'a, button, input, select, textarea, [role=button], [role=link], [role=tab], [onclick]';
  return Array.from(document.querySelectorAll(sel)).map((el, i) => {
    const r = el.getBoundingClientRect();
    return {ref: i + 1, left: r.left, top: r.top, width: r.width, height: r.height,
            tag: el.tagName.toLowerCase(),
            text: (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 200),
            value: el.value === undefined ? null : String(el.value), classes: el.className ? String(el.className) : '',
            flags: {visible: r.width > 0 && r.height > 0}};
  }).filter(e => e.flags.visible);
}"""


# Entries of history a request carries (serve.api.MAX_HISTORY, the most the server accepts):
# the server shows the model the last few (magma.prompts.HISTORY_WINDOW, as in training).
HISTORY_SENT = 32


def ui_request(instruction: str, image_b64: str, dom_elements: list[dict],
               history: list[str]) -> dict[str, Any]:
    """The /v1/act body for one UI step. `history` holds `history_text` of every executed step,
    oldest first; the server renders it into the prompt as training did
    (magma.prompts.render_history)."""
    return {"adapter": "ui", "instruction": instruction, "image": image_b64,
            "dom_elements": dom_elements, "history": list(history[-HISTORY_SENT:])}


def history_text(action: dict[str, Any]) -> str | None:
    """What an executed action adds to the history: the model's text of it (the server puts it
    in training's form), or None when the response has none."""
    raw = (action.get("raw") or "").strip()
    return raw or None


@dataclass
class AgentStep:
    action: dict[str, Any]
    executed: bool
    note: str = ""


@dataclass
class AgentRun:
    steps: list[AgentStep] = field(default_factory=list)


def observe(page) -> tuple[str, list[dict]]:
    png = screenshot_png(page)
    return base64.b64encode(png).decode("ascii"), page.evaluate(DOM_JS)


def execute(page, action: dict[str, Any]) -> tuple[bool, str]:
    """Run one UI action on the page; returns (executed, note)."""
    if action.get("error") and action.get("op") is None:
        return False, f"model output did not parse: {action['error']['code']}"
    op, point = action.get("op"), action.get("point")
    if op == "scroll":
        dy = {"down": 300, "up": -300}.get(action.get("direction") or "", 0)
        dx = {"right": 300, "left": -300}.get(action.get("direction") or "", 0)
        page.mouse.wheel(dx, dy)
        return True, "scrolled"
    if point is None:
        return False, f"{op} without a resolvable point"
    x, y = float(point[0]), float(point[1])
    if op == "click":
        page.mouse.click(x, y)
    elif op == "type":
        page.mouse.click(x, y)
        page.keyboard.type(action.get("text") or "")
    elif op == "select":
        handle = page.evaluate_handle("([x, y]) => document.elementFromPoint(x, y)", [x, y]).as_element()
        if handle is None or handle.evaluate("e => e.tagName") != "SELECT":
            return False, "no <select> at the point"
        handle.select_option(label=action.get("text") or "")
    else:
        return False, f"unknown op {op!r}"
    return True, op


def run_agent(client, url: str, instruction: str, max_steps: int = 5, viewport=(1280, 800),
              headless: bool = True, stop_on_error: bool = True) -> AgentRun:
    """Drive a page at `url` with `client` (a serve.client.http.PolicyClient or anything with .act)."""
    from playwright.sync_api import sync_playwright

    run = AgentRun()
    history: list[str] = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw, headless=headless)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(url)
            for _ in range(max_steps):
                image, dom = observe(page)
                action = client.act(ui_request(instruction, image, dom, history))
                ok, note = execute(page, action)
                run.steps.append(AgentStep(action, ok, note))
                entry = history_text(action) if ok else None
                if entry:
                    history.append(entry)
                if not ok and stop_on_error:
                    break
        finally:
            browser.close()
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.client.browser",
                                description="Drive a live page with the policy server.")
    p.add_argument("--url", required=True)
    p.add_argument("--instruction", required=True)
    p.add_argument("--server", default="http://127.0.0.1:8000")
    p.add_argument("--token", default=None)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    from serve.client.http import PolicyClient, PolicyError

    try:
        with PolicyClient(args.server, token=args.token) as client:
            run = run_agent(client, args.url, args.instruction, args.steps)
    except PolicyError as exc:
        print(f"browser agent: server refused the request: {exc}", file=sys.stderr)
        return 2
    for i, s in enumerate(run.steps):
        print(i, s.executed, s.note, s.action.get("raw"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
