"""Set-of-Mark tab: an uploaded image (region proposals) or a captured local page (DOM marks)
-> marked image and mark table -> the policy's UI adapter predicts a click."""
from __future__ import annotations

import gradio as gr
import numpy as np

from magma.marks import Mark
from serve.demo import logic
from serve.demo.backend import Backend, DemoError
from serve.demo.guard import guarded, ok
from serve.demo.live import on_capture_thread

MARK_HEADERS = ["id", "role", "text", "box (px)", "centre (px)"]


def _marks_from_state(state: dict | None) -> tuple[np.ndarray, list[Mark]]:
    if not state or state.get("image") is None:
        raise DemoError("load an image or capture a page first")
    return state["image"], [Mark.from_dict(d) for d in state["marks"]]


def _som_outputs(image: np.ndarray, marks: list[Mark], source: str) -> tuple:
    from data_pipeline import perception

    marked = perception.render_marks(image, marks) if marks else image
    state = {"image": image, "marks": [m.to_dict() for m in marks]}
    note = "" if marks else " (no regions found: the prediction will use the plain image)"
    return (marked, logic.mark_rows(marks), state,
            ok(f"{len(marks)} marks on the {source} ({image.shape[1]}x{image.shape[0]}){note}."))


def build_som_tab(backend: Backend, limits: logic.DemoLimits) -> gr.Tab:
    @guarded(4, 3)
    def som_from_upload(path: str | None, progress=gr.Progress()):
        progress(0.1, desc="decoding the image")
        image = logic.load_image(path, limits)
        progress(0.4, desc="proposing regions")
        return _som_outputs(image, logic.propose(image, limits), "image")

    @guarded(4, 3)
    def som_from_page(target: str, progress=gr.Progress()):
        progress(0.2, desc="capturing the page in headless chromium")
        image, marks = on_capture_thread(logic.capture, target)
        return _som_outputs(image, list(marks), "page")

    @guarded(2, 1)
    def som_click(state: dict | None, instruction: str, progress=gr.Progress()):
        image, marks = _marks_from_state(state)
        progress(0.3, desc="asking the policy (UI adapter)")
        result = logic.predict_click(backend, image, marks, instruction)
        return result.image, result.summary

    with gr.Tab("Set-of-Mark", id="som") as tab:
        som_state = gr.State(None)
        with gr.Row():
            with gr.Column():
                som_file = gr.File(label="Screenshot or image (PNG/JPEG)", type="filepath",
                                   elem_id="som-upload")
                som_url = gr.Textbox(label="...or a local page: URL (127.0.0.1 / file://) or HTML path",
                                     elem_id="som-url")
                som_capture = gr.Button("Capture page", elem_id="som-capture")
                som_status = gr.Markdown(elem_id="som-status")
            som_marked = gr.Image(label="Marked image", type="numpy", interactive=False,
                                  elem_id="som-marked")
        som_table = gr.Dataframe(headers=MARK_HEADERS, label="Marks", interactive=False,
                                 elem_id="som-table")
        with gr.Row():
            som_instruction = gr.Textbox(label="Instruction", value="click the Submit button",
                                         elem_id="som-instruction")
            som_go = gr.Button("Predict click", variant="primary", elem_id="som-predict")
        with gr.Row():
            som_pred = gr.Image(label="Predicted mark and click point", type="numpy",
                                interactive=False, elem_id="som-prediction")
            som_action = gr.Markdown(elem_id="som-action")
        som_outputs = [som_marked, som_table, som_state, som_status]
        som_file.upload(som_from_upload, som_file, som_outputs)
        som_capture.click(som_from_page, som_url, som_outputs)
        som_go.click(som_click, [som_state, som_instruction], [som_pred, som_action])
    return tab
