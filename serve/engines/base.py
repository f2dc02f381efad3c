"""One interface for every engine: `await engine.generate(requests) -> outputs`.

Requests carry a rendered chat prompt (with `<image>` placeholders) and PIL images. Engines
batch concurrent callers: `ThreadBatcher` collects requests from any thread or event loop
into batches for a single model worker thread, so an HTTP server, a WebSocket loop and a
synchronous eval script can all share one loaded model.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence


@dataclass
class GenerationRequest:
    prompt: str
    images: list[Any] = field(default_factory=list)  # PIL images, in placeholder order
    max_new_tokens: int = 64
    # True: greedy over the 256 action ids only, exactly max_new_tokens tokens, no EOS wait.
    constrain_to_actions: bool = False


@dataclass
class GenerationOutput:
    token_ids: list[int]
    text: str
    finish_reason: Literal["stop", "length"]


def output_text(processor: Any, ids: list[int], actions: bool) -> str:
    """The text of generated ids, the same for every engine: a constrained row's action ids read
    as `<act_b>...` under either scheme (under reuse_last they are ordinary vocabulary tokens)."""
    if actions and ids:
        return processor.decode_actions(ids)
    return processor.tokenizer.decode(ids, skip_special_tokens=False)


class Engine(Protocol):
    name: str

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]: ...

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]: ...

    def close(self) -> None: ...


class EngineClosed(RuntimeError):
    """The engine was shut down; no new requests are accepted."""


class ThreadBatcher:
    """Dynamic batching: one worker thread runs `run_batch` on up to `max_batch` queued requests.

    The worker takes whatever is queued when it becomes free (waiting at most `max_wait_s` for
    a batch to fill), so a lone request is never delayed by more than `max_wait_s`.
    """

    def __init__(self, run_batch: Callable[[list[GenerationRequest]], list[GenerationOutput]],
                 max_batch: int = 16, max_wait_s: float = 0.005, name: str = "engine"):
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[GenerationRequest, cf.Future] | None] = queue.Queue()
        self._closed = False
        self.batches_run = 0
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._work, name=f"{name}-worker", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest) -> cf.Future:
        if self._closed:
            raise EngineClosed("engine is shut down")
        fut: cf.Future = cf.Future()
        self._queue.put((request, fut))
        return fut

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        futures = [self.submit(r) for r in requests]
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        except asyncio.CancelledError:
            for f in futures:  # a timed-out or disconnected caller frees its queue slots
                f.cancel()
            raise

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return [f.result() for f in [self.submit(r) for r in requests]]

    def _take_batch(self, first: tuple[GenerationRequest, cf.Future]) -> list:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(0.0, timeout)) if timeout > 0 else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # keep the stop signal for the outer loop
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [(r, f) for r, f in self._take_batch(item) if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            self.batches_run += 1
            self.batch_sizes.append(len(batch))
            try:
                outputs = self._run_batch([r for r, _ in batch])
            except Exception as exc:  # reported to each caller; the worker lives on
                for _, f in batch:
                    f.set_exception(exc)
                continue
            for (_, f), out in zip(batch, outputs):
                f.set_result(out)

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting work, finish what is queued, stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)


class BatchedEngine:
    """What every engine shares: requests go through one ThreadBatcher (`self._batcher`) that
    calls the engine's own `_run_batch`."""

    _batcher: ThreadBatcher

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return await self._batcher.generate(requests)

    def generate_sync(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        return self._batcher.generate_sync(requests)

    def close(self) -> None:
        self._batcher.close()
