"""Trace-of-Mark tab: a short video -> tracked points, compensated traces and clustered marks
-> the model predicts the marks' next positions (drawn against the tracked ones)."""
from __future__ import annotations

import gradio as gr

from serve.demo import logic
from serve.demo.backend import Backend, DemoError
from serve.demo.guard import guarded, ok


def build_tom_tab(backend: Backend, limits: logic.DemoLimits) -> gr.Tab:
    @guarded(4, 2)
    def tom_track(path: str | None, n_future: float, progress=gr.Progress()):
        n = int(n_future)
        progress(0.1, desc="decoding the video")
        frames, fps = logic.read_video(path, limits)
        progress(0.4, desc=f"tracking points over {len(frames)} frames")
        result = logic.analyse_video(frames, n)
        raw, traces = logic.tom_images(frames, result, n)
        state = {"frames": frames, "result": result, "n_future": n}
        return raw, traces, ok(logic.tom_summary(result) + f" ({fps:.0f} fps source)"), state

    @guarded(2, 1)
    def tom_predict(state: dict | None, instruction: str, progress=gr.Progress()):
        if not state:
            raise DemoError("track a video first")
        progress(0.3, desc="asking the model for traces")
        return logic.predict_traces(backend, state["frames"], state["result"], instruction, state["n_future"])

    with gr.Tab("Trace-of-Mark", id="tom") as tab:
        tom_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                tom_file = gr.File(label="Short video (MP4/AVI)", type="filepath", elem_id="tom-upload")
                tom_future = gr.Slider(2, 16, value=8, step=1, label="future frames")
                tom_go = gr.Button("Track", elem_id="tom-track")
                tom_status = gr.Markdown(elem_id="tom-status")
            tom_raw = gr.Image(label="Tracked points (first frames)", interactive=False, elem_id="tom-raw")
            tom_traces = gr.Image(label="Compensated traces and clustered marks", interactive=False,
                                  elem_id="tom-traces")
        with gr.Row():
            tom_instruction = gr.Textbox(label="Task (optional)", elem_id="tom-instruction")
            tom_predict_btn = gr.Button("Predict traces", variant="primary", elem_id="tom-predict")
        with gr.Row():
            tom_pred = gr.Image(label="Predicted (magenta) vs tracked (green)", interactive=False,
                                elem_id="tom-prediction")
            tom_pred_md = gr.Markdown(elem_id="tom-predict-status")
        tom_file.upload(tom_track, [tom_file, tom_future], [tom_raw, tom_traces, tom_status, tom_state])
        tom_go.click(tom_track, [tom_file, tom_future], [tom_raw, tom_traces, tom_status, tom_state])
        tom_predict_btn.click(tom_predict, [tom_state, tom_instruction], [tom_pred, tom_pred_md])
    return tab
