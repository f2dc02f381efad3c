"""Gymnasium-style robot agent over the policy server: `action = agent(obs)` in any env loop.

    agent = RemotePolicy(PolicyClient(url), "pick up the puck")  # chunk: the checkpoint's
    obs, _ = env.reset(); agent.reset()
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent(obs))

Chunks are executed open-loop: one request per chunk of steps (`chunk` None: the chunk the
checkpoint was trained with; another one is refused by the server). Light (no torch); numpy is
imported when an observation needs encoding.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from serve.client.http import PolicyClient, encode_image


class RemotePolicy:
    def __init__(self, client: PolicyClient, instruction: str, dataset: str | None = None, chunk: int | None = None,
                 image_key: str = "image", proprio_key: str | None = None,
                 extract: Callable[[Any], tuple[Any, list[float] | None]] | None = None,
                 use_websocket: bool = False):
        self.client = client
        self.instruction = instruction
        self.dataset = dataset
        self.chunk = chunk
        self.image_key, self.proprio_key = image_key, proprio_key
        self.extract = extract
        self._queue: deque = deque()
        self._socket = client.websocket() if use_websocket else None
        self.requests_made = 0

    def reset(self, instruction: str | None = None) -> None:
        if instruction:
            self.instruction = instruction
        self._queue.clear()

    def _observation(self, obs: Any) -> tuple[Any, list[float] | None]:
        if self.extract is not None:
            return self.extract(obs)
        if isinstance(obs, dict):
            proprio = obs.get(self.proprio_key) if self.proprio_key else None
            return obs[self.image_key], (None if proprio is None else [float(v) for v in proprio])
        return obs, None

    def __call__(self, obs: Any):
        if not self._queue:
            image, proprio = self._observation(obs)
            request: dict[str, Any] = {"adapter": "robot", "instruction": self.instruction,
                                       "image": encode_image(image)}
            if self.chunk is not None:
                request["chunk"] = self.chunk
            if proprio is not None:
                request["proprio"] = proprio
            if self.dataset:
                request["dataset"] = self.dataset
            reply = self._socket.act(request) if self._socket else self.client.act(request)
            self.requests_made += 1
            if reply.get("error"):
                raise RuntimeError(f"policy error {reply['error']}")
            self._queue.extend(reply["chunk"])
        import numpy as np

        return np.asarray(self._queue.popleft(), dtype=np.float32)

    def close(self) -> None:
        if self._socket:
            self._socket.close()
