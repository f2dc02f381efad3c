"""The demo's view of a policy: in-process (`serve.policy.Policy`) or a running server
(`serve.client.http.PolicyClient`), behind one small interface whose every failure is a
`DemoError` with a message fit for the page."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class DemoError(Exception):
    """A failure to show the user as is: what went wrong and what to do about it."""


class Backend(Protocol):
    name: str

    def act(self, request: dict) -> dict: ...

    def chat(self, text: str, image_b64: str | None, max_tokens: int = 64,
             expect: str = "verbal") -> dict: ...

    def info(self) -> dict: ...

    def close(self) -> None: ...


class LocalBackend:
    """A checkpoint loaded in this process (hf engine)."""

    def __init__(self, policy: Any):
        self.policy = policy
        self.name = f"in-process {policy.engine.name} engine ({policy.model_name})"

    @classmethod
    def from_checkpoint(cls, folder: str | Path, engine: str = "hf") -> "LocalBackend":
        from magma.checkpoint import CheckpointError
        from serve.policy import Policy

        try:
            return cls(Policy.from_checkpoint(folder, engine=engine))
        except (CheckpointError, OSError, ValueError) as exc:
            raise DemoError(f"cannot load the checkpoint {folder}: {exc}") from None

    def _call(self, fn, *args: Any) -> dict:
        from serve.errors import ServeError

        try:
            return fn(*args)
        except ServeError as exc:
            raise DemoError(f"the policy refused the request ({exc.code}): {exc.message}") from None

    def act(self, request: dict) -> dict:
        return self._call(self.policy.act, request)

    def chat(self, text: str, image_b64: str | None, max_tokens: int = 64,
             expect: str = "verbal") -> dict:
        body: dict[str, Any] = {"text": text, "max_tokens": max_tokens, "expect": expect}
        if image_b64 is not None:
            body["image"] = image_b64
        return self._call(self.policy.chat, body)

    def info(self) -> dict:
        return self.policy.info()

    def close(self) -> None:
        self.policy.close()


class RemoteBackend:
    """A policy server reached over HTTP (`magma serve`)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0):
        from serve.client.http import PolicyClient

        self.url = url
        self.client = PolicyClient(url, token=token, timeout=timeout)
        self.name = f"policy server at {url}"

    def _call(self, fn, *args: Any, **kwargs: Any) -> dict:
        import httpx

        from serve.client.http import PolicyError

        try:
            return fn(*args, **kwargs)
        except PolicyError as exc:
            raise DemoError(f"the policy server refused the request ({exc.status} {exc.code}): "
                            f"{exc.message}") from None
        except httpx.HTTPError as exc:
            raise DemoError(f"cannot reach the policy server at {self.url} ({type(exc).__name__}); "
                            "is `magma serve` running?") from None

    def act(self, request: dict) -> dict:
        return self._call(self.client.act, request)

    def chat(self, text: str, image_b64: str | None, max_tokens: int = 64,
             expect: str = "verbal") -> dict:
        return self._call(self.client.chat, text, image=image_b64, max_tokens=max_tokens, expect=expect)

    def info(self) -> dict:
        return self._call(self.client.info)

    def close(self) -> None:
        self.client.close()
