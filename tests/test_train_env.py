"""``EdgeSplitTrain-v0``: real rounds behind the EdgeSplit-v0 interface (tiny configuration)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

from edgesplit import envs  # noqa: F401 - registers the ids
from edgesplit.envs.train_env import EdgeSplitTrainEnv

TINY = dict(model="small_cnn", dataset="synthetic_mnist", n_devices=2, samples=32, batch_size=16, iterations=1,
            test_samples=64, rounds=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_check_env_passes():
    env = EdgeSplitTrainEnv(**TINY)
    check_env(env, skip_render_check=True)


def test_registered_and_info_has_accuracy_and_clock():
    env = gym.make("EdgeSplitTrain-v0", **TINY)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert 0 <= info["test_acc"] <= 1 and info["test_loss"] > 0
    action = {"cuts": np.array([0, 4]), "shares": np.array([0.5, 0.5], dtype=np.float32)}
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["round"] == 1 and info["cuts"].tolist() == [1, 5]
    assert info["sim_clock_s"] == pytest.approx(info["round_time_s"]) and reward < 0
    assert info["samples_trained"] == 2 * 16  # the iteration budget: 1 batch per device
    assert {"test_acc", "test_loss", "train_loss", "target_reached"} <= set(info)
    recs = env.unwrapped.records_frame()
    assert list(recs.columns) == ["round", "sim_time_s", "wall_s", "test_acc", "loss"]
    assert len(recs) == 2 and recs["wall_s"].iloc[1] > 0
    assert "wall_s" not in info
    env.close()


def test_same_seed_same_episode_and_cuts_do_not_change_learning():
    def episode(cuts: list[int], seed: int = 3):
        env = EdgeSplitTrainEnv(**TINY)
        env.reset(seed=seed)
        out = []
        for _ in range(2):
            _, r, _, _, info = env.step({"cuts": np.array(cuts), "shares": np.array([0.3, 0.7])})
            out.append((r, info["test_acc"], info["test_loss"], info["sim_clock_s"]))
        return out

    a, b, c = episode([1, 2]), episode([1, 2]), episode([4, 0])
    assert a == b
    np.testing.assert_allclose([x[1:3] for x in a], [x[1:3] for x in c], rtol=1e-5, atol=1e-6)
    assert [x[3] for x in a] != [x[3] for x in c]  # only the simulated time differs


def test_target_accuracy_ends_the_episode_and_wall_time_in_info():
    env = EdgeSplitTrainEnv(**TINY, target_accuracy=0.01, wall_time_in_info=True)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(env.action_space.sample())
    assert terminated and info["target_reached"] and not truncated
    assert info["wall_s"] > 0 and info["wall_clock_s"] == pytest.approx(info["wall_s"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset"):
        EdgeSplitTrainEnv(dataset="imagenet")
    with pytest.raises(ValueError, match="target_accuracy"):
        EdgeSplitTrainEnv(**TINY, target_accuracy=1.5)
    with pytest.raises(ValueError, match="iterations"):
        EdgeSplitTrainEnv(**{**TINY, "iterations": 0})
    env = EdgeSplitTrainEnv(**TINY)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not finite"):
        env.step({"cuts": np.array([0, 1]), "shares": np.array([np.nan, 1.0])})


def test_step_after_termination_raises_until_reset():
    env = EdgeSplitTrainEnv(**TINY)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step({"cuts": np.array([0, 0]), "shares": np.array([1.0, 0.0])})
    assert terminated and info["stalled"]
    with pytest.raises(ResetNeeded, match="reset"):
        env.step({"cuts": np.array([0, 0]), "shares": np.array([0.5, 0.5])})
    env.reset(seed=0)
    for _ in range(TINY["rounds"]):
        _, _, terminated, _, _ = env.step({"cuts": np.array([0, 0]), "shares": np.array([0.5, 0.5])})
    assert terminated
    with pytest.raises(ResetNeeded, match="terminated"):
        env.step({"cuts": np.array([0, 0]), "shares": np.array([0.5, 0.5])})
    env = EdgeSplitTrainEnv(**TINY, target_accuracy=0.01)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[2]  # terminated: the target is reached
    with pytest.raises(ResetNeeded):
        env.step(env.action_space.sample())


def _scenario(model: str = "small_cnn", batch_size: int = 16):
    from edgesplit.devices import generate_scenario
    from edgesplit.profiles import load_builtin_profile

    return generate_scenario(load_builtin_profile(model, "mnist" if model == "small_cnn" else "cifar10"), 2,
                             seed=0, samples=32, batch_size=batch_size)


@pytest.mark.parametrize("scenario, needle", [
    (lambda: _scenario(batch_size=64), "batch_size 64 vs the run's 16"),
    (lambda: _scenario("vgg19", 16), "model vgg19"),
])
def test_a_scenario_that_disagrees_is_refused_or_rebound(scenario, needle):
    args = {k: v for k, v in TINY.items() if k != "n_devices"}
    with pytest.raises(ValueError, match=needle):
        EdgeSplitTrainEnv(**args, scenario=scenario())
    env = EdgeSplitTrainEnv(**args, scenario=scenario(), rebind_scenario=True)
    env.reset(seed=0)
    assert env.scenario.batch_size == 16 and env.scenario.profile.model == "small_cnn"
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["samples_trained"] == 2 * 16


def test_v1_measured_timing_in_info_and_clock():
    env = gym.make("EdgeSplitTrain-v1", **TINY)
    obs, info = env.reset(seed=0)
    assert info["timing"] == "measured"
    action = {"cuts": np.array([1, 4]), "shares": np.array([0.4, 0.6], dtype=np.float32)}
    obs, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(obs)
    meas, pred = info["measured_device_time_s"], info["predicted_device_time_s"]
    assert meas.shape == pred.shape == (2,) and (meas > 0).all() and np.isfinite(meas).all()
    assert info["round_time_s"] == pytest.approx(meas.max())
    assert info["predicted_round_time_s"] == pytest.approx(pred.max())
    np.testing.assert_allclose(info["timing_rel_error"], (meas - pred) / pred)
    # the traffic comes from the real tensors: local training (cut 5) sends the weights up and down
    # (16 W(L) bits), as the cost model says
    assert info["traffic_bits"][1] == pytest.approx(env.unwrapped.cost_model.traffic_bits[1, 4])
    assert reward == pytest.approx(-info["round_time_s"] / info["reference_time_s"])
    env.close()


def test_v1_model_timing_is_v0():
    a = EdgeSplitTrainEnv(**TINY)
    from edgesplit.envs.train_env import EdgeSplitTrainV1Env

    b = EdgeSplitTrainV1Env(**TINY, timing="model")
    action = {"cuts": np.array([1, 2]), "shares": np.array([0.3, 0.7])}
    a.reset(seed=5)
    b.reset(seed=5)
    ra = a.step(action)
    rb = b.step(action)
    assert ra[1] == rb[1] and ra[4]["test_acc"] == rb[4]["test_acc"]
    assert "measured_device_time_s" not in rb[4]


def test_v1_with_traces_sends_through_the_trace():
    from edgesplit.traces import Trace

    # a link that is up for 1 s and down for 9 s, over and over: transfers take far longer than at the mean rate
    trace = Trace("onoff", np.array([0.0, 1.0]), np.array([10.0, 0.0]), 10.0)
    env = gym.make("EdgeSplitTrain-v1", **TINY, traces=[trace])
    env.reset(seed=0)
    _, _, _, _, info = env.step({"cuts": np.array([1, 1]), "shares": np.array([0.5, 0.5])})
    assert np.isfinite(info["measured_device_time_s"]).all()
    assert info["measured_rate_bps"].shape == (2,)
    fixed = gym.make("EdgeSplitTrain-v1", **TINY)
    fixed.reset(seed=0)
    _, _, _, _, info2 = fixed.step({"cuts": np.array([1, 1]), "shares": np.array([0.5, 0.5])})
    assert info["predicted_round_time_s"] > info2["predicted_round_time_s"]


def test_v1_check_env_passes():
    from edgesplit.envs.train_env import EdgeSplitTrainV1Env

    check_env(EdgeSplitTrainV1Env(**TINY, timing="model"), skip_render_check=True)
