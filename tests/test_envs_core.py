"""The static and dynamic (v0) envs with per-device profiles, device classes and GeneratorConfig;
stepping after termination."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

from edgesplit import envs  # noqa: F401  (registers the ids)
from edgesplit.costmodel import CostModel
from edgesplit.devices import GeneratorConfig, class_profile
from edgesplit.profiles import load_builtin_profile

CLASSES = ("laptop", "edge-device-d1", "testbed-vm")


@pytest.mark.parametrize("env_id", ["EdgeSplit-v0", "EdgeSplitDynamic-v0"])
def test_stepping_after_termination_raises_until_reset(env_id):
    env = gym.make(env_id, n_devices=3, model="small_cnn", rounds=2).unwrapped
    act = {"cuts": np.zeros(3, dtype=np.int64), "shares": np.ones(3)}
    with pytest.raises(ResetNeeded):
        env.step(act)  # never reset
    env.reset(seed=0)
    assert not env.step(act)[2]
    clock = env.step(act)[4]["sim_clock_s"]
    with pytest.raises(ResetNeeded, match="call reset"):
        env.step(act)
    assert env._clock == clock  # the clock did not run on
    env.reset(seed=1)
    env.step(act)


@pytest.mark.parametrize("env_id", ["EdgeSplit-v0", "EdgeSplitDynamic-v0"])
def test_envs_draw_device_classes_with_their_profiles(env_id):
    model = load_builtin_profile("vgg19_testbed")
    plain = gym.make(env_id, n_devices=6, model=model)
    env = gym.make(env_id, n_devices=6, model=model, device_classes=CLASSES, server_class="testbed-vm",
                   rate_range_bps=(1e7, 1e8))
    assert env.observation_space == plain.observation_space  # same size with per-device profiles
    obs, _ = env.reset(seed=4)
    base = env.unwrapped
    s = base.scenario
    assert all(d.profile is class_profile(d.device_class, model) for d in s.devices)
    cm = CostModel.from_scenario(s)
    speed = cm.effective_speed
    np.testing.assert_allclose(obs[:6], speed / speed.max(), rtol=1e-6)
    obs2, _ = gym.make(env_id, n_devices=6, model=model,
                       generator=GeneratorConfig(device_classes=CLASSES, server_class="testbed-vm",
                                                 rate_range_bps=(1e7, 1e8))).reset(seed=4)
    np.testing.assert_array_equal(obs, obs2)  # keywords and a GeneratorConfig are the same thing
    _, _, _, _, info = env.step({"cuts": np.full(6, 3), "shares": np.ones(6)})
    a, v = cm.select(info["cuts"])
    if env_id == "EdgeSplit-v0":
        np.testing.assert_allclose(info["per_device_time_s"], a + v / (info["shares"] * cm.rate_bps), rtol=1e-12)


def test_env_takes_a_scenario_with_own_profiles(tmp_path):
    import json

    scen = {"model": {"profile": "vgg19_testbed", "dataset": "cifar10"}, "batch_size": 16,
            "devices": [{"class": c, "samples": 128} for c in CLASSES],
            "server": {"class": "testbed-vm"}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scen))
    env = gym.make("EdgeSplit-v0", scenario=str(path))
    obs, info = env.reset(seed=0)
    assert obs.shape == (3 * 5 + 1,)
    cm = CostModel.from_scenario(env.unwrapped.scenario)
    assert info["reference_time_s"] == pytest.approx(
        __import__("edgesplit.schedulers", fromlist=["plan"]).plan(cm, "alternating").round_time_s)


def test_unknown_generator_option_is_a_value_error():
    with pytest.raises(ValueError, match="colour: unknown generator option"):
        gym.make("EdgeSplit-v0", n_devices=3, colour=1)
