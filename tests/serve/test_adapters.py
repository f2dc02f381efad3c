import pytest

from magma.marks import Mark
from serve.adapters.ui import UIContext, ui_response
from serve.engines.base import GenerationOutput


def _out(text):
    return GenerationOutput([], text, "stop")


CTX = UIContext(marks=[Mark(3, (10, 20, 50, 40), "OK", "button")], width=200, height=100)


def test_click_on_mark_resolves_to_mark_centre():
    r = ui_response(_out("click Mark 3"), CTX)
    assert r.error is None and r.op == "click" and r.mark == 3 and r.point == [30.0, 30.0]


def test_point_is_denormalised_to_screen_pixels():
    r = ui_response(_out("click Mark 3 at (500,250)"), CTX)
    assert r.point == pytest.approx([100.1, 25.05])


def test_type_action_keeps_text():
    r = ui_response(_out('type "hello world" Mark 3'), CTX)
    assert (r.op, r.text, r.mark) == ("type", "hello world", 3)


@pytest.mark.parametrize("text", ["", "clack Mark 3", "click Mark", "scroll sideways", "<act_3>"])
def test_unparsable_text_is_a_typed_error_not_an_exception(text):
    r = ui_response(_out(text), CTX)
    assert r.op is None and r.error is not None and r.error.code == "unparsable_ui_action"


def test_unknown_mark_is_reported():
    r = ui_response(_out("click Mark 9"), CTX)
    assert r.op == "click" and r.point is None and r.error.code == "unknown_mark"


def test_robot_chunk_is_unnormalised_with_checkpoint_stats(policy, screenshot_b64):
    from serve.adapters.robot import RobotContext
    from serve.api import ActRequest

    req = ActRequest(adapter="robot", instruction="pick", image=screenshot_b64, chunk=2)
    gen, ctx = policy.robot.prepare(req, [None], policy.render_prompt)
    assert gen.constrain_to_actions and gen.max_new_tokens == 2 * 4
    tok = ctx.tokenizer
    ids = [tok.first_id + 0, tok.first_id + 255, tok.first_id + 128, tok.first_id + 10] * 2
    r = policy.robot.respond(GenerationOutput(ids, "", "length"), RobotContext(ctx.dataset, 2, tok))
    assert r.error is None and len(r.chunk) == 2
    stats = policy.action_stats["metaworld"]
    assert r.action[0] == pytest.approx(stats.q01[0] + (0.5 / 256) * (stats.q99[0] - stats.q01[0]))
    assert r.action[1] == pytest.approx(stats.q99[1] - (0.5 / 256) * (stats.q99[1] - stats.q01[1]))
