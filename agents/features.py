"""What a learned policy observes: the env's observation plus rate features (``rate_features``).

Observations are read through the layouts of :mod:`edgesplit.envs.layout` (defined once, used by
the envs, these features and the networks). Only what a real scheduler could know goes in: the
devices, their link *classes* (nominal rates) and the rates measured in the past.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgesplit.envs.layout import ObsLayout, per_round_layout, v1_layout

LOG_RATIO_CLIP = 4.0
"""Log-ratios of measured to nominal rates are clipped to ``[-LOG_RATIO_CLIP, LOG_RATIO_CLIP]``."""

FEATURES_VERSION = "rate-v1"
"""Recorded in a saved policy's metadata; a policy is refused if its features differ."""


def observation_layout(base: gym.Env) -> ObsLayout:
    """The layout of ``base``'s raw observation (v1 or the per-round envs)."""
    n, h = base.n_devices, getattr(base, "history", 1)
    return v1_layout(n, h) if hasattr(base, "policy_view") else per_round_layout(n, h)


def nominal_rates_bps(base: gym.Env) -> np.ndarray:
    """The devices' nominal (link-class) rates of the episode: the scenario's ``rate_bps``."""
    return base.cost_model.rate_bps


def feature_dim(n_devices: int, history: int, raw_dim: int) -> int:
    """Length of :func:`rate_features`' output."""
    return raw_dim + n_devices * (history + 1)


def rate_features(obs: np.ndarray, base: gym.Env) -> np.ndarray:
    """The env's observation plus rate features (float32).

    Appended per device: ``log(measured_{t-h} / nominal_i)`` for ``h = 1..history`` (clipped to
    ``±LOG_RATIO_CLIP``; an outage shows as the lower clip), then ``log(nominal_i / max_j nominal_j)``.
    ``obs`` must be ``base``'s raw observation (rates are read from its ``rates`` block: relative
    to the fastest class in the per-round envs, to the device's own class in v1).
    """
    obs = np.asarray(obs, dtype=np.float64)
    lay = observation_layout(base)
    n = base.n_devices
    h = getattr(base, "history", 1)
    nom = nominal_rates_bps(base)
    top = nom.max()
    block = obs[lay.block("rates")].reshape(h, n)
    rates = block * nom if hasattr(base, "policy_view") else block * top  # bit/s (clipped at MAX_OBS)
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
