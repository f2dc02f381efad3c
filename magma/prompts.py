"""User-turn texts for every task, shared by sample building (data_pipeline) and serving
(serve adapters), so that the model sees at inference exactly what it was trained on.

Each function returns the user turn's content, starting with one `<image>` per image.
The assistant answers with the codecs in `magma.codecs` / `magma.action_tokenizer`.
"""
from __future__ import annotations

from typing import Sequence

from magma.codecs import ParseError, UIAction, parse_ui_action, render_ui_action
from magma.marks import Mark
from magma.schema import IMAGE_PLACEHOLDER

# Previous UI actions shown in a UI action prompt (the most recent ones). Training and serving
# must agree on it; the checkpoint records the value training used.
HISTORY_WINDOW = 4
# Legend limits: the first LEGEND_MAX_MARKS marks, labels cut to LEGEND_MAX_TEXT characters.
LEGEND_MAX_MARKS = 32
LEGEND_MAX_TEXT = 24


def _images(n: int) -> str:
    return IMAGE_PLACEHOLDER * n


def mark_label(m: Mark, max_text: int = LEGEND_MAX_TEXT) -> str:
    """The text a mark is named by in legends and in click targets (whitespace collapsed)."""
    return " ".join(m.text.split())[:max_text]


def _mark_line(m: Mark, max_text: int) -> str:
    return f'{m.role} "{mark_label(m, max_text)}" Mark {m.id}'


def marks_legend(marks: Sequence[Mark], max_text: int = LEGEND_MAX_TEXT,
                 max_marks: int = LEGEND_MAX_MARKS) -> str:
    """One line per mark: `button "Submit" Mark 3`.

    The label comes before the id, in the same token order as a click target
    (`click "Submit" Mark 3`), so the answer is a copy of the matching legend line: a small
    model learns that (an induction-style copy) far sooner than a lookup in the other order.
    """
    return "\n".join(_mark_line(m, max_text) for m in list(marks)[:max_marks])


def history_entry(action: UIAction) -> str:
    """A previous UI action as the history line names it: the text the model writes for it
    (`magma.codecs.render_ui_action`), so `parse_ui_action(history_entry(a)) == a`."""
    return render_ui_action(action)


def _canonical_entry(entry: str) -> str:
    # Clients send the model's raw text of each executed action; parsing and re-rendering puts
    # it in the form training wrote (a no-op for `history_entry` output). Text that is not a
    # UI action is kept as sent.
    parsed = parse_ui_action(entry)
    return entry if isinstance(parsed, ParseError) else history_entry(parsed)


def render_history(entries: Sequence[str], window: int = HISTORY_WINDOW) -> str:
    """The last `window` history entries, oldest first, joined by ' | ' ('' for none).

    Entries are `history_entry` texts or the model's raw text of the actions taken; both give
    the same line. `window` 0 shows no history; a negative window is an error.
    """
    if window < 0:
        raise ValueError(f"history window must be >= 0, got {window}")
    recent = list(entries)[-window:] if window else []
    return " | ".join(_canonical_entry(e) for e in recent)


def ui_action_prompt(instruction: str, marks: Sequence[Mark] | None = None,
                     history: Sequence[str] = (), n_images: int = 1,
                     history_window: int = HISTORY_WINDOW, legend_max_marks: int = LEGEND_MAX_MARKS,
                     legend_max_text: int = LEGEND_MAX_TEXT) -> str:
    """Instruction + marked screen (+ legend of marks, + previous actions) -> next UI action.

    `history` holds the entries of every previous step (see `render_history`); the prompt
    shows the last `history_window` of them.
    """
    parts = [_images(n_images) + f"Task: {instruction}"]
    if marks:
        parts.append("Marks:\n" + marks_legend(marks, legend_max_text, legend_max_marks))
    line = render_history(history, history_window)
    if line:
        parts.append("History: " + line)
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
