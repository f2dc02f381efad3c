"""Params of the Set-of-Mark source types (a mix config's `params:` for each source).

Each model is the source type's `params_model`: `magma data build` validates every source's
params with it before any work starts, so an unknown key or a bad value fails once, naming
the source, the key and the allowed keys. Defaults are the documented ones
(docs/data_formats.md).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from magma.config_io import StrictModel

from data_pipeline.som.samples import SOM_TASKS


def _known_tasks(tasks: list[str]) -> list[str]:
    unknown = sorted(set(tasks) - set(SOM_TASKS))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {', '.join(SOM_TASKS)}")
    return tasks


Tasks = Annotated[list[str], AfterValidator(_known_tasks)]  # a subset of SOM_TASKS


class VerbalParams(StrictModel):
    path: str  # a jsonl file or a folder of them
    caption_prompt: str = "Describe the image."  # the user turn of {"image", "caption"} records


class SomOptions(StrictModel):
    """Sample settings shared by the sources that mark an image (images, html, ui_annotations)."""

    path: str
    tasks: Tasks = Field(default_factory=lambda: list(SOM_TASKS))
    per_task: int = Field(default=2, ge=0)  # samples per task per image
    legend: bool = False  # list the marks in the prompt
    style: Literal["box", "dot"] = "box"  # how marks are drawn
    split: str = "train"

    def sample_options(self) -> dict[str, Any]:
        """The keyword arguments `som_samples` takes from these params."""
        return {"tasks": self.tasks, "per_task": self.per_task, "legend": self.legend}


class ImagesParams(SomOptions):
    max_marks: int = Field(default=16, ge=1)  # region proposals per image
    sam_checkpoint: str | None = None  # SAM instead of OpenCV proposals


class HtmlParams(SomOptions):
    viewport: tuple[int, int] = (1280, 800)  # [width, height] of the page screenshot
    timeout_s: float = Field(default=15.0, gt=0)  # per page load


class UIAnnotationsParams(SomOptions):
    pass


class MiniWoBParams(StrictModel):
    path: str  # episode root (magma.episode format)
    som_per_step: int = Field(default=1, ge=0)  # SoM samples per task per step (0: none)
    tasks: Tasks = Field(default_factory=lambda: ["grounding", "referring"])
    only_success: bool = True  # skip episodes recorded as failed
    actions: bool = True  # false: a SoM-only source of the same episodes
    dataset: str | None = None  # dataset name in the samples (default: the episode's env)
