"""Action binning (`magma.action_tokenizer`): `uniform` stays what every checkpoint built here
decodes; `openvla` reproduces the released OpenVLA / Magma-8B action tokens. The release's
formulas are written out below from their published code (openvla
`prismatic/vla/action_tokenizer.py`, microsoft/Magma `agents/libero/libero_magma_utils.py`):

    encode  id = vocab_size - digitize(clip(a, -1, 1), linspace(-1, 1, 256))
    decode  a  = bin_centers[clip(vocab_size - id - 1, 0, 254)]
            with bin_centers the 255 midpoints of linspace(-1, 1, 256)

with vocab_size the tokenizer's base vocabulary (our `reuse_last` end)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magma.action_tokenizer import ActionStats, ActionTokenizer, ActionVocab, bins_to_values, values_to_bins

V = 600  # base vocabulary of the release fixture (tests/magma/release_fixture.py)
IDENTITY = ActionStats(q01=[-1.0], q99=[1.0], mean=[0.0], std=[1.0], min=[-1.0], max=[1.0], count=1)


def release_encode(a, vocab_size=V):
    bins = np.linspace(-1, 1, 256)
    return vocab_size - np.digitize(np.clip(a, -1.0, 1.0), bins)


def release_decode(ids, vocab_size=V):
    bins = np.linspace(-1, 1, 256)
    bin_centers = (bins[:-1] + bins[1:]) / 2.0
    return bin_centers[np.clip(vocab_size - np.asarray(ids) - 1, 0, bin_centers.shape[0] - 1)]


def _codec(binning, stats=IDENTITY, scheme="reuse_last"):
    return ActionTokenizer(ActionVocab(scheme, V - 256, binning=binning), stats)


# a -> the release's id, worked out by hand from digitize on the edges -1 + 2i/255
ENCODED = [(-1.0, V - 1), (-3.0, V - 1), (-0.999, V - 1), (-0.5, V - 64), (0.0, V - 128),
           (0.5, V - 192), (0.999, V - 255), (1.0, V - 256), (2.0, V - 256)]
# id -> the release's value: midpoint k of the edges is -1 + (2k + 1)/255
DECODED = [(V - 1, -1 + 1 / 255), (V - 64, -1 + 127 / 255), (V - 128, 0.0), (V - 192, -1 + 383 / 255),
           (V - 255, -1 + 509 / 255), (V - 256, -1 + 509 / 255)]  # the last: the clip at 254


def test_the_written_out_release_formulas_give_the_hand_numbers():
    a, ids = np.array([x for x, _ in ENCODED]), np.array([i for _, i in ENCODED])
    assert release_encode(a).tolist() == ids.tolist()
    np.testing.assert_allclose(release_decode([i for i, _ in DECODED]), [v for _, v in DECODED], atol=1e-12)


def test_openvla_binning_encodes_and_decodes_like_the_release():
    codec = _codec("openvla")
    a = np.array([[x] for x, _ in ENCODED])
    assert codec.encode(a) == [i for _, i in ENCODED]
    ids = [i for i, _ in DECODED]
    np.testing.assert_allclose(codec.decode(ids).ravel(), [v for _, v in DECODED], atol=1e-12)
    # every id of the range, the extremes and the clip at 254 included: exactly in normalised
    # units, to rounding through the (identity) statistics
    every = list(range(V - 256, V))
    bins = codec.vocab.id_to_bin(np.array(every))
    np.testing.assert_array_equal(bins_to_values(bins, binning="openvla"), release_decode(every))
    np.testing.assert_allclose(codec.decode(every).ravel(), release_decode(every), atol=1e-12)
    assert codec.decode([V - 256])[0, 0] == codec.decode([V - 255])[0, 0]  # bin 255 decodes as 254


def test_the_text_form_carries_the_same_bins():
    """`<act_b>` is bin b: under reuse_last id `V - 1 - b`, so text and ids agree with the release."""
    codec = _codec("openvla")
    a = np.array([[0.0], [1.0], [-1.0]])
    text = codec.render(a)
    assert text == "<act_127><act_255><act_0>"
    assert codec.vocab.text_to_ids(text) == release_encode(a.ravel()).tolist() == codec.encode(a)
    np.testing.assert_allclose(codec.parse(text).ravel(), release_decode(codec.encode(a)), atol=1e-12)


@given(st.lists(st.floats(-1.5, 1.5, allow_nan=False), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_openvla_matches_the_release_on_any_normalised_action(values):
    # the edges themselves (digitize's boundaries) are the likeliest place to differ
    a = np.concatenate([np.asarray(values), np.linspace(-1, 1, 256)])
    codec = _codec("openvla")
    ids = codec.encode(a[:, None])
    assert ids == release_encode(a).tolist()
    np.testing.assert_array_equal(values_to_bins(a, binning="openvla"), V - 1 - np.array(ids))
    np.testing.assert_allclose(codec.decode(ids).ravel(), release_decode(ids), atol=1e-12)
    assert np.all(np.abs(codec.decode(ids).ravel() - np.clip(a, -1, 1)) <= codec.bin_width / 2 + 1e-12)


def test_openvla_decodes_through_the_statistics_as_the_release_unnormalises():
    stats = ActionStats(q01=[-0.5, 0.0], q99=[0.5, 4.0], mean=[0, 2], std=[1, 1], min=[-1, 0], max=[1, 5], count=9)
    codec = _codec("openvla", stats)
    ids = [V - 1, V - 200, V - 128, V - 256]
    normed = release_decode(ids).reshape(-1, 2)
    hi, lo = np.array(stats.q99), np.array(stats.q01)
    np.testing.assert_allclose(codec.decode(ids), 0.5 * (normed + 1) * (hi - lo) + lo, atol=1e-12)


def test_uniform_stays_what_checkpoints_built_here_decode():
    """Default binning: 256 bins of width 2/256, so a = 0 is bin 128 (id V - 129), one off the
    release's V - 128, and decodes to that bin's centre."""
    codec = _codec("uniform")
    assert ActionVocab("reuse_last", V - 256).binning == "uniform"
    assert codec.encode(np.array([[0.0], [-1.0], [1.0], [0.999]])) == [V - 129, V - 1, V - 256, V - 256]
    np.testing.assert_allclose(codec.decode([V - 129, V - 1, V - 256]).ravel(),
                               [-1 + 128.5 / 128, -1 + 0.5 / 128, -1 + 255.5 / 128])
    assert codec.bin_width == 2 / 256 and _codec("openvla").bin_width == 2 / 255
    # the append layout: bin b is start + b under either binning
    assert _codec("uniform", scheme="append").encode(np.array([[0.0]])) == [V - 256 + 128]
    assert _codec("openvla", scheme="append").encode(np.array([[0.0]])) == [V - 256 + 127]


def test_constrained_decoding_ranges_do_not_depend_on_the_binning():
    u, o = _codec("uniform"), _codec("openvla")
    assert u.action_token_ids == o.action_token_ids == range(V - 256, V)
    np.testing.assert_array_equal(u.logits_mask(V + 10), o.logits_mask(V + 10))


def test_bad_binnings_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        ActionVocab("reuse_last", 10, binning="quantile")
    with pytest.raises(ValueError, match="choose one of"):
        values_to_bins(np.zeros(2), binning="nope")
    assert ActionVocab("append", 3, binning="openvla").to_dict() == {
        "scheme": "append", "start": 3, "n_bins": 256, "binning": "openvla"}
    assert bins_to_values(np.array([0, 255])).tolist() == [-1 + 1 / 256, 1 - 1 / 256]


def test_the_converted_release_records_openvla_and_older_checkpoints_stay_uniform(tmp_path):
    """convert-magma writes `action_binning: openvla` beside the scheme; a processor config
    without the key (every checkpoint from before it) loads as uniform; a wrong value names the file."""
    import release_fixture as rf
    from transformers import AutoProcessor

    from magma.magma_release import convert_magma_release

    src = rf.write_release_folder(tmp_path / "release")
    out = convert_magma_release(src, tmp_path / "converted", log=lambda *_: None)
    cfg_path = out / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert (cfg["action_tokens"], cfg["action_binning"]) == ("reuse_last", "openvla")
    proc = AutoProcessor.from_pretrained(out)
    vocab = proc.action_vocab
    assert (vocab.scheme, vocab.end, vocab.binning) == ("reuse_last", rf.release_tokenizer().vocab_size, "openvla")
    a = np.array([[0.0], [1.0], [-1.0], [0.5]])
    assert ActionTokenizer(vocab, IDENTITY).encode(a) == release_encode(a.ravel(), vocab.end).tolist()

    old = tmp_path / "old"
    shutil.copytree(out, old)
    del cfg["action_binning"]
    (old / "processor_config.json").write_text(json.dumps(cfg))
    assert AutoProcessor.from_pretrained(old).action_vocab.binning == "uniform"
    (old / "processor_config.json").write_text(json.dumps({**cfg, "action_binning": "quantile"}))
    with pytest.raises(ValueError, match="action_binning 'quantile' .processor_config.json"):
        AutoProcessor.from_pretrained(old)
