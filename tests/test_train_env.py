"""``EdgeSplitTrain-v0``: real rounds behind the EdgeSplit-v0 interface (tiny configuration)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from edgesplit import envs  # noqa: F401 - registers the ids
from edgesplit.envs.train_env import EdgeSplitTrainEnv

TINY = dict(model="small_cnn", dataset="synthetic_mnist", n_devices=2, samples=32, batch_size=16, iterations=1,
            test_samples=64, rounds=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
