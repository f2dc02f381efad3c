import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from magma.action_tokenizer import (ActionStats, ActionTokenizer, load_action_stats,
                                    save_action_stats)
from magma.codecs import ParseError

VOCAB = 1038


def _tokenizer(dim=7, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(1000, dim)) * rng.uniform(0.1, 3, size=dim) + rng.normal(size=dim)
    return ActionTokenizer(VOCAB, ActionStats.from_actions(data))


@given(st.integers(1, 4), st.data())
@settings(max_examples=100, deadline=None)
def test_decode_is_within_half_a_bin(chunk, data):
    tok = _tokenizer()
    lo, hi = np.array(tok.stats.q01), np.array(tok.stats.q99)
    unit = data.draw(arrays(np.float64, (chunk, tok.dim), elements=st.floats(0, 1)))
    actions = lo + unit * (hi - lo)
    ids = tok.encode(actions)
    assert len(ids) == chunk * tok.dim
    assert all(VOCAB - 256 <= i < VOCAB for i in ids)
    back = tok.decode(ids)
    assert back.shape == actions.shape
    assert np.all(np.abs(back - actions) <= tok.max_abs_error() + 1e-9)
    # the text form decodes to the same actions
    assert np.allclose(tok.parse(tok.render(actions), chunk=chunk), back)


def test_out_of_range_actions_clip_to_the_end_bins():
    tok = _tokenizer(dim=2)
    ids = tok.encode(np.array([[1e6, -1e6]]))
    assert ids == [VOCAB - 1, VOCAB - 256]


def test_logits_mask_allows_only_action_ids():
    tok = _tokenizer()
    mask = tok.logits_mask()
    assert mask.sum() == 256 and mask[-256:].all() and not mask[:-256].any()


def test_parse_errors_are_typed():
    tok = _tokenizer(dim=2)
    assert isinstance(tok.parse("click Mark 3"), ParseError)
    assert isinstance(tok.parse("<act_1>"), ParseError)  # not a multiple of dim
    assert isinstance(tok.parse("<act_1><act_2>", chunk=2), ParseError)
    assert isinstance(tok.parse("<act_1><act_999>"), ParseError)
    with pytest.raises(ValueError):
        tok.encode(np.array([[np.nan, 0.0]]))


def test_constant_dimension_does_not_divide_by_zero():
    data = np.zeros((50, 2))
    data[:, 1] = np.linspace(-1, 1, 50)
    tok = ActionTokenizer(VOCAB, ActionStats.from_actions(data))
    back = tok.decode(tok.encode(np.array([[0.0, 0.5]])))
    assert np.isfinite(back).all() and abs(back[0, 0]) < 1e-2


def test_stats_round_trip(tmp_path):
    stats = {"a": _tokenizer(3).stats, "b": _tokenizer(4, seed=1).stats}
    save_action_stats(stats, tmp_path)
    assert load_action_stats(tmp_path) == stats
    (tmp_path / "action_stats.json").write_text("{broken")
    with pytest.raises(ValueError, match="action_stats.json"):
        load_action_stats(tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        ActionStats.from_actions(np.array([[np.nan]]))
