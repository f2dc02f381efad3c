"""Torch-free clients of the policy server, for robots and browser agents.

Only httpx, msgpack and the standard library are imported here (numpy and PIL lazily, when an
observation needs encoding; Playwright only by the browser agent), so a robot or a browser
agent installs and imports these modules without torch or model code:

    from serve.client import PolicyClient          # HTTP + WebSocket client   (http.py)
    from serve.client.robot import RemotePolicy    # gymnasium-style agent     (robot.py)
    from serve.client.browser import run_agent     # Playwright browser agent (browser.py)
"""
from serve.client.http import PolicyClient, PolicyError, encode_image

__all__ = ["PolicyClient", "PolicyError", "encode_image"]
