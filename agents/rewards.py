"""Training rewards (never used for evaluation, which always uses true times)."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from edgesplit.schedulers import get_scheduler

REWARDS: tuple[str, ...] = ("env", "counterfactual")
"""Training rewards: the env's ``-T / T_ref``, or :class:`CounterfactualReward`."""


class CounterfactualReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Training-only reward with a counterfactual baseline: ``(T_static - T) / T_ref``.

    ``T_static`` is the round time the ``static`` plan (``exact`` on the nominal rates) would have
    had in the *same* round, from the same state (its migration included), over the same stretch
    of the traces: computed exactly with the dynamic env's ``transfer_seconds`` query. It depends
    on the trace the round meets but not on the action, so in every round the action that
    maximises this reward is the one that minimises the round time; what the baseline removes is
    most of the trace noise that the agent cannot observe. The policy never sees ``T_static``
    (privileged information for the *reward* only). A stalled round keeps the env's penalty. In
    ``EdgeSplit-v0`` ``T_static`` is the static plan's (constant) round time.
    ``info["counterfactual_round_time_s"]`` holds ``T_static``. Per-round envs only.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if hasattr(env.unwrapped, "policy_view"):
            raise ValueError("reward: 'counterfactual' is for the per-round envs; EdgeSplitDynamic-v1 rewards "
                             "every decision epoch with its own elapsed time")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the env and plan the static reference of the episode."""
        obs, info = self.env.reset(seed=seed, options=options)
        cm = self.env.unwrapped.cost_model
        plan = get_scheduler("exact").plan(cm)
        self._cuts, self._shares = plan.cuts, plan.shares
        self._compute, self._bits = cm.select(self._cuts)
        self._static_time = cm.round_time(self._cuts, self._shares)
        return obs, info

    def counterfactual_time_s(self) -> float:
        """The static plan's time for the coming round (call before ``step``)."""
        base = self.env.unwrapped
        if not hasattr(base, "transfer_seconds"):
            return self._static_time
        bits = self._bits + base.migration_bits(self._cuts)
        return float(np.max(self._compute + base.transfer_seconds(bits, self._shares)))

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step the env; replace a finite round's reward by ``(T_static - T) / T_ref``."""
        T_cf = self.counterfactual_time_s()
        obs, reward, terminated, truncated, info = self.env.step(action)
        T = float(info["round_time_s"])
        info["counterfactual_round_time_s"] = T_cf
        if math.isfinite(T) and math.isfinite(T_cf):
            reward = (T_cf - T) / float(info["reference_time_s"])
        return obs, float(reward), terminated, truncated, info
