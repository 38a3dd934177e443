"""Gymnasium environments over the :mod:`edgesplit` cost model. Importing this package registers:

- ``EdgeSplit-v0`` (:class:`edgesplit.envs.static_env.EdgeSplitEnv`): link rates fixed within an episode;
- ``EdgeSplitDynamic-v1`` (:class:`edgesplit.envs.dynamic_v1.EdgeSplitDynamicV1Env`): trace-driven links
  with the honest information model of DESIGN.md (family-mean scaling, no looping, cuts per round,
  shares re-divided every ``interval_s``); use this one for dynamic bandwidth;
- ``EdgeSplitDynamic-v0`` (:class:`edgesplit.envs.dynamic_env.EdgeSplitDynamicEnv`): kept for old results
  only (its scaling leaks each trace's mean and its traces loop; see its docstring);
- ``EdgeSplitTrain-v0`` (``edgesplit.envs.train_env:EdgeSplitTrainEnv``): real torch split training.

``gym.make("edgesplit.envs:EdgeSplit-v0")`` imports this package and so also works without an import.
Action wrappers for stable-baselines3 live in :mod:`edgesplit.envs.wrappers` (:func:`wrap`).
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.registration import register, registry

from edgesplit.schedulers import Plan
from edgesplit.envs.base import DEFAULT_ROUNDS, MAX_OBS, EdgeSplitBaseEnv
from edgesplit.envs.dynamic_env import EdgeSplitDynamicEnv
from edgesplit.envs.dynamic_v1 import EdgeSplitDynamicV1Env
from edgesplit.envs.static_env import EdgeSplitEnv
from edgesplit.envs.wrappers import (WRAPPER_NAMES, WRAPPERS, CutsOnlyAction, FlatBoxAction, ForecastAction,
                                     SharesOnlyAction, wrap)

TRAIN_MAX_EPISODE_STEPS = 20
"""``max_episode_steps`` registered for ``EdgeSplitTrain-v0`` (real training rounds are slow)."""

V1_MAX_EPISODE_STEPS = 100_000
"""``max_episode_steps`` registered for ``EdgeSplitDynamic-v1``: a safety net only, far above a normal
episode (``rounds`` cut epochs plus about 60-100 share epochs per round; it ends by itself)."""

SIMULATED_IDS: tuple[str, ...] = ("EdgeSplit-v0", "EdgeSplitDynamic-v0", "EdgeSplitDynamic-v1")
"""The ids whose step is simulated by the cost model (fast, deterministic)."""

ALL_IDS: tuple[str, ...] = SIMULATED_IDS + ("EdgeSplitTrain-v0", "EdgeSplitTrain-v1")
"""Every id this package registers."""

_ENTRY_POINTS = {
    "EdgeSplit-v0": ("edgesplit.envs.static_env:EdgeSplitEnv", DEFAULT_ROUNDS),
    "EdgeSplitDynamic-v0": ("edgesplit.envs.dynamic_env:EdgeSplitDynamicEnv", DEFAULT_ROUNDS),
    "EdgeSplitDynamic-v1": ("edgesplit.envs.dynamic_v1:EdgeSplitDynamicV1Env", V1_MAX_EPISODE_STEPS),
    "EdgeSplitTrain-v0": ("edgesplit.envs.train_env:EdgeSplitTrainEnv", TRAIN_MAX_EPISODE_STEPS),
    "EdgeSplitTrain-v1": ("edgesplit.envs.train_env:EdgeSplitTrainV1Env", TRAIN_MAX_EPISODE_STEPS),
}


NAMESPACE = "edgesplit"
"""Gymnasium namespace of every id: ``edgesplit/EdgeSplit-v0`` etc. (the bare ids are deprecated aliases)."""


def namespaced(env_id: str) -> str:
    """``edgesplit/ID`` for a bare ``ID`` (applied to every id :func:`register_envs` registers)."""
    return env_id if "/" in env_id else f"{NAMESPACE}/{env_id}"


def canonical_id(env_id: str) -> str:
    """The bare id (``EdgeSplit-v0``) of ``edgesplit/EdgeSplit-v0`` or ``EdgeSplit-v0``."""
    return env_id[len(NAMESPACE) + 1:] if env_id.startswith(NAMESPACE + "/") else env_id


class DeprecatedAlias:
    """Entry point of a bare id: warns, then makes the namespaced id's env (picklable, unlike a closure)."""

    def __init__(self, env_id: str, entry_point: str) -> None:
        self.env_id, self.entry_point = env_id, entry_point

    def __call__(self, **kwargs):
        import warnings

        from gymnasium.envs.registration import load_env_creator

        warnings.warn(f"{self.env_id} is deprecated: use gym.make({namespaced(self.env_id)!r}) (same env, "
                      f"namespaced id)", DeprecationWarning, stacklevel=3)
        return load_env_creator(self.entry_point)(**kwargs)

    def __repr__(self) -> str:
        return f"DeprecatedAlias({self.env_id!r} -> {namespaced(self.env_id)!r})"


def register_envs() -> None:
    """Register every id under the ``edgesplit/`` namespace, and the bare id as a deprecated alias
    that warns (idempotent: ids already registered are left alone)."""
    for env_id, (entry_point, steps) in _ENTRY_POINTS.items():
        if namespaced(env_id) not in registry:
            register(id=namespaced(env_id), entry_point=entry_point, max_episode_steps=steps)
        if env_id not in registry:
            register(id=env_id, entry_point=DeprecatedAlias(env_id, entry_point), max_episode_steps=steps)


def action_from_plan(plan: Plan) -> dict[str, np.ndarray]:
    """The native action of an :class:`edgesplit.schedulers.Plan` (cuts 1..L -> indices 0..L-1)."""
    return {"cuts": np.asarray(plan.cuts, dtype=np.int64) - 1, "shares": np.asarray(plan.shares, dtype=np.float64)}


register_envs()

__all__ = [
    "ALL_IDS", "DEFAULT_ROUNDS", "MAX_OBS", "SIMULATED_IDS", "TRAIN_MAX_EPISODE_STEPS", "V1_MAX_EPISODE_STEPS", "WRAPPERS", "WRAPPER_NAMES",
    "ForecastAction",
    "CutsOnlyAction", "EdgeSplitBaseEnv", "EdgeSplitDynamicEnv", "EdgeSplitDynamicV1Env", "EdgeSplitEnv", "FlatBoxAction",
    "SharesOnlyAction", "action_from_plan", "canonical_id", "namespaced", "register_envs", "wrap",
]
