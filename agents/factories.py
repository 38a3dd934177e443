"""Factories of the envs as agents use them: base env, featurised and wrapped training env."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym

from edgesplit import envs
from edgesplit.envs.wrappers import WRAPPER_NAMES
from edgesplit.traces import Trace
from edgesplit.agents.features import RateFeatures
from edgesplit.agents.rewards import REWARDS, CounterfactualReward


def action_wrapper(env: gym.Env, wrapper: str) -> gym.Env:
    """``env`` wrapped by the action wrapper called ``wrapper`` (see :data:`edgesplit.envs.wrappers.WRAPPERS`)."""
    if wrapper not in WRAPPER_NAMES:
        raise ValueError(f"wrapper: must be one of {', '.join(WRAPPER_NAMES)}, got {wrapper!r}")
    return envs.wrap(env, wrapper)


def env_kwargs(env_id: str, n_devices: int, traces: Sequence[Trace] | None = None,
               history: int = 3, **extra: Any) -> dict[str, Any]:
    """``gym.make`` keyword arguments for ``env_id`` as agents use it (dynamic v0: ``alternating_info``
    off, since evaluation runs the alternating policy itself)."""
    env_id = envs.canonical_id(env_id)  # edgesplit/ID or ID (H-rl)
    if env_id not in envs.SIMULATED_IDS:
        raise ValueError(f"env: must be one of {', '.join(envs.SIMULATED_IDS)} (simulated envs), got {env_id!r}")
    kw: dict[str, Any] = {"n_devices": int(n_devices), **extra}
    if env_id == "EdgeSplitDynamic-v0":
        kw.update(alternating_info=False, history=int(history))
        if traces is not None:
            kw["traces"] = list(traces)
    elif env_id == "EdgeSplitDynamic-v1":
        kw.update(history=int(history))
        if traces is not None:
            kw["traces"] = list(traces)
    elif traces is not None:
        raise ValueError("traces: EdgeSplit-v0 has fixed link rates; traces apply to the dynamic envs only")
    return kw


def make_base_env(env_id: str, n_devices: int = 10, traces: Sequence[Trace] | None = None,
                  history: int = 3, **extra: Any) -> gym.Env:
    """``gym.make(env_id, ...)`` with :func:`env_kwargs` (the registered ``TimeLimit`` included)."""
    return gym.make(envs.namespaced(envs.canonical_id(env_id)), **env_kwargs(env_id, n_devices, traces, history, **extra))


def make_agent_env(env_id: str, wrapper: str, n_devices: int = 10, traces: Sequence[Trace] | None = None,
                   history: int = 3, reward: str = "env", **extra: Any) -> gym.Env:
    """The env a learned policy trains on: :func:`make_base_env`, :class:`RateFeatures`, the
    training reward (``env`` or ``counterfactual``), the action wrapper."""
    if reward not in REWARDS:
        raise ValueError(f"reward: must be one of {', '.join(REWARDS)}, got {reward!r}")
    env = RateFeatures(make_base_env(env_id, n_devices, traces, history, **extra))
    if reward == "counterfactual":
        env = CounterfactualReward(env)
    return action_wrapper(env, wrapper)
