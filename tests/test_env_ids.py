"""Env ids under the edgesplit/ namespace; the bare ids kept as deprecated aliases that warn; the
module:id form from a fresh process."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

from edgesplit import envs


@pytest.mark.parametrize("bare", envs.SIMULATED_IDS)
def test_every_id_is_namespaced_and_the_bare_one_warns(bare: str) -> None:
    ns = envs.namespaced(bare)
    assert ns == f"edgesplit/{bare}" and envs.canonical_id(ns) == bare
    env = gym.make(ns, n_devices=3)
    obs, _ = env.reset(seed=1)
    with pytest.warns(DeprecationWarning, match=ns):
        old = gym.make(bare, n_devices=3)
    obs2, _ = old.reset(seed=1)
    assert (obs == obs2).all() and type(env.unwrapped) is type(old.unwrapped)
    assert gym.spec(ns).max_episode_steps == gym.spec(bare).max_episode_steps


def test_every_registered_id_gets_the_namespace() -> None:
    for bare in envs.ALL_IDS:
        assert envs.namespaced(bare) in gym.registry and bare in gym.registry


def test_module_colon_id_from_a_fresh_process() -> None:
    code = ("import gymnasium as gym; e = gym.make('edgesplit.envs:edgesplit/EdgeSplit-v0', n_devices=3); "
            "e.reset(seed=0); print('ID', e.spec.id)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ID edgesplit/EdgeSplit-v0" in r.stdout


def test_agents_accept_both_forms() -> None:
    from edgesplit.agents.evaluation import evaluate

    a, _ = evaluate("alternating", env_id="edgesplit/EdgeSplit-v0", episodes=1, n_devices=3)
    b, _ = evaluate("alternating", env_id="EdgeSplit-v0", episodes=1, n_devices=3)
    assert a["mean_total_time_s"] == b["mean_total_time_s"]
