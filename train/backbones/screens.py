"""Seeded generators of the vision tower's pretraining images and their targets.

Two kinds of image, drawn at the sizes the quickstart records them:
- UI screens like MiniWoB++ (160 x 210): the yellow instruction bar, then one task layout
  (buttons among text lines, a paragraph with links, tabs, a dialog, scattered buttons,
  textboxes, checkboxes), usually with Set-of-Mark boxes and small digit tags drawn the way
  data_pipeline.som.rendering draws them (same palette, OpenCV's Hershey digits at the scale it
  uses on a 160 x 210 screen, ids in reading order from 0 or, on half the screens, at random);
- scenes like Meta-World's corner camera (128 x 128): a black background, a wooden tray with a
  grey rim, a red arm with a two-finger gripper, pucks, a red goal sphere, a yellow button box.

Everything is drawn from one `numpy.random.Generator`, so an image is a function of its seed.
Targets live on the tower's feature grid. A view is the whole image stretched to S x S
(magma.image_processing_magma.MagmaImageProcessor), so cell (r, c) of a g x g grid covers
x in [c W / g, (c + 1) W / g) and y in [r H / g, (r + 1) H / g) of the original image; a point
belongs to the cell it falls in. `cell_targets` gives, per image:

    roles       [R, g, g] float  1 where a role covers >= ROLE_MIN_FRACTION of the cell's pixels
    tag         [g, g]    int    1 + mark id of the one tag centred in the cell, 0 none, -1 several
    word        [g, g]    int    1 + word id of the one clickable label centred there, 0, -1
    queries     [Q]       int    word ids that label exactly one element of the image
    query_cell  [Q]       int    the cell (r * g + c) of that element's label
    target_cell []        int    the cell of the element the instruction names (-1: none)
    point_cell  [K]       int    cell of each scene point (POINTS), -1 absent or hidden
    point_off   [K, 2]    float  the point's (x, y) inside its cell, in [0, 1)
    kind        []        int    index of the layout in KINDS
    n_marks     []        int    marks drawn
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from magma.marks import reading_order

UI_SIZE = (160, 210)  # width, height of a MiniWoB++ screen
SCENE_SIZE = (128, 128)  # the quickstart's Meta-World camera
BAR_HEIGHT = 50  # MiniWoB++'s yellow instruction area

ROLES = ("instruction", "text", "button", "link", "tab", "textbox", "checkbox", "dialog",
         "table", "arm", "gripper", "object", "goal", "button_box")
ROLE_ID = {r: i + 1 for i, r in enumerate(ROLES)}  # 0 in a role map: background
ROLE_MIN_FRACTION = 0.05
KINDS = ("buttons", "links", "tabs", "dialog", "scatter", "textboxes", "checkboxes",
         "reach", "press", "pick")
POINTS = ("gripper", "goal", "object", "button")
MAX_MARKS = 20  # mark ids 0..19; a screen with more candidates marks the first 20

# The labels MiniWoB++ click tasks draw: its button words, ordinals, tabs, and lorem words.
BUTTON_WORDS = ("submit", "okay", "ok", "yes", "no", "cancel", "next", "previous", "close")
NUMBER_WORDS = ("one", "two", "three", "four")
TAB_WORDS = tuple(f"tab #{k}" for k in range(1, 7))
LOREM = tuple(sorted(set("""
a ac accumsan aenean aliquam aliquet amet ante arcu at auctor augue bibendum blandit commodo
condimentum congue consectetur consequat convallis cras cursus dapibus diam dictum dictumst
dignissim dolor donec dui duis egestas eget eleifend elementum elit enim erat eros est et etiam
eu euismod facilisi facilisis fames faucibus felis fermentum feugiat fringilla fusce gravida
habitant hac hendrerit iaculis id imperdiet in integer interdum ipsum justo lacinia lacus laoreet
lectus leo libero ligula lobortis lorem luctus maecenas magna malesuada massa mattis mauris metus
mi molestie mollis morbi nam nec neque netus nibh nisi nisl non nulla nullam nunc odio orci
ornare pellentesque pharetra phasellus placerat platea porta porttitor posuere potenti praesent
pretium proin pulvinar purus quam quis quisque rhoncus risus rutrum sagittis sapien scelerisque
sed sem semper senectus sit sodales sollicitudin suscipit suspendisse tellus tempor tempus
tincidunt tortor tristique turpis ullamcorper ultrices ultricies urna ut varius vehicula vel
velit venenatis vestibulum vitae vivamus volutpat vulputate
""".split())))
WORDS = BUTTON_WORDS + NUMBER_WORDS + TAB_WORDS + tuple(w for w in LOREM if w not in BUTTON_WORDS)
WORD_ID = {w: i for i, w in enumerate(WORDS)}
ORDINALS = ("1st", "2nd", "3rd", "4th")

# data_pipeline.som.rendering's mark palette (RGB) and tag geometry on a 160 x 210 screen.
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
           (128, 0, 0), (0, 0, 128), (128, 128, 0), (255, 255, 255))
TAG_SCALE = 0.3  # rendering.font_scale_for(160, 210)
UI_MARK_PROB = 0.8  # the rest are plain screens, as the actions-only arm sees them
# The project numbers marks in reading order, so a tag's number is mostly given by its place;
# on this share of screens the ids are drawn at random so that the tag head must read digits.
SHUFFLED_IDS_PROB = 0.5

INK = (0, 0, 0)
LINK_BLUE = (0, 0, 238)
BUTTON_FACE = (239, 239, 239)
BUTTON_EDGE = (118, 118, 118)


@dataclass
class Mark:
    id: int
    box: tuple[int, int, int, int]  # the element's box, x1/y1 exclusive
    tag: tuple[int, int, int, int]  # where its number tag was drawn


@dataclass
class Label:
    word: int  # index in WORDS
    box: tuple[int, int, int, int]  # the label text's box
    element: tuple[int, int, int, int]  # the element it labels


@dataclass
class Drawn:
    """One generated image and what was drawn where (the source of every target)."""

    image: np.ndarray  # [H, W, 3] uint8
    roles: np.ndarray  # [H, W] uint8: ROLE_ID of the visible thing at each pixel, 0 background
    kind: str
    instruction: str = ""
    target: tuple[int, int, int, int] | None = None  # the element the instruction names
    labels: list[Label] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)  # visible scene points


def colour_of_mark(mark_id: int) -> tuple[int, int, int]:
    return PALETTE[mark_id % len(PALETTE)]


def contrast_of(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    return (0, 0, 0) if 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 else (255, 255, 255)


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's embedded sans-serif (the same on every machine; no system font is read)."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=65536)
def word_length(word: str, size: int) -> float:
    return font(size).getlength(word)


def space_width(size: int) -> float:
    return word_length(" ", size) + 1


def text_width(text: str, size: int) -> int:
    words = text.split(" ")
    return int(math.ceil(sum(word_length(w, size) for w in words) + space_width(size) * (len(words) - 1)))


class Canvas:
    """An RGB image and its role map, drawn together (later draws cover earlier ones)."""

    def __init__(self, size: tuple[int, int], background: tuple[int, int, int]):
        self.image = Image.new("RGB", size, background)
        self.role_map = Image.new("L", size, 0)
        self.draw = ImageDraw.Draw(self.image)
        self.rdraw = ImageDraw.Draw(self.role_map)

    def rect(self, box: tuple[int, int, int, int], fill, outline=None, role: str | None = None,
             radius: int = 0) -> None:
        x0, y0, x1, y1 = box
        self.draw.rounded_rectangle((x0, y0, x1 - 1, y1 - 1), radius=radius, fill=fill, outline=outline)
        if role:
            self.rdraw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=ROLE_ID[role])

    def text(self, xy: tuple[int, int], text: str, size: int, fill=INK, role: str | None = None,
             underline: bool = False) -> tuple[int, int, int, int]:
        """Draws `text` with its top-left at xy; returns its box (the line's height)."""
        x, y = xy
        w = text_width(text, size)
        pos = x
        for word in text.split(" "):  # word by word: the embedded font's space is narrower than a browser's
            self.draw.text((pos, y), word, fill=fill, font=font(size))
            pos += word_length(word, size) + space_width(size)
        box = (x, y, x + w, y + size + 1)
        if underline:
            self.draw.line((x, y + size, x + w - 1, y + size), fill=fill)
        if role:
            self.rdraw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=ROLE_ID[role])
        return box

    def polygon(self, points, fill, role: str | None = None) -> None:
        self.draw.polygon(points, fill=fill)
        if role:
            self.rdraw.polygon(points, fill=ROLE_ID[role])

    def line(self, points, fill, width: int, role: str | None = None) -> None:
        self.draw.line(points, fill=fill, width=width, joint="curve")
        if role:
            self.rdraw.line(points, fill=ROLE_ID[role], width=width, joint="curve")

    def disc(self, centre: tuple[float, float], radius: float, fill, role: str | None = None) -> None:
        cx, cy = centre
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        self.draw.ellipse(box, fill=fill)
        if role:
            self.rdraw.ellipse(box, fill=ROLE_ID[role])

    def done(self, kind: str, **kw) -> Drawn:
        return Drawn(image=np.asarray(self.image, np.uint8).copy(), roles=np.asarray(self.role_map, np.uint8).copy(),
                     kind=kind, **kw)


# ------------------------------------------------------------------------------------ UI screens


def _cased(rng: np.random.Generator, word: str) -> str:
    r = rng.random()
    return word.capitalize() if r < 0.3 else word.upper() if r < 0.4 else word


def _lorem(rng: np.random.Generator, n: int) -> list[str]:
    return [LOREM[i] for i in rng.integers(0, len(LOREM), n)]


def _wrap(text: str, size: int, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and text_width(trial, size) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


@dataclass
class _Element:
    role: str
    box: tuple[int, int, int, int]
    word: str | None = None  # the clickable label's word (WORDS), if it has one
    label_box: tuple[int, int, int, int] | None = None
    markable: bool = True


def _button(c: Canvas, x: int, y: int, label: str, size: int, pad: int = 6, height: int = 0,
            width: int = 0) -> _Element:
    tw = text_width(label, size)
    w = max(width, tw + 2 * pad)
    h = max(height, size + 9)
    box = (x, y, x + w, y + h)
    c.rect(box, BUTTON_FACE, BUTTON_EDGE, role="button", radius=2)
    lb = c.text((x + (w - tw) // 2, y + (h - size) // 2 - 1), label, size)
    return _Element("button", box, label.lower(), lb)


def _textbox(c: Canvas, x: int, y: int, w: int, h: int = 21) -> _Element:
    box = (x, y, x + w, y + h)
    c.rect(box, (255, 255, 255), (118, 118, 118), role="textbox")
    return _Element("textbox", box)


def _text_line(c: Canvas, x: int, y: int, words: list[str], size: int) -> _Element:
    return _Element("text", c.text((x, y), " ".join(words), size, role="text"))


def _layout_buttons(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    els: list[_Element] = []
    y = BAR_HEIGHT + 2
    while y < UI_SIZE[1] - 30:
        r = rng.random()
        if r < 0.4:
            els.append(_text_line(c, 2, y, _lorem(rng, int(rng.integers(2, 5))), size))
            y += size + 1
        elif r < 0.85:
            x = 2
            for _ in range(int(rng.integers(1, 3))):
                b = _button(c, x, y, _cased(rng, BUTTON_WORDS[int(rng.integers(8))]), size + 2)
                els.append(b)
                x = b.box[2] + 1
            y += els[-1].box[3] - els[-1].box[1] + 1
        else:
            els.append(_textbox(c, 2, y, int(rng.integers(90, 130))))
            y += 22
    buttons = [i for i, e in enumerate(els) if e.role == "button"]
    if not buttons:
        els.append(_button(c, 2, y, "Submit", size + 2))
        buttons = [len(els) - 1]
    t = buttons[int(rng.integers(len(buttons)))]
    return els, f'Click on the "{els[t].word}" button.', t


def _layout_links(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    els: list[_Element] = []
    x, y, run, run_x = 2, BAR_HEIGHT + 2, [], 2
    space = int(round(space_width(size)))

    def flush() -> None:
        if run:
            els.append(_Element("text", (run_x, y, x - space, y + size + 1)))

    link_p = rng.uniform(0.1, 0.35)
    for i, word in enumerate(_lorem(rng, int(rng.integers(12, 40)))):
        shown = word.capitalize() if i == 0 or rng.random() < 0.15 else word
        w = text_width(shown, size)
        if x + w > UI_SIZE[0] - 2:
            flush()
            x, y, run, run_x = 2, y + size + 1, [], 2
            if y > UI_SIZE[1] - size - 2:
                break
        if rng.random() < link_p:
            flush()
            box = c.text((x, y), shown, size, LINK_BLUE, role="link", underline=True)
            els.append(_Element("link", box, word, box))
            run, run_x = [], x + w + space
        else:
            c.text((x, y), shown, size, role="text")
            if not run:
                run_x = x
            run.append(shown)
        x += w + space
    flush()
    links = [i for i, e in enumerate(els) if e.role == "link"]
    if not links:
        box = c.text((2, y + size + 2), "nam", size, LINK_BLUE, role="link", underline=True)
        els.append(_Element("link", box, "nam", box))
        links = [len(els) - 1]
    t = links[int(rng.integers(len(links)))]
    return els, f'Click on the link "{els[t].word}".', t


def _layout_tabs(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    els: list[_Element] = []
    n = int(rng.integers(2, 5))
    pad = int(rng.integers(6, 11))
    while n > 2 and 6 + n * (text_width(f"Tab #{n}", size + 1) + pad + 3) > UI_SIZE[0] - 3:
        n -= 1  # as many tabs as fit in the bar
    top = BAR_HEIGHT + int(rng.integers(0, 4))
    c.rect((0, top, 160, top + 145), (255, 255, 255), (197, 197, 197), radius=3)
    c.rect((3, top + 3, 157, top + 32), (233, 233, 233), (221, 221, 221), radius=3)
    active = int(rng.integers(n))
    x = 6
    for k in range(n):
        label = f"Tab #{k + 1}"
        face, ink = ((0, 127, 255), (255, 255, 255)) if k == active else ((246, 246, 246), (69, 69, 69))
        w = text_width(label, size + 1) + pad
        box = (x, top + 7, x + w, top + 31)
        c.rect(box, face, (197, 197, 197), role="tab", radius=2)
        lb = c.text((x + pad // 2, top + 12), label, size + 1, ink)
        els.append(_Element("tab", box, label.lower(), lb))
        x += w + 3
    y = top + 52
    for line in _wrap(" ".join(_lorem(rng, int(rng.integers(8, 22)))).capitalize() + ".", size, 120):
        if y > UI_SIZE[1] - size - 4:
            break
        els.append(_text_line(c, 19, y, [line], size))
        y += size + 1
    t = int(rng.integers(n))
    return els, f"Click on Tab #{t + 1}.", t


def _close_button(c: Canvas, x: int, y: int) -> _Element:
    box = (x, y, x + 20, y + 20)
    c.rect(box, (246, 246, 246), (197, 197, 197), role="button", radius=2)
    c.line((x + 6, y + 6, x + 13, y + 13), (69, 69, 69), 2)
    c.line((x + 6, y + 13, x + 13, y + 6), (69, 69, 69), 2)
    return _Element("button", box, "close", box)


def _layout_dialog(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    w, h = int(rng.integers(105, 140)), int(rng.integers(100, 135))
    x0 = int(rng.integers(2, UI_SIZE[0] - w - 1))
    y0 = int(rng.integers(BAR_HEIGHT + 2, UI_SIZE[1] - h - 1))
    c.rect((x0, y0, x0 + w, y0 + h), (255, 255, 255), (197, 197, 197), role="dialog", radius=3)
    c.rect((x0 + 3, y0 + 3, x0 + w - 3, y0 + 28), (233, 233, 233), (221, 221, 221), radius=3)
    els = [_close_button(c, x0 + w - 26, y0 + 5)]
    y = y0 + 36
    lines = _wrap(" ".join(_lorem(rng, int(rng.integers(3, 9)))).capitalize() + ".", size, w - 30)
    tb = None
    room = max(1, (y0 + h - 42 - y) // (size + 2))  # lines that fit above the button pane
    for line in lines[:min(3, room)]:
        box = c.text((x0 + 14, y), line, size, (51, 51, 51))
        tb = box if tb is None else (tb[0], tb[1], max(tb[2], box[2]), box[3])
        y += size + 2
    if tb:
        els.append(_Element("text", tb))
    c.draw.line((x0 + 1, y0 + h - 38, x0 + w - 2, y0 + h - 38), fill=(221, 221, 221))
    names = ["Cancel", "OK"] if rng.random() < 0.7 else ["OK", "Cancel"]
    bx = x0 + w - 8
    right: list[_Element] = []
    for name in reversed(names):
        fw = text_width(name, size + 1) + 18
        bx -= fw
        right.append(_button(c, bx, y0 + h - 30, name, size + 1, pad=9, height=22))
        bx -= 4
    els += right[::-1]
    t = int(rng.integers(len(els))) if rng.random() < 0.2 else int(rng.integers(len(els) - 2, len(els)))
    t = 0 if els[t].role == "text" else t
    shown = "x" if els[t].word == "close" else els[t].word.capitalize() if els[t].word == "cancel" else "OK"
    return els, f'Click the button in the dialog box labeled "{shown}".', t


def _free_boxes(rng: np.random.Generator, n: int, w: int, h: int, area: tuple[int, int, int, int],
                tries: int = 60) -> list[tuple[int, int, int, int]]:
    out: list[tuple[int, int, int, int]] = []
    for _ in range(tries):
        if len(out) == n:
            break
        x, y = int(rng.integers(area[0], area[2] - w)), int(rng.integers(area[1], area[3] - h))
        box = (x, y, x + w, y + h)
        if all(box[0] >= b[2] + 2 or b[0] >= box[2] + 2 or box[1] >= b[3] + 2 or b[1] >= box[3] + 2 for b in out):
            out.append(box)
    return out


def _layout_scatter(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    n = 2 if rng.random() < 0.6 else int(rng.integers(3, 5))  # click-test-2 has ONE and TWO
    side = int(rng.integers(34, 44))
    width = max([side] + [text_width(w.upper(), size + 3) + 8 for w in NUMBER_WORDS[:n]])
    boxes = _free_boxes(rng, n, width, side, (2, BAR_HEIGHT + 4, UI_SIZE[0] - 2, UI_SIZE[1] - 2))
    els = [_button(c, b[0], b[1], NUMBER_WORDS[k].upper(), size + 3, height=side, width=width)
           for k, b in enumerate(boxes)]
    t = int(rng.integers(len(els)))
    return els, f"Click button {NUMBER_WORDS[t].upper()}.", t


def _layout_textboxes(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    n = int(rng.integers(2, 5))
    w = int(rng.integers(100, 135))
    boxes = _free_boxes(rng, n, w, 21, (2, BAR_HEIGHT + 4, UI_SIZE[0] - 2, UI_SIZE[1] - 2))
    boxes.sort(key=lambda b: (b[1], b[0]))
    els = [_textbox(c, b[0], b[1], w) for b in boxes]
    t = int(rng.integers(len(els)))
    return els, f"Focus into the {ORDINALS[t]} input textbox.", t


def _layout_checkboxes(c: Canvas, rng: np.random.Generator, size: int) -> tuple[list[_Element], str, int]:
    els: list[_Element] = []
    n = int(rng.integers(2, 7))
    words = [LOREM[i] for i in rng.choice(len(LOREM), n, replace=False)]
    y = BAR_HEIGHT + 4
    chosen = set(rng.choice(n, int(rng.integers(0, min(3, n) + 1)), replace=False).tolist())
    for word in words:
        box = (4, y + 1, 16, y + 13)
        c.rect(box, (255, 255, 255), (118, 118, 118), role="checkbox", radius=2)
        lb = c.text((20, y + 1), word, size)
        # the mark of a checkbox covers the box; its label is the word beside it
        els.append(_Element("checkbox", box, word, lb))
        y += 17
    els.append(_button(c, 4, y + 3, "Submit", size + 2))
    picked = " ".join(words[k] for k in sorted(chosen)) or "nothing"
    return els, f"Select {picked} and click Submit.", len(els) - 1


UI_LAYOUTS = {"buttons": _layout_buttons, "links": _layout_links, "tabs": _layout_tabs, "dialog": _layout_dialog,
              "scatter": _layout_scatter, "textboxes": _layout_textboxes, "checkboxes": _layout_checkboxes}


@lru_cache(maxsize=None)
def _text_size(text: str) -> tuple[int, int, int]:
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, TAG_SCALE, 1)
    return tw, th, base


def tag_size(mark_id: int) -> tuple[int, int]:
    """(w, h) of a number tag, as rendering._label_size computes it."""
    tw, th, base = _text_size(str(mark_id))
    pad = max(1, int(round(2 * TAG_SCALE)))
    return tw + 2 * pad, th + base + pad


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tags(boxes: list[tuple[int, int, int, int]], ids: list[int], size: tuple[int, int]
               ) -> list[tuple[int, int, int, int] | None]:
    """One tag box per element box (its number `ids[k]`): the first spot of the project's
    preference list (above the top-left corner first) inside the image, clear of placed tags
    and, if possible, of other boxes; None where no spot is free of tags (no mark there)."""
    placed: list[tuple[int, int, int, int]] = []
    out: list[tuple[int, int, int, int] | None] = []
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        lw, lh = tag_size(ids[k])
        spots = [(x0, y0 - lh), (x0, y0), (x0, y1), (x1 - lw, y0 - lh), (x1 - lw, y0),
                 (x0 - lw, y0), (x1, y0), (x1 - lw, y1), (x0, y1 - lh), (x1 - lw, y1 - lh)]
        first = None
        for x, y in spots:
            tag = (x, y, x + lw, y + lh)
            if x < 0 or y < 0 or x + lw > size[0] or y + lh > size[1] or any(_overlap(tag, p) for p in placed):
                continue
            first = first or tag
            if not any(_overlap(tag, b) for j, b in enumerate(boxes) if j != k):
                first = tag
                break
        out.append(first)
        if first:
            placed.append(first)
    return out


def draw_marks(image: np.ndarray, boxes: list[tuple[int, int, int, int]], ids: list[int] | None = None
               ) -> list[Mark]:
    """Draws numbered boxes around `boxes` (in place), as rendering.render_marks does on a
    MiniWoB++ screen: a 1 px box just outside the element with a contrasting outline, then the
    tags; ids are `ids` (default: the boxes' indices). Returns the marks drawn."""
    import cv2

    ids = list(range(len(boxes))) if ids is None else ids
    tags = place_tags(boxes, ids, (image.shape[1], image.shape[0]))
    marks = [Mark(i, b, t) for i, b, t in zip(ids, boxes, tags) if t is not None]
    for m in marks:
        colour = colour_of_mark(m.id)
        x0, y0, x1, y1 = m.box
        cv2.rectangle(image, (x0 - 2, y0 - 2), (x1 + 1, y1 + 1), contrast_of(colour), 1)
        cv2.rectangle(image, (x0 - 1, y0 - 1), (x1, y1), colour, 1)
    for m in marks:
        colour = colour_of_mark(m.id)
        tx0, ty0, tx1, ty1 = m.tag
        cv2.rectangle(image, (tx0, ty0), (tx1 - 1, ty1 - 1), colour, -1)
        pad = max(1, int(round(2 * TAG_SCALE)))
        th = _text_size(str(m.id))[1]
        cv2.putText(image, str(m.id), (tx0 + pad, ty0 + pad // 2 + th), cv2.FONT_HERSHEY_SIMPLEX, TAG_SCALE,
                    contrast_of(colour), 1, cv2.LINE_AA)
    return marks


def draw_ui(rng: np.random.Generator, kind: str | None = None, marks: bool | None = None) -> Drawn:
    """A MiniWoB++-like screen; `kind` one of UI_LAYOUTS (random if None), `marks` whether
    Set-of-Mark boxes are drawn (with probability UI_MARK_PROB if None)."""
    kind = kind or list(UI_LAYOUTS)[int(rng.integers(len(UI_LAYOUTS)))]
    size = int(rng.integers(9, 12))
    c = Canvas(UI_SIZE, (255, 255, 255))
    els, instruction, t = UI_LAYOUTS[kind](c, rng, size)
    c.rect((0, 0, UI_SIZE[0], BAR_HEIGHT), (255, 255, 0), role="instruction")
    y = 3
    for line in _wrap(instruction, size + 1, UI_SIZE[0] - 6)[:3]:
        c.text((3, y), line, size + 1)
        y += size + 4
    drawn = c.done(kind, instruction=instruction, target=els[t].box)
    for e in els:
        if e.word is not None and e.label_box is not None and e.word in WORD_ID:
            drawn.labels.append(Label(WORD_ID[e.word], e.label_box, e.box))
    if marks if marks is not None else rng.random() < UI_MARK_PROB:
        markable = [e.box for e in els if e.markable]
        order = reading_order(markable)[:MAX_MARKS]
        ids = list(range(len(order)))
        if rng.random() < SHUFFLED_IDS_PROB:  # ids not in reading order: the number must be read
            ids = [int(i) for i in rng.choice(MAX_MARKS, len(order), replace=False)]
        drawn.marks = draw_marks(drawn.image, [markable[i] for i in order], ids)
    return drawn


# ------------------------------------------------------------------------------------ scenes


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    """The colour a little brighter or darker (by up to `amount`), with a faint tint."""
    bright = rng.integers(-amount, amount + 1)
    return tuple(int(np.clip(v + bright + rng.integers(-4, 5), 0, 255)) for v in colour)


def _shade(colour: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * f, 0, 255)) for v in colour)


OBJECT_COLOURS = ((120, 20, 20), (40, 90, 200), (40, 160, 60), (200, 200, 40), (150, 60, 160), (60, 60, 60))


def draw_scene(rng: np.random.Generator, kind: str | None = None) -> Drawn:
    """A Meta-World-like corner view: tray, arm with gripper, objects, goal, button box."""
    kind = kind or ("reach", "press", "pick")[int(rng.integers(3))]
    W, H = SCENE_SIZE
    dx, dy, s = rng.uniform(-8, 8), rng.uniform(-6, 6), rng.uniform(0.9, 1.1)

    def p(x: float, y: float) -> tuple[float, float]:
        return (W / 2 + (x * W - W / 2) * s + dx, H / 2 + (y * H - H / 2) * s + dy)

    c = Canvas(SCENE_SIZE, _jitter(rng, (0, 0, 0), 10) if rng.random() < 0.3 else (0, 0, 0))
    # the legs/frame under the tray, then the grey rim and the wooden top
    c.polygon([p(0.0, 0.85), p(0.35, 1.1), p(0.75, 1.1), p(0.2, 0.8)], _jitter(rng, (200, 200, 200)))
    rim = _jitter(rng, (150, 150, 150))
    c.polygon([p(0.05, 0.40), p(1.05, 0.45), p(1.05, 0.88), p(0.28, 1.05), p(0.0, 0.7)], rim, role="table")
    c.polygon([p(0.05, 0.40), p(1.05, 0.45), p(1.05, 0.50), p(0.08, 0.45)], _shade(rim, 1.25), role="table")
    wood = _jitter(rng, (120, 85, 60), 25)
    top = [p(0.12, 0.47), p(1.02, 0.52), p(1.02, 0.82), p(0.32, 0.97), p(0.1, 0.68)]
    c.polygon(top, wood, role="table")
    for k in range(5):  # wood grain
        a, b = p(0.14, 0.52 + 0.08 * k), p(1.0, 0.56 + 0.06 * k)
        c.draw.line((a, b), fill=_shade(wood, 0.85 + 0.05 * (k % 3)), width=1)

    def on_table() -> tuple[float, float]:
        return p(rng.uniform(0.3, 0.95), rng.uniform(0.55, 0.8))

    points: dict[str, tuple[float, float]] = {}
    if kind == "press":
        bx, by = p(rng.uniform(0.45, 0.8), rng.uniform(0.35, 0.55))
        bw, bh = rng.uniform(18, 26) * s, rng.uniform(16, 22) * s
        c.polygon([(bx, by), (bx + bw, by), (bx + bw, by + bh), (bx, by + bh)], _jitter(rng, (230, 170, 0)),
                  role="button_box")
        c.polygon([(bx + bw, by), (bx + bw + 8 * s, by - 4 * s), (bx + bw + 8 * s, by + bh - 4 * s),
                   (bx + bw, by + bh)], _jitter(rng, (40, 40, 40), 10), role="button_box")
        centre = (bx + rng.uniform(0.2, 0.5) * bw, by + bh * rng.uniform(0.4, 0.6))
        c.disc(centre, 3.5 * s, _jitter(rng, (200, 10, 10), 20), role="button_box")
        points["button"] = centre
    n_objects = {"reach": 1, "press": int(rng.integers(0, 2)), "pick": int(rng.integers(1, 4))}[kind]
    for k in range(n_objects):
        centre, r = on_table(), rng.uniform(2.5, 5.5) * s
        colour = _jitter(rng, OBJECT_COLOURS[int(rng.integers(len(OBJECT_COLOURS)))], 20)
        c.disc((centre[0], centre[1] + r * 0.4), r, _shade(colour, 0.6), role="object")
        c.disc(centre, r, colour, role="object")
        if k == 0:
            points["object"] = centre
    if kind != "press" or rng.random() < 0.3:
        goal = p(rng.uniform(0.3, 0.95), rng.uniform(0.2, 0.75))
        c.disc(goal, rng.uniform(1.8, 3.0) * s, _jitter(rng, (255, 20, 20), 15), role="goal")
        points["goal"] = goal
    # the arm: base at the left, shoulder up, elbow above, wrist over the gripper
    grip = p(rng.uniform(0.25, 0.95), rng.uniform(0.3, 0.8))
    base = p(rng.uniform(-0.05, 0.05), rng.uniform(0.85, 0.95))
    shoulder = (base[0] + 10 * s, base[1] - 70 * s)
    wrist = (grip[0], grip[1] - 14 * s)
    d = math.dist(shoulder, wrist)
    l1, l2 = 50 * s, 45 * s
    reach = min(d, l1 + l2 - 1e-3)
    a = math.atan2(wrist[1] - shoulder[1], wrist[0] - shoulder[0])
    cos_b = np.clip((l1 ** 2 + reach ** 2 - l2 ** 2) / (2 * l1 * reach + 1e-6), -1, 1)
    elbow_ang = a - math.acos(float(cos_b))  # elbow up (smaller y)
    elbow = (shoulder[0] + l1 * math.cos(elbow_ang), shoulder[1] + l1 * math.sin(elbow_ang))
    red = _jitter(rng, (170, 20, 20), 20)
    c.disc(base, 12 * s, (25, 25, 25), role="arm")
    for (u, v), width in (((base, shoulder), 15), ((shoulder, elbow), 13), ((elbow, wrist), 9)):
        c.line([u, v], _shade(red, 0.55), int(width * s) + 2, role="arm")
        c.line([u, v], red, int(width * s), role="arm")
        sheen = tuple(int(0.6 * v + 0.4 * 255) for v in red)  # a pale highlight: the goal is the bright red thing
        c.line([(u[0] - 2, u[1] - 2), (v[0] - 2, v[1] - 2)], sheen, max(1, int(width * s) // 4))
    c.disc(elbow, 8 * s, red, role="arm")
    c.disc(shoulder, 8 * s, red, role="arm")
    c.rect((int(wrist[0] - 4 * s), int(wrist[1]), int(wrist[0] + 4 * s) + 1, int(grip[1] - 6 * s)), red, role="arm")
    gap = rng.uniform(2, 5) * s
    for xoff, colour in ((-gap, (235, 235, 235)), (gap, (40, 220, 220))):
        fx = grip[0] + xoff
        c.rect((int(fx - 1), int(grip[1] - 7 * s), int(fx + 2), int(grip[1] + 2)), _jitter(rng, colour, 10),
               role="gripper")
    points["gripper"] = grip
    drawn = c.done(kind, target=None)
    drawn.points = {k: v for k, v in points.items() if _visible(drawn.roles, v, k)}
    return drawn


_POINT_ROLE = {"gripper": "gripper", "goal": "goal", "object": "object", "button": "button_box"}


def _visible(roles: np.ndarray, xy: tuple[float, float], name: str) -> bool:
    """The point shows its own thing within a pixel (the gripper: a finger within 6 pixels, the
    point being between them), not covered by the arm, inside the image."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    h, w = roles.shape
    if not (0 <= x < w and 0 <= y < h):
        return False
    r = 6 if name == "gripper" else 1
    patch = roles[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
    return bool((patch == ROLE_ID[_POINT_ROLE[name]]).any())


def draw_example(rng: np.random.Generator, ui_fraction: float = 0.6) -> Drawn:
    """A UI screen with probability `ui_fraction`, else a scene."""
    return draw_ui(rng) if rng.random() < ui_fraction else draw_scene(rng)


# ------------------------------------------------------------------------------------ targets


def cell_of(x: float, y: float, width: int, height: int, grid: int) -> tuple[int, int]:
    """(row, col) of the grid cell a point of a width x height image falls in (the image is
    stretched to the square view)."""
    col = min(grid - 1, max(0, int(x * grid / width)))
    row = min(grid - 1, max(0, int(y * grid / height)))
    return row, col


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _one_per_cell(items: list[tuple[tuple[int, int], int]], grid: int) -> np.ndarray:
    """[g, g]: 1 + value for a cell holding exactly one item, 0 none, -1 several."""
    out = np.zeros((grid, grid), np.int64)
    for (r, c), value in items:
        out[r, c] = 1 + value if out[r, c] == 0 else -1
    return out


def cell_targets(d: Drawn, grid: int) -> dict[str, np.ndarray]:
    """The targets of one image on a grid x grid feature map (see the module docstring)."""
    h, w = d.roles.shape
    xs = [int(round(c * w / grid)) for c in range(grid + 1)]
    ys = [int(round(r * h / grid)) for r in range(grid + 1)]
    roles = np.zeros((len(ROLES), grid, grid), np.float32)
    for r in range(grid):
        for c in range(grid):
            patch = d.roles[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
            counts = np.bincount(patch.ravel(), minlength=len(ROLES) + 1)[1:]
            roles[:, r, c] = counts >= ROLE_MIN_FRACTION * patch.size
    tag = _one_per_cell([(cell_of(*_centre(m.tag), w, h, grid), m.id) for m in d.marks], grid)
    word = _one_per_cell([(cell_of(*_centre(lb.box), w, h, grid), lb.word) for lb in d.labels], grid)
    counts = np.bincount([lb.word for lb in d.labels], minlength=len(WORDS)) if d.labels else np.zeros(len(WORDS))
    unique = [lb for lb in d.labels if counts[lb.word] == 1]
    queries = np.asarray([lb.word for lb in unique], np.int64)
    query_cell = np.asarray([r * grid + c for r, c in (cell_of(*_centre(lb.box), w, h, grid) for lb in unique)],
                            np.int64)
    if d.target is not None:
        r, c = cell_of(*_centre(d.target), w, h, grid)
        target_cell = r * grid + c
    else:
        target_cell = -1
    point_cell = np.full(len(POINTS), -1, np.int64)
    point_off = np.zeros((len(POINTS), 2), np.float32)
    for k, name in enumerate(POINTS):
        if name in d.points:
            x, y = d.points[name]
            r, c = cell_of(x, y, w, h, grid)
            point_cell[k] = r * grid + c
            point_off[k] = (np.clip(x * grid / w - c, 0, 0.999), np.clip(y * grid / h - r, 0, 0.999))
    return {"roles": roles, "tag": tag, "word": word, "queries": queries, "query_cell": query_cell,
            "target_cell": np.asarray(target_cell, np.int64), "point_cell": point_cell, "point_off": point_off,
            "kind": np.asarray(KINDS.index(d.kind), np.int64), "n_marks": np.asarray(len(d.marks), np.int64)}
