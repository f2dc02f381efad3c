"""The Gradio demo: Set-of-Mark, Trace-of-Mark, Agent (chat + robot action) and Live tabs,
one builder each in `serve.demo.tabs`; this module only composes them and launches.

    app = build_app(LocalBackend.from_checkpoint("ckpt/"))    # or RemoteBackend(url)
    launch(app, host="127.0.0.1", port=7860)

Handlers never let an exception reach Gradio (`serve.demo.guard.guarded`): a failure becomes
a readable line in the tab's status box and the page stays usable.
"""
from __future__ import annotations

import gradio as gr

from serve.demo import logic
from serve.demo.backend import Backend, DemoError
from serve.demo.guard import guarded, ok, problem
from serve.demo.live import LiveSession
from serve.demo.tabs import build_agent_tab, build_live_tab, build_som_tab, build_tom_tab

__all__ = ["build_app", "guarded", "launch", "ok", "problem", "theme"]


def build_app(backend: Backend, limits: logic.DemoLimits = logic.DemoLimits(),
              live: LiveSession | None = None) -> gr.Blocks:
    live = live or LiveSession()
    try:
        info = backend.info()
    except DemoError as exc:
        info = {"model": "?", "action_datasets": {}, "error": str(exc)}
    with gr.Blocks(title="Magma demo", analytics_enabled=False) as app:
        gr.Markdown(f"# Magma demo\nModel **{info.get('model')}** via {backend.name}. "
                    f"Uploads up to {limits.max_upload_mb:g} MB; videos up to "
                    f"{limits.max_video_seconds:g} s." + (f"\n\n{problem(info['error'])}" if info.get("error") else ""))
        with gr.Tabs():
            build_som_tab(backend, limits)
            build_tom_tab(backend, limits)
            build_agent_tab(backend, limits, sorted(info.get("action_datasets", {})))
            build_live_tab(backend, live)
    return app


def theme() -> gr.themes.Base:
    """System fonts only: the default theme would make the browser fetch web fonts."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860,
           limits: logic.DemoLimits = logic.DemoLimits(), block: bool = True) -> None:
    # Gradio's own cap sits above ours so that our readable message, not a bare rejection,
    # answers moderately oversized files; far larger ones never reach the disk.
    app.queue(default_concurrency_limit=1, max_size=32)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
               max_file_size=4 * limits.max_upload_bytes, ssr_mode=False, prevent_thread_lock=not block,
               footer_links=[], theme=theme(), quiet=True)
