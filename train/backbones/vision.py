"""Pretrain the tiny ConvNeXt tower on generated screens and scenes (`train.backbones.screens`).

The tower is the `vision` section of `configs/model/tiny.yaml` (ConvNeXt depths 2-2-2-2, widths
32-64-128-256, 224 px views, the last stage's 7 x 7 map = the 49 image tokens), fed exactly as
fine-tuning feeds it (MagmaImageProcessor: the image stretched to the view, normalised). Linear
heads on the LayerNorm'd cells of that map learn what the policy needs to read off a screen or a
scene; they are dropped afterwards and only the `ConvNextModel` is written, with its
`preprocessor_config.json`, so `vision.pretrained: <out>` loads it like any other tower.

Heads (per cell unless said): roles (multi-label, ROLES), the mark tag's number, the clickable
label's word (WORDS), locating a word (the word head's column, softmax over cells), the cell the
instruction bar names, scene points (gripper, goal, object, button: a cell softmax plus the
offset inside the cell), and two global heads on the mean cell (layout kind, number of marks).

Probes run on a fixed held-out set (its own seed stream) and report, besides the losses:
`role_f1` (macro F1 over roles), `tag_acc` / `word_acc` (accuracy on cells that hold a tag /
a label), `tag_false` (share of cells without a tag read as one), `locate_acc`, `target_acc`,
`point_acc/<name>` and `point_err_px` (mean distance in image pixels), `kind_acc`, `count_acc`.
`<out>/probe.json` has the final probe, the chance levels and the measured speed.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from magma.config_io import StrictModel
from magma.image_processing_magma import IMAGENET_MEAN, IMAGENET_STD, MagmaImageProcessor
from magma.model_config import load_model_spec
from train.backbones import screens as sc
from train.backbones.resumable import LoopSettings, run_loop

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SIZES = REPO / "configs" / "model" / "tiny.yaml"
ROLE_POS_WEIGHT = 4.0
PROBE_STREAM = 7_777_777  # probe images come from default_rng([seed, PROBE_STREAM, i]); batches from [seed, step]


class VisionRecipe(StrictModel):
    """How the tower is pretrained. Sizes default to configs/model/tiny.yaml's."""

    depths: list[int] | None = None
    hidden_sizes: list[int] | None = None
    image_size: int | None = None
    batch_size: int = Field(32, ge=1)
    lr: float = Field(4e-3, gt=0)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    ui_fraction: float = Field(0.6, ge=0, le=1)
    probe_images: int = Field(128, ge=2)
    probe_every: int = Field(250, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(25, ge=1)
    save_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    weights: dict[str, float] = Field(default_factory=lambda: {
        "roles": 1.0, "tag": 1.0, "word": 1.0, "locate": 0.5, "target": 0.5, "points": 1.0, "offset": 1.0,
        "kind": 0.2, "count": 0.2})

    def sized(self, sizes: Path = DEFAULT_SIZES) -> "VisionRecipe":
        """The recipe with the sizes it leaves out taken from the model config."""
        if self.depths is not None and self.hidden_sizes is not None and self.image_size is not None:
            return self
        spec = load_model_spec(sizes)
        return self.model_copy(update={"depths": self.depths or list(spec.vision.depths),
                                       "hidden_sizes": self.hidden_sizes or list(spec.vision.hidden_sizes),
                                       "image_size": self.image_size or spec.image_size})

    @property
    def grid(self) -> int:
        """Cells per side of the last stage's map (patch 4, then 2x per later stage)."""
        return self.image_size // (4 * 2 ** (len(self.depths) - 1))


def build_tower(recipe: VisionRecipe, seed: int = 0) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextModel

    config = ConvNextConfig(depths=list(recipe.depths), hidden_sizes=list(recipe.hidden_sizes),
                            num_stages=len(recipe.depths), image_size=recipe.image_size)
    torch.manual_seed(seed)
    return ConvNextModel(config)


class TowerWithHeads(nn.Module):
    """The tower and its pretraining heads (linear, on the LayerNorm'd cells of the last map)."""

    def __init__(self, tower: nn.Module, hidden: int):
        super().__init__()
        self.tower = tower
        self.norm = nn.LayerNorm(hidden)
        self.roles = nn.Linear(hidden, len(sc.ROLES))
        self.tag = nn.Linear(hidden, 1 + sc.MAX_MARKS)
        self.word = nn.Linear(hidden, 1 + len(sc.WORDS))
        self.target = nn.Linear(hidden, 1)
        self.points = nn.Linear(hidden, 3 * len(sc.POINTS))  # per point: a cell logit and (x, y) in the cell
        self.kind = nn.Linear(hidden, len(sc.KINDS))
        self.count = nn.Linear(hidden, sc.MAX_MARKS + 1)

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.tower(pixel_values.contiguous(memory_format=torch.channels_last)).last_hidden_state
        cells = self.norm(fmap.flatten(2).transpose(1, 2))  # [B, G, C], row-major as the image tokens
        pooled = cells.mean(1)
        k = len(sc.POINTS)
        pts = self.points(cells)
        return {"roles": self.roles(cells), "tag": self.tag(cells), "word": self.word(cells),
                "target": self.target(cells)[..., 0], "point_logit": pts[..., :k],
                "point_off": torch.sigmoid(pts[..., k:]).unflatten(-1, (k, 2)),
                "kind": self.kind(pooled), "count": self.count(pooled)}


def processor_for(recipe: VisionRecipe) -> MagmaImageProcessor:
    return MagmaImageProcessor(image_size=recipe.image_size, image_mean=recipe.image_mean,
                               image_std=recipe.image_std)


def collate(drawn: list[sc.Drawn], recipe: VisionRecipe, processor: MagmaImageProcessor) -> dict[str, torch.Tensor]:
    """Pixel values (as fine-tuning makes them) and stacked targets; queries flattened to
    (image, word, cell) triples."""
    g = recipe.grid
    targets = [sc.cell_targets(d, g) for d in drawn]
    pixels = processor.preprocess([d.image for d in drawn])["pixel_values"]
    qb = np.concatenate([np.full(len(t["queries"]), i, np.int64) for i, t in enumerate(targets)])
    batch = {"pixel_values": torch.from_numpy(np.ascontiguousarray(pixels)),
             "q_image": torch.from_numpy(qb),
             "q_word": torch.from_numpy(np.concatenate([t["queries"] for t in targets])),
             "q_cell": torch.from_numpy(np.concatenate([t["query_cell"] for t in targets]))}
    for key in ("roles", "tag", "word", "target_cell", "point_cell", "point_off", "kind", "n_marks"):
        batch[key] = torch.from_numpy(np.stack([t[key] for t in targets]))
    return batch


def draw_batch(rng: np.random.Generator, recipe: VisionRecipe) -> list[sc.Drawn]:
    return [sc.draw_example(rng, recipe.ui_fraction) for _ in range(recipe.batch_size)]


def _balanced_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over cells with a thing (target > 0) plus half that over empty cells (0):
    empty cells outnumber the rest ten to one. -1 is ignored."""
    logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    pos, neg = target > 0, target == 0
    loss = logits.new_zeros(())
    if pos.any():
        loss = loss + F.cross_entropy(logits[pos], target[pos])
    if neg.any():
        loss = loss + 0.5 * F.cross_entropy(logits[neg], target[neg])
    return loss


def head_losses(out: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    zero = out["roles"].new_zeros(())
    roles = b["roles"].flatten(2).transpose(1, 2)
    # a role covers few cells (a checkbox, the goal): positives count ROLE_POS_WEIGHT times
    pos_weight = roles.new_full((roles.shape[-1],), ROLE_POS_WEIGHT)
    losses = {"roles": F.binary_cross_entropy_with_logits(out["roles"], roles, pos_weight=pos_weight),
              "tag": _balanced_ce(out["tag"], b["tag"].flatten(1)),
              "word": _balanced_ce(out["word"], b["word"].flatten(1))}
    if len(b["q_word"]):
        cols = out["word"][b["q_image"], :, 1 + b["q_word"]]  # [N, G]: the word's logit in every cell
        losses["locate"] = F.cross_entropy(cols, b["q_cell"])
    else:
        losses["locate"] = zero
    has = b["target_cell"] >= 0
    losses["target"] = F.cross_entropy(out["target"][has], b["target_cell"][has]) if has.any() else zero
    cell = b["point_cell"]  # [B, K]
    seen = cell >= 0
    if seen.any():
        img, k = seen.nonzero(as_tuple=True)
        losses["points"] = F.cross_entropy(out["point_logit"][img, :, k], cell[img, k])
        pred = out["point_off"][img, cell[img, k], k]  # [N, 2]
        losses["offset"] = F.l1_loss(pred, b["point_off"][img, k])
    else:
        losses["points"] = losses["offset"] = zero
    losses["kind"] = F.cross_entropy(out["kind"], b["kind"])
    losses["count"] = F.cross_entropy(out["count"], b["n_marks"].clamp(max=sc.MAX_MARKS))
    return losses


def _macro_f1(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean F1 over the last axis' labels that occur (pred, truth: bool [..., R])."""
    pred, truth = pred.reshape(-1, pred.shape[-1]), truth.reshape(-1, truth.shape[-1])
    scores = []
    for r in range(truth.shape[-1]):
        t, p = truth[:, r], pred[:, r]
        if t.any():
            tp = float((t & p).sum())
            scores.append(2 * tp / (float(t.sum()) + float(p.sum())))
    return float(np.mean(scores)) if scores else 0.0


def _cell_xy(cell: torch.Tensor, g: int) -> torch.Tensor:
    """[N] row-major cell indices -> [N, 2] (col, row) of their top-left corners, in cells."""
    return torch.stack([(cell % g).float(), (cell // g).float()], 1)


def probe_metrics(model: TowerWithHeads, batches: list[dict[str, torch.Tensor]], recipe: VisionRecipe,
                  sizes: list[tuple[int, int]]) -> dict[str, float]:
    """Held-out accuracies per head (see the module docstring)."""
    g = recipe.grid
    acc: dict[str, list[float]] = {}

    def add(key: str, values: torch.Tensor) -> None:
        acc.setdefault(key, []).extend(values.float().tolist())

    losses: dict[str, list[float]] = {}
    offset = 0
    for b in batches:
        out = model(b["pixel_values"])
        for name, value in head_losses(out, b).items():
            losses.setdefault(name, []).append(float(value))
        truth_roles = b["roles"].flatten(2).transpose(1, 2) > 0.5
        acc.setdefault("_role_pred", []).append(out["roles"] > 0)
        acc.setdefault("_role_truth", []).append(truth_roles)
        for head in ("tag", "word"):
            t, p = b[head].flatten(1), out[head].argmax(-1)
            add(f"{head}_acc", (p == t)[t > 0])
            if head == "tag":
                add("tag_false", (p > 0)[t == 0])
        if len(b["q_word"]):
            cols = out["word"][b["q_image"], :, 1 + b["q_word"]]
            add("locate_acc", cols.argmax(-1) == b["q_cell"])
        has = b["target_cell"] >= 0
        add("target_acc", out["target"][has].argmax(-1) == b["target_cell"][has])
        add("kind_acc", out["kind"].argmax(-1) == b["kind"])
        add("count_acc", out["count"].argmax(-1) == b["n_marks"].clamp(max=sc.MAX_MARKS))
        n = b["pixel_values"].shape[0]
        for k, name in enumerate(sc.POINTS):
            seen = b["point_cell"][:, k] >= 0
            if not seen.any():
                continue
            img = seen.nonzero(as_tuple=True)[0]
            pred_cell = out["point_logit"][img, :, k].argmax(-1)
            add(f"point_acc/{name}", pred_cell == b["point_cell"][img, k])
            off = out["point_off"][img, pred_cell, k]
            wh = torch.tensor([sizes[offset + int(i)] for i in img], dtype=torch.float32)
            true_cell = b["point_cell"][img, k]
            pred_xy = (_cell_xy(pred_cell, g) + off) * wh / g
            true_xy = (_cell_xy(true_cell, g) + b["point_off"][img, k]) * wh / g
            add("point_err_px", (pred_xy - true_xy).norm(dim=1))
        offset += n
    result = {"role_f1": _macro_f1(torch.cat(acc.pop("_role_pred")), torch.cat(acc.pop("_role_truth")))}
    result.update({k: float(np.mean(v)) for k, v in sorted(acc.items()) if v})
    result.update({f"loss/{k}": float(np.mean(v)) for k, v in losses.items()})
    return {k: round(v, 4) for k, v in result.items()}


def chance_levels(recipe: VisionRecipe) -> dict[str, float]:
    """What uniform guessing scores: a cell, a tag id, a word, a kind."""
    cells = recipe.grid ** 2
    return {"tag_acc": round(1 / sc.MAX_MARKS, 4), "word_acc": round(1 / len(sc.WORDS), 4),
            "locate_acc": round(1 / cells, 4), "target_acc": round(1 / cells, 4),
            "point_acc": round(1 / cells, 4), "kind_acc": round(1 / len(sc.KINDS), 4)}


def blind_baseline(recipe: VisionRecipe, seed: int, probe_batches: list[dict[str, torch.Tensor]],
                   n_fit: int) -> dict[str, float]:
    """The probe scores of the best guesses that look at no pixels: per cell the commonest tag
    and word, per word its commonest cell, per layout kind (granted) its commonest target cell,
    per point its commonest cell, the commonest kind; fitted on `n_fit` generated images. Tags
    and words sit at typical places (tag 0 near the top), so this is the bar a head must clear."""
    g2 = recipe.grid ** 2
    tag = np.zeros((g2, 1 + sc.MAX_MARKS))
    word = np.zeros((g2, 1 + len(sc.WORDS)))
    where = np.zeros((len(sc.WORDS), g2))
    target = np.zeros((len(sc.KINDS), g2))
    point = np.zeros((len(sc.POINTS), g2))
    kinds = np.zeros(len(sc.KINDS))
    for i in range(n_fit):
        t = sc.cell_targets(sc.draw_example(np.random.default_rng([seed, PROBE_STREAM + 1, i]), recipe.ui_fraction),
                            recipe.grid)
        for table, grid in ((tag, t["tag"].ravel()), (word, t["word"].ravel())):
            cells = np.nonzero(grid > 0)[0]
            table[cells, grid[cells]] += 1
        where[t["queries"], t["query_cell"]] += 1
        if t["target_cell"] >= 0:
            target[t["kind"], t["target_cell"]] += 1
        seen = t["point_cell"] >= 0
        point[np.nonzero(seen)[0], t["point_cell"][seen]] += 1
        kinds[t["kind"]] += 1
    fallback = where.sum(0).argmax()
    best_cell = np.where(where.sum(1) > 0, where.argmax(1), fallback)
    hits: dict[str, list[bool]] = {}
    for b in probe_batches:
        for name, table in (("tag", tag), ("word", word)):
            grid = b[name].flatten(1).numpy()
            img, cell = np.nonzero(grid > 0)
            hits.setdefault(f"{name}_acc", []).extend(table[cell, 1:].argmax(1) + 1 == grid[img, cell])
        hits.setdefault("locate_acc", []).extend(best_cell[b["q_word"].numpy()] == b["q_cell"].numpy())
        has = b["target_cell"].numpy() >= 0
        hits.setdefault("target_acc", []).extend(
            target[b["kind"].numpy()[has]].argmax(1) == b["target_cell"].numpy()[has])
        pc = b["point_cell"].numpy()
        for k, name in enumerate(sc.POINTS):
            seen = pc[:, k] >= 0
            hits.setdefault(f"point_acc/{name}", []).extend(point[k].argmax() == pc[seen, k])
        hits.setdefault("kind_acc", []).extend(kinds.argmax() == b["kind"].numpy())
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(hits.items()) if len(v)}


def probe_set(recipe: VisionRecipe, seed: int, processor: MagmaImageProcessor
              ) -> tuple[list[dict[str, torch.Tensor]], list[tuple[int, int]]]:
    """The fixed held-out images: half screens (layouts in turn), half scenes, in batches of 32."""
    drawn = []
    for i in range(recipe.probe_images):
        rng = np.random.default_rng([seed, PROBE_STREAM, i])
        if i % 2 == 0:
            drawn.append(sc.draw_ui(rng, kind=list(sc.UI_LAYOUTS)[(i // 2) % len(sc.UI_LAYOUTS)]))
        else:
            drawn.append(sc.draw_scene(rng))
    chunks = [drawn[i:i + 32] for i in range(0, len(drawn), 32)]
    sizes = [(d.image.shape[1], d.image.shape[0]) for d in drawn]
    return [collate(c, recipe, processor) for c in chunks], sizes


def save_tower(tower: nn.Module, out: Path, recipe: VisionRecipe, processor: MagmaImageProcessor) -> None:
    """`<out>/`: the ConvNextModel (config.json + model.safetensors) and preprocessor_config.json."""
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.bfloat16 if recipe.save_dtype == "bfloat16" else torch.float32
    plain = copy.deepcopy(tower).to(memory_format=torch.contiguous_format).to(dtype)
    plain.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def pretrain_vision(out: Path, steps: int, resume: bool = True, seed: int = 0,
                    recipe: VisionRecipe | None = None, stop_after: int | None = None) -> dict[str, float]:
    """Trains and writes `<out>/` (ConvNextModel + preprocessor_config.json, `recipe.save_dtype`
    weights), `<out>/training_log.jsonl` and `<out>/probe.json`; returns the final probe.
    The run checkpoints into `<out>/.work/` and, with `resume`, continues from there."""
    out = Path(out)
    recipe = (recipe or VisionRecipe()).sized()
    processor = processor_for(recipe)
    tower = build_tower(recipe, seed).to(memory_format=torch.channels_last)
    torch.manual_seed(seed + 1)
    model = TowerWithHeads(tower, recipe.hidden_sizes[-1])
    settings = LoopSettings(steps=steps, lr=recipe.lr, warmup=min(recipe.warmup, max(1, steps // 10)),
                            weight_decay=recipe.weight_decay, seed=seed, checkpoint_every=recipe.checkpoint_every,
                            log_every=recipe.log_every, probe_every=recipe.probe_every, stop_after=stop_after)
    weights = recipe.weights
    probe_batches, probe_sizes = probe_set(recipe, seed, processor)
    blind = blind_baseline(recipe, seed, probe_batches, n_fit=4 * recipe.probe_images)

    def make_batch(rng: np.random.Generator, step: int) -> dict[str, torch.Tensor]:
        return collate(draw_batch(rng, recipe), recipe, processor)

    def loss_fn(m: nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        losses = head_losses(m(b["pixel_values"]), b)
        total = sum(weights.get(k, 1.0) * v for k, v in losses.items())
        return total, {f"loss/{k}": round(float(v.detach()), 4) for k, v in losses.items()}

    t0 = time.time()
    rows = run_loop(model, out / ".work", settings, make_batch, loss_fn,
                    probe=lambda m: probe_metrics(m, probe_batches, recipe, probe_sizes), resume=resume,
                    desc="pretrain-vision")
    final = next(r["probe"] for r in reversed(rows) if "probe" in r)
    save_tower(model.tower, out, recipe, processor)
    (out / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    speed = _speed(rows, recipe.batch_size, time.time() - t0)
    record: dict[str, Any] = {"step": settings.last_step, "of_steps": steps, **final, "chance": chance_levels(recipe),
                              "blind": blind, **speed,
                              "recipe": recipe.model_dump(mode="json"), "seed": seed}
    (out / "probe.json").write_text(json.dumps(record, indent=1) + "\n")
    return final


def _speed(rows: list[dict[str, Any]], batch: int, wall: float) -> dict[str, float]:
    """Training speed over the last uninterrupted stretch of logged steps (elapsed_s restarts
    when a run resumes)."""
    timed = [r for r in rows if "elapsed_s" in r]
    start = len(timed) - 1
    while start > 0 and timed[start - 1]["elapsed_s"] < timed[start]["elapsed_s"]:
        start -= 1
    out: dict[str, float] = {"wall_s": round(wall, 1), "threads": torch.get_num_threads()}
    if len(timed) - start >= 2:
        a, b = timed[start], timed[-1]
        steps_per_s = (b["step"] - a["step"]) / max(1e-9, b["elapsed_s"] - a["elapsed_s"])
        out.update(steps_per_s=round(steps_per_s, 4), images_per_s=round(steps_per_s * batch, 2))
    return out
