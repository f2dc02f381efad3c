"""Marks from MiniWoB++-style `dom_elements` (recorded episodes and serve's UI adapter).

Each element is a dict with ref, left, top, width, height, tag, text, value, classes, flags
(flags[3] = is_leaf in MiniWoB++). We keep what a person would click or read: buttons, links,
form controls, tabs, accordion headers, dialog close buttons and leaf text; checkbox/radio marks
take the text of their label; nested duplicates collapse into one mark; ids follow reading order.
"""
from __future__ import annotations

from typing import Any, Sequence

from magma.marks import Mark, box_iou, reading_order

_INPUT_ROLES = {"text": "textbox", "password": "textbox", "email": "textbox", "number": "textbox",
                "search": "textbox", "tel": "textbox", "url": "textbox", "date": "textbox",
                "checkbox": "checkbox", "radio": "radio", "button": "button", "submit": "button",
                "reset": "button"}
_CLASS_ROLES = (("ui-dialog-titlebar-close", "button"), ("ui-tabs-anchor", "tab"),
                ("ui-accordion-header", "header"), ("alink", "link"), ("ui-menu-item", "menuitem"))
_TEXT_TAGS = {"t", "p", "span", "label", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th", "div",
              "b", "i", "em", "strong", "small", "font", "pre", "code"}


def element_role(e: dict[str, Any]) -> str | None:
    """'button', 'link', 'textbox', ... for interactive elements, 'text' for leaf text, else None."""
    tag = str(e.get("tag", "")).lower()
    classes = str(e.get("classes", "")).split()
    for cls, role in _CLASS_ROLES:
        if cls in classes:
            return role
    if tag == "button":
        return "button"
    if tag == "a":
        return "link"
    if tag.startswith("input"):
        kind = tag.split("_", 1)[1] if "_" in tag else "text"
        return _INPUT_ROLES.get(kind, "textbox" if kind not in ("hidden",) else None)
    if tag == "textarea":
        return "textbox"
    if tag == "select":
        return "select"
    flags = e.get("flags") or []
    is_leaf = bool(flags[3]) if len(flags) > 3 else True
    if tag in _TEXT_TAGS and is_leaf and str(e.get("text", "")).strip():
        return "text"
    return None


def _box(e: dict[str, Any]) -> tuple[float, float, float, float]:
    x0, y0 = float(e["left"]), float(e["top"])
    return x0, y0, x0 + float(e["width"]), y0 + float(e["height"])


def _inside(inner: Sequence[float], outer: Sequence[float], tol: float = 1.0) -> bool:
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol
            and inner[2] <= outer[2] + tol and inner[3] <= outer[3] + tol)


def _clip(box: Sequence[float], screen: tuple[int, int] | None) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), box[2], box[3]
    if screen is not None:
        x1, y1 = min(float(screen[0]), x1), min(float(screen[1]), y1)
    return x0, y0, x1, y1


def _label_for(control: tuple[float, ...], texts: list[tuple[int, tuple[float, ...], str]]
               ) -> int | None:
    """The text node just right of a checkbox/radio on the same line (MiniWoB <label> layout)."""
    best, best_gap = None, 40.0
    cy = (control[1] + control[3]) / 2
    for k, box, _ in texts:
        gap = box[0] - control[2]
        if -2 <= gap < best_gap and box[1] - 4 <= cy <= box[3] + 4:
            best, best_gap = k, gap
    return best


def marks_from_dom_elements(dom_elements: list[dict[str, Any]],
                            screen_size: tuple[int, int] | None = None
                            ) -> tuple[list[Mark], dict[int, int]]:
    """MiniWoB-style elements -> (marks in reading order with ids 0.., {ref: mark id}).

    `screen_size` (width, height) clips boxes and drops elements outside the screen; without
    it only negative coordinates are clipped. Elements with zero or negative size are dropped.
    """
    kept: list[tuple[dict[str, Any], str, tuple[float, float, float, float]]] = []
    for e in dom_elements:
        try:
            role = element_role(e)
            box = _clip(_box(e), screen_size)
        except (KeyError, TypeError, ValueError):
            continue  # malformed element: no mark
        if role is None or box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        kept.append((e, role, box))

    interactive = [(i, box) for i, (_, role, box) in enumerate(kept) if role != "text"]
    texts = [(i, box, str(e.get("text", "")).strip()) for i, (e, role, box) in enumerate(kept)
             if role == "text"]
    drop: set[int] = set()
    label_text: dict[int, str] = {}
    for i, box in interactive:
        if kept[i][1] in ("checkbox", "radio"):
            k = _label_for(box, [t for t in texts if t[0] not in drop])
            if k is not None:
                label_text[i] = kept[k][0].get("text", "").strip()
                drop.add(k)
    for k, box, _ in texts:  # text inside a button/link is that control's text
        if any(_inside(box, ibox) for _, ibox in interactive):
            drop.add(k)
    for a, abox in interactive:  # nested controls with (nearly) the same box: keep the outer one
        for b, bbox in interactive:
            if a != b and b not in drop and _inside(abox, bbox) and not _inside(bbox, abox) \
                    and box_iou(abox, bbox) > 0.8:
                drop.add(a)
    survivors = [i for i in range(len(kept)) if i not in drop]
    order = reading_order([kept[i][2] for i in survivors])
    marks, ref_to_mark = [], {}
    for mark_id, pos in enumerate(order):
        i = survivors[pos]
        e, role, box = kept[i]
        text = label_text.get(i) or str(e.get("text", "")).strip() or str(e.get("value", "")).strip()
        marks.append(Mark(mark_id, box, " ".join(text.split()), role))
        ref_to_mark[int(e["ref"])] = mark_id
    # elements folded into a mark (a label's text, a button's inner span) map to that mark
    for k in drop:
        kb = kept[k][2]
        for i in survivors:
            same_text = label_text.get(i) == kept[k][0].get("text", "").strip()
            if kept[i][1] != "text" and (_inside(kb, kept[i][2]) or same_text):
                ref_to_mark.setdefault(int(kept[k][0]["ref"]), ref_to_mark[int(kept[i][0]["ref"])])
                break
    return marks, ref_to_mark
