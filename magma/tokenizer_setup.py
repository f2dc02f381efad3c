"""Prepare any tokenizer for Magma: one function, `setup_tokenizer`, for the built-in BPE and
for a real LM's tokenizer alike (training samples and serving prompts then share its result).

What it does, append-only (every id the source tokenizer had keeps its token):

- chat template: the tokenizer's own (Llama-3, ChatML/Qwen2, Mistral, ...), else the built-in
  `<|role|>...<|end|>` one, whose role tokens it adds;
- end of turn: the first special token the template writes after an assistant's content
  (Llama-3 `<|eot_id|>`, ChatML `<|im_end|>`, Mistral `</s>`, built-in `<|end|>`), found by
  rendering a one-turn conversation; a template that cannot render an assistant turn after a
  user turn, or ends it with no special token, is refused (ConfigError naming the folder);
- pad: the tokenizer's own, else `<pad>` is added (Llama-3 and Mistral have none);
- `<image>` as a special token;
- action tokens by scheme (`tokenizer.action_tokens` in the model spec, see
  `magma.action_tokenizer`): `append` adds `<act_0>..<act_255>` as the last ids (their new
  embedding rows start at the mean of the source rows: `init_new_token_rows`), `reuse_last`
  puts the bins on the last 256 ids of the base vocabulary (`tokenizer.vocab_size`) and adds
  none.

The result is a `TokenSetup` record; `processor_kwargs()` is what `MagmaProcessor` takes, so
the checkpoint's `processor_config.json` carries the end-of-turn token and the action scheme
and every engine stops and decodes alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from magma.action_tokenizer import ACTION_SCHEMES, N_ACTION_BINS, ActionScheme, action_token
from magma.config_io import ConfigError, StrictModel
from magma.schema import IMAGE_PLACEHOLDER as IMAGE_TOKEN
from magma.tokenizer_build import CHAT_TEMPLATE, END_OF_TURN, ROLE_TOKENS, build_bpe_tokenizer

__all__ = ["TokenSetup", "setup_tokenizer", "load_tokenizer", "tokenizer_from_spec",
           "init_new_token_rows", "PAD_TOKEN"]

PAD_TOKEN = "<pad>"  # added when the tokenizer has no pad token
_PROBE_USER, _PROBE_ANSWER, _PROBE_SYSTEM = IMAGE_TOKEN + "Which mark is it?", "Mark 3", "Be brief."


class TokenSetup(StrictModel):
    """What `setup_tokenizer` resolved (recorded through `processor_kwargs` in the checkpoint)."""

    source: str  # the tokenizer folder, or "builtin"
    chat_template: Literal["own", "builtin"]
    eot_token: str
    eot_token_id: int
    pad_token: str
    pad_token_id: int
    image_token_id: int
    action_tokens: ActionScheme
    action_token_start: int  # action ids are [start, start + 256)
    source_size: int  # len(tokenizer) before setup: ids below it are the source's, unchanged
    added_tokens: list[str]  # the tokens setup added, in id order from source_size
    system_role: bool  # False: the template refuses a system turn (e.g. Mistral's)

    @property
    def new_token_ids(self) -> range:
        return range(self.source_size, self.source_size + len(self.added_tokens))

    def processor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `MagmaProcessor` (saved in processor_config.json)."""
        return {"eot_token": self.eot_token, "action_tokens": self.action_tokens,
                "action_token_start": self.action_token_start}


def _fix(where: str) -> str:
    return (f"give {where} a chat template whose assistant turn renders after a user turn with its "
            "content verbatim, followed by an end-of-turn special token (tokenizer_config.json "
            "'chat_template' or chat_template.jinja), or remove its template to use Magma's built-in one")


def _own_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one renders conversations
        template = template.get("default")
    return template or None


def _render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _check_template(tokenizer: Any, where: str) -> tuple[str, bool]:
    """(end-of-turn token, template takes a system turn) from rendering a one-turn conversation."""
    user = [{"role": "user", "content": _PROBE_USER}]
    turn = user + [{"role": "assistant", "content": _PROBE_ANSWER}]
    try:
        head = _render(tokenizer, user, True)
        full = _render(tokenizer, turn, False)
    except Exception as exc:  # jinja errors, raise_exception('...') in the template
        raise ConfigError(f"the chat template cannot render a user turn and an assistant answer "
                          f"({type(exc).__name__}: {exc})", file=where, fix=_fix(where)) from None
    if _PROBE_USER not in head:
        raise ConfigError(f"the chat template drops the user's text (renders {head[-80:]!r})",
                          file=where, fix=_fix(where))
    if not full.startswith(head):
        raise ConfigError("the chat template renders the prompt differently once the answer follows "
                          f"(prompt {head[-60:]!r}, with the answer {full[-80:]!r}); training labels "
                          "need the answer to follow the serving prompt", file=where, fix=_fix(where))
    answer = full[len(head):]
    if not answer.startswith(_PROBE_ANSWER):
        raise ConfigError(f"the chat template renders no assistant content (after the prompt it writes "
                          f"{answer[:60]!r} for {_PROBE_ANSWER!r})", file=where, fix=_fix(where))
    tail = answer[len(_PROBE_ANSWER):]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    eot = next((i for i in ids if i in special), None)
    if eot is None:
        raise ConfigError(f"the chat template ends an assistant turn with {tail!r}, which holds no "
                          "special token: generation would have nothing to stop on",
                          file=where, fix=_fix(where))
    try:
        _render(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}] + user, True)
        system_role = True
    except Exception:
        system_role = False
    return tokenizer.convert_ids_to_tokens(eot), system_role


def _add_special(tokenizer: Any, tokens: list[str]) -> list[str]:
    """Add the tokens the vocabulary lacks as special tokens; returns those added."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return missing


def _action_start(tokenizer: Any, scheme: str, where: str) -> tuple[int, list[str]]:
    acts = [action_token(i) for i in range(N_ACTION_BINS)]
    vocab = tokenizer.get_vocab()
    have = [t for t in acts if t in vocab]
    if scheme == "reuse_last":
        if have:
            raise ConfigError(f"the tokenizer already has {len(have)} <act_N> tokens, but action_tokens "
                              "reuse_last puts the action bins on the last 256 base-vocabulary ids",
                              file=where, fix="set tokenizer.action_tokens: append, or use a tokenizer "
                              "without <act_N> tokens")
        start = int(tokenizer.vocab_size) - N_ACTION_BINS
        special = set(tokenizer.all_special_ids)
        clash = [i for i in range(start, start + N_ACTION_BINS) if i in special]
        if start < 0 or clash:
            raise ConfigError(f"the last 256 base-vocabulary ids [{start}, {start + 256}) include special "
                              f"tokens {clash[:5]}; reuse_last needs 256 ordinary tokens there",
                              file=where, fix="set tokenizer.action_tokens: append")
        return start, []
    if have and len(have) != N_ACTION_BINS:
        raise ConfigError(f"the tokenizer has {len(have)} of the 256 <act_N> tokens", file=where,
                          fix="use a tokenizer with all of them or none")
    added = [] if have else _add_special(tokenizer, acts)
    start = tokenizer.convert_tokens_to_ids(acts[0])
    if tokenizer.convert_tokens_to_ids(acts[-1]) != start + N_ACTION_BINS - 1:
        raise ConfigError("the tokenizer's <act_0>..<act_255> ids are not contiguous", file=where,
                          fix="use a tokenizer without <act_N> tokens (setup appends them)")
    return start, added


def setup_tokenizer(tokenizer: Any, action_tokens: str = "append", where: str | Path = "the tokenizer",
                    source: str | None = None) -> TokenSetup:
    """Prepare `tokenizer` in place for Magma (see the module docstring); raises ConfigError
    (naming `where`) for a template that cannot express an assistant turn or an unusable
    action layout. Ids the tokenizer had are never changed (checked)."""
    where = str(where)
    if action_tokens not in ACTION_SCHEMES:
        raise ConfigError(f"action_tokens {action_tokens!r} is not a scheme", key="tokenizer.action_tokens",
                          fix=f"choose one of {', '.join(ACTION_SCHEMES)}")
    before = dict(tokenizer.get_vocab())
    source_size = len(tokenizer)
    added: list[str] = []
    own = _own_template(tokenizer)
    if own is None:  # the built-in template speaks <|role|> ... <|end|>: those become tokens
        tokenizer.chat_template = CHAT_TEMPLATE
        added += _add_special(tokenizer, [*ROLE_TOKENS, END_OF_TURN])
    else:
        tokenizer.chat_template = own
    eot, system_role = _check_template(tokenizer, where)
    if tokenizer.pad_token is None:
        added += _add_special(tokenizer, [PAD_TOKEN])
        tokenizer.pad_token = PAD_TOKEN
    # a new special token, or (already in the vocabulary) registered as one: no new id either way
    new_image = _add_special(tokenizer, [IMAGE_TOKEN])
    if not new_image:
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    added += new_image
    start, act_added = _action_start(tokenizer, action_tokens, where)
    added += act_added
    changed = [t for t, i in before.items() if tokenizer.convert_tokens_to_ids(t) != i]
    if changed or len(tokenizer) != source_size + len(added):
        raise RuntimeError(f"{where}: tokenizer setup changed source ids ({changed[:5]}) or "
                           f"added tokens out of order; this is a bug")
    builtin = own is None or own == CHAT_TEMPLATE
    return TokenSetup(source=source or where, chat_template="builtin" if builtin else "own",
                      eot_token=eot, eot_token_id=tokenizer.convert_tokens_to_ids(eot),
                      pad_token=str(tokenizer.pad_token), pad_token_id=int(tokenizer.pad_token_id),
                      image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                      action_tokens=action_tokens, action_token_start=int(start), source_size=source_size,
                      added_tokens=added, system_role=system_role)


def load_tokenizer(folder: str | Path, action_tokens: str = "append") -> tuple[Any, TokenSetup]:
    """AutoTokenizer from a local folder (nothing is downloaded), prepared by `setup_tokenizer`."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{folder} is not a local folder", key="tokenizer.path",
                          fix="nothing is downloaded at run time: download the tokenizer first (e.g. "
                          "`huggingface-cli download ORG/NAME --local-dir DIR`) and give DIR")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except Exception as exc:
        raise ConfigError(f"cannot load a tokenizer ({type(exc).__name__}: {exc})", file=path,
                          fix="the folder needs tokenizer.json or the files of its tokenizer class") from None
    return tok, setup_tokenizer(tok, action_tokens, where=path, source=str(path))


def tokenizer_from_spec(spec: Any) -> tuple[Any, TokenSetup]:
    """The tokenizer of a model spec (`ModelSpec` or its `tokenizer` section): `path` (a local
    folder), else the built-in BPE of `builtin_bpe_vocab` entries; `action_tokens` its scheme."""
    tspec = getattr(spec, "tokenizer", spec)
    scheme = getattr(tspec, "action_tokens", "append")
    if tspec.path:
        return load_tokenizer(tspec.path, scheme)
    if tspec.builtin_bpe_vocab:
        tok = build_bpe_tokenizer(tspec.builtin_bpe_vocab, action_tokens=scheme == "append")
        return tok, setup_tokenizer(tok, scheme, where="the built-in tokenizer", source="builtin")
    raise ConfigError("no tokenizer", key="tokenizer", fix="set tokenizer.builtin_bpe_vocab or tokenizer.path")


def init_new_token_rows(model: Any, n_new: int, n_source: int | None = None) -> None:
    """Rows [n_source, n_source + n_new) of the input and (if untied) output embeddings become
    the mean of rows [0, n_source), the source vocabulary's (default n_source: the rows before
    the last n_new). Call after resizing the embeddings to the prepared tokenizer; with
    ZeRO-3, inside `deepspeed.zero.GatheredParameters` of both weights (modifier_rank=0)."""
    import torch

    if n_new <= 0:
        return
    weights = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not weights[0]:
        weights.append(out.weight)
    for w in weights:
        rows = w.shape[0]
        start = rows - n_new if n_source is None else n_source
        if start <= 0 or start + n_new > rows:
            raise ValueError(f"cannot initialise rows [{start}, {start + n_new}) of a {rows}-row embedding")
        with torch.no_grad():
            w[start:start + n_new] = w[:start].float().mean(0).to(w.dtype)
