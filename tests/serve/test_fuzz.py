"""Fuzz: >= 1000 malformed requests -> zero 5xx, every error a JSON {code, message}."""
import base64
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.server import ServerSettings, create_app

TOKEN = "fuzz"

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4) |
                           st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=12)
images = st.sampled_from(["", "!!", "aGVsbG8=", base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 20).decode(),
                          "data:image/png;base64,AAAA"]) | st.text(max_size=30)
fields = {
    "adapter": st.sampled_from(["robot", "ui", "arm", "", None]) | json_values,
    "instruction": st.text(max_size=50) | json_values,
    "image": images | json_values,
    "images": st.lists(images, max_size=3) | json_values,
    "proprio": st.lists(st.floats(allow_nan=True), max_size=5) | json_values,
    "marks": st.lists(st.fixed_dictionaries({"id": st.integers(-5, 20000), "box": st.lists(
        st.floats(allow_nan=True), max_size=5)}), max_size=3) | json_values,
    "dom_elements": st.lists(json_values, max_size=3),
    "history": json_values, "chunk": st.integers(-3, 100) | json_values,
    "dataset": json_values, "text": st.text(max_size=30) | json_values,
    "max_tokens": st.integers(-10, 10_000) | json_values, "expect": json_values,
}
act_like = st.fixed_dictionaries({}, optional=fields) | st.dictionaries(st.text(max_size=12), json_values, max_size=5)
bodies = act_like.map(lambda d: json.dumps(d, allow_nan=True).encode()) | st.binary(max_size=200) | \
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())
routes = st.sampled_from([("POST", "/v1/act"), ("POST", "/v1/chat"), ("GET", "/v1/info"),
                          ("PUT", "/v1/act"), ("POST", "/v1/nope")])
auths = st.sampled_from([{"Authorization": f"Bearer {TOKEN}"}] * 4 + [{}, {"Authorization": "Bearer x"}])
ctypes = st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-msgpack", ""])


@pytest.fixture(scope="module")
def fuzz_client(policy):
    return TestClient(create_app(policy, ServerSettings(token=TOKEN, request_timeout_s=30)),
                      raise_server_exceptions=False)


@pytest.mark.slow
@settings(max_examples=1200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=routes, body=bodies, auth=auths, ctype=ctypes)
def test_malformed_requests_never_5xx(fuzz_client, route, body, auth, ctype):
    method, path = route
    headers = {**auth, **({"Content-Type": ctype} if ctype else {})}
    r = fuzz_client.request(method, path, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text, body[:200])
    if r.status_code >= 400:
        err = r.json()
        assert set(err) == {"code", "message"} and "Traceback" not in err["message"]


def test_health_after_fuzz(fuzz_client):
    assert fuzz_client.get("/healthz").status_code == 200
