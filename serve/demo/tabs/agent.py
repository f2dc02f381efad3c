"""Agent tab: chat about an uploaded image, and decode a robot action (per-dataset action
tokens) for a camera frame."""
from __future__ import annotations

from typing import Sequence

import gradio as gr
import numpy as np

from serve.demo import logic
from serve.demo.backend import Backend, DemoError
from serve.demo.guard import guarded, ok

ACTION_HEADERS = ["dimension", "value", "unit"]


def build_agent_tab(backend: Backend, limits: logic.DemoLimits, datasets: Sequence[str]) -> gr.Tab:
    """`datasets`: the checkpoint's action datasets (the robot dropdown's choices)."""
    datasets = list(datasets)

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

    with gr.Tab("Agent", id="agent") as tab:
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
    return tab
