"""Small generated Set-of-Mark inputs (for tests, benchmarks and smoke runs; seeded).

    write_synthetic_som_data(root, ...) writes under root:
        images/*.png                 shapes on noise (region proposals)
        verbal/captions.jsonl        captions + QA over those images
        ui_annotations/*.json        screenshot + element boxes (docs/data_formats.md)
        episodes/miniwob/<id>/       MiniWoB-like recorded episodes (magma.episode format)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from magma.episode import Episode, EpisodeMeta

WORDS = ("Submit", "Cancel", "Next", "Back", "Search", "Login", "Save", "Open", "Delete", "Reply")


def synthetic_screen(rng: np.random.Generator, width: int = 160, height: int = 210,
                     n_buttons: int = 3) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A MiniWoB-sized screen with buttons, a text field and a paragraph + its dom_elements."""
    img = np.full((height, width, 3), 255, np.uint8)
    img[:50] = (255, 255, 0)  # the instruction bar, as in MiniWoB
    elements: list[dict[str, Any]] = [
        {"ref": 1, "left": 0, "top": 0, "width": width, "height": height, "tag": "body", "text": "",
         "value": "", "classes": "", "flags": [0, 0, 0, 0]}]
    words = rng.choice(len(WORDS), size=n_buttons, replace=False)
    y = 56
    for k, wi in enumerate(words):
        x, bw, bh = int(rng.integers(2, 40)), 70, 22
        cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), (220, 220, 220), -1)
        cv2.rectangle(img, (x, y), (x + bw - 1, y + bh - 1), (90, 90, 90), 1)
        cv2.putText(img, WORDS[wi], (x + 4, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        elements.append({"ref": 2 + k, "left": x, "top": y, "width": bw, "height": bh,
                         "tag": "button", "text": WORDS[wi], "value": "", "classes": "",
                         "flags": [0, 0, 0, 1]})
        y += bh + 8
    cv2.rectangle(img, (4, y), (130, y + 20), (120, 120, 120), 1)
    elements.append({"ref": 20, "left": 4, "top": y, "width": 127, "height": 21, "tag": "input_text",
                     "text": "", "value": "", "classes": "", "flags": [0, 0, 0, 1]})
    cv2.putText(img, "Lorem ipsum", (4, y + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    elements.append({"ref": 21, "left": 4, "top": y + 28, "width": 80, "height": 14, "tag": "p",
                     "text": "Lorem ipsum", "value": "", "classes": "", "flags": [0, 0, 0, 1]})
    elements.append({"ref": -1, "left": -5000, "top": 70, "width": 20, "height": 10, "tag": "t",
                     "text": "offscreen", "value": "", "classes": "", "flags": [0, 0, 0, 1]})
    return img, elements


def synthetic_episode(episode_id: str, seed: int, steps: int = 2) -> Episode:
    rng = np.random.default_rng(seed)
    images, records = [], []
    img, els = synthetic_screen(rng)
    buttons = [e for e in els if e["tag"] == "button"]
    target = buttons[int(rng.integers(len(buttons)))]
    for t in range(steps):
        images.append(img)
        if t < steps - 1:
            field = next(e for e in els if e["tag"] == "input_text")
            action = {"op": "type", "ref": field["ref"], "point": None, "text": f"w{seed}",
                      "direction": None}
        else:
            action = {"op": "click", "ref": target["ref"],
                      "point": [target["left"] + 10.0, target["top"] + 5.0], "text": None,
                      "direction": None}
        records.append({"dom_elements": els, "action": action})
    meta = EpisodeMeta(episode_id=episode_id, env="miniwob", task="click-button",
                       instruction=f'Type w{seed} and click "{target["text"]}".', action_space="ui",
                       seed=seed, split="train", success=True)
    return Episode(meta, np.stack(images), steps=records)


def synthetic_image(rng: np.random.Generator, size: tuple[int, int] = (192, 144)) -> np.ndarray:
    w, h = size
    img = np.clip(rng.normal(128, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    for _ in range(3):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        x1, y1 = x0 + int(rng.integers(25, 60)), y0 + int(rng.integers(25, 60))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (min(w - 1, x1), min(h - 1, y1)), colour, -1)
        else:
            cv2.circle(img, ((x0 + x1) // 2, (y0 + y1) // 2), (x1 - x0) // 2, colour, -1)
    return img


def write_synthetic_som_data(root: str | Path, n_images: int = 6, n_annotations: int = 4,
                             n_episodes: int = 4, seed: int = 0) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "verbal").mkdir(parents=True, exist_ok=True)
    (root / "ui_annotations").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_images):
        Image.fromarray(synthetic_image(rng)).save(root / "images" / f"img{i:03d}.png")
        lines.append({"image": f"../images/img{i:03d}.png", "caption": f"Shapes number {i}."})
    lines.append({"image": "../images/img000.png", "question": "How many shapes?", "answer": "Three."})
    (root / "verbal" / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for i in range(n_annotations):
        img, els = synthetic_screen(rng, 320, 240)
        Image.fromarray(img).save(root / "ui_annotations" / f"screen{i:03d}.png")
        elements = [{"box": [e["left"], e["top"], e["left"] + e["width"], e["top"] + e["height"]],
                     "text": e["text"], "role": "button" if e["tag"] == "button" else "text"}
                    for e in els if e["tag"] in ("button", "p")]
        rec = {"image": f"screen{i:03d}.png", "elements": elements,
               "instruction": f"Click {elements[0]['text']}", "target": 0,
               "action": {"op": "click"}}
        (root / "ui_annotations" / f"screen{i:03d}.json").write_text(json.dumps(rec))
    ep_root = root / "episodes" / "miniwob"
    ep_root.mkdir(parents=True, exist_ok=True)
    for i in range(n_episodes):
        synthetic_episode(f"ep{i:04d}", seed + i).save(ep_root)
    return root
