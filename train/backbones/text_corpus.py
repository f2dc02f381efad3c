"""Generated text for the tiny language model: the structures the agent tasks need.

Nothing here is downloaded or copied: every example is drawn from a seeded `numpy` generator and
rendered with the project's own prompt and codec functions (`magma.prompts`, `magma.codecs`), so
the LM reads the same surface forms the quickstart's samples use (`button "okay" Mark 1`,
`click "okay" Mark 1`, `Task: ...`, `Next action?`). The families:

- `ui_click`:    instruction naming a label + a legend of marks -> `click "label" Mark k`
                 (the legend lookup: find the line whose label matches, copy its id);
- `ui_ordinal`:  "Focus into the 2nd input textbox." -> the id of the 2nd textbox;
- `grounding`:   "Which mark is the X?" + legend -> `Mark k`;
- `kv_recall`:   `key: value` lists, then questions about several keys -> the values;
- `copy`:        random word or token segments repeated later (content-based copying);
- `coordinates`: marks with points, then "Point to Mark k." -> `(x,y)`; number sequences
                 continued at a constant step (the shape of Trace-of-Mark answers).

An example is a list of `(text, supervised)` pieces; `encode_example` tokenises each piece alone
(as `magma.processing_magma.encode_sample` tokenises prompt and answer) and marks the supervised
tokens; `make_rows` packs examples into fixed-length rows for language-model training.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from magma.codecs import UIAction, render_ui_action
from magma.marks import Mark
from magma.prompts import grounding_prompt, ui_action_prompt
from magma.schema import IMAGE_PLACEHOLDER
from magma.tokenizer_build import END_OF_TURN, ROLE_TOKENS

Piece = tuple[str, bool]
Example = list[Piece]

# Latin filler of the kind MiniWoB++ pages show, UI words, and generated pseudo-words.
_LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
          "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
          "nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse "
          "cillum eu fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui "
          "officia deserunt mollit anim id est laborum donec lacus ridiculus cursus dis justo facilisis "
          "proin aliquam pharetra turpis scelerisque rutrum lectus pretium aliquet egestas erat aenean "
          "pulvinar pellentesque purus massa leo at eget rhoncus malesuada tortor neque dui feugiat nunc "
          "auctor morbi vitae mauris nibh tellus sapien viverra odio nec mi arcu vel urna luctus venenatis "
          "fringilla porttitor praesent elementum ullamcorper facilisi etiam dignissim diam lobortis "
          "fermentum faucibus ornare quam orci sagittis volutpat condimentum lacinia eros dapibus ultrices "
          "iaculis augue congue felis phasellus eleifend vulputate bibendum curabitur sodales sem integer "
          "vestibulum risus ultricies tristique metus posuere sollicitudin semper mattis nisl habitant "
          "senectus netus fames ac tempus hendrerit gravida blandit hac habitasse platea dictumst quisque "
          "suscipit maecenas cras placerat tincidunt imperdiet euismod porta mollis nullam fusce "
          "suspendisse potenti vivamus dictum varius a").split()
_UI_WORDS = ("ok okay yes no cancel submit next previous back search login logout save delete edit open "
             "close apply reset send start stop help home menu settings profile share copy paste undo "
             "redo refresh print export import upload download accept decline continue finish").split()
_SYLLABLES = ("ba be bi bo bu ka ke ki ko ku ta te ti to tu ra re ri ro ru sa se si so su na ne ni no nu "
              "la le li lo lu ma me mi mo mu pa pe pi po pu da de di do du va ve vi vo vu").split()
ROLES = ("button", "link", "text", "textbox", "checkbox", "tab", "header")
ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th")
NUMBER_WORDS = ("ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX")
# The words labels and instructions are made of: the `words` tokenizer holds each as one token.
VOCABULARY_WORDS = (*_LOREM, *_UI_WORDS, *ROLES, *(w.lower() for w in NUMBER_WORDS), "dialog")


def _pseudo_word(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4))))


def word(rng: np.random.Generator) -> str:
    """One label word: Latin, UI or pseudo-word, in one of the casings pages use."""
    pool = rng.integers(3)
    w = str(rng.choice(_LOREM)) if pool == 0 else str(rng.choice(_UI_WORDS)) if pool == 1 else _pseudo_word(rng)
    casing = rng.integers(4)
    return w.capitalize() if casing == 1 else w.upper() if casing == 2 and len(w) < 6 else w


def phrase(rng: np.random.Generator, lo: int = 1, hi: int = 3) -> str:
    return " ".join(word(rng) for _ in range(int(rng.integers(lo, hi + 1))))


def _chat(prompt: str, answers: list[tuple[str, str]] | None = None, answer: str | None = None) -> Example:
    """User prompt (images stripped: text pretraining sees none) + assistant answer(s), in the
    built-in chat template's form (`<|user|>...<|end|><|assistant|>...<|end|>`); answers are
    supervised, including their end-of-turn token. `answers` adds follow-up (question, answer)
    turns about the same prompt."""
    user, assistant = ROLE_TOKENS[1], ROLE_TOKENS[2]
    prompt = prompt.replace(IMAGE_PLACEHOLDER, "")
    pieces: Example = [(user + prompt + END_OF_TURN + assistant, False)]
    turns = [("", answer)] if answer is not None else []
    turns += answers or []
    for k, (question, ans) in enumerate(turns):
        if k:
            pieces.append((user + question + END_OF_TURN + assistant, False))
        pieces.append((ans + END_OF_TURN, True))
    return pieces


def _legend(rng: np.random.Generator, n: int, target_role: str, target_label: str, target_id: int) -> list[Mark]:
    """n marks with the target at `target_id`; distractors share its role, its label in another
    case, or its label under another role, as real pages do."""
    marks = []
    for i in range(n):
        if i == target_id:
            role, label = target_role, target_label
        else:
            kind = rng.integers(6)
            if kind == 0 and target_label:
                role, label = str(rng.choice([r for r in ROLES if r != target_role])), target_label
            elif kind == 1 and target_label and target_label.lower() != target_label:
                role, label = target_role, target_label.lower()
            elif kind == 2:
                role, label = target_role, phrase(rng, 1, 2)
            elif kind == 3:
                role, label = "textbox", ""
            else:
                role, label = str(rng.choice(ROLES)), phrase(rng, 1, 4)
        marks.append(Mark(id=i, box=(0.0, 0.0, 1.0, 1.0), text=label, role=role))
    return marks


def ui_click(rng: np.random.Generator) -> Example:
    n = int(rng.integers(2, 14))
    target = int(rng.integers(n))
    style = int(rng.integers(6))
    if style == 0:
        role, label = "button", word(rng)
        instruction = f'Click on the "{label}" button.'
    elif style == 1:
        role, label = "link", word(rng)
        instruction = f'Click on the link "{label}".'
    elif style == 2:
        k = target + 1
        role, label = "tab", f"Tab #{k}"
        instruction = f"Click on Tab #{k}."
    elif style == 3:
        role, label = "button", str(rng.choice(NUMBER_WORDS))
        instruction = f"Click button {label}."
    elif style == 4:
        role, label = "button", word(rng)
        instruction = f'Click the button in the dialog box labeled "{label}".'
    else:
        role, label = str(rng.choice(ROLES[:3])), phrase(rng, 1, 2)
        instruction = f'Click on the {role} "{label}".'
    marks = _legend(rng, n, role, label, target)
    if style == 2:  # tabs are numbered in page order, other marks around them
        for m in marks:
            if m.role == "tab":
                m.text = f"Tab #{m.id + 1}"
    action = UIAction(op="click", mark=target, text=label)
    return _chat(ui_action_prompt(instruction, marks), answer=render_ui_action(action))


def ui_ordinal(rng: np.random.Generator) -> Example:
    n = int(rng.integers(2, 10))
    marks = [Mark(id=i, box=(0.0, 0.0, 1.0, 1.0), text="" if rng.random() < 0.7 else phrase(rng, 1, 3),
                  role="textbox" if rng.random() < 0.7 else str(rng.choice(ROLES))) for i in range(n)]
    boxes = [m.id for m in marks if m.role == "textbox"]
    if not boxes:
        marks[0].role, marks[0].text = "textbox", ""
        boxes = [0]
    k = int(rng.integers(len(boxes)))
    instruction = f"Focus into the {ORDINALS[k]} input textbox." if len(boxes) > 1 or rng.random() < 0.5 \
        else "Focus into the textbox."
    return _chat(ui_action_prompt(instruction, marks), answer=render_ui_action(UIAction(op="click", mark=boxes[k])))


def grounding(rng: np.random.Generator) -> Example:
    n = int(rng.integers(2, 12))
    target = int(rng.integers(n))
    role, label = str(rng.choice(ROLES)), phrase(rng, 1, 2)
    marks = _legend(rng, n, role, label, target)
    unique_label = sum(m.text == label for m in marks) == 1
    description = f'"{label}"' if unique_label and rng.random() < 0.5 else f'the {role} "{label}"'
    prompt = grounding_prompt(description, marks)
    # follow-up questions about other marks of the same legend: several lookups per legend
    follow = []
    for _ in range(int(rng.integers(0, 4))):
        j = int(rng.integers(n))
        if marks[j].text and sum(m.text == marks[j].text for m in marks) == 1:
            follow.append((f'Which mark is "{marks[j].text}"?', f"Mark {j}"))
    return _chat(prompt, answer=f"Mark {target}", answers=follow)


def kv_recall(rng: np.random.Generator) -> Example:
    n = int(rng.integers(2, 12))
    keys: list[str] = []
    while len(keys) < n:
        k = word(rng)
        if k not in keys:
            keys.append(k)
    numeric = rng.random() < 0.5
    values = [str(int(rng.integers(0, 1000))) if numeric else phrase(rng, 1, 2) for _ in keys]
    sep = str(rng.choice([": ", " = ", " -> "]))
    listing = "\n".join(f"{k}{sep}{v}" for k, v in zip(keys, values))
    asked = rng.permutation(n)[: int(rng.integers(1, min(n, 5) + 1))]
    turns = [(f"What is {keys[i]}?", values[i]) for i in asked]
    return _chat(listing + f"\nWhat is {keys[asked[0]]}?", answer=turns[0][1], answers=turns[1:])


def copy_words(rng: np.random.Generator) -> Example:
    seg = phrase(rng, 3, 12)
    filler = phrase(rng, 0, 10)
    form = int(rng.integers(3))
    if form == 0:
        return _chat(f"Repeat: {seg}", answer=seg)
    if form == 1:
        return _chat(f'{filler} "{seg}" {phrase(rng, 0, 6)}\nWhat was in quotes?', answer=seg)
    return [(f"{filler} {seg} {phrase(rng, 0, 6)} ", False), (seg, True), ("\n", False)]


def coordinates(rng: np.random.Generator) -> Example:
    n = int(rng.integers(2, 9))
    pts = [(int(rng.integers(0, 1000)), int(rng.integers(0, 1000))) for _ in range(n)]
    if rng.random() < 0.5:
        listing = "\n".join(f"Mark {i} at ({x},{y})" for i, (x, y) in enumerate(pts))
        k = int(rng.integers(n))
        return _chat(listing + f"\nPoint to Mark {k}.", answer=f"({pts[k][0]},{pts[k][1]})")
    # a constant-velocity track: the first 3 points given, the next ones to continue
    x, y = pts[0]
    dx, dy = int(rng.integers(-12, 13)), int(rng.integers(-12, 13))
    track = [(min(999, max(0, x + t * dx)), min(999, max(0, y + t * dy))) for t in range(8)]
    shown = " ".join(f"({a},{b})" for a, b in track[:3])
    rest = " ".join(f"({a},{b})" for a, b in track[3:])
    return [(f"Mark {int(rng.integers(0, 20))}: {shown} ", False), (rest, True), ("\n", False)]


FAMILIES: dict[str, Callable[[np.random.Generator], Example]] = {
    "ui_click": ui_click, "ui_ordinal": ui_ordinal, "grounding": grounding, "kv_recall": kv_recall,
    "copy": copy_words, "coordinates": coordinates,
}
# What comes between a label and its mark id in a legend line and in a click answer.
LEGEND_SEPARATORS = ('" Mark ', ' Mark ', '": ')
DEFAULT_MIX = {"ui_click": 0.3, "ui_ordinal": 0.1, "grounding": 0.15, "kv_recall": 0.2, "copy": 0.15,
               "coordinates": 0.1}


def encode_example(tokenizer: Any, example: Example) -> tuple[list[int], list[bool]]:
    ids: list[int] = []
    mask: list[bool] = []
    for text, supervised in example:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [supervised] * len(piece)
    return ids, mask


def random_token_copy(rng: np.random.Generator, vocab: int, length: int) -> tuple[list[int], list[bool]]:
    """Random token segments (8-40 ids) each repeated after a short gap, loss on the repeats:
    the plain induction signal, at random offsets so that no fixed-distance copy solves it."""
    ids: list[int] = []
    mask: list[bool] = []
    while len(ids) < length:
        n = int(rng.integers(8, 41))
        seg = rng.integers(0, vocab, size=n).tolist()
        gap = rng.integers(0, vocab, size=int(rng.integers(0, 8))).tolist()
        ids += seg + gap + seg
        mask += [False] * (n + len(gap)) + [False] + [True] * (n - 1)
    return ids[:length], mask[:length]


def gapped_recall(rng: np.random.Generator, vocab: int, length: int,
                  separators: list[list[int]] | None = None,
                  letters: list[int] | None = None, digits: list[int] | None = None) -> tuple[list[int], list[bool]]:
    """Lines `key SEP value`, then keys asked again (`key SEP` -> value), loss on the asked values.

    SEP is shared by every line of a row (one of `separators`, or 0-3 random ids), so the token
    before a value never tells which line it is: the value is found by matching the key a few
    tokens back. Keys are 1-2 random ids, or 2-6 ids drawn from `letters` (how the built-in BPE
    spells a label: one token per character, so no single token of a key is distinctive); values
    are random ids or 1-2 `digits` (a mark id). That is the legend lookup (`button "okay" Mark 3`
    ... `click "okay" Mark` -> `3`) without the words around it, which a one-token induction head
    (`random_token_copy`) does not solve."""
    ids: list[int] = []
    mask: list[bool] = []
    while len(ids) < length:
        if separators and rng.random() < 0.5:
            sep = list(separators[int(rng.integers(len(separators)))])
        else:
            sep = rng.integers(0, vocab, size=int(rng.integers(0, 4))).tolist()
        newline = int(rng.integers(0, vocab))
        n = int(rng.integers(3, 13))
        spelled = letters is not None and rng.random() < 0.5
        keys: list[list[int]] = []
        while len(keys) < n:
            key = ([int(c) for c in rng.choice(letters, size=int(rng.integers(2, 7)))] if spelled
                   else rng.integers(0, vocab, size=int(rng.integers(1, 3))).tolist())
            if key not in keys:
                keys.append(key)
        as_digits = digits is not None and rng.random() < 0.5
        values = [[int(c) for c in rng.choice(digits, size=int(rng.integers(1, 3)))] if as_digits
                  else rng.integers(0, vocab, size=int(rng.integers(1, 3))).tolist() for _ in range(n)]
        for k, v in zip(keys, values):
            line = k + sep + v + [newline]
            ids += line
            mask += [False] * len(line)
        for i in rng.permutation(n)[: int(rng.integers(1, n + 1))]:
            ids += keys[i] + sep + values[i] + [newline]
            mask += [False] * (len(keys[i]) + len(sep)) + [True] * len(values[i]) + [False]
    return ids[:length], mask[:length]


def spelling_tokens(tokenizer: Any) -> tuple[list[list[int]], list[int], list[int]]:
    """The legend separators, the single-letter ids and the digit ids of `tokenizer`."""
    def one(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    separators = [one(s) for s in LEGEND_SEPARATORS]
    letters = sorted({one(c)[0] for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if len(one(c)) == 1})
    digits = [one(c)[0] for c in "0123456789"]
    return separators, letters, digits


def make_rows(tokenizer: Any, rng: np.random.Generator, rows: int, length: int,
              mix: dict[str, float] | None = None, token_copy_frac: float = 0.25,
              text_vocab: int | None = None, recall_frac: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """`rows` rows of `length` ids (examples packed back to back, the last one cut) and their
    supervision masks. A `token_copy_frac` share of rows are `random_token_copy` rows over the
    first `text_vocab` ids (default: the tokenizer's size); of the others, a `recall_frac` share
    are `gapped_recall` rows (their separators include the legend's `" Mark `). With
    `recall_frac` 0 no extra random number is drawn: the rows are those of earlier runs."""
    mix = mix or DEFAULT_MIX
    names = list(mix)
    probs = np.array([mix[n] for n in names], dtype=float)
    probs /= probs.sum()
    vocab = text_vocab or len(tokenizer)
    spelling = spelling_tokens(tokenizer) if recall_frac else None  # only gapped rows need them
    ids = np.zeros((rows, length), dtype=np.int64)
    mask = np.zeros((rows, length), dtype=bool)
    for r in range(rows):
        if rng.random() < token_copy_frac:
            row_ids, row_mask = random_token_copy(rng, vocab, length)
        elif recall_frac and rng.random() < recall_frac:
            row_ids, row_mask = gapped_recall(rng, vocab, length, *spelling)
        else:
            row_ids, row_mask = [], []
            while len(row_ids) < length:
                example = FAMILIES[names[int(rng.choice(len(names), p=probs))]](rng)
                e_ids, e_mask = encode_example(tokenizer, example)
                row_ids += e_ids
                row_mask += e_mask
        ids[r] = row_ids[:length]
        mask[r] = row_mask[:length]
    return ids, mask
