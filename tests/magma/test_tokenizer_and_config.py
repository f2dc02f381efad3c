import pytest

from magma.action_tokenizer import action_token
from magma.config_io import ConfigError
from magma.model_config import load_model_spec
from magma.tokenizer_build import build_bpe_tokenizer


def test_tokenizer_is_deterministic_and_ends_with_action_tokens():
    a, b = build_bpe_tokenizer(512), build_bpe_tokenizer(512)
    assert a.get_vocab() == b.get_vocab()
    n = len(a)
    assert a.convert_tokens_to_ids(action_token(0)) == n - 256
    assert a.convert_tokens_to_ids(action_token(255)) == n - 1
    text = "click Mark 12 at (305,917)"
    ids = a(text, add_special_tokens=False)["input_ids"]
    assert a.decode(ids) == text
    # digits are single tokens, so coordinates tokenise the same way everywhere
    assert [a.decode([i]) for i in a("917", add_special_tokens=False)["input_ids"]] == ["9", "1", "7"]
    acts = a("<act_3><act_250>", add_special_tokens=False)["input_ids"]
    assert acts == [n - 256 + 3, n - 256 + 250]


def test_unknown_config_keys_are_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(open("configs/model/tiny.yaml").read() + "\nlearning_rat: 3\n")
    with pytest.raises(ConfigError, match="learning_rat"):
        load_model_spec(p)
    p.write_text("name: x\nvision: {depths: [1], hidden_sizes: [8, 16]}\ntext: {hidden_size: 8, "
                 "intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 3}\n")
    with pytest.raises(ConfigError, match="same length|divisible"):
        load_model_spec(p)
    with pytest.raises(ConfigError, match="model config not found"):
        load_model_spec(tmp_path / "missing.yaml")
