"""Environments as the agents see them: trace splits, rate features, the forecast action, a factory.

Everything here sits on top of :mod:`envs` and uses only its public hooks
(``cost_model``, ``planning_cost_model()``, ``known_rates_bps()``, ``history``), so a learned
scheduler never sees more than a real scheduler could: the devices, their link *classes* (the
nominal mean rates, which the ``static`` scheduler also uses) and the rates measured in past rounds.

Wrapper names (``--wrapper``):

============  ===================================================  ==========================================
name          action space                                         mapping (see :mod:`edgesplit.envs.wrappers`)
============  ===================================================  ==========================================
``flat``      ``Box(-1, 1, (2N,))``                                cuts and shares (``edgesplit.envs.wrappers.FlatBoxAction``)
``hybrid``    ``MultiDiscrete([L] * N)``                           cuts; optimal shares at the last measured
                                                                   rates (``edgesplit.envs.wrappers.CutsOnlyAction``)
``shares``    ``Box(-1, 1, (N,))``                                 shares; the alternating rule's cuts at the last
                                                                   measured rates (``edgesplit.envs.wrappers.SharesOnlyAction``)
``forecast``  ``Box(-1, 1, (N,))``                                 a rate forecast per device: the ``exact``
                                                                   scheduler plans on it (:class:`ForecastAction`)
============  ===================================================  ==========================================

Every learned policy observes :func:`rate_features` (:class:`RateFeatures`): the env's observation
plus, per device, the log-ratio of each measured rate of the history to the device's nominal rate,
and the log of its nominal rate relative to the fastest link class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgesplit import envs
from edgesplit.costmodel import CostModel, optimal_shares
from edgesplit.traces import Trace, default_traceset, load_traces

WRAPPER_NAMES: tuple[str, ...] = ("flat", "hybrid", "shares", "forecast")
"""Names accepted by ``--wrapper``."""

FORECAST_RANGE = math.e
"""The forecast action ``a`` in ``[-1, 1]`` plans on ``nominal * FORECAST_RANGE ** a`` (= ``nominal * exp(a)``)."""

LOG_RATIO_CLIP = 4.0
"""Log-ratios of measured to nominal rates are clipped to ``[-LOG_RATIO_CLIP, LOG_RATIO_CLIP]``."""

FEATURES_VERSION = "rate-v1"
"""Recorded in a saved policy's metadata; a policy is refused if its features differ."""

TEST_FRACTION = 0.3
"""Fraction of the traces of each family held out by :func:`split_traces` (``test``)."""

PLANNER_GRID = 32
"""Intervals per pass of :func:`fast_exact_plan`'s grid search (3 passes: relative precision ~3e-5)."""


# ----------------------------------------------------------------------------- traces


def trace_family(name: str) -> str:
    """``fcc`` for Pensieve's FCC broadband traces (``trace_*``), ``hsdpa`` for the Norway 3G
    ones, ``synthetic`` for the built-in set; by the file's base name."""
    base = Path(name).name
    if base.startswith("synthetic"):
        return "synthetic"
    return "fcc" if base.startswith("trace_") else "hsdpa"


def split_traces(traces: Sequence[Trace], split: str, test_fraction: float = TEST_FRACTION,
                 seed: int = 0) -> list[Trace]:
    """The ``train``, ``test`` or ``all`` part of ``traces``: per family, a seeded permutation of the
    traces sorted by base name; the first ``round(test_fraction * n)`` (at least 1 when a family
    has 2 or more) are ``test``, the rest ``train``. Deterministic, and disjoint by construction."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"trace_split: must be train, test or all, got {split!r}")
    if split == "all":
        return list(traces)
    families: dict[str, list[Trace]] = {}
    for t in sorted(traces, key=lambda t: Path(t.name).name):
        families.setdefault(trace_family(t.name), []).append(t)
    out: list[Trace] = []
    rng = np.random.default_rng(seed)
    for fam in sorted(families):
        group = families[fam]
        perm = rng.permutation(len(group))
        n_test = int(round(test_fraction * len(group)))
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        else:
            n_test = 0
        test_idx = set(perm[:n_test].tolist())
        out.extend(t for j, t in enumerate(group) if (j in test_idx) == (split == "test"))
    if not out:
        raise ValueError(f"trace_split: the {split!r} part of {len(traces)} traces is empty")
    return out


def load_trace_list(traces: str | Path | None, split: str = "all") -> list[Trace]:
    """Traces from a folder or glob (``None``: the built-in synthetic set), then :func:`split_traces`."""
    if traces is None:
        found = list(default_traceset().traces)
    else:
        found = load_traces(traces)
    return split_traces(found, split)


# ----------------------------------------------------------------------------- features


def nominal_rates_bps(base: gym.Env) -> np.ndarray:
    """The devices' nominal (link-class mean) rates of the episode: the scenario's ``rate_bps``."""
    return base.cost_model.rate_bps


def feature_dim(n_devices: int, history: int, raw_dim: int) -> int:
    """Length of :func:`rate_features`' output."""
    return raw_dim + n_devices * (history + 1)


def rate_features(obs: np.ndarray, base: gym.Env) -> np.ndarray:
    """The env's observation plus rate features (float32).

    Appended per device: ``log(measured_{t-h} / nominal_i)`` for ``h = 1..history`` (clipped to
    ``±LOG_RATIO_CLIP``; an outage shows as the lower clip), then ``log(nominal_i / max_j nominal_j)``.
    ``obs`` must be ``base``'s raw observation (rates are read from its rate blocks).
    """
    obs = np.asarray(obs, dtype=np.float64)
    n = base.n_devices
    h = getattr(base, "history", 1)
    nom = nominal_rates_bps(base)
    top = nom.max()
    rates = obs[2 * n:(2 + h) * n].reshape(h, n) * top  # measured rates in bit/s (clipped at MAX_OBS * top)
    floor = nom * math.exp(-LOG_RATIO_CLIP)
    logratio = np.log(np.maximum(rates, floor) / nom)
    np.clip(logratio, -LOG_RATIO_CLIP, LOG_RATIO_CLIP, out=logratio)
    lognom = np.log(nom / top)
    return np.concatenate([obs, logratio.ravel(), lognom]).astype(np.float32)


class RateFeatures(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observation wrapper: :func:`rate_features` of the env's observation."""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        base = env.unwrapped
        raw = env.observation_space
        n, h = base.n_devices, getattr(base, "history", 1)
        lo = np.concatenate([raw.low, np.full(n * h, -LOG_RATIO_CLIP), np.full(n, -50.0)])
        hi = np.concatenate([raw.high, np.full(n * h, LOG_RATIO_CLIP), np.zeros(n)])
        self.observation_space = spaces.Box(lo.astype(np.float32), hi.astype(np.float32), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The featurised observation."""
        return rate_features(observation, self.env.unwrapped)


# ----------------------------------------------------------------------------- the forecast action


def fast_exact_plan(cm: CostModel, passes: int = 3, grid: int = PLANNER_GRID) -> tuple[np.ndarray, np.ndarray]:
    """The ``exact`` scheduler's plan (cuts 1..L, shares), found by a vectorised grid search.

    The same feasibility test as :func:`edgesplit.schedulers.get_scheduler` ``("exact")``
    (``T`` is feasible iff ``sum_i min_c v_ic / (T - A_ic) <= 1``), but instead of ~25 bisection
    steps it tests ``grid`` values of ``T`` at once, ``passes`` times, each pass zooming into the
    interval where feasibility starts: ~10x faster, within ``grid ** -passes`` of the optimum
    (relative to the starting bracket). Rates must be positive (the forecast's always are).
    """
    A = cm.compute_s
    v = cm.seconds_alone()
    feas = cm.feasible & np.isfinite(v)
    if not feas.any(axis=1).all():
        raise ValueError("fast_exact_plan: a device has no feasible cut with a positive rate")
    n = cm.n_devices
    lo = float(np.max(np.min(np.where(feas, A + v, np.inf), axis=1)))
    hi = float(np.max(np.min(np.where(feas, A + n * v, np.inf), axis=1)))
    Af = np.where(feas, A, np.inf)[None]  # (1, N, L); infeasible cuts never fit

    def demand(T: np.ndarray) -> np.ndarray:
        gap = T[:, None, None] - Af
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(gap > 0, v[None] / gap, np.inf)
        return d.min(axis=2).sum(axis=1)

    if demand(np.array([lo]))[0] > 1.0:
        for _ in range(passes):
            Ts = np.linspace(lo, hi, grid + 1)
            ok = demand(Ts[1:-1]) <= 1.0
            k = int(np.argmax(ok)) + 1 if ok.any() else grid
            lo, hi = float(Ts[k - 1]), float(Ts[k])
    else:
        hi = lo
    gap = hi - A
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(feas & (gap > 0), v / gap, np.inf)
    cuts = np.argmin(d, axis=1) + 1
    a, vb = cm.select(cuts)
    shares, _ = optimal_shares(a, vb, cm.rate_bps)
    return cuts, shares



class ForecastAction(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``Box(-1, 1, (N,), float32)``: a rate forecast per device; the ``exact`` scheduler plans on it.

    Action ``a_i`` means "device ``i``'s link will deliver ``nominal_i * FORECAST_RANGE ** a_i`` in
    the coming round", ``nominal_i`` being its link-class mean rate (``FORECAST_RANGE = e``: the
    forecast is ``nominal_i * exp(a_i)``, between 0.37x and 2.7x nominal). The cuts and shares are
    the globally optimal plan for those rates (:func:`fast_exact_plan`, the ``exact`` scheduler's
    rule). ``a = 0`` is the ``static`` scheduler; ``a_i = log(measured_i / nominal_i)`` (where it
    fits the range) is ``exact`` re-solved on the last measured rates. Learning a forecast is much easier than
    learning raw cuts and shares, and the plan stays feasible and optimal for what the agent
    believes. Entries outside ``[-1, 1]`` or NaN raise ``ValueError``.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        base = env.unwrapped
        if not hasattr(base, "cost_model") and not hasattr(base, "planning_cost_model"):
            raise TypeError(f"ForecastAction: expects an EdgeSplit environment, got {base!r}")
        self.n_devices: int = base.n_devices
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.n_devices,), dtype=np.float32)

    def forecast_rates_bps(self, action: np.ndarray) -> np.ndarray:
        """The rates the planner assumes for ``action``."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.n_devices,):
            raise ValueError(f"action: expected shape ({self.n_devices},), got {a.shape}")
        if not (np.all(a >= -1.0) and np.all(a <= 1.0)):  # also catches NaN
            i = int(np.flatnonzero(~((a >= -1.0) & (a <= 1.0)))[0])
            raise ValueError(f"action[{i}]: {a[i]} is not a number in [-1, 1]")
        return nominal_rates_bps(self.env.unwrapped) * FORECAST_RANGE ** a

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        """The native action: the exact plan on the forecast rates."""
        cm = self.env.unwrapped.cost_model.with_rates(self.forecast_rates_bps(action))
        cuts, shares = fast_exact_plan(cm)
        return {"cuts": cuts - 1, "shares": shares}


# ----------------------------------------------------------------------------- training reward


REWARDS: tuple[str, ...] = ("env", "counterfactual")
"""Training rewards: the env's ``-T / T_ref``, or :class:`CounterfactualReward`."""


class CounterfactualReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Training-only reward with a counterfactual baseline: ``(T_static - T) / T_ref``.

    ``T_static`` is the round time the ``static`` plan (exact on the nominal rates) would have had
    in the *same* round, from the same state (its migration included), over the same stretch of
    the traces: computed exactly with the dynamic env's ``transfer_seconds`` query. It depends on
    the trace the round meets but not on the action, so in every round the action that maximises
    this reward is the one that minimises the round time; what the baseline removes is most of the
    trace noise that the agent cannot observe and that otherwise drowns the effect of its action.
    The policy never sees ``T_static`` (privileged information for the *reward* only; evaluation
    always uses true round times). A stalled round keeps the env's penalty. In ``EdgeSplit-v0``
    ``T_static`` is the static plan's (constant) round time. ``info["counterfactual_round_time_s"]``
    holds ``T_static``.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the env and plan the static reference of the episode."""
        obs, info = self.env.reset(seed=seed, options=options)
        cm = self.env.unwrapped.cost_model
        self._cuts, self._shares = fast_exact_plan(cm)
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


# ----------------------------------------------------------------------------- factory


def action_wrapper(env: gym.Env, wrapper: str) -> gym.Env:
    """``env`` wrapped by the action wrapper called ``wrapper`` (see :data:`WRAPPER_NAMES`)."""
    if wrapper == "forecast":
        return ForecastAction(env)
    if wrapper == "hybrid":
        return envs.wrap(env, "cuts")
    if wrapper in ("flat", "shares"):
        return envs.wrap(env, wrapper)
    raise ValueError(f"wrapper: must be one of {', '.join(WRAPPER_NAMES)}, got {wrapper!r}")


def env_kwargs(env_id: str, n_devices: int, traces: Sequence[Trace] | None = None,
               history: int = 3, **extra: Any) -> dict[str, Any]:
    """``gym.make`` keyword arguments for ``env_id`` as agents use it (dynamic: ``alternating_info``
    off, since evaluation runs the alternating policy itself)."""
    env_id = envs.canonical_id(env_id)  # edgesplit/ID or ID (H-rl)
    if env_id not in envs.SIMULATED_IDS:
        raise ValueError(f"env: must be one of {', '.join(envs.SIMULATED_IDS)} (simulated envs), got {env_id!r}")
    kw: dict[str, Any] = {"n_devices": int(n_devices), **extra}
    if env_id == "EdgeSplitDynamic-v0":
        kw.update(alternating_info=False, history=int(history))
        if traces is not None:
            kw["traces"] = list(traces)
    elif traces is not None:
        raise ValueError("traces: EdgeSplit-v0 has fixed link rates; traces apply to EdgeSplitDynamic-v0 only")
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
