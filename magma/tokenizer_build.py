"""The tiny model's own tokenizer: a byte-level BPE built offline, deterministically.

Nothing is downloaded. The merges are learnt from an embedded corpus of the texts this stack
speaks (instructions, UI words, codec strings). Digits are split one per token so that the
normalised coordinates in marks/points/traces tokenise the same way everywhere. The special
tokens come next and the 256 action tokens `<act_0>..<act_255>` are the last ids of the
vocabulary (the action-tokenizer convention).
"""
from __future__ import annotations

import os
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from magma.action_tokenizer import N_ACTION_BINS, action_token
from magma.schema import IMAGE_PLACEHOLDER as IMAGE_TOKEN  # one image placeholder everywhere

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IMAGE_TOKEN, *ROLE_TOKENS, END_OF_TURN]

# Messages render as <|role|>content<|end|>; content may be a string or HF-style parts.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_WORDS = """
click type scroll select up down left right at into on the a an of to in with and or is
Mark mark marks point points box boxes trace traces frame frames next future move moves
Which What Where How Click Select Type Scroll Enter Press Open Close Submit Cancel OK Yes No
button link tab checkbox checkboxes text field input dialog menu option options item items
search login password username email name first last previous next page home back forward
robot arm gripper pick place reach push pull press drawer door window button-press peg
object objects cube block puck goal target table red green blue yellow black white gray
image screen screenshot video describe caption answer question shows contains there this
that these those it its you your please find locate focus enter text area label role
The Is Are Do Does One Two Three Four Five Six Seven Eight Nine Ten
""".split()


def _word_forms(words: Sequence[str]) -> list[str]:
    """Each word as pages write it (lower, Capitalised, UPPER), alone and after a space, twice, so
    that BPE merges every form into one token when the vocabulary has room."""
    forms = []
    for w in dict.fromkeys(words):
        for v in dict.fromkeys((w, w.capitalize(), w.upper())):
            forms += [v, " " + v]
    return forms * 2


def _corpus(words: Sequence[str] = ()) -> list[str]:
    lines = _word_forms(words) + [" ".join(_WORDS)]
    for i in range(0, len(_WORDS), 7):
        lines.append(" ".join(_WORDS[i:i + 7]))
    for w in _WORDS:
        lines += [f"Click on the {w} button.", f"Which mark is the {w}?", "click Mark 3 at (12,345)",
                  f'type "{w}" Mark 5', "Mark 2: (10,20) (30,40); Mark 7: (50,60)", f"{w}, {w}."]
    return lines * 3


def build_bpe_tokenizer(vocab_size: int = 1024, action_tokens: bool = True,
                        words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Deterministic byte-level BPE (BPE part has at most `vocab_size` entries incl. the 256 bytes).

    `action_tokens=False` leaves out `<act_0>..<act_255>` (the `reuse_last` action scheme puts
    the bins on the last ids of the BPE part instead). `words` joins the merge corpus in every
    casing, so that with a large enough `vocab_size` each is one token (as common words are in a
    real LM's vocabulary); the default corpus alone spells most labels a character at a time."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # deterministic merge order
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(_corpus(words), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    if action_tokens:
        tok.add_special_tokens([action_token(i) for i in range(N_ACTION_BINS)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=END_OF_TURN,
                                   pad_token=PAD, unk_token=None, model_max_length=4096,
                                   padding_side="right")
    fast.chat_template = CHAT_TEMPLATE
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *ROLE_TOKENS, END_OF_TURN]},
                            replace_extra_special_tokens=False) if _accepts_replace(fast) else \
        fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN, *ROLE_TOKENS, END_OF_TURN]})
    if action_tokens:
        _check_layout(fast)
    return fast


def _accepts_replace(fast: PreTrainedTokenizerFast) -> bool:
    import inspect
    return "replace_extra_special_tokens" in inspect.signature(fast.add_special_tokens).parameters


def _check_layout(tok: PreTrainedTokenizerFast) -> None:
    n = len(tok)
    first = tok.convert_tokens_to_ids(action_token(0))
    last = tok.convert_tokens_to_ids(action_token(N_ACTION_BINS - 1))
    if first != n - N_ACTION_BINS or last != n - 1:
        raise RuntimeError(f"action tokens must be the last {N_ACTION_BINS} ids "
                           f"(got {first}..{last} of {n})")
