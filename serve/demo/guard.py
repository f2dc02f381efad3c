"""Status lines and the guard every tab's handlers wear.

Handlers never let an exception reach Gradio: a `DemoError` (bad upload, refused request,
...) becomes a readable line in the tab's status box; anything unexpected is logged with its
traceback on the server and shown as one line, so the page stays usable for the next request.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import gradio as gr

from serve.demo.backend import DemoError

log = logging.getLogger("magma.demo")


def ok(text: str) -> str:
    return f"**OK:** {text}"


def problem(text: str) -> str:
    return f"**Error:** {text}"


def guarded(n_outputs: int, status_at: int) -> Callable:
    """Turn failures into a status message (output `status_at`), leaving other outputs as they are."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except DemoError as exc:
                message = problem(str(exc))
            except Exception as exc:  # keep the app alive; the traceback goes to the server log
                log.exception("demo handler %s failed", fn.__name__)
                message = problem(f"internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                                  "the server log has the details")
            out: list[Any] = [gr.skip()] * n_outputs
            out[status_at] = message
            return tuple(out) if n_outputs > 1 else out[0]
        return run
    return wrap
