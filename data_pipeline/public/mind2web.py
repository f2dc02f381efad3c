"""Source type `mind2web`: Multimodal-Mind2Web parquet files -> UI action samples.

Each task (annotation_id) is one work item; each of its steps becomes one sample: the viewport
cut around the target (`magma.layouts.mind2web.step_view`), the target and the negative
candidates inside it drawn as marks (the renderer serving uses), the task as the instruction,
the earlier steps as history (`magma.prompts.render_history` via `ui_action_sample`), and the
answer `click "label" Mark k` / `type "value" Mark k` / `select "value" Mark k`.

A step whose row breaks the layout is left out and counted under its reason (the manifest's
"dropped"; the message, naming file and row, goes to the log); a task with no usable step is
skipped under the first reason, with the messages. The benchmark `magma eval mind2web` shows
the same viewports, marks and history (both walk tasks through `prepare_task`).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from magma.layouts.errors import LayoutError
from magma.layouts.mind2web import ViewportOptions, index_tasks, load_task, parquet_files, prepare_task
from data_pipeline.build.registry import SkipItem, SourceConfig, SourceType, WorkItem, register_source
from data_pipeline.som.rendering import mark_table, render_marks
from data_pipeline.som.samples import ui_action_sample

log = logging.getLogger(__name__)
SOURCE = "public/mind2web"


class Mind2WebParams(ViewportOptions):
    path: str  # a parquet file or a folder of them (searched recursively)
    split: str = "train"  # meta split of every sample (the files' own split: train, test_task, ...)
    dataset: str = "mind2web"  # the samples' dataset name


def _messages(errors: list[LayoutError], limit: int = 3) -> str:
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(str(e) for e in errors[:limit]) + more


@register_source("mind2web")
class Mind2WebSource(SourceType):
    """Multimodal-Mind2Web parquet rows -> one UI action sample per step (docs/data_formats.md)."""

    params_model = Mind2WebParams

    def list_items(self, cfg: SourceConfig) -> list[WorkItem]:
        p: Mind2WebParams = self.params(cfg)
        try:
            files = parquet_files(p.path)
        except LayoutError as exc:
            raise SkipItem(exc.reason, f"source {cfg.name!r}: {exc}") from None
        refs, errors = index_tasks(files)
        items = [WorkItem(f"task-{aid}", ("task", (aid, rows))) for aid, rows in refs]
        # a file that cannot be read is an item that fails, so the manifest counts it by reason
        items += [WorkItem(f"file-{Path(file).stem}-{n}", ("error", e.reason, str(e)))
                  for n, (file, e) in enumerate(errors.items())]
        return items

    def process(self, item: WorkItem, cfg: SourceConfig, context: dict[str, Any]) -> list:
        kind, *payload = item.payload
        if kind == "error":
            reason, message = payload
            raise SkipItem(reason, message)
        p: Mind2WebParams = self.params(cfg)
        task, errors = load_task(payload[0])
        samples = []
        if task is not None:
            for prepared in prepare_task(task, p):  # the params are the viewport options
                if isinstance(prepared, LayoutError):
                    errors.append(prepared)
                    continue
                step, view = prepared.step, prepared.view
                meta = {"split": p.split, "task": step.annotation_id, "action_uid": step.action_uid,
                        "website": step.website, "domain": step.domain, "operation": step.gold_operation,
                        "window": list(view.window), "marks": mark_table(view.marks)}
                samples.append(ui_action_sample(render_marks(prepared.image, view.marks), step.task,
                                                view.marks, prepared.history, prepared.action, SOURCE,
                                                meta, dataset=p.dataset, episode=step.annotation_id,
                                                frame=step.index))
        for exc in errors:
            log.warning("%s: step left out (%s) %s", cfg.name, exc.reason, exc)
        if not samples:
            if not errors:
                raise SkipItem("no_steps", f"task {item.item_id}: no rows")
            raise SkipItem(errors[0].reason, _messages(errors))
        if errors:
            samples[0].meta["_dropped"] = dict(Counter(e.reason for e in errors))
        return samples
