"""Light client for the policy server (httpx + msgpack + stdlib; no torch, no model code).

    client = PolicyClient("http://127.0.0.1:8000", token="secret")
    client.act({"adapter": "robot", "instruction": "open the drawer", "image": encode_image(rgb)})
    with client.websocket() as ws:      # msgpack frames, for control loops
        ws.act({...})
"""
from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import msgpack


class PolicyError(RuntimeError):
    """An error answer from the server: HTTP status + `{code, message}`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def encode_image(image: Any) -> str:
    """PNG/JPEG bytes, a file path, or an [H, W, 3] uint8 array / PIL image -> base64 text."""
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
    elif isinstance(image, str):
        with open(image, "rb") as f:
            raw = f.read()
    else:  # arrays and PIL images need Pillow; imported only here
        from PIL import Image
        import numpy as np

        img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        raw = buf.getvalue()
    return base64.b64encode(raw).decode("ascii")


def _raise_for(resp: httpx.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        body = {"code": "bad_response", "message": resp.text[:200]}
    if resp.status_code >= 400:
        raise PolicyError(resp.status_code, str(body.get("code", "error")), str(body.get("message", "")))
    return body


class PolicyClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def act(self, request: dict) -> dict:
        return _raise_for(self._http.post("/v1/act", json=request))

    def chat(self, text: str, image: Any = None, max_tokens: int = 64, expect: str = "verbal",
             images: list | None = None) -> dict:
        body: dict[str, Any] = {"text": text, "max_tokens": max_tokens, "expect": expect}
        if image is not None:
            body["image"] = image if isinstance(image, str) else encode_image(image)
        if images:
            body["images"] = [i if isinstance(i, str) else encode_image(i) for i in images]
        return _raise_for(self._http.post("/v1/chat", json=body))

    def info(self) -> dict:
        return _raise_for(self._http.get("/v1/info"))

    def healthz(self) -> dict:
        return _raise_for(self._http.get("/healthz"))

    def websocket(self) -> "PolicySocket":
        url = "ws" + self.base_url[len("http"):] + "/v1/ws"
        return PolicySocket(url, self.token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PolicySocket:
    """Synchronous msgpack WebSocket session; raw image bytes may be sent instead of base64."""

    def __init__(self, url: str, token: str | None = None):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._ws = connect(url, additional_headers=headers, max_size=2 ** 25)

    def request(self, frame: dict) -> dict:
        self._ws.send(msgpack.packb(frame, use_bin_type=True))
        reply = msgpack.unpackb(self._ws.recv(), raw=False)
        if isinstance(reply, dict) and "error" in reply and "status" in reply:
            err = reply["error"]
            raise PolicyError(int(reply["status"]), err.get("code", "error"), err.get("message", ""))
        return reply

    def act(self, request: dict) -> dict:
        return self.request({"type": "act", **request})

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "PolicySocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
