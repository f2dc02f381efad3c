"""Policy = an engine + the shared transforms (processor prompts, codecs, action tokenizer).

    policy = Policy.from_checkpoint("ckpt/", engine="hf")
    policy.act({"adapter": "robot", "instruction": "...", "image": b64png})  # -> response dict
    await policy.aact(...)                                                    # same, async

`act`/`chat` accept the API models or plain dicts, return plain dicts (the JSON the server
sends) and raise `ServeError` for bad input; model text that does not parse comes back as a
typed `error` field, never an exception.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from magma import codecs
from magma.action_tokenizer import ACTION_STATS_FILE, load_action_stats
from magma.checkpoint import CheckpointError, load_inference_settings, verify_checkpoint
from magma.inference_settings import InferenceSettings, check_chunk_override
from magma.schema import IMAGE_PLACEHOLDER as IMAGE_TOKEN
from serve.adapters.robot import RobotAdapter
from serve.adapters.ui import prepare_ui, ui_response
from serve.api import ActRequest, ChatRequest, ChatResponse, ErrorInfo
from serve.engines.base import Engine, GenerationOutput, GenerationRequest
from serve.errors import ServeError
from serve.images import ImageLimits, decode_image


def _validate(model_cls, data):
    if isinstance(data, model_cls):
        return data
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ServeError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, codecs.ParseError):
        return None
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _strip_placeholders(req: ActRequest) -> ActRequest:
    """Client text must not smuggle <image> placeholders into an act prompt."""
    def clean(t):
        return t.replace(IMAGE_TOKEN, "") if isinstance(t, str) else t

    req = req.model_copy(deep=True)
    req.instruction = clean(req.instruction)
    req.history = [clean(h) for h in req.history] if req.history else req.history
    for m in req.marks or []:
        m.text, m.role = clean(m.text), clean(m.role)
    for d in req.dom_elements or []:
        d.text, d.tag = clean(d.text), clean(d.tag)
    return req


CHAT_PARSERS: dict[str, Callable[[str], Any]] = {
    "mark": codecs.parse_mark, "point": codecs.parse_point, "box": codecs.parse_box,
    "traces": codecs.parse_traces, "ui_action": codecs.parse_ui_action,
}


class Policy:
    def __init__(self, engine: Engine, processor, action_stats: dict, model_name: str = "magma",
                 default_chunk: int | None = None, image_limits: ImageLimits = ImageLimits(),
                 config: Any = None, inference: InferenceSettings | None = None, source: str | None = None):
        """`inference`: the checkpoint's settings (magma.inference_settings); robot requests are
        checked against them. `default_chunk` overrides the trained chunk and must equal it.
        `source`: the checkpoint folder, as error messages name it (default `model_name`)."""
        self.engine = engine
        self.processor = processor
        self.action_stats = action_stats
        self.model_name = model_name
        self.image_limits = image_limits
        self.config = config
        self.inference = inference or InferenceSettings()
        self.robot = RobotAdapter(action_stats, processor.action_vocab, default_chunk,
                                  self.inference, source or model_name)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, engine: str | Engine = "hf", default_chunk: int | None = None,
                        **engine_kwargs: Any) -> "Policy":
        """Raises CheckpointError for an unusable folder and InferenceMismatch (a ValueError) when
        `default_chunk` is not the chunk the checkpoint was trained with."""
        folder = Path(folder)
        verify_checkpoint(folder)
        stats = load_action_stats(folder) if (folder / ACTION_STATS_FILE).exists() else {}
        inference = load_inference_settings(folder)
        check_chunk_override(inference, default_chunk, str(folder), flag="default chunk")  # before an engine starts
        if engine == "hf":
            from serve.engines.hf import HFEngine
            eng: Engine = HFEngine.from_checkpoint(folder, **engine_kwargs)
            processor, config = eng.processor, eng.model.config
        else:
            import magma
            magma.register()  # the Auto classes must know our architecture before loading
            from transformers import AutoConfig, AutoProcessor
            try:
                processor = AutoProcessor.from_pretrained(folder)
                config = AutoConfig.from_pretrained(folder)
            except Exception as exc:
                raise CheckpointError(f"{folder}: cannot load processor ({exc})") from None
            if engine == "vllm":
                from serve.engines.vllm_engine import VLLMEngine
                eng = VLLMEngine.from_checkpoint(folder, **engine_kwargs)
            elif isinstance(engine, str):
                raise ValueError(f"unknown engine {engine!r}; choose hf or vllm")
            else:
                eng = engine
        return cls(eng, processor, stats, model_name=folder.name, default_chunk=default_chunk,
                   config=config, inference=inference, source=str(folder))

    # ------------------------------------------------------------------ prompts
    def render_prompt(self, user_text: str, n_images: int = 0) -> str:
        """Chat prompt for a user turn; `magma.prompts` texts already hold their placeholders."""
        return self.processor.render_prompt(user_text, n_images)

    @property
    def max_positions(self) -> int | None:
        text = self.config.get_text_config() if self.config is not None else None
        return getattr(text, "max_position_embeddings", None)

    def _check_placeholders(self, gen: GenerationRequest) -> GenerationRequest:
        """Reject what would fail inside the engine: one bad row would fail its whole batch."""
        if gen.prompt.count(IMAGE_TOKEN) != len(gen.images):
            raise ServeError(400, "image_count_mismatch",
                             f"prompt has {gen.prompt.count(IMAGE_TOKEN)} image placeholders "
                             f"for {len(gen.images)} images")
        limit = self.max_positions
        if limit:
            n_text = len(self.processor.prompt_to_ids(gen.prompt))
            n_image = sum(self.processor.num_image_tokens(im.width, im.height) - 1 for im in gen.images)
            total = n_text + n_image + gen.max_new_tokens
            if total > limit:
                raise ServeError(400, "prompt_too_long",
                                 f"prompt ({n_text + n_image} tokens) + {gen.max_new_tokens} new tokens "
                                 f"exceeds the model's {limit} positions; shorten the text or use fewer images")
        return gen

    def _images(self, main: str | bytes | None, extra: list | None) -> list:
        raw = ([main] if main is not None else []) + list(extra or [])
        return [decode_image(d, self.image_limits, field="image" if i == 0 else f"images[{i - 1}]")
                for i, d in enumerate(raw)]

    # ------------------------------------------------------------------ act
    def prepare_act(self, request: ActRequest | dict) -> tuple[GenerationRequest, Callable[[GenerationOutput], dict]]:
        req = _strip_placeholders(_validate(ActRequest, request))
        images = self._images(req.image, req.images)
        if req.adapter == "ui":
            if len(images) != 1:
                raise ServeError(400, "too_many_images", "the ui adapter takes one screenshot")
            gen, ctx = prepare_ui(req, images[0], self.render_prompt, self.inference.ui)
            return self._check_placeholders(gen), lambda out: ui_response(out, ctx).model_dump()
        gen, rctx = self.robot.prepare(req, images, self.render_prompt)
        return self._check_placeholders(gen), lambda out: self.robot.respond(out, rctx).model_dump()

    async def aact(self, request: ActRequest | dict) -> dict:
        gen, finish = self.prepare_act(request)
        return finish((await self.engine.generate([gen]))[0])

    def act(self, request: ActRequest | dict) -> dict:
        gen, finish = self.prepare_act(request)
        return finish(self.engine.generate_sync([gen])[0])

    # ------------------------------------------------------------------ chat
    def prepare_chat(self, request: ChatRequest | dict) -> tuple[GenerationRequest, Callable[[GenerationOutput], dict]]:
        req = _validate(ChatRequest, request)
        images = self._images(req.image, req.images)
        placeholders = req.text.count(IMAGE_TOKEN)
        if placeholders and placeholders != len(images):
            raise ServeError(400, "image_count_mismatch",
                             f"text has {placeholders} {IMAGE_TOKEN} placeholders but {len(images)} images were sent")
        prompt = self.render_prompt(req.text, 0 if placeholders else len(images))
        gen = self._check_placeholders(GenerationRequest(prompt, images, req.max_tokens))

        def finish(out: GenerationOutput) -> dict:
            text = out.text.strip()
            resp = ChatResponse(text=text, tokens=len(out.token_ids), finish_reason=out.finish_reason)
            if req.expect != "verbal":
                parsed = CHAT_PARSERS[req.expect](text)
                if isinstance(parsed, codecs.ParseError):
                    err = parsed.to_dict()
                    resp.error = ErrorInfo(code=err["code"], message=err["message"])
                else:
                    resp.parsed = _jsonable(parsed)
            return resp.model_dump()

        return gen, finish

    async def achat(self, request: ChatRequest | dict) -> dict:
        gen, finish = self.prepare_chat(request)
        return finish((await self.engine.generate([gen]))[0])

    def chat(self, request: ChatRequest | dict) -> dict:
        gen, finish = self.prepare_chat(request)
        return finish(self.engine.generate_sync([gen])[0])

    # ------------------------------------------------------------------ info
    def info(self) -> dict:
        ip = self.processor.image_processor
        return {
            "model": self.model_name, "engine": self.engine.name, "adapters": ["robot", "ui"],
            "action_datasets": {k: dataclasses.asdict(v) for k, v in self.action_stats.items()},
            "action_dim": {k: v.dim for k, v in self.action_stats.items()},
            "action_tokens": self.processor.action_vocab.to_dict(),
            "default_chunk": self.robot.default_chunk,
            "inference": self.inference.model_dump(mode="json"),
            "vocab_size": len(self.processor.tokenizer),
            "image_size": int(ip.image_size), "tokens_per_view": int(self.processor.tokens_per_view),
            "limits": {"max_image_bytes": self.image_limits.max_bytes,
                       "max_image_pixels": self.image_limits.max_pixels},
        }

    def close(self) -> None:
        self.engine.close()
