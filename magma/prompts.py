"""User-turn texts for every task, shared by sample building (data_pipeline) and serving
(serve adapters), so that the model sees at inference exactly what it was trained on.

Each function returns the user turn's content, starting with one `<image>` per image.
The assistant answers with the codecs in `magma.codecs` / `magma.action_tokenizer`.
"""
from __future__ import annotations

from typing import Sequence

from magma.marks import Mark
from magma.schema import IMAGE_PLACEHOLDER


def _images(n: int) -> str:
    return IMAGE_PLACEHOLDER * n


def mark_label(m: Mark, max_text: int = 24) -> str:
    """The text a mark is named by in legends and in click targets (whitespace collapsed)."""
    return " ".join(m.text.split())[:max_text]


def _mark_line(m: Mark, max_text: int) -> str:
    return f'{m.role} "{mark_label(m, max_text)}" Mark {m.id}'


def marks_legend(marks: Sequence[Mark], max_text: int = 24, max_marks: int = 32) -> str:
    """One line per mark: `button "Submit" Mark 3`.

    The label comes before the id, in the same token order as a click target
    (`click "Submit" Mark 3`), so the answer is a copy of the matching legend line: a small
    model learns that (an induction-style copy) far sooner than a lookup in the other order.
    """
    return "\n".join(_mark_line(m, max_text) for m in list(marks)[:max_marks])


def ui_action_prompt(instruction: str, marks: Sequence[Mark] | None = None,
                     history: Sequence[str] = (), n_images: int = 1) -> str:
    """Instruction + marked screen (+ legend of marks, + previous actions) -> next UI action."""
    parts = [_images(n_images) + f"Task: {instruction}"]
    if marks:
        parts.append("Marks:\n" + marks_legend(marks))
    if history:
        parts.append("History: " + " | ".join(history[-4:]))
    parts.append("Next action?")
    return "\n".join(parts)


def grounding_prompt(description: str, marks: Sequence[Mark] | None = None) -> str:
    """-> 'Mark N'"""
    legend = ("\nMarks:\n" + marks_legend(marks)) if marks else ""
    return f"{_images(1)}Which mark is {description}?{legend}"


def referring_prompt(mark_id: int) -> str:
    """-> the mark's role and text, e.g. 'button Submit'"""
    return f"{_images(1)}What is Mark {mark_id}?"


def point_prompt(description: str) -> str:
    """-> '(x,y)'"""
    return f"{_images(1)}Point to {description}."


def box_prompt(description: str) -> str:
    """-> '[x0,y0,x1,y1]'"""
    return f"{_images(1)}Box around {description}."


def trace_prompt(instruction: str, n_future: int) -> str:
    """First frame with marks -> 'Mark 3: (x,y) (x,y) ...; Mark 5: ...' over n_future frames."""
    task = f"Task: {instruction}\n" if instruction else ""
    return f"{_images(1)}{task}Predict the next {n_future} positions of the marks."


def robot_action_prompt(instruction: str, proprio: Sequence[float] | None = None,
                        n_images: int = 1) -> str:
    """-> action tokens (<act_N> x action_dim x chunk)."""
    state = ""
    if proprio is not None:
        state = "\nState: " + " ".join(f"{v:.2f}" for v in proprio)
    return f"{_images(n_images)}Task: {instruction}{state}\nWhat should the robot do?"


def verbal_prompt(question: str, n_images: int = 1) -> str:
    return f"{_images(n_images)}{question}"
