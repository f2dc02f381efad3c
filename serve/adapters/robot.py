"""Robot control adapter: image(s) + instruction (+ proprio) -> exactly action_dim x chunk
action tokens (constrained decoding) -> un-normalised action chunk via the checkpoint's
`action_stats.json` and `ActionTokenizer`.

Chunk and proprio follow the checkpoint's `inference_settings.json`: a request without a chunk
gets the one its dataset was trained with; another chunk, or proprio sent/left out against
training, is refused (400) naming the requested and the trained value."""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from magma.action_tokenizer import ActionStats, ActionTokenizer, ActionVocab
from magma.inference_settings import InferenceMismatch, InferenceSettings, check_chunk_override, resolve_robot_request
from magma.prompts import robot_action_prompt
from serve.api import ActRequest, ErrorInfo, RobotActResponse
from serve.engines.base import GenerationOutput, GenerationRequest
from serve.errors import ServeError


@dataclass
class RobotContext:
    dataset: str
    chunk: int
    tokenizer: ActionTokenizer


class RobotAdapter:
    def __init__(self, stats: dict[str, ActionStats], action_vocab: ActionVocab | int,
                 default_chunk: int | None = None, settings: InferenceSettings | None = None,
                 checkpoint: str = "the checkpoint"):
        """action_vocab: the checkpoint's action ids (`processor.action_vocab`, either scheme), or
        an int: one past the id of <act_255> in the append layout (the 256 ids before it).
        default_chunk: a server-wide chunk for requests without one (None: each dataset's trained
        chunk, 1 without settings); raises InferenceMismatch if a dataset was trained with another."""
        self.tokenizers = {name: ActionTokenizer(action_vocab, s) for name, s in stats.items()}
        self.settings = settings or InferenceSettings()
        self.checkpoint = checkpoint
        check_chunk_override(self.settings, default_chunk, checkpoint, flag="default chunk")
        self.default_chunk = default_chunk

    def resolve_dataset(self, name: str | None) -> str:
        if not self.tokenizers:
            raise ServeError(409, "no_action_stats",
                             "the checkpoint has no action statistics (action_stats.json is empty); "
                             "serve a checkpoint trained on robot data")
        if name is None:
            if len(self.tokenizers) > 1:
                raise ServeError(400, "dataset_required",
                                 f"set 'dataset' to one of {sorted(self.tokenizers)}")
            return next(iter(self.tokenizers))
        if name not in self.tokenizers:
            raise ServeError(400, "unknown_dataset",
                             f"dataset {name!r} has no action statistics; known: {sorted(self.tokenizers)}")
        return name

    def prepare(self, req: ActRequest, images: list[Image.Image],
                render_prompt) -> tuple[GenerationRequest, RobotContext]:
        dataset = self.resolve_dataset(req.dataset)
        try:
            chunk = resolve_robot_request(self.settings, dataset, req.chunk or self.default_chunk,
                                          req.proprio, self.checkpoint)
        except InferenceMismatch as exc:
            raise ServeError(400, exc.code, str(exc)) from None
        tok = self.tokenizers[dataset]
        user = robot_action_prompt(req.instruction, req.proprio, n_images=len(images))
        gen = GenerationRequest(render_prompt(user), images, tok.dim * chunk,
                                constrain_to_actions=True)
        return gen, RobotContext(dataset, chunk, tok)

    @staticmethod
    def respond(out: GenerationOutput, ctx: RobotContext) -> RobotActResponse:
        raw = out.text
        try:
            actions = ctx.tokenizer.decode(out.token_ids)
        except ValueError as exc:  # only possible for an unconstrained engine
            return RobotActResponse(dataset=ctx.dataset, tokens=len(out.token_ids), raw=raw,
                                    error=ErrorInfo(code="unparsable_action_tokens", message=str(exc)))
        if actions.shape[0] != ctx.chunk:
            return RobotActResponse(dataset=ctx.dataset, tokens=len(out.token_ids), raw=raw,
                                    error=ErrorInfo(code="unparsable_action_tokens",
                                                    message=f"got {actions.shape[0]} steps, expected {ctx.chunk}"))
        chunk = [[float(v) for v in row] for row in actions]
        return RobotActResponse(action=chunk[0], chunk=chunk, dataset=ctx.dataset,
                                tokens=len(out.token_ids), raw=raw)
