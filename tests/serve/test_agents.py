import numpy as np
import pytest
from fastapi.testclient import TestClient

from serve.server import ServerSettings, create_app


class _InProcessClient:
    """PolicyClient look-alike over FastAPI's TestClient (no sockets)."""

    def __init__(self, app):
        self.http = TestClient(app)

    def act(self, request):
        r = self.http.post("/v1/act", json=request)
        assert r.status_code == 200, r.text
        return r.json()

    def websocket(self):
        raise NotImplementedError


def test_remote_policy_executes_chunks_open_loop(policy):
    from serve.client.robot import RemotePolicy

    agent = RemotePolicy(_InProcessClient(create_app(policy, ServerSettings())), "push the puck",
                         chunk=3, proprio_key="state")
    rs = np.random.RandomState(0)
    actions = [agent({"image": rs.randint(0, 255, (48, 48, 3), np.uint8), "state": [0.1, 0.2]})
               for _ in range(7)]
    assert all(a.shape == (4,) and a.dtype == np.float32 for a in actions)
    assert agent.requests_made == 3  # steps 0, 3, 6


PAGE = """<html><body style="margin:0">
<button id="ok" style="position:absolute;left:100px;top:50px;width:120px;height:40px"
 onclick="document.title='clicked'">OK</button>
<input id="name" style="position:absolute;left:100px;top:150px;width:200px;height:30px">
</body></html>"""


class _ScriptedClient:
    """Answers like the server's UI adapter: click OK, then type into the text box."""

    def __init__(self):
        self.calls = []

    def act(self, request):
        self.calls.append(request)
        dom = {d["tag"]: d for d in request["dom_elements"]}
        if len(self.calls) == 1:
            el, action = dom["button"], {"op": "click", "raw": "click Mark 1"}
        else:
            el, action = dom["input"], {"op": "type", "text": "magma", "raw": 'type "magma" Mark 2'}
        action["point"] = [el["left"] + el["width"] / 2, el["top"] + el["height"] / 2]
        return {"kind": "ui", "error": None, **action}


@pytest.mark.browser
def test_browser_agent_executes_actions_on_live_page(tmp_path):
    pytest.importorskip("playwright")
    from pathlib import Path

    if not Path("/usr/lib/chromium/chromium").exists():
        pytest.skip("Debian chromium is not installed")
    from playwright.sync_api import sync_playwright

    from serve.client.browser import execute, observe, run_agent

    page_file = tmp_path / "page.html"
    page_file.write_text(PAGE)
    client = _ScriptedClient()
    run = run_agent(client, page_file.as_uri(), "click OK then type magma", max_steps=2)
    assert [s.executed for s in run.steps] == [True, True]
    assert client.calls[1]["history"] == ["click Mark 1"]
    assert {d["tag"] for d in client.calls[0]["dom_elements"]} == {"button", "input"}
    # the actions really happened: replay them on a fresh page and read the state back
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/lib/chromium/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(page_file.as_uri())
        _, dom = observe(page)
        button = next(d for d in dom if d["tag"] == "button")
        assert execute(page, {"op": "click", "point": [button["left"] + 5, button["top"] + 5]}) == (True, "click")
        assert page.title() == "clicked"
        assert execute(page, {"op": "click", "point": None})[0] is False
        assert execute(page, {"op": None, "error": {"code": "unparsable_ui_action"}})[0] is False
        browser.close()
