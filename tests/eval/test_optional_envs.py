import importlib.util

import pytest

from eval.envs.optional_envs import EnvUnavailable, LiberoEnv, SimplerEnv, available_optional_envs


def test_optional_envs_report_availability_and_skip_clearly():
    avail = available_optional_envs()
    assert set(avail) == {"libero", "simplerenv"}
    if not avail["libero"]:
        with pytest.raises(EnvUnavailable, match="libero.*not installed.*pip install"):
            LiberoEnv("libero_spatial", 0)
    if not avail["simplerenv"]:
        with pytest.raises(EnvUnavailable, match="simpler_env.*not installed"):
            SimplerEnv("google_robot_pick_coke_can")
    assert avail["libero"] == (importlib.util.find_spec("libero") is not None)
