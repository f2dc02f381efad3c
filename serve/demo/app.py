"""The Gradio demo: Set-of-Mark, Trace-of-Mark, Agent (chat + robot action) and Live tabs.

    app = build_app(LocalBackend.from_checkpoint("ckpt/"))    # or RemoteBackend(url)
    launch(app, host="127.0.0.1", port=7860)

Handlers never let an exception reach Gradio: a `DemoError` (bad upload, refused request,
...) becomes a readable line in the tab's status box; anything unexpected is logged with its
traceback on the server and shown as one line, so the page stays usable for the next request.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from magma.marks import Mark  # noqa: E402
from serve.demo import logic  # noqa: E402
from serve.demo.backend import Backend, DemoError  # noqa: E402
from serve.demo.live import LiveSession, on_capture_thread  # noqa: E402

log = logging.getLogger("magma.demo")
MARK_HEADERS = ["id", "role", "text", "box (px)", "centre (px)"]
ACTION_HEADERS = ["dimension", "value", "unit"]


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


def build_app(backend: Backend, limits: logic.DemoLimits = logic.DemoLimits(),
              live: LiveSession | None = None) -> gr.Blocks:
    live = live or LiveSession()
    try:
        info = backend.info()
    except DemoError as exc:
        info = {"model": "?", "action_datasets": {}, "error": str(exc)}
    datasets = sorted(info.get("action_datasets", {}))

    # ------------------------------------------------------------ Set-of-Mark handlers
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

    # ------------------------------------------------------------ Trace-of-Mark handlers
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

    # ------------------------------------------------------------ Agent handlers
    @guarded(3, 2)
    def agent_load(path: str | None):
        image = logic.load_image(path, limits)
        return image, image, ok(f"image loaded ({image.shape[1]}x{image.shape[0]}).")

    @guarded(3, 2)
    def agent_ask(image: np.ndarray | None, question: str, history: list | None, progress=gr.Progress()):
        if image is None:
            raise DemoError("upload an image first")
        progress(0.3, desc="generating an answer")
        answer = logic.ask(backend, image, question)
        history = list(history or []) + [{"role": "user", "content": question},
                                         {"role": "assistant", "content": answer}]
        return history, "", ok("answered.")

    @guarded(3, 2)
    def agent_robot(image: np.ndarray | None, instruction: str, dataset: str | None, proprio: str,
                    progress=gr.Progress()):
        if image is None:
            raise DemoError("upload a robot camera frame first")
        progress(0.3, desc="decoding action tokens")
        result = logic.robot_action(backend, image, instruction, dataset, proprio)
        return result.rows, result.figure, ok(result.summary)

    # ------------------------------------------------------------ Live handlers
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

    # ------------------------------------------------------------ layout
    with gr.Blocks(title="Magma demo", analytics_enabled=False) as app:
        gr.Markdown(f"# Magma demo\nModel **{info.get('model')}** via {backend.name}. "
                    f"Uploads up to {limits.max_upload_mb:g} MB; videos up to "
                    f"{limits.max_video_seconds:g} s." + (f"\n\n{problem(info['error'])}" if info.get("error") else ""))
        with gr.Tabs():
            with gr.Tab("Set-of-Mark", id="som"):
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

            with gr.Tab("Trace-of-Mark", id="tom"):
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

            with gr.Tab("Agent", id="agent"):
                agent_image = gr.State(None)
                with gr.Row():
                    with gr.Column():
                        agent_file = gr.File(label="Image or robot camera frame (PNG/JPEG)", type="filepath",
                                             elem_id="agent-upload")
                        agent_status = gr.Markdown(elem_id="agent-status")
                        agent_view = gr.Image(label="Image", interactive=False, elem_id="agent-image")
                    with gr.Column():
                        agent_chat = gr.Chatbot(label="Chat", elem_id="agent-chat", height=260)
                        agent_question = gr.Textbox(label="Question", value="What is in the image?",
                                                    elem_id="agent-question")
                        agent_ask_btn = gr.Button("Ask", elem_id="agent-ask")
                with gr.Row():
                    with gr.Column():
                        robot_instruction = gr.Textbox(label="Robot instruction", value="open the drawer",
                                                       elem_id="robot-instruction")
                        robot_dataset = gr.Dropdown(datasets, value=datasets[0] if datasets else None,
                                                    label="Action dataset", elem_id="robot-dataset")
                        robot_proprio = gr.Textbox(label="Robot state (optional numbers)", elem_id="robot-proprio")
                        robot_btn = gr.Button("Predict action", variant="primary", elem_id="robot-predict")
                    robot_table = gr.Dataframe(headers=ACTION_HEADERS, label="Decoded action", interactive=False,
                                               elem_id="robot-table")
                    robot_plot = gr.Plot(label="Action", elem_id="robot-plot")
                agent_file.upload(agent_load, agent_file, [agent_image, agent_view, agent_status])
                agent_ask_btn.click(agent_ask, [agent_image, agent_question, agent_chat],
                                    [agent_chat, agent_question, agent_status])
                robot_btn.click(agent_robot, [agent_image, robot_instruction, robot_dataset, robot_proprio],
                                [robot_table, robot_plot, agent_status])

            with gr.Tab("Live", id="live"):
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
