"""Request/response records of the policy API (`/v1/act`, `/v1/chat`, `/v1/info`).

Limits live on the fields so that FastAPI rejects oversize or malformed input with a 422
before anything reaches an engine. The server adds byte/pixel limits on decoded images.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_IMAGES = 8
MAX_B64_CHARS = 12_000_000  # ~9 MB of image bytes; the body limit usually bites first
MAX_INSTRUCTION_CHARS = 2_000
MAX_MARKS = 256
MAX_DOM_ELEMENTS = 1_024
MAX_HISTORY = 32
MAX_CHUNK = 32
MAX_CHAT_TOKENS = 512

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
B64Image = Annotated[str, Field(min_length=1, max_length=MAX_B64_CHARS,
                                description="base64 PNG or JPEG (a data: URL prefix is accepted)")]


class ErrorInfo(BaseModel):
    code: str
    message: str


class MarkIn(BaseModel):
    """A mark supplied by the client: pixel box on the screenshot sent with the request."""

    model_config = ConfigDict(extra="ignore")
    id: int = Field(ge=0, lt=10_000)
    box: Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]
    text: str = Field(default="", max_length=500)
    role: str = Field(default="", max_length=64)


class DomElement(BaseModel):
    """A MiniWoB-style DOM element (ref, left, top, width, height, tag, text, value, classes, flags)."""

    model_config = ConfigDict(extra="allow")
    ref: int
    left: FiniteFloat
    top: FiniteFloat
    width: FiniteFloat = Field(ge=0)
    height: FiniteFloat = Field(ge=0)
    tag: str = Field(default="", max_length=64)
    text: str | None = Field(default="", max_length=2_000)


class ActRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter: Literal["robot", "ui"]
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)
    image: B64Image
    images: list[B64Image] | None = Field(default=None, max_length=MAX_IMAGES - 1,
                                           description="extra views after `image` (robot)")
    proprio: list[FiniteFloat] | None = Field(default=None, max_length=64)
    marks: list[MarkIn] | None = Field(default=None, max_length=MAX_MARKS)
    dom_elements: list[DomElement] | None = Field(default=None, max_length=MAX_DOM_ELEMENTS)
    history: list[Annotated[str, Field(max_length=500)]] | None = Field(default=None,
                                                                       max_length=MAX_HISTORY)
    chunk: int | None = Field(default=None, ge=1, le=MAX_CHUNK)
    dataset: str | None = Field(default=None, min_length=1, max_length=128)


class UIActResponse(BaseModel):
    kind: Literal["ui"] = "ui"
    op: str | None = None
    mark: int | None = None
    point: list[float] | None = None  # screen pixels
    text: str | None = None
    direction: str | None = None
    marks: list[dict[str, Any]] = Field(default_factory=list)
    raw: str = ""
    error: ErrorInfo | None = None


class RobotActResponse(BaseModel):
    kind: Literal["robot"] = "robot"
    action: list[float] | None = None
    chunk: list[list[float]] | None = None
    dataset: str | None = None
    tokens: int = 0  # generated tokens (action_dim x chunk when constrained)
    raw: str = ""
    error: ErrorInfo | None = None


ChatExpect = Literal["verbal", "mark", "point", "box", "traces", "ui_action"]


class ChatRequest(BaseModel):
    """Free-form generation. `text` is the user turn; one <image> per image is prepended
    unless the text already holds the placeholders."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=8_000)
    image: B64Image | None = None
    images: list[B64Image] | None = Field(default=None, max_length=MAX_IMAGES)
    max_tokens: int = Field(default=64, ge=1, le=MAX_CHAT_TOKENS)
    expect: ChatExpect = "verbal"


class ChatResponse(BaseModel):
    kind: Literal["chat"] = "chat"
    text: str
    tokens: int
    finish_reason: str
    parsed: Any = None  # codec result for expect != verbal
    error: ErrorInfo | None = None


class ActionTokensInfo(BaseModel):
    """The checkpoint's action tokens (`magma.action_tokenizer.ActionVocab`): bin b is id
    `start + b` (append) or `start + n_bins - 1 - b` (reuse_last); `binning` says which value a
    bin decodes to (uniform, or openvla as in the Magma-8B release)."""

    scheme: Literal["append", "reuse_last"]
    start: int
    n_bins: int
    binning: Literal["uniform", "openvla"]


class InfoResponse(BaseModel):
    model: str
    engine: str
    adapters: list[str]
    action_datasets: dict[str, dict[str, Any]]
    action_dim: dict[str, int]
    action_tokens: ActionTokensInfo
    default_chunk: int | None  # the server-wide chunk override; None: each dataset's trained chunk
    inference: dict[str, Any]  # the checkpoint's inference_settings.json (magma.inference_settings)
    vocab_size: int
    image_size: int
    tokens_per_view: int
    limits: dict[str, Any]



__all__ = ["ActRequest", "ActionTokensInfo", "ChatRequest", "ChatResponse", "DomElement", "ErrorInfo", "InfoResponse",
           "MarkIn", "RobotActResponse", "UIActResponse"]
