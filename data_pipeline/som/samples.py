"""Set-of-Mark training samples from a screen/image and its marks (all text via magma codecs
and magma.prompts, so training and serving speak the same strings).

    grounding   marked image + "Which mark is the button "Submit"?"  -> "Mark 7"
    referring   marked image + "What is Mark 7?"                     -> "button Submit"
    point       plain image  + "Point to the button "Submit"."       -> "(512,233)"
    box         plain image  + "Box around the button "Submit"."     -> "[480,220,545,247]"
    mark_point  marked image + "Point to Mark 7." (unlabelled regions) -> "(512,233)"
    ui_action   marked screen + task + marks legend + history       -> "click Mark 7 at (512,233)"
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Any, Sequence

import numpy as np

from magma import prompts
from magma.codecs import (UIAction, normalize_box, normalize_point, render_box, render_mark,
                          render_point, render_ui_action)
from magma.marks import Mark
from magma.schema import Sample, Turn

SOM_TASKS = ("grounding", "referring", "point", "box")


def seeded_rng(*keys: object) -> random.Random:
    """A random generator fixed by the item (reruns and workers give the same samples)."""
    digest = hashlib.sha256("|".join(map(str, keys)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def describe(mark: Mark) -> str:
    """'the button "Submit"' / 'the text "Hello"'."""
    text = " ".join(mark.text.split())[:60]
    return f'the {mark.role or "element"} "{text}"'


def _sample(image: np.ndarray, user: str, answer: str, kind: str, source: str,
            meta: dict[str, Any], **extra: Any) -> Sample:
    return Sample(id="pending", images=[image], conversation=[
        Turn("user", user), Turn("assistant", answer, kind)], source=source, meta=dict(meta), **extra)  # type: ignore[arg-type]


def som_samples(image: np.ndarray, marked: np.ndarray, marks: Sequence[Mark], source: str,
                rng: random.Random, tasks: Sequence[str] = SOM_TASKS, per_task: int = 2,
                meta: dict[str, Any] | None = None, legend: bool = False, **extra: Any
                ) -> list[Sample]:
    """Grounding/referring/point/box samples for marks with an unambiguous description;
    unlabelled marks (region proposals) get 'Point to Mark N' / 'Box around Mark N'."""
    meta = meta or {}
    h, w = image.shape[:2]
    counts = Counter(describe(m) for m in marks if m.text.strip())
    described = [m for m in marks if m.text.strip() and counts[describe(m)] == 1]
    unlabelled = [m for m in marks if not m.text.strip()]
    out: list[Sample] = []
    for task in tasks:
        pool = list(described)
        rng.shuffle(pool)
        for m in pool[:per_task]:
            box = normalize_box(m.box, w, h)
            if task == "grounding":
                out.append(_sample(marked, prompts.grounding_prompt(describe(m), marks if legend else None),
                                   render_mark(m.id), "spatial", source, meta, **extra))
            elif task == "referring":
                out.append(_sample(marked, prompts.referring_prompt(m.id),
                                   f"{m.role} {' '.join(m.text.split())[:60]}".strip(), "verbal",
                                   source, meta, **extra))
            elif task == "point":
                out.append(_sample(image, prompts.point_prompt(describe(m)),
                                   render_point(normalize_point(*m.centre, w, h)), "spatial",
                                   source, meta, **extra))
            elif task == "box" and box[0] < box[2] and box[1] < box[3]:
                out.append(_sample(image, prompts.box_prompt(describe(m)), render_box(box),
                                   "spatial", source, meta, **extra))
        if task in ("point", "box"):
            pool = list(unlabelled)
            rng.shuffle(pool)
            for m in pool[:per_task]:
                box = normalize_box(m.box, w, h)
                if task == "point":
                    out.append(_sample(marked, prompts.point_prompt(render_mark(m.id)),
                                       render_point(normalize_point(*m.centre, w, h)), "spatial",
                                       source, meta, **extra))
                elif box[0] < box[2] and box[1] < box[3]:
                    out.append(_sample(marked, prompts.box_prompt(render_mark(m.id)),
                                       render_box(box), "spatial", source, meta, **extra))
    return out


def ui_action_from_step(action: dict[str, Any], ref_to_mark: dict[int, int],
                        marks: Sequence[Mark], width: int, height: int) -> UIAction | None:
    """A recorded step's action (ref / pixel point) -> UIAction; None when the target cannot be
    expressed (unmarked element and no point).

    An action on a marked element names the element's label and its mark, without a point
    (`click "Submit" Mark 3`): the executor clicks the mark's centre, and the shorter target
    is a copy of the legend line that a small model learns quickly. Only actions on unmarked
    places carry a normalised point.
    """
    op = action.get("op")
    ref = action.get("ref")
    mark_id = ref_to_mark.get(int(ref)) if ref is not None else None
    point_px = action.get("point") if mark_id is None else None
    if op == "click" and mark_id is not None:
        label = prompts.mark_label(marks[mark_id])
        return UIAction("click", mark=mark_id, text=label or None).validate()
    if op == "scroll":
        return UIAction("scroll", mark=mark_id, direction=action.get("direction") or "down").validate()
    if op in ("click", "type", "select"):
        if mark_id is None and point_px is None:
            return None
        point = normalize_point(float(point_px[0]), float(point_px[1]), width, height) \
            if point_px is not None else None
        text = action.get("text") if op in ("type", "select") else None
        if op in ("type", "select") and text is None:
            return None
        return UIAction(op, mark=mark_id, point=point, text=text).validate()
    return None


def ui_action_sample(marked: np.ndarray, instruction: str, marks: Sequence[Mark],
                     history: Sequence[str], action: UIAction, source: str,
                     meta: dict[str, Any], **extra: Any) -> Sample:
    """One UI step: `history` holds `prompts.history_entry` of every previous step (the prompt
    shows the last `prompts.HISTORY_WINDOW`, exactly as serving does)."""
    return _sample(marked, prompts.ui_action_prompt(instruction, marks, history),
                   render_ui_action(action), "action", source, meta, **extra)
