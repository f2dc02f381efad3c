"""UI navigation adapter: screenshot (+ DOM boxes or client marks) -> Set-of-Mark prompt ->
`{"op", "mark", "point" (screen pixels), "text", "direction"}`.

Marks come from `data_pipeline.perception` (the same code that marked the training screens):
`marks_from_dom_elements` for DOM boxes, `render_marks` to draw them. Without marks the plain
screenshot is sent and only point actions can be resolved.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from magma.codecs import ParseError, UIAction, denormalize_point, parse_ui_action
from magma.marks import Mark
from magma.inference_settings import UISettings
from magma.prompts import ui_action_prompt
from serve.api import ActRequest, ErrorInfo, UIActResponse
from serve.engines.base import GenerationOutput, GenerationRequest
from serve.errors import ServeError

UI_MAX_NEW_TOKENS = 48


def _perception():
    try:
        from data_pipeline import perception
    except ImportError as exc:
        raise ServeError(400, "marks_unavailable",
                         f"marks need data_pipeline.perception, which cannot be imported ({exc}); "
                         "send a screenshot without marks or install the data pipeline") from None
    return perception


def marks_for_request(req: ActRequest) -> list[Mark]:
    """Client marks win over DOM elements; neither -> no marks."""
    if req.marks:
        return [Mark(id=m.id, box=tuple(m.box), text=m.text, role=m.role) for m in req.marks]
    if req.dom_elements:
        marks, _ = _perception().marks_from_dom_elements([d.model_dump() for d in req.dom_elements])
        return list(marks)
    return []


def mark_screen(screenshot: Image.Image, marks: list[Mark]) -> Image.Image:
    if not marks:
        return screenshot
    drawn = _perception().render_marks(np.asarray(screenshot), marks)
    return Image.fromarray(np.asarray(drawn, dtype=np.uint8))


@dataclass
class UIContext:
    marks: list[Mark]
    width: int
    height: int


def prepare_ui(req: ActRequest, screenshot: Image.Image, render_prompt,
               ui: UISettings = UISettings()) -> tuple[GenerationRequest, UIContext]:
    """`ui`: the checkpoint's prompt settings (inference_settings.json `ui`)."""
    marks = marks_for_request(req)
    marked = mark_screen(screenshot, marks)
    user = ui_action_prompt(req.instruction, marks, history=req.history or (), history_window=ui.history_window,
                            legend_max_marks=ui.legend_max_marks, legend_max_text=ui.legend_max_text)
    gen = GenerationRequest(render_prompt(user), [marked], UI_MAX_NEW_TOKENS)
    return gen, UIContext(marks, screenshot.width, screenshot.height)


def ui_action_to_pixels(action: UIAction, ctx: UIContext) -> tuple[list[float] | None, ErrorInfo | None]:
    """A normalised point wins; otherwise the mark's centre. Unknown marks are an error."""
    by_id = {m.id: m for m in ctx.marks}
    if action.mark is not None and action.mark not in by_id and action.point is None:
        return None, ErrorInfo(code="unknown_mark", message=f"Mark {action.mark} is not on the screen")
    if action.point is not None:
        x, y = denormalize_point(action.point, ctx.width, ctx.height)
        return [x, y], None
    if action.mark is not None:
        return list(by_id[action.mark].centre), None
    return None, None


def ui_response(out: GenerationOutput, ctx: UIContext) -> UIActResponse:
    raw = out.text.strip()
    marks = [m.to_dict() for m in ctx.marks]
    parsed = parse_ui_action(raw)
    if isinstance(parsed, ParseError):
        err = parsed.to_dict()
        return UIActResponse(marks=marks, raw=raw, error=ErrorInfo(code=err["code"], message=err["message"]))
    point, err = ui_action_to_pixels(parsed, ctx)
    return UIActResponse(op=parsed.op, mark=parsed.mark, point=point, text=parsed.text,
                         direction=parsed.direction, marks=marks, raw=raw, error=err)


__all__: list[Any] = ["UI_MAX_NEW_TOKENS", "UIContext", "marks_for_request", "mark_screen",
                      "prepare_ui", "ui_action_to_pixels", "ui_response"]
