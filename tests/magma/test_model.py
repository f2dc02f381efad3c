"""The tiny model: forward with images and a loss, KV-cache generation, save/reload."""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor

import magma  # noqa: F401  (registers the Auto classes)
from magma.modeling_magma import causal_lm_loss
from magma.processing_magma import IGNORE_INDEX, collate_encoded
from magma.schema import TARGET_KINDS, Sample, Turn


def _image(seed=0, size=(210, 160)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_forward_with_images_and_assistant_only_loss(tiny_model_and_processor):
    model, proc = tiny_model_and_processor
    sample = Sample(id="s0", images=[np.asarray(_image())], source="test",
                    conversation=[Turn("user", "<image>Which mark is OK?"),
                                  Turn("assistant", "Mark 3", "spatial")])
    enc = proc.encode_sample(sample)
    n_img = enc["input_ids"].count(model.config.image_token_id)
    assert n_img == model.config.tokens_per_view
    # labels exist only on the assistant's answer and its <|end|>
    labelled = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]
    assert proc.tokenizer.decode(labelled) == "Mark 3<|end|>"
    assert {k for k in enc["target_kind"] if k >= 0} == {TARGET_KINDS.index("spatial")}
    batch = collate_encoded([enc, enc], proc.tokenizer.pad_token_id)
    kinds = batch.pop("target_kind")
    out = model(**batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    assert abs(out.loss.item() - np.log(model.config.get_text_config().vocab_size)) < 1.5
    per_token = causal_lm_loss(out.logits, batch["labels"], reduction="none")
    assert per_token.shape == kinds[:, 1:].shape
    out.loss.backward()
    grads = [p.grad for p in model.vision_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "image features must get gradients"
    model.zero_grad(set_to_none=True)


def test_image_features_change_the_logits(tiny_model_and_processor):
    model, proc = tiny_model_and_processor
    prompt = proc.render_prompt("What is this?")
    a = model(**proc(images=[_image(0)], text=prompt)).logits[0, -1]
    b = model(**proc(images=[_image(1)], text=prompt)).logits[0, -1]
    assert not torch.allclose(a, b)


def test_generate_with_kv_cache_matches_no_cache(tiny_model_and_processor):
    model, proc = tiny_model_and_processor
    inputs = proc(images=[_image()], text=proc.render_prompt("Describe the screen."))
    with_cache = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=True,
                                min_new_tokens=12)
    without = model.generate(**inputs, max_new_tokens=12, do_sample=False, use_cache=False,
                             min_new_tokens=12)
    assert with_cache.shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(with_cache, without)


def test_batched_left_padded_generation_matches_single(tiny_model_and_processor):
    model, proc = tiny_model_and_processor
    prompts = [proc.render_prompt("Click OK."), proc.render_prompt("Which mark is the Submit button?")]
    images = [_image(0), _image(1)]
    batch = proc(images=images, text=prompts)
    out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    for i in range(2):
        single = proc(images=[images[i]], text=prompts[i])
        ref = model.generate(**single, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        assert torch.equal(out[i, -6:], ref[0, -6:])


def test_save_and_reload_through_auto_classes(tiny_model_and_processor, tiny_checkpoint):
    model, proc = tiny_model_and_processor
    loaded = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    loaded_proc = AutoProcessor.from_pretrained(tiny_checkpoint)
    prompt = loaded_proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True, tokenize=False)
    assert prompt == proc.render_prompt("Hi")
    inputs = loaded_proc(images=[_image()], text=prompt, return_tensors="pt")
    assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)
    assert loaded.generate(**inputs, max_new_tokens=3).shape[1] <= inputs["input_ids"].shape[1] + 3


def test_crops_for_large_screens():
    from magma.build import build_model
    from magma.model_config import load_model_spec
    from tests.conftest import TINY_CONFIG
    spec = load_model_spec(TINY_CONFIG)
    spec.max_crops = 4
    spec.text.num_hidden_layers = 1
    model, proc = build_model(spec)
    inputs = proc(images=[_image(size=(1280, 800))], text=proc.render_prompt("Where?"))
    views = 1 + 1 * 2  # global view + a 1x2 grid: the closest aspect to 16:10 with <= 4 crops
    assert inputs["pixel_values"].shape[0] == views
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == views * 49
    assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_bf16_and_gradient_checkpointing(tiny_model_and_processor):
    import copy
    model, proc = tiny_model_and_processor
    m = copy.deepcopy(model).to(torch.bfloat16).train()
    m.gradient_checkpointing_enable()
    inputs = proc(images=[_image()], text=proc.render_prompt("x") + "Mark 1<|end|>")
    labels = inputs["input_ids"].clone()
    out = m(**inputs, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()


def test_mismatched_image_tokens_fail_clearly(tiny_model_and_processor):
    model, proc = tiny_model_and_processor
    inputs = proc(images=[_image()], text=proc.render_prompt("x"))
    with pytest.raises(ValueError, match="image features"):
        model(input_ids=inputs["input_ids"][:, 5:], pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match="placeholders"):
        proc(images=[_image(), _image(1)], text=proc.render_prompt("x"))


def test_8b_config_on_meta_device():
    from magma.model_cli import count_parameters_on_meta
    counts = count_parameters_on_meta("configs/model/magma-8b.yaml")
    print("magma-8b parameters:", counts)
    assert abs(counts["language_model"] - 8.03e9) < 0.01e9  # Llama-3-8B
    assert abs(counts["vision_tower"] - 0.843e9) < 0.01e9  # ConvNeXt-XXLarge
    assert counts["multi_modal_projector"] == 3072 * 4096 + 4096 + 4096 * 4096 + 4096
