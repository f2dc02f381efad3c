import base64
import io

import msgpack
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve.server import ServerSettings, create_app

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(policy):
    app = create_app(policy, ServerSettings(token=TOKEN, max_body_bytes=2 * 1024 * 1024))
    # No context manager: the lifespan would close the session-wide policy on exit.
    return TestClient(app, raise_server_exceptions=False)


def _err(resp, status, code=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message"}
    if code:
        assert body["code"] == code
    return body


def test_robot_act(client, screenshot_b64):
    r = client.post("/v1/act", headers=AUTH, json={"adapter": "robot", "instruction": "open the drawer",
                                                   "image": screenshot_b64, "proprio": [0.1, -0.2, 0.3],
                                                   "chunk": 3})
    body = r.json()
    assert r.status_code == 200 and body["kind"] == "robot" and body["error"] is None
    assert len(body["chunk"]) == 3 and all(len(a) == 4 for a in body["chunk"])
    assert body["tokens"] == 12 and body["raw"].count("<act_") == 12


def test_ui_act_without_marks(client, screenshot_b64):
    r = client.post("/v1/act", headers=AUTH, json={"adapter": "ui", "instruction": "click OK",
                                                   "image": screenshot_b64})
    body = r.json()
    assert r.status_code == 200 and body["kind"] == "ui"
    # A random model rarely emits a valid action: either an op or a typed error, never both missing.
    assert (body["op"] is not None) or body["error"]["code"].startswith("unparsable")


def test_ui_act_with_dom_elements(client, screenshot_b64):
    pytest.importorskip("data_pipeline.perception")
    dom = [{"ref": 5, "left": 10, "top": 20, "width": 60, "height": 20, "tag": "button", "text": "OK",
            "value": None, "classes": "", "flags": {}},
           {"ref": 7, "left": 10, "top": 60, "width": 60, "height": 20, "tag": "button", "text": "Cancel",
            "value": None, "classes": "", "flags": {}}]
    r = client.post("/v1/act", headers=AUTH, json={"adapter": "ui", "instruction": "click OK",
                                                   "image": screenshot_b64, "dom_elements": dom})
    assert r.status_code == 200, r.text
    assert len(r.json()["marks"]) == 2


def test_chat(client, screenshot_b64):
    r = client.post("/v1/chat", headers=AUTH, json={"text": "Describe the screen.", "image": screenshot_b64,
                                                    "max_tokens": 6, "expect": "point"})
    body = r.json()
    assert r.status_code == 200 and body["kind"] == "chat" and 1 <= body["tokens"] <= 6
    assert (body["parsed"] is None) == (body["error"] is not None)


def test_info_and_health(client):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/info", headers=AUTH).json()
    assert info["action_dim"] == {"metaworld": 4} and info["engine"] == "hf"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_auth_required(client, headers, screenshot_b64):
    _err(client.post("/v1/act", headers=headers, json={"adapter": "robot", "instruction": "x",
                                                       "image": screenshot_b64}), 401, "unauthorized")
    _err(client.get("/v1/info", headers=headers), 401)


def _png(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("body,status,code", [
    ({"adapter": "robot", "instruction": "x", "image": "not base64!!"}, 400, "bad_image"),
    ({"adapter": "robot", "instruction": "x", "image": base64.b64encode(b"GIF89a....").decode()}, 400, "bad_image"),
    ({"adapter": "robot", "instruction": "x", "image": _png(9000, 10)}, 413, "image_too_large"),
    ({"adapter": "arm", "instruction": "x", "image": _png(8, 8)}, 422, "invalid_request"),
    ({"adapter": "robot", "image": _png(8, 8)}, 422, "invalid_request"),
    ({"adapter": "robot", "instruction": "x", "image": _png(8, 8), "chunk": 0}, 422, "invalid_request"),
    ({"adapter": "robot", "instruction": "x", "image": _png(8, 8), "dataset": "bridge"}, 400, "unknown_dataset"),
    ({"adapter": "ui", "instruction": "x", "image": _png(8, 8), "images": [_png(8, 8)]}, 400, "too_many_images"),
])
def test_bad_requests_get_4xx_json(client, body, status, code):
    _err(client.post("/v1/act", headers=AUTH, json=body), status, code)


def test_nan_proprio_and_malformed_json(client):
    raw = '{"adapter": "robot", "instruction": "x", "image": "%s", "proprio": [NaN]}' % _png(8, 8)
    _err(client.post("/v1/act", headers={**AUTH, "Content-Type": "application/json"}, content=raw), 422)
    _err(client.post("/v1/act", headers={**AUTH, "Content-Type": "application/json"}, content=b"{oops"),
         400, "malformed_json")


def test_oversize_body_is_413(client):
    _err(client.post("/v1/act", headers={**AUTH, "Content-Type": "application/json"},
                     content=b"x" * (3 * 1024 * 1024)), 413, "body_too_large")


def test_chat_placeholder_mismatch(client):
    _err(client.post("/v1/chat", headers=AUTH, json={"text": "<image><image>hi", "image": _png(8, 8)}),
         400, "image_count_mismatch")


def test_websocket_msgpack_robot_loop(client):
    rgb = np.random.RandomState(2).randint(0, 255, (64, 64, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    with client.websocket_connect("/v1/ws", headers=AUTH) as ws:
        for _ in range(2):  # several frames on one connection
            ws.send_bytes(msgpack.packb({"type": "act", "adapter": "robot", "instruction": "push",
                                         "image": buf.getvalue(), "chunk": 2}))
            reply = msgpack.unpackb(ws.receive_bytes())
            assert reply["kind"] == "robot" and len(reply["chunk"]) == 2
        ws.send_bytes(b"\xc1garbage")
        assert msgpack.unpackb(ws.receive_bytes())["error"]["code"] == "bad_frame"
        ws.send_text("hello")
        assert msgpack.unpackb(ws.receive_bytes())["error"]["code"] == "bad_frame"
        ws.send_bytes(msgpack.packb({"type": "act", "adapter": "robot"}))
        assert msgpack.unpackb(ws.receive_bytes())["status"] == 422


def test_websocket_rejects_wrong_token(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/v1/ws?token=wrong") as ws:
            ws.receive_bytes()


def test_client_module_is_light():
    import subprocess
    import sys

    code = ("import sys, serve.client, serve.client.robot, serve.client.browser; "
            "bad=[m for m in ('torch','transformers','numpy') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_prompt_longer_than_the_model_is_400(client):
    _err(client.post("/v1/chat", headers=AUTH, json={"text": "word " * 1500, "image": _png(8, 8),
                                                     "max_tokens": 8}), 400, "prompt_too_long")


def test_chunked_oversize_body_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * (100 * 1024)

    _err(client.post("/v1/act", headers={**AUTH, "Content-Type": "application/json"}, content=chunks()),
         413, "body_too_large")
