"""Action wrappers that make the EdgeSplit environments usable by stable-baselines3.

The native action is a ``Dict`` of cut indices and shares, which SB3 does not take. Four views,
each under one name (:data:`WRAPPERS`; ``--wrapper`` of ``train-agent``/``evaluate``):

============  ==========================  =====================================  ===============================================
name          wrapper                     action space                           mapping to the native action
============  ==========================  =====================================  ===============================================
``flat``      :class:`FlatBoxAction`      ``Box(-1, 1, (2N,))`` (PPO/SAC/TD3)     first N: cuts, second N: shares (see below)
``hybrid``    :class:`CutsOnlyAction`     ``MultiDiscrete([L] * N)``             cuts; shares set optimally for them
``shares``    :class:`SharesOnlyAction`   ``Box(-1, 1, (N,))``                   shares; each device's best cut for its share
``forecast``  :class:`ForecastAction`     ``Box(-1, 1, (N,))``                   a rate forecast per device; the ``exact``
                                                                                 scheduler's plan on it
============  ==========================  =====================================  ===============================================

Mappings (documented because they shape what an agent can express):

- **cut** from ``a`` in ``[-1, 1]``: index ``floor((a + 1) / 2 * L)`` clipped to ``L - 1``, i.e. L
  equal bins; the env then masks cuts that do not fit the memory.
- **shares** from ``a`` in ``[-1, 1]^N``: ``exp(kappa * a)`` normalised to sum 1 with
  ``kappa = ln(1000) / 2``, so shares are always positive and the largest can be up to 1000
  times the smallest.
- **optimal shares** (:class:`CutsOnlyAction`): :func:`edgesplit.costmodel.optimal_shares` for the
  chosen (memory-masked) cuts at the rates the agent knows (the true rates in ``EdgeSplit-v0``,
  the last measured ones in ``EdgeSplitDynamic-v0``), counting the migration bits the change of
  cut costs.
- **alternating cuts** (:class:`SharesOnlyAction`): :func:`edgesplit.schedulers.best_cuts_for_shares`
  at the known rates: the alternating algorithm's cut step for the agent's shares (it does not
  count migration).

Entries that are NaN, infinite or outside ``[-1, 1]`` raise ``ValueError`` naming the entry (SB3
clips or squashes its actions into the space, so this only catches real bugs).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgesplit.costmodel import optimal_shares
from edgesplit.schedulers import best_cuts_for_shares, get_scheduler

FORECAST_RANGE = math.e
"""The forecast action ``a`` in ``[-1, 1]`` plans on ``nominal * FORECAST_RANGE ** a`` (= ``nominal * exp(a)``)."""

SHARE_KAPPA = math.log(1000.0) / 2.0
"""Slope of the share mapping: ``share ∝ exp(SHARE_KAPPA * a)`` for ``a`` in ``[-1, 1]``."""


def _check_unit_box(a: Any, n: int, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{what}: expected shape ({n},), got {arr.shape}")
    al = arr.tolist()
    if not (math.isfinite(sum(al)) and min(al) >= -1.0 and max(al) <= 1.0):  # the sum catches NaN
        for i, x in enumerate(al):
            if not math.isfinite(x):
                raise ValueError(f"{what}[{i}]: {x} is not finite (NaN or inf)")
            if not -1.0 <= x <= 1.0:
                raise ValueError(f"{what}[{i}]: {x} is outside [-1, 1]")
    return arr


def cuts_from_unit(a: np.ndarray, n_layers: int) -> np.ndarray:
    """Cut indices 0..L-1 from values in ``[-1, 1]`` (L equal bins)."""
    idx = np.floor((np.asarray(a, dtype=np.float64) + 1.0) * (0.5 * n_layers)).astype(np.intp)
    return np.minimum(np.maximum(idx, 0), n_layers - 1)


def shares_from_unit(a: np.ndarray) -> np.ndarray:
    """Positive shares summing to 1 from values in ``[-1, 1]``: ``exp(kappa a) / sum``."""
    w = np.exp(SHARE_KAPPA * np.asarray(a, dtype=np.float64))
    return w / w.sum()


class _EdgeSplitActionWrapper(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        base = env.unwrapped
        if not hasattr(base, "parse_action") or not hasattr(base, "planning_cost_model"):
            raise TypeError(f"{type(self).__name__}: expects an EdgeSplit environment, got {base!r}")
        self.n_devices: int = base.n_devices
        self.n_layers: int = base.n_layers


class FlatBoxAction(_EdgeSplitActionWrapper):
    """``Box(-1, 1, (2N,), float32)``: ``a[:N]`` choose the cuts, ``a[N:]`` the shares (see module doc)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2 * self.n_devices,), dtype=np.float32)

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """Map a flat action to the native ``{"cuts", "shares"}``."""
        a = _check_unit_box(action, 2 * self.n_devices, "action")
        n = self.n_devices
        return {"cuts": cuts_from_unit(a[:n], self.n_layers), "shares": shares_from_unit(a[n:])}


class CutsOnlyAction(_EdgeSplitActionWrapper):
    """``MultiDiscrete([L] * N)`` of cut indices (``k`` = cut ``k+1``); shares set optimally for them."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = spaces.MultiDiscrete(np.full(self.n_devices, self.n_layers, dtype=np.int64))

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """The native action: these cuts, the optimal shares for them at the known rates."""
        base = self.env.unwrapped
        cuts = np.asarray(action)
        if cuts.shape != (self.n_devices,):
            raise ValueError(f"action: expected shape ({self.n_devices},), got {cuts.shape}")
        if cuts.dtype.kind == "f" and not np.isfinite(cuts).all():
            i = int(np.flatnonzero(~np.isfinite(cuts))[0])
            raise ValueError(f"action[{i}]: {cuts[i]} is not finite (NaN or inf)")
        if ((cuts < 0) | (cuts >= self.n_layers)).any():
            i = int(np.flatnonzero((cuts < 0) | (cuts >= self.n_layers))[0])
            raise ValueError(f"action[{i}]: {cuts[i]} is out of range 0..{self.n_layers - 1}")
        cuts = cuts.astype(np.intp)
        cm = base.planning_cost_model()
        eff = base.effective_cuts(cuts) + 1
        a, v = cm.select(eff)
        shares, _ = optimal_shares(a, v + base.migration_bits(eff), cm.rate_bps)
        return {"cuts": cuts, "shares": shares}


class SharesOnlyAction(_EdgeSplitActionWrapper):
    """``Box(-1, 1, (N,), float32)`` of shares (exp mapping); each device's best cut for its share."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.n_devices,), dtype=np.float32)

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """The native action: these shares, the alternating rule's cuts for them at the known rates."""
        a = _check_unit_box(action, self.n_devices, "action")
        shares = shares_from_unit(a)
        cuts = best_cuts_for_shares(self.env.unwrapped.planning_cost_model(), shares)
        return {"cuts": (cuts - 1).astype(np.intp), "shares": shares}


class ForecastAction(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``Box(-1, 1, (N,), float32)``: a rate forecast per device; the ``exact`` scheduler plans on it.

    Action ``a_i`` means "device ``i``'s link will deliver ``nominal_i * FORECAST_RANGE ** a_i`` in
    the coming round", ``nominal_i`` being its link-class rate (``FORECAST_RANGE = e``: the
    forecast is ``nominal_i * exp(a_i)``, between 0.37x and 2.7x nominal). The cuts and shares are
    :mod:`edgesplit.schedulers`' ``exact`` plan (the global optimum) for those rates. ``a = 0`` is
    the ``static`` scheduler; ``a_i = log(measured_i / nominal_i)`` (where it fits the range) is
    ``exact`` re-solved on the last measured rates. Entries outside ``[-1, 1]`` or NaN raise
    ``ValueError``.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        base = env.unwrapped
        if not hasattr(base, "cost_model") and not hasattr(base, "planning_cost_model"):
            raise TypeError(f"ForecastAction: expects an EdgeSplit environment, got {base!r}")
        self.n_devices: int = base.n_devices
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.n_devices,), dtype=np.float32)
        self._exact = get_scheduler("exact")

    def forecast_rates_bps(self, action: np.ndarray) -> np.ndarray:
        """The rates the planner assumes for ``action``."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_devices,):
            raise ValueError(f"action: expected shape ({self.n_devices},), got {a.shape}")
        if not (np.all(a >= -1.0) and np.all(a <= 1.0)):  # also catches NaN
            i = int(np.flatnonzero(~((a >= -1.0) & (a <= 1.0)))[0])
            raise ValueError(f"action[{i}]: {a[i]} is not a number in [-1, 1]")
        return self.env.unwrapped.cost_model.rate_bps * FORECAST_RANGE ** a

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """The native action: the exact plan on the forecast rates."""
        plan = self._exact.plan(self.env.unwrapped.cost_model.with_rates(self.forecast_rates_bps(action)))
        return {"cuts": plan.cuts - 1, "shares": plan.shares}


WRAPPERS: dict[str, type[gym.ActionWrapper]] = {
    "flat": FlatBoxAction,
    "hybrid": CutsOnlyAction,
    "shares": SharesOnlyAction,
    "forecast": ForecastAction,
}
"""Every action wrapper, by its one name."""

WRAPPER_NAMES: tuple[str, ...] = tuple(WRAPPERS)
"""Names accepted by :func:`wrap` (besides ``native``) and by ``--wrapper``."""


def wrap(env: gym.Env, kind: str) -> gym.Env:
    """``env`` wrapped by the action wrapper called ``kind`` (see :data:`WRAPPERS`), or as is for ``native``."""
    if kind == "native":
        return env
    if kind not in WRAPPERS:
        raise ValueError(f"wrapper: must be one of native, {', '.join(WRAPPERS)}, got {kind!r}")
    return WRAPPERS[kind](env)
