"""Small offline tokenizers in the shape of real LM tokenizers (import as `fake_tokenizers`).

Each builder trains a tiny BPE with the `tokenizers` library on an embedded corpus (nothing is
downloaded; the same call gives the same ids) and wraps it the way the published tokenizer is
laid out, with the chat template text copied from the published `tokenizer_config.json`:

- `llama3_tokenizer`: byte-level BPE with Llama-3's split regex, the 256 special tokens after
  the base vocabulary (`<|begin_of_text|>` .. `<|eot_id|>` .. reserved), no pad token, the
  Meta-Llama-3-8B-Instruct chat template (turns end with `<|eot_id|>`).
- `qwen2_tokenizer`: byte-level BPE with Qwen2's regex (one digit per token) and NFC,
  `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` after the base vocabulary, pad
  `<|endoftext|>`, the Qwen2-Instruct ChatML template.
- `mistral_tokenizer`: SentencePiece-style BPE (`▁` metaspace, byte fallback; `<unk>`, `<s>`,
  `</s>` at ids 0-2), no pad token, the Mistral-7B-Instruct `[INST]` template (user/assistant
  only: a system turn raises).
- `plain_tokenizer`: a byte-level BPE with an eos and no chat template at all.

`save(tok, folder)` writes the folder a `tokenizer.path` (or an LM folder) points at.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Chat templates as published (tokenizer_config.json "chat_template"), verbatim.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)

# The pre-tokenizer split patterns of the published tokenizer.json files.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3's 256 special tokens, in id order after the base vocabulary.
LLAMA3_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(4)]
                   + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
                   + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = """
click type scroll select up down left right at into on the a an of to in with and or is Mark
point box trace frame next move Which What Where How Click Select Type Enter OK Yes No button
link text field input menu option search login name page robot arm gripper pick place push
open close drawer door cube block red green blue image screen describe answer question shows
this that it you please find the action should take What is in top left corner Describe
system user assistant helpful You are agent can see talk and act hello world
""".split()


def _corpus() -> list[str]:
    lines = [" ".join(_WORDS[i:i + 9]) for i in range(0, len(_WORDS), 3)]
    for w in _WORDS:
        lines += [f"Click on the {w} button.", f"What is the {w}?", "Mark 3 at (12,345)",
                  f"type \"{w}\" into Mark 5", "(10,20) (30,40); 0.25 -0.5 1.0", f"{w}, {w}.\n"]
    return lines * 2


def _train(tok: Tokenizer, vocab_size: int, alphabet: list[str], special: list[str]) -> Tokenizer:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # deterministic merge order
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=alphabet, special_tokens=special)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def _byte_level(split: str, vocab_size: int, nfc: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, ignore_merges=True))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return _train(tok, vocab_size, pre_tokenizers.ByteLevel.alphabet(), [])


def llama3_tokenizer(vocab_size: int = 600, eos_token: str = "<|eot_id|>") -> PreTrainedTokenizerFast:
    """Llama-3(-Instruct) layout: base BPE ids [0, vocab_size), then the 256 specials; no pad.
    `eos_token="<|end_of_text|>"` gives the base model's tokenizer (eos is not the end of turn)."""
    tok = _byte_level(LLAMA3_SPLIT, vocab_size)
    tok.add_special_tokens(LLAMA3_SPECIALS)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos_token,
                                   model_max_length=8192, clean_up_tokenization_spaces=False)
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def qwen2_tokenizer(vocab_size: int = 600, instruct: bool = True) -> PreTrainedTokenizerFast:
    """Qwen2 layout: base BPE, then `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`; pad
    `<|endoftext|>`; eos `<|im_end|>` (Instruct) or `<|endoftext|>` (base); no bos."""
    tok = _byte_level(QWEN2_SPLIT, vocab_size, nfc=True)
    tok.add_special_tokens(QWEN2_SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>" if instruct else "<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=32768,
                                   clean_up_tokenization_spaces=False)
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = QWEN2_CHAT_TEMPLATE
    return fast


def mistral_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """Mistral-7B-Instruct layout: `<unk>` `<s>` `</s>` at 0-2, the 256 `<0xNN>` byte tokens,
    then merges (SentencePiece style, `▁` for spaces); no pad token."""
    specials = ["<unk>", "<s>", "</s>"]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    _train(trained, vocab_size, [], specials + [f"<0x{i:02X}>" for i in range(256)])  # ids 0..258
    spec = json.loads(trained.to_str())
    spec["model"].update(byte_fallback=True, fuse_unk=True)
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in specials]  # bytes are vocab
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=32768, clean_up_tokenization_spaces=False)
    fast.chat_template = MISTRAL_CHAT_TEMPLATE
    return fast


def plain_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE with eos `<|endoftext|>` and no chat template (a base LM's tokenizer)."""
    tok = _byte_level(LLAMA3_SPLIT, vocab_size)
    tok.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   model_max_length=2048)


BUILDERS = {"llama3": llama3_tokenizer, "qwen2": qwen2_tokenizer, "mistral": mistral_tokenizer,
            "plain": plain_tokenizer}


def save(tok: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """tokenizer.json + tokenizer_config.json (+ chat template) as `save_pretrained` writes them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return folder


def write_tokenizer(kind: str, folder: str | Path, **kwargs) -> Path:
    """`save(BUILDERS[kind](**kwargs), folder)`."""
    return save(BUILDERS[kind](**kwargs), folder)
