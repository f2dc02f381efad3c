import numpy as np
import pytest
import torch
from PIL import Image

from serve.engines.base import GenerationRequest
from serve.engines.hf import ActionLogitsProcessor, HFEngine


@pytest.fixture(scope="module")
def engines(policy):
    naive = HFEngine(policy.engine.model, policy.engine.processor, naive=True)
    yield policy.engine, naive
    naive.close()


def _requests(processor, n, max_new, constrained=False, seed=0):
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        img = Image.fromarray(rs.randint(0, 255, (120 + 17 * i, 160 + 9 * i, 3), np.uint8))
        text = processor.render_prompt("Task: pick the " + "red " * i + "cube\nWhat should the robot do?", 1)
        out.append(GenerationRequest(text, [img], max_new, constrain_to_actions=constrained))
    return out


def test_logits_processor_masks_only_constrained_rows():
    allowed = torch.zeros(10, dtype=torch.bool)
    allowed[6:] = True
    proc = ActionLogitsProcessor(allowed, rows=torch.tensor([True, False]))
    scores = proc(torch.zeros((2, 0), dtype=torch.long), torch.zeros(2, 10))
    assert torch.isinf(scores[0, :6]).all() and torch.isfinite(scores[0, 6:]).all()
    assert torch.isfinite(scores[1]).all()


@pytest.mark.parametrize("dim_times_chunk", [4, 12])
def test_constrained_decoding_emits_exactly_n_action_tokens(engines, dim_times_chunk):
    engine, _ = engines
    outs = engine.generate_sync(_requests(engine.processor, 3, dim_times_chunk, constrained=True))
    ids = engine.action_mask.nonzero().flatten()
    for out in outs:
        assert len(out.token_ids) == dim_times_chunk
        assert all(int(ids[0]) <= t <= int(ids[-1]) for t in out.token_ids)
        assert out.finish_reason == "length"


def test_batched_left_padded_greedy_matches_per_request_generate(engines):
    engine, naive = engines
    reqs = _requests(engine.processor, 4, 10, seed=3)
    batched = engine.generate_sync(reqs)  # one padded batch (submitted together)
    alone = naive.generate_sync(reqs)     # model.generate, one request at a time
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]


def test_mixed_batch_of_actions_and_text(engines):
    engine, _ = engines
    reqs = _requests(engine.processor, 2, 8, constrained=True) + _requests(engine.processor, 1, 5)
    outs = engine.generate_sync(reqs)
    assert [len(o.token_ids) for o in outs[:2]] == [8, 8]
    assert len(outs[2].token_ids) <= 5
    assert engine.batch_sizes  # the worker really ran batches
