"""The real-tokenizer path (`magma.tokenizer_setup`) on tokenizers in the shape of Llama-3,
Qwen2/ChatML and Mistral (tests/fake_tokenizers.py), a template-less one and the built-in BPE:
end of turn and pad resolved, source ids unchanged, `<image>` special, training prompt tokens
== serving prompt tokens, labels ending at the end of turn, and both action-token schemes
(append / reuse_last) round-tripping through `encode_sample` and the action tokenizer."""
from __future__ import annotations

import fake_tokenizers as ft
import numpy as np
import pytest
import torch
from PIL import Image

from magma import prompts
from magma.action_tokenizer import ActionStats, ActionTokenizer, ActionVocab
from magma.config_io import ConfigError
from magma.image_processing_magma import MagmaImageProcessor
from magma.processing_magma import IGNORE_INDEX, MagmaProcessor
from magma.schema import Sample, Turn
from magma.tokenizer_build import build_bpe_tokenizer
from magma.tokenizer_setup import init_new_token_rows, load_tokenizer, setup_tokenizer, tokenizer_from_spec

EXPECTED = {  # fixture: (end of turn, pad after setup, pad added)
    "llama3": ("<|eot_id|>", "<pad>", True),
    "qwen2": ("<|im_end|>", "<|endoftext|>", False),
    "mistral": ("</s>", "<pad>", True),
    "plain": ("<|end|>", "<pad>", True),
}
SCHEMES = ("append", "reuse_last")
STATS = ActionStats.from_actions(np.random.default_rng(0).uniform(-2, 3, size=(400, 4)))


def _prepared(kind: str, scheme: str):
    tok = ft.BUILDERS[kind]()
    return tok, setup_tokenizer(tok, scheme, where=f"fake {kind}")


def _processor(tok, setup) -> MagmaProcessor:
    return MagmaProcessor(MagmaImageProcessor(image_size=64), tok, tokens_per_view=4, **setup.processor_kwargs())


def _img(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _starts(labels: list[int]) -> list[int]:
    return [i for i in range(len(labels)) if labels[i] != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX)]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_setup_resolves_eot_pad_image_and_keeps_source_ids(kind, scheme):
    source = ft.BUILDERS[kind]()
    tok, setup = _prepared(kind, scheme)
    eot, pad, pad_added = EXPECTED[kind]
    assert (setup.eot_token, setup.pad_token, tok.pad_token) == (eot, pad, pad)
    assert setup.eot_token_id == tok.convert_tokens_to_ids(eot)
    assert ("<pad>" in setup.added_tokens) == pad_added
    assert setup.chat_template == ("builtin" if kind == "plain" else "own")
    # every source token keeps its id; setup only appended, in the recorded order
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in source.get_vocab().items())
    assert tok.convert_ids_to_tokens(list(setup.new_token_ids)) == setup.added_tokens
    assert setup.source_size == len(source) and len(tok) == len(source) + len(setup.added_tokens)
    text = "Click on the OK button at (12,345)."
    assert tok(text, add_special_tokens=False)["input_ids"] == source(text, add_special_tokens=False)["input_ids"]
    # <image> is one special token wherever it stands
    ids = tok("a<image>b", add_special_tokens=False)["input_ids"]
    assert ids.count(setup.image_token_id) == 1
    assert tok.added_tokens_decoder[setup.image_token_id].special
    # the action ids
    if scheme == "append":
        assert setup.action_token_start == len(tok) - 256
        assert tok.convert_ids_to_tokens(setup.action_token_start) == "<act_0>"
    else:  # the last 256 ids of the base vocabulary, no new rows for them
        assert setup.action_token_start == source.vocab_size - 256
        assert not any(t.startswith("<act_") for t in setup.added_tokens)


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_training_prompt_is_the_serving_prompt_and_labels_end_at_the_eot(kind):
    tok, setup = _prepared(kind, "append")
    proc = _processor(tok, setup)
    user = prompts.grounding_prompt('the button "Submit"', [])
    sample = Sample(id="s", images=[_img(1)], source="test",
                    conversation=[Turn("user", user), Turn("assistant", "Mark 0", "spatial")])
    enc = proc.encode_sample(sample)
    (start,) = _starts(enc["labels"])
    served = proc(text=proc.render_prompt(user), images=[Image.fromarray(sample.images[0])])
    assert enc["input_ids"][:start] == served["input_ids"][0].tolist()
    labelled = [t for t in enc["labels"] if t != IGNORE_INDEX]
    assert labelled == proc.text_to_ids("Mark 0") + [setup.eot_token_id]
    assert labelled[-1] == proc.eot_token_id == tok.convert_tokens_to_ids(EXPECTED[kind][0])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["llama3", "qwen2", "mistral", "plain", "builtin"])
def test_action_samples_encode_to_the_scheme_ids_and_decode_within_half_a_bin(kind, scheme):
    if kind == "builtin":
        tok = build_bpe_tokenizer(1024, action_tokens=scheme == "append")
        setup = setup_tokenizer(tok, scheme, where="builtin")
    else:
        tok, setup = _prepared(kind, scheme)
    proc = _processor(tok, setup)
    vocab = proc.action_vocab
    assert vocab == ActionVocab(scheme, setup.action_token_start)
    actions = np.random.default_rng(3).uniform(STATS.q01, STATS.q99, size=(2, 4))
    text = ActionTokenizer(1 << 20, STATS).render(actions)  # what the data pipeline writes (no vocab)
    sample = Sample(id="a", images=[_img(2)], source="robot/x", dataset="x",
                    conversation=[Turn("user", prompts.robot_action_prompt("open the drawer")),
                                  Turn("assistant", text, "action")])
    enc = proc.encode_sample(sample)
    body = [t for t in enc["labels"] if t != IGNORE_INDEX][:-1]
    codec = ActionTokenizer(vocab, STATS)
    assert body == codec.encode(actions)
    assert all(t in vocab.ids for t in body)
    if scheme == "reuse_last":  # OpenVLA/Magma order: the lowest bin is the last id
        assert vocab.end == tok.vocab_size
        assert codec.encode(np.asarray(STATS.q01)[None] - 1) == [vocab.end - 1] * 4
        assert codec.encode(np.asarray(STATS.q99)[None] + 1) == [vocab.end - 256] * 4
    back = codec.decode(body)
    assert np.all(np.abs(back - actions) <= codec.max_abs_error() + 1e-9)
    # generated ids read back as the same text under either scheme
    assert proc.decode_actions(body) == text


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_record_travels_with_the_processor_folder(tmp_path, scheme):
    import magma  # noqa: F401  (Auto* registration)
    from transformers import AutoProcessor

    tok, setup = _prepared("llama3", scheme)
    _processor(tok, setup).save_pretrained(tmp_path)
    back = AutoProcessor.from_pretrained(tmp_path)
    assert (back.eot_token, back.action_tokens, back.action_token_start) == \
        (setup.eot_token, scheme, setup.action_token_start)
    assert back.action_vocab == ActionVocab(scheme, setup.action_token_start)
    assert back.eot_token_id == setup.eot_token_id and back.tokenizer.pad_token == "<pad>"
    assert back.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                    add_generation_prompt=True).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_the_builtin_tokenizer_is_unchanged():
    from magma.model_config import load_model_spec

    tok, setup = tokenizer_from_spec(load_model_spec("configs/model/tiny.yaml"))
    assert tok.get_vocab() == build_bpe_tokenizer(1024).get_vocab()
    assert setup.added_tokens == [] and setup.chat_template == "builtin"
    assert (setup.eot_token, setup.pad_token, setup.action_token_start) == ("<|end|>", "<pad>", len(tok) - 256)


def test_a_template_without_a_system_role_is_recorded_and_refused_at_use():
    tok, setup = _prepared("mistral", "append")
    assert setup.system_role is False
    proc = _processor(tok, setup)
    assert proc.render_prompt("hi", 0) == "<s>[INST] hi [/INST]"
    with pytest.raises(ValueError, match="no system turn"):
        proc.render_prompt("hi", 0, system="Be brief.")


BAD_TEMPLATES = {
    "raises on the assistant": ("{% for m in messages %}{% if m['role'] == 'assistant' %}"
                                "{{ raise_exception('no assistant') }}{% endif %}{{ m['content'] }}{% endfor %}",
                                "cannot render a user turn and an assistant answer"),
    "drops the assistant": ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|im_start|>' + m['content'] "
                            "+ '<|im_end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}",
                            "renders the prompt differently|renders no assistant content"),
    "no end token": ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
                     "{% if add_generation_prompt %}assistant: {% endif %}", "holds no special token"),
}


@pytest.mark.parametrize("name", list(BAD_TEMPLATES))
def test_a_template_that_cannot_express_an_assistant_turn_is_one_config_error(tmp_path, name):
    template, message = BAD_TEMPLATES[name]
    tok = ft.qwen2_tokenizer()
    tok.chat_template = template
    folder = ft.save(tok, tmp_path / "lm")
    with pytest.raises(ConfigError, match=message) as err:
        load_tokenizer(folder)
    assert str(folder) in str(err.value) and "chat template" in str(err.value)


def test_a_hub_id_or_an_action_token_clash_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a local folder.*nothing is downloaded"):
        load_tokenizer("meta-llama/Meta-Llama-3-8B")
    folder = tmp_path / "with_acts"
    build_bpe_tokenizer(512).save_pretrained(folder)
    with pytest.raises(ConfigError, match="already has 256 <act_N> tokens"):
        load_tokenizer(folder, "reuse_last")
    with pytest.raises(ConfigError, match="tokenizer.action_tokens"):
        setup_tokenizer(ft.qwen2_tokenizer(), "prepend")


def test_new_token_rows_start_at_the_mean_of_the_source_rows():
    torch.manual_seed(0)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)

        def get_input_embeddings(self):
            return self.emb

        def get_output_embeddings(self):
            return self.head

    lm = LM()
    src_in, src_out = lm.emb.weight[:7].clone(), lm.head.weight[:7].clone()
    init_new_token_rows(lm, 2, n_source=7)  # rows 7, 8 new; row 9 (padding rows of the source) kept
    assert torch.allclose(lm.emb.weight[7:9], src_in.mean(0).expand(2, 4))
    assert torch.allclose(lm.head.weight[7:9], src_out.mean(0).expand(2, 4))
    assert torch.equal(lm.emb.weight[:7], src_in)
    before = lm.emb.weight[9].clone()
    init_new_token_rows(lm, 1)  # default: the last row, from the mean of all the others
    assert torch.allclose(lm.emb.weight[9], lm.emb.weight[:9].mean(0)) and not torch.equal(before, lm.emb.weight[9])
