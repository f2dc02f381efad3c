"""A checkpoint built from a "pretrained" Llama LM folder with a Llama-3-style tokenizer
(tests/fake_tokenizers.py) serves under both action-token schemes: source rows and ids are the
LM's, the policy decodes robot actions from the scheme's ids,
free text stops at the recorded end of turn (`<|eot_id|>`, not the tokenizer's eos). The hf ==
vLLM greedy parity under each scheme is checked on a checkpoint trained by 2-rank ZeRO-3 from such
backbones: tests/train/test_zero3.py::test_a_zero3_run_from_pretrained_backbones_serves_alike_on_hf_and_vllm."""
from __future__ import annotations

import json
from pathlib import Path

import fake_tokenizers as ft
import numpy as np
import pytest

SCHEMES = ("append", "reuse_last")
ACTION_DIM = 4

SPEC = """name: llama3-{scheme}
vision: {{depths: [1, 1, 1, 1], hidden_sizes: [16, 32, 64, 128], feature_stage: 3}}
image_size: 64
text: {{pretrained: {lm}}}
tokenizer: {{action_tokens: {scheme}}}
"""


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    """A random "pretrained" Llama (head_dim 64, as vLLM's CPU attention needs) with the
    Llama-3-style tokenizer of the base model: its eos is <|end_of_text|>, so the end of turn
    (<|eot_id|>) must come from the chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = ft.llama3_tokenizer(eos_token="<|end_of_text|>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("lm") / "llama3"
    LlamaForCausalLM(config).save_pretrained(folder)
    return ft.save(tok, folder)


def _checkpoint(root: Path, lm: Path, scheme: str) -> Path:
    """`magma model init`'s build from the pretrained LM, then the new token rows moved off their
    common mean (what training does; equal rows would make every greedy action a tie)."""
    import torch

    from magma.action_tokenizer import ActionStats
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    spec = root / f"{scheme}.yaml"
    spec.write_text(SPEC.format(scheme=scheme, lm=lm))
    model, processor = build_model(spec, seed=1)
    n_source = len(ft.llama3_tokenizer())
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            w[n_source:] += 0.05 * torch.randn(w[n_source:].shape, generator=g)
    stats = {"metaworld": ActionStats.from_actions(np.random.RandomState(0).uniform(-1, 1, (200, ACTION_DIM)))}
    return save_checkpoint(model, processor, root / scheme, stats)


@pytest.fixture(scope="module", params=SCHEMES)
def checkpoint(request, tmp_path_factory, llama_folder) -> tuple[str, Path]:
    return request.param, _checkpoint(tmp_path_factory.mktemp("ckpt"), llama_folder, request.param)


def test_the_checkpoint_records_the_scheme_and_the_end_of_turn(checkpoint, llama_folder):
    import torch
    from transformers import AutoModelForCausalLM

    from magma.checkpoint import load_checkpoint

    scheme, folder = checkpoint
    model, processor, _ = load_checkpoint(folder)
    source = AutoModelForCausalLM.from_pretrained(llama_folder)
    n = source.get_input_embeddings().weight.shape[0]
    # every source id keeps its token and its rows; reuse_last adds only <pad> and <image>
    assert torch.equal(model.get_input_embeddings().weight[:n], source.get_input_embeddings().weight)
    assert torch.equal(model.get_output_embeddings().weight[:n], source.get_output_embeddings().weight)
    assert len(processor.tokenizer) == n + (258 if scheme == "append" else 2)
    cfg = json.loads((folder / "processor_config.json").read_text())
    assert (cfg["eot_token"], cfg["action_tokens"]) == ("<|eot_id|>", scheme)
    gen = json.loads((folder / "generation_config.json").read_text())
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|end_of_text|>" and tok["pad_token"] == "<pad>"
    from transformers import AutoTokenizer

    assert gen["eos_token_id"] == AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<|eot_id|>")


def test_robot_actions_and_text_through_the_hf_policy(checkpoint):
    from serve.engines.base import GenerationRequest
    from serve.images import encode_png_b64
    from serve.policy import Policy

    scheme, folder = checkpoint
    policy = Policy.from_checkpoint(folder, engine="hf")
    try:
        vocab = policy.processor.action_vocab
        assert vocab.scheme == scheme
        if scheme == "reuse_last":  # the last 256 ids of the base vocabulary: no <act_N> token exists
            assert vocab.end == policy.processor.tokenizer.vocab_size
            assert "<act_0>" not in policy.processor.tokenizer.get_vocab()
        image = encode_png_b64(np.random.RandomState(1).randint(0, 255, (48, 64, 3), np.uint8))
        gen, finish = policy.prepare_act({"adapter": "robot", "instruction": "open the drawer", "image": image,
                                          "chunk": 2})
        out = policy.engine.generate_sync([gen])[0]
        assert len(out.token_ids) == 2 * ACTION_DIM and all(t in vocab.ids for t in out.token_ids)
        body = finish(out)
        assert body["error"] is None and len(body["chunk"]) == 2 and len(body["action"]) == ACTION_DIM
        assert body["raw"] == policy.processor.decode_actions(out.token_ids) and body["raw"].count("<act_") == 8
        eng = policy.engine
        assert eng.eos_id == policy.processor.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        chat = eng.generate_sync([GenerationRequest(policy.render_prompt("Describe the image.", 1), gen.images, 12)])[0]
        assert eng.eos_id not in chat.token_ids and len(chat.token_ids) <= 12
    finally:
        policy.close()
