"""The real environments: MiniWoB++ in headless chromium, Meta-World offscreen (slow)."""
import json
import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.envs]

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None and
                                    not __import__("os").path.exists("/usr/bin/chromium"),
                                    reason="Debian chromium not installed")


@needs_chromium
@pytest.mark.browser
@pytest.mark.parametrize("task", ["click-button", "click-checkboxes", "enter-text"])
def test_miniwob_expert_solves_task(task):
    pytest.importorskip("miniwob")
    from eval.closed_loop import UIExpertAgent, run_ui_episode
    from eval.envs.miniwob_env import MiniWoBEnv
    from eval.splits import split_seeds

    with MiniWoBEnv(task, episode_seconds=60) as env:
        recs = [run_ui_episode(env, UIExpertAgent(task), s, "heldout", 8)[0]
                for s in split_seeds("heldout", 3)]
    assert all(r.success for r in recs), [r.reason for r in recs]


@needs_chromium
@pytest.mark.browser
def test_miniwob_crashed_browser_is_a_failure_with_reason_then_recovers():
    pytest.importorskip("miniwob")
    from eval.envs.miniwob_env import MiniWoBEnv
    from eval.envs.miniwob_experts import expert_action

    with MiniWoBEnv("click-button") as env:
        obs = env.reset(0)
        env._env.instance.driver.quit()  # the browser dies mid-episode
        result = env.step(expert_action("click-button", obs))
        assert result.done and not result.success and "browser crashed" in result.info["error"]
        obs = env.reset(1)  # a fresh browser serves the next episode
        assert env.step(expert_action("click-button", obs)).success


def test_metaworld_reach_expert_on_heldout_goals(tmp_path):
    pytest.importorskip("metaworld")
    from eval.cli import main
    from eval.envs.metaworld_env import PROPRIO_DIM, MetaWorldEnv
    from eval.closed_loop import RobotExpertAgent, run_robot_episode

    with MetaWorldEnv("reach-v3", image_size=64) as env:
        obs = env.reset(1_000_000)
        goal_a = env.goal
        assert obs.image.shape == (64, 64, 3) and obs.image.dtype == np.uint8
        assert obs.proprio.shape == (PROPRIO_DIM,)
        # the state's goal offset is the goal seen from the hand
        np.testing.assert_allclose(obs.proprio[:3] + obs.proprio[4:7], goal_a, atol=1e-5)
        # upright: the table (bright wood) is in the lower half of the corner view
        assert obs.image[40:].mean() > obs.image[:10].mean()
        recs = [run_robot_episode(env, RobotExpertAgent(env), s, "heldout")[0]
                for s in (1_000_000, 1_000_001)]
        env.reset(1)
        assert env.goal != goal_a  # seeds choose the goal
    assert all(r.success for r in recs) and all(r.steps < 100 for r in recs)

    out = tmp_path / "demos"
    assert main(["record", "--env", "metaworld", "--tasks", "reach-v3", "--episodes", "1",
                 "--image-size", "64", "--out", str(out)]) == 0
    manifest = json.loads((out / "split_manifest.json").read_text())
    assert manifest["tasks"]["reach-v3"]["train"]["seeds"] == [0]
    assert (out / "metaworld-reach-v3-train-s0000000" / "frames.npz").exists()
