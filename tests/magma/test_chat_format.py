"""The chat format comes from one code path: `encode_sample` (training) cuts the chat
template's rendering at the assistant contents, `render_prompt` (serving) renders it up to the
generation header, so a training sample's prompt tokens are exactly what serving sends."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magma import prompts
from magma.codecs import UIAction, render_ui_action
from magma.marks import Mark
from magma.processing_magma import IGNORE_INDEX, MagmaProcessor
from magma.schema import TARGET_KINDS, Sample, Turn

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "model" / "tiny.yaml"


@pytest.fixture(scope="module")
def processor():
    from magma.build import build_config_and_processor

    return build_config_and_processor(TINY_CONFIG)[1]


def frozen_encode_sample(proc, sample: Sample) -> dict:
    """encode_sample as it was before it used the chat template (hand-built `<|role|>` +
    content + `<|end|>`): the built-in template must give exactly these ids."""
    tok = proc.tokenizer
    img = proc.image_processor([Image.fromarray(i) for i in sample.images])
    views = [int(v) for v in img["image_num_views"]]
    ids, labels, kinds, k = [], [], [], 0
    end_id = tok.convert_tokens_to_ids("<|end|>")
    for turn in sample.conversation:
        head = tok(f"<|{turn.role}|>", add_special_tokens=False)["input_ids"]
        body = tok(turn.content, add_special_tokens=False)["input_ids"]
        n_img = body.count(proc.image_token_id)
        body = proc._expand_images(body, views[k:k + n_img])
        k += n_img
        seg = head + body + [end_id]
        ids.extend(seg)
        if turn.role == "assistant":
            kind = TARGET_KINDS.index(turn.kind)
            labels.extend([IGNORE_INDEX] * len(head) + body + [end_id])
            kinds.extend([-1] * len(head) + [kind] * (len(body) + 1))
        else:
            labels.extend([IGNORE_INDEX] * len(seg))
            kinds.extend([-1] * len(seg))
    return {"input_ids": ids, "labels": labels, "target_kind": kinds,
            "pixel_values": img["pixel_values"], "image_num_views": views}


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


MARKS = [Mark(id=0, box=(2, 2, 30, 20), text="Submit", role="button"),
         Mark(id=1, box=(40, 2, 90, 20), text="Name", role="input")]


def _single(user: str, answer: str, kind: str, images: list[np.ndarray]) -> Sample:
    return Sample(id="s", images=images, source="test",
                  conversation=[Turn("user", user), Turn("assistant", answer, kind)])


SAMPLES = {
    "verbal": _single(prompts.verbal_prompt("Describe the image."), "A grey square, with dots.",
                      "verbal", [_img(64, 48, 0)]),
    "spatial": _single(prompts.grounding_prompt('the button "Submit"', MARKS), "Mark 0", "spatial",
                       [_img(120, 200, 1)]),
    "ui_action": _single(prompts.ui_action_prompt(
        'Type "ok" into Name.', MARKS, [prompts.history_entry(UIAction("click", mark=0, text="Submit"))]),
        render_ui_action(UIAction("type", mark=1, text="ok")), "action", [_img(300, 500, 2)]),
    "robot_action_multi_image": _single(
        prompts.robot_action_prompt("open the drawer", [0.1, -0.25, 0.5], n_images=2),
        "<act_3><act_250><act_128><act_0>", "action", [_img(32, 32, 3), _img(40, 56, 4)]),
    "multi_turn": Sample(id="m", images=[_img(50, 50, 5), _img(70, 30, 6)], source="test", conversation=[
        Turn("system", "You are a helpful agent."),
        Turn("user", "<image>What is Mark 3?"), Turn("assistant", "button OK", "verbal"),
        Turn("user", "<image>Point to the OK button."), Turn("assistant", "(512,233)", "spatial")]),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_builtin_template_gives_the_old_ids(processor, name):
    sample = SAMPLES[name]
    new, old = processor.encode_sample(sample), frozen_encode_sample(processor, sample)
    for key in ("input_ids", "labels", "target_kind", "image_num_views"):
        assert new[key] == old[key], key
    np.testing.assert_array_equal(np.asarray(new["pixel_values"]), np.asarray(old["pixel_values"]))
    assert any(t == processor.image_token_id for t in new["input_ids"])


def _serving_ids(proc, messages: list[dict], images: list[np.ndarray]) -> list[int]:
    """What serving sends for a prompt: the chat template with the generation header, tokenised
    with the images expanded to image tokens (`processor(text=..., images=...)`)."""
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pil = [Image.fromarray(i) for i in images]
    return proc(text=prompt, images=pil or None)["input_ids"][0].tolist()


def _assistant_starts(enc: dict) -> list[int]:
    """Token positions where an assistant content starts (a label run begins)."""
    lab = enc["labels"]
    return [i for i in range(len(lab)) if lab[i] != IGNORE_INDEX and (i == 0 or lab[i - 1] == IGNORE_INDEX)]


@pytest.mark.parametrize("name", [n for n in SAMPLES if n != "multi_turn"])
def test_training_prompt_tokens_are_the_serving_prompt(processor, name):
    sample = SAMPLES[name]
    enc = processor.encode_sample(sample)
    (start,) = _assistant_starts(enc)
    user = sample.conversation[0].content
    served = processor(text=processor.render_prompt(user), images=[Image.fromarray(i) for i in sample.images])
    assert enc["input_ids"][:start] == served["input_ids"][0].tolist()
    # and the labels are the assistant content + end of turn, i.e. what generation should write
    answer = processor.tokenizer(sample.conversation[1].content, add_special_tokens=False)["input_ids"]
    assert enc["labels"][start:] == answer + [processor.tokenizer.eos_token_id]


def test_multi_turn_prompts_are_the_serving_prompts(processor):
    sample = SAMPLES["multi_turn"]
    enc = processor.encode_sample(sample)
    messages = [{"role": t.role, "content": t.content} for t in sample.conversation]
    first, second = _assistant_starts(enc)
    assert enc["input_ids"][:first] == _serving_ids(processor, messages[:2], sample.images[:1])
    assert enc["input_ids"][:second] == _serving_ids(processor, messages[:4], sample.images)


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_another_template_changes_training_and_serving_alike(processor):
    """encode_sample follows the processor's template (here a ChatML-style one): the token text
    is that template's rendering, and its prompt still equals the serving prompt."""
    chatml = MagmaProcessor(processor.image_processor, processor.tokenizer,
                            tokens_per_view=processor.tokens_per_view, chat_template=CHATML)
    for name in ("spatial", "multi_turn"):
        sample = SAMPLES[name]
        enc = chatml.encode_sample(sample)
        messages = [{"role": t.role, "content": t.content} for t in sample.conversation]
        text = processor.tokenizer.decode([t for t in enc["input_ids"] if t != chatml.image_token_id])
        assert text == chatml.apply_chat_template(messages, tokenize=False).replace("<image>", "")
        assert "<|user|>" not in text
        starts = _assistant_starts(enc)
        turns = [i for i, t in enumerate(sample.conversation) if t.role == "assistant"]
        for start, i in zip(starts, turns):
            n_img = sum(t.content.count("<image>") for t in sample.conversation[:i])
            assert enc["input_ids"][:start] == _serving_ids(chatml, messages[:i], sample.images[:n_img])
            label_text = processor.tokenizer.decode([t for t in enc["labels"][start:] if t != IGNORE_INDEX])
            assert label_text.startswith(sample.conversation[i].content + "<|im_end|>")


def test_templates_that_do_not_append_turns_are_refused(processor):
    trimming = MagmaProcessor(processor.image_processor, processor.tokenizer,
                              chat_template=CHATML.replace("message['content']", "message['content'] | upper"))
    with pytest.raises(ValueError, match="changes assistant turn 1's content"):
        trimming.encode_sample(SAMPLES["spatial"])
    first_only = MagmaProcessor(processor.image_processor, processor.tokenizer,
                                chat_template="{{ messages[-1]['content'] }}")
    with pytest.raises(ValueError, match="incrementally"):
        first_only.encode_sample(SAMPLES["spatial"])
    assistant_first = Sample(id="a", images=[], source="test",
                             conversation=[Turn("assistant", "hi", "verbal")])
    with pytest.raises(ValueError, match="sample .a.: the conversation starts with an assistant turn"):
        processor.encode_sample(assistant_first)
