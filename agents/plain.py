"""Play a plain stable-baselines3 ``.zip`` (trained outside ``edgesplit train-agent``) as a policy.

A model trained with plain SB3 on ``gym.make("edgesplit/EdgeSplitDynamic-v0")`` wrapped by one of
the action wrappers has no metadata, so ``edgesplit evaluate --policy model.zip --wrapper NAME``
says which wrapper maps its actions (``flat``, ``hybrid``, ``shares``, ``forecast``). Its
observation is the env's raw observation, or :func:`edgesplit.agents.environment.rate_features`
when the model's input has that size. Observation normalisation: ``normalize`` = a ``*.norm.json``
written by ``train-agent`` (JSON, safe), or a ``VecNormalize`` ``.pkl`` (a pickle: only with
``trust=True``). The zip itself is loaded without unpickling (:func:`edgesplit.agents.loading.load_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgesplit.agents.environment import WRAPPER_NAMES, action_wrapper, feature_dim, rate_features
from edgesplit.agents.loading import ModelFileError, load_model, read_zip_data, space_from_json
from edgesplit.agents.policies import Policy


class PlainSB3Policy(Policy):
    """A plain SB3 model with an action wrapper chosen by name (see module doc)."""

    def __init__(self, path: str | Path, wrapper: str, algo: str | None = None, normalize: str | Path | None = None,
                 trust: bool = False, name: str | None = None) -> None:
        if wrapper not in WRAPPER_NAMES:
            raise ValueError(f"--wrapper: must be one of {', '.join(WRAPPER_NAMES)}, got {wrapper!r}")
        self.path = Path(path)
        self.wrapper = wrapper
        self.name = name or self.path.stem
        data = read_zip_data(self.path)
        obs = data.get("observation_space")
        space = space_from_json(obs) if isinstance(obs, dict) else None
        self.obs_dim = int(space.shape[0]) if space is not None and space.shape else None
        self.model = load_model(self.path, algo, trust=trust)
        if self.obs_dim is None:
            self.obs_dim = int(self.model.observation_space.shape[0])
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._clip = 10.0
        if normalize is not None:
            self._load_normalize(Path(normalize), trust)

    def _load_normalize(self, p: Path, trust: bool) -> None:
        if p.suffix == ".json":
            try:
                st = json.loads(p.read_text())
                mean = np.asarray(st["obs_rms"]["mean"], dtype=np.float64)
                var = np.asarray(st["obs_rms"]["var"], dtype=np.float64)
                eps, clip = float(st.get("epsilon", 1e-8)), float(st.get("clip_obs", 10.0))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ModelFileError(f"--normalize: {p} is not a normalisation JSON ({exc})") from None
        else:
            if not trust:
                raise ModelFileError(f"--normalize: {p} is a pickle (VecNormalize .pkl); loading it runs code from "
                                     f"the file. Use the run's *.norm.json, or pass --trust if you trust it")
            import pickle

            try:
                with open(p, "rb") as fh:
                    vn = pickle.load(fh)  # noqa: S301 - only with --trust
                mean, var = np.asarray(vn.obs_rms.mean), np.asarray(vn.obs_rms.var)
                eps, clip = float(vn.epsilon), float(vn.clip_obs)
            except (OSError, pickle.UnpicklingError, AttributeError, EOFError) as exc:
                raise ModelFileError(f"--normalize: {p} is not a VecNormalize file ({exc})") from None
        self._mean, self._std, self._clip = mean, np.sqrt(var + eps), clip

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind the episode; check the observation size; build the action mapping."""
        super().reset(env, seed)
        raw = int(env.observation_space.shape[0])
        base = env.unwrapped
        feat = feature_dim(base.n_devices, getattr(base, "history", 1), raw)
        if self.obs_dim not in (raw, feat):
            raise ValueError(f"policy {self.path.name}: its observation has {self.obs_dim} entries; this env gives "
                             f"{raw} (raw) or {feat} (rate features): another N or history?")
        self._features = self.obs_dim == feat and feat != raw
        self._mapper = action_wrapper(env, self.wrapper)
        if self._mapper.action_space.shape != self.model.action_space.shape:
            raise ValueError(f"policy {self.path.name}: its action space {self.model.action_space} does not match "
                             f"the {self.wrapper} wrapper's {self._mapper.action_space} (--wrapper, N?)")

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action of the model's deterministic action."""
        x = rate_features(obs, self.base) if self._features else np.asarray(obs, dtype=np.float32)
        if self._mean is not None:
            x = np.clip((x - self._mean) / self._std, -self._clip, self._clip).astype(np.float32)
        a, _ = self.model.predict(x, deterministic=True)
        if isinstance(self._mapper.action_space, gym.spaces.Box):
            a = np.clip(a, -1.0, 1.0)
        return self._mapper.action(a)
