"""`magma backbones pretrain-lm`: the generated text says what it claims, the run is seeded and
resumes exactly, and its folder loads through `text.pretrained` like any other LM."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from train.backbones import text_corpus as tc
from train.backbones.lm import lm_tokenizer, pretrain_lm

HERE = Path(__file__).resolve().parent
MICRO = HERE / "micro_model.yaml"


@pytest.fixture(scope="module")
def tokenizer():
    return lm_tokenizer()


def _legend_lines(prompt: str) -> list[tuple[str, str, int]]:
    return [(r, t, int(i)) for r, t, i in re.findall(r'^(\w+) "(.*)" Mark (\d+)$', prompt, flags=re.M)]


@pytest.mark.parametrize("seed", range(40))
def test_ui_click_answers_the_legend_line_that_matches_the_instruction(seed):
    example = tc.ui_click(np.random.default_rng(seed))
    (prompt, _), (answer, supervised) = example
    assert supervised and answer.endswith("<|end|>")
    label, mark = re.fullmatch(r'click "(.*)" Mark (\d+)<\|end\|>', answer).groups()
    lines = _legend_lines(prompt)
    assert (label, int(mark)) in {(t, i) for _, t, i in lines}
    task = prompt.split("\n")[0]
    assert label in task  # the label is copied from the instruction, case and all
    matching_role = [i for r, t, i in lines if t == label and (r == lines[int(mark)][0])]
    assert matching_role == [int(mark)]  # exactly one line of that role carries that label


@pytest.mark.parametrize("seed", range(20))
def test_ordinal_answers_the_nth_textbox(seed):
    (prompt, _), (answer, _) = tc.ui_ordinal(np.random.default_rng(seed))
    boxes = [i for r, _, i in _legend_lines(prompt) if r == "textbox"]
    mark = int(re.fullmatch(r"click Mark (\d+)<\|end\|>", answer).group(1))
    m = re.search(r"the (\d)\w\w input textbox", prompt)
    assert mark == boxes[int(m.group(1)) - 1 if m else 0]


def test_kv_recall_answers_are_the_listed_values():
    example = tc.kv_recall(np.random.default_rng(3))
    listing = example[0][0]
    pairs = dict(re.findall(r"^(.+?)(?:: | = | -> )(.+)$", listing.split("<|user|>")[1], flags=re.M))
    questions = re.findall(r"What is (.+?)\?", "".join(t for t, s in example if not s))
    answers = [a[:-len("<|end|>")] for a, s in example if s]
    assert len(questions) == len(answers) >= 1
    for q, a in zip(questions, answers):
        assert pairs[q] == a


def test_rows_are_a_function_of_the_seed_and_supervise_answers_only(tokenizer):
    a = tc.make_rows(tokenizer, np.random.default_rng([0, 7]), 4, 128)
    b = tc.make_rows(tokenizer, np.random.default_rng([0, 7]), 4, 128)
    c = tc.make_rows(tokenizer, np.random.default_rng([0, 8]), 4, 128)
    assert all((x == y).all() for x, y in zip(a, b)) and not (a[0] == c[0]).all()
    ids, mask = a
    assert ids.shape == mask.shape == (4, 128) and 0.02 < mask.mean() < 0.8
    copy_ids, copy_mask = tc.random_token_copy(np.random.default_rng(1), 100, 200)
    assert len(copy_ids) == 200 and any(copy_mask)


def test_pretrain_resumes_exactly_and_loads_through_text_pretrained(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    def run(name: str) -> dict:
        return pretrain_lm(tmp_path / name, steps=4, batch=2, length=64, sizes=MICRO, checkpoint_every=2,
                           probe_every=4)

    straight = run("straight")
    assert set(straight) >= {"exact/ui_click", "mark_id/ui_click", "token_copy", "chance/ui_click"}

    # a run that dies right after its step-2 checkpoint, then the same command again
    class Crash(RuntimeError):
        pass

    import train.backbones.resumable as resumable

    real_write_log = resumable._write_log

    def crash_after_checkpoint(*args):  # the last thing a checkpoint does
        real_write_log(*args)
        raise Crash

    monkeypatch.setattr(resumable, "_write_log", crash_after_checkpoint)
    with pytest.raises(Crash):
        run("crashed")
    monkeypatch.setattr(resumable, "_write_log", real_write_log)
    assert (tmp_path / "crashed" / ".work" / "state.pt").exists()
    run("crashed")
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "crashed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    import json

    def losses(name: str) -> list:
        rows = [json.loads(x) for x in (tmp_path / name / "training_log.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("probe")) for r in rows]

    assert losses("crashed") == losses("straight")

    # the folder is an LM like any other: text.pretrained loads it, logits unchanged on its vocabulary
    from transformers import AutoModelForCausalLM

    from magma.build import build_model
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: t\ntext:\n  pretrained: {tmp_path / 'straight'}\nvision:\n  depths: [1, 1]\n"
                    "  hidden_sizes: [8, 16]\nimage_size: 64\n")
    model, processor = build_model(spec)
    source = AutoModelForCausalLM.from_pretrained(tmp_path / "straight", local_files_only=True, dtype=torch.float32)
    tok = processor.tokenizer
    ids = torch.tensor([tok("click \"okay\" Mark 1", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        ours = model(input_ids=ids).logits[0, :, : source.config.vocab_size]
        theirs = source(input_ids=ids).logits[0].float()
    assert torch.allclose(ours.float(), theirs, atol=1e-4)
    assert tok.convert_tokens_to_ids("<act_0>") >= source.config.vocab_size  # action tokens appended


def test_stop_after_cuts_the_same_run_and_a_later_call_continues_it(tmp_path):
    """--stop-after N writes step N's weights of the --steps schedule; without it the run goes on
    and ends where a run never cut ends."""
    import json

    from safetensors.torch import load_file

    from magma.config_io import ConfigError

    def run(name: str, stop_after=None) -> dict:
        return pretrain_lm(tmp_path / name, steps=4, batch=2, length=64, sizes=MICRO, checkpoint_every=4,
                           probe_every=4, stop_after=stop_after)

    run("straight")
    run("cut", stop_after=3)
    cut = json.loads((tmp_path / "cut" / "probe.json").read_text())
    assert (cut["step"], cut["of_steps"]) == (3, 4)
    assert [r["step"] for r in map(json.loads, (tmp_path / "cut" / "training_log.jsonl").read_text().splitlines())
            if "probe" in r] == [0, 3]
    with pytest.raises(ConfigError, match="past --stop-after 2"):
        run("cut", stop_after=2)
    run("cut")
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", sorted(tc.FAMILIES))
def test_every_family_draws_for_many_seeds(family, tokenizer):
    for seed in range(400):
        ids, mask = tc.encode_example(tokenizer, tc.FAMILIES[family](np.random.default_rng(seed)))
        assert len(ids) == len(mask) and any(mask)


class _Oracle(torch.nn.Module):
    """Predicts the true next token everywhere (or, with `wrong_digits`, a wrong digit at every
    position whose next token is a digit)."""

    def __init__(self, vocab: int, digit_ids: set[int] = frozenset(), wrong_digits: bool = False):
        super().__init__()
        self.vocab, self.digit_ids, self.wrong = vocab, digit_ids, wrong_digits

    def forward(self, input_ids):
        from types import SimpleNamespace
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        if self.wrong:
            nxt = torch.where(torch.isin(nxt, torch.tensor(sorted(self.digit_ids))), 0, nxt)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_mark_id_probe_reads_the_digits_of_the_answer(tokenizer):
    from train.backbones.lm import _answer_exact, _mark_id_accuracy
    examples = [tc.ui_click(np.random.default_rng(s)) for s in range(20)]
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    oracle = _Oracle(len(tokenizer))
    assert _mark_id_accuracy(oracle, tokenizer, examples) == 1.0 == _answer_exact(oracle, tokenizer, examples)
    wrong = _Oracle(len(tokenizer), digits, wrong_digits=True)
    assert _mark_id_accuracy(wrong, tokenizer, examples) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_gapped_recall_asks_listed_keys_and_supervises_their_values_only(seed, tokenizer):
    separators, letters, digits = tc.spelling_tokens(tokenizer)
    assert tokenizer.decode(separators[0]) == '" Mark ' and len(letters) == 52 and len(digits) == 10
    ids, mask = tc.gapped_recall(np.random.default_rng(seed), len(tokenizer), 400, separators, letters, digits)
    assert len(ids) == len(mask) == 400 and any(mask)
    # every supervised span is a value: the same span follows the same (key + separator) context
    # earlier in the row, in its listing line
    spans, start = [], None
    for i, m in enumerate(mask + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    for a, b in spans[:-1]:  # the last span may be cut by the row's end
        value, newline = ids[a:b], ids[b]  # each line ends with its block's newline id
        line_start = max(i for i in range(a) if ids[i] == newline) + 1
        context = ids[line_start:a]  # key + separator
        n = len(context)
        earlier = [j for j in range(n, line_start) if ids[j - n:j] == context and ids[j:j + len(value)] == value]
        assert earlier, (seed, a)
        assert not any(mask[j] for j in range(earlier[0], earlier[0] + len(value)))  # the listing is context


def test_recall_frac_adds_gapped_rows_and_zero_keeps_the_earlier_rows(tokenizer):
    plain = tc.make_rows(tokenizer, np.random.default_rng([0, 3]), 8, 128)
    zero = tc.make_rows(tokenizer, np.random.default_rng([0, 3]), 8, 128, recall_frac=0.0)
    assert all((x == y).all() for x, y in zip(plain, zero))
    ids, mask = tc.make_rows(tokenizer, np.random.default_rng([0, 3]), 8, 128, token_copy_frac=0.0, recall_frac=1.0)
    rng = np.random.default_rng([0, 3])
    for r in range(8):
        rng.random(), rng.random()  # the token-copy draw, then the recall draw
        row_ids, row_mask = tc.gapped_recall(rng, len(tokenizer), 128, *tc.spelling_tokens(tokenizer))
        assert ids[r].tolist() == row_ids and mask[r].tolist() == row_mask
    assert not (plain[0] == ids).all()


def test_gapped_recall_probe_reads_the_asked_values(tokenizer):
    from train.backbones.lm import _gapped_recall_accuracy
    assert _gapped_recall_accuracy(_Oracle(len(tokenizer)), tokenizer, len(tokenizer)) == 1.0
    digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    wrong = _gapped_recall_accuracy(_Oracle(len(tokenizer), digits, wrong_digits=True), tokenizer, len(tokenizer))
    assert 0.2 < wrong < 0.9  # digit values wrong, random-id values right


def test_init_from_starts_at_the_folder_weights_and_refuses_a_foreign_folder(tmp_path):
    import json

    from magma.config_io import ConfigError

    first = pretrain_lm(tmp_path / "first", steps=3, batch=2, length=64, sizes=MICRO, probe_every=3)
    pretrain_lm(tmp_path / "second", steps=2, batch=2, length=64, sizes=MICRO, probe_every=2, recall_frac=0.5,
                init_from=tmp_path / "first")
    rows = [json.loads(x) for x in (tmp_path / "second" / "training_log.jsonl").read_text().splitlines()]
    start_probe = rows[0]["probe"]
    # the second stage's step-0 probe is the first stage's final probe (bf16 weights, so within rounding)
    for key in ("token_copy", "gapped_recall", "exact/ui_ordinal"):
        assert abs(start_probe[key] - first[key]) < 0.05, key
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no model.safetensors"):
        pretrain_lm(tmp_path / "third", steps=1, batch=2, length=64, sizes=MICRO, init_from=tmp_path / "empty")


def test_words_tokenizer_holds_each_label_word_as_one_token_and_builtin_spells_them():
    words, builtin = lm_tokenizer("words"), lm_tokenizer("builtin")
    assert len(builtin) < 1100 < len(words) <= 4096 + 8

    def tokens(tok, text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    for w in ("okay", "Fringilla", "SUBMIT", "consectetur", "checkbox"):
        assert tokens(words, f'button "{w}" Mark 13') == ["button", 'Ġ"', w, '"', "ĠMark", "Ġ", "1", "3"]
        assert len(tokens(builtin, f'"{w}"')) > 3 or w == "checkbox"  # spelt in pieces
    # a word that is not in the list still tokenises (bytes), and the text round-trips
    text = 'click "zzyzx okay" Mark 4'
    assert words.decode(words(text, add_special_tokens=False)["input_ids"]) == text
    assert lm_tokenizer("words").get_vocab() == words.get_vocab()  # deterministic
    # and it is the tokenizer the shipped LM folder was written with
    from transformers import AutoTokenizer
    shipped = AutoTokenizer.from_pretrained(HERE.parents[1] / "backbones/tiny-lm", local_files_only=True)
    assert shipped.get_vocab() == words.get_vocab()


def test_an_unknown_lm_tokenizer_is_one_clear_error():
    from magma.config_io import ConfigError

    with pytest.raises(ConfigError, match="unknown LM tokenizer"):
        lm_tokenizer("sentencepiece")


def test_a_words_tokenizer_folder_loads_through_text_pretrained(tmp_path):
    from magma.build import build_model

    pretrain_lm(tmp_path / "lm", steps=1, batch=2, length=64, sizes=MICRO, probe_every=1, vocabulary="words")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: t\ntext:\n  pretrained: {tmp_path / 'lm'}\nvision:\n  depths: [1, 1]\n"
                    "  hidden_sizes: [8, 16]\nimage_size: 64\n")
    model, processor = build_model(spec)
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(tok('"dolor"', add_special_tokens=False)["input_ids"]) == ['"', "dolor", '"']
    assert tok.convert_tokens_to_ids("<act_0>") == len(lm_tokenizer("words"))  # actions appended after it
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_init_from_a_folder_of_the_other_tokenizer_names_the_mismatch(tmp_path):
    from magma.config_io import ConfigError

    pretrain_lm(tmp_path / "words", steps=1, batch=2, length=64, sizes=MICRO, probe_every=1, vocabulary="words")
    with pytest.raises(ConfigError, match="same --tokenizer"):
        pretrain_lm(tmp_path / "next", steps=1, batch=2, length=64, sizes=MICRO, init_from=tmp_path / "words")
