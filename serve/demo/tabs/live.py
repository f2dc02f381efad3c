"""Live tab: the browser agent on a local page, one policy step at a time or auto-run
(`serve.demo.live.LiveSession` owns the page)."""
from __future__ import annotations

import gradio as gr

from serve.demo.backend import Backend, DemoError
from serve.demo.guard import guarded, ok
from serve.demo.live import LiveSession


def build_live_tab(backend: Backend, live: LiveSession) -> gr.Tab:
    @guarded(3, 1)
    def live_reset(url: str):
        s = live.reset(url)
        return s.screen, ok(s.summary), s.page_status

    @guarded(3, 1)
    def live_step(instruction: str, progress=gr.Progress()):
        progress(0.3, desc="observing, acting")
        s = live.step(backend, instruction)
        return s.screen, s.summary, s.page_status

    @guarded(3, 1)
    def live_auto(instruction: str, n_steps: float, progress=gr.Progress()):
        lines, s = [], None
        for _ in progress.tqdm(range(int(n_steps)), desc="agent steps"):
            s = live.step(backend, instruction)
            lines.append(s.summary)
            if not s.executed:  # an action that cannot run would repeat forever
                break
        if s is None:
            raise DemoError("choose at least one step")
        return s.screen, "\n\n".join(lines), s.page_status

    with gr.Tab("Live", id="live") as tab:
        with gr.Row():
            with gr.Column():
                live_url = gr.Textbox(label="Local page (empty: the bundled demo page)", elem_id="live-url")
                live_instruction = gr.Textbox(label="Agent task", value="click the Submit button",
                                              elem_id="live-instruction")
                with gr.Row():
                    live_reset_btn = gr.Button("Reset page", elem_id="live-reset")
                    live_step_btn = gr.Button("Step", variant="primary", elem_id="live-step")
                live_steps = gr.Slider(1, 10, value=3, step=1, label="auto-run steps")
                live_auto_btn = gr.Button("Auto-run", elem_id="live-auto")
                live_log = gr.Markdown(elem_id="live-log")
                live_page = gr.Textbox(label="Page says", interactive=False, elem_id="live-page-status")
            live_screen = gr.Image(label="Current marked screen and the agent's action",
                                   interactive=False, elem_id="live-screen")
        live_reset_btn.click(live_reset, live_url, [live_screen, live_log, live_page])
        live_step_btn.click(live_step, live_instruction, [live_screen, live_log, live_page])
        live_auto_btn.click(live_auto, [live_instruction, live_steps], [live_screen, live_log, live_page])
    return tab
