"""PPO on the learned v1 tilt's action, on ``EdgeSplitDynamic-v1`` itself (the first attempt; see
``docs/agents.md`` for why evolution strategies ship instead).

:class:`TiltActionEnv` wraps the env so that an agent sees the tilt's per-device features
(:data:`edgesplit.agents.learned_v1.FEATURE_NAMES`, flattened device-major, with a still-sending
mask) and acts with a per-device log-tilt in ``[-1, 1] * clip`` added to the PF backbone, exactly
the action space of the ES-trained tilt; the reward is the env's (``-step seconds / T_ref``).

    python -m edgesplit.agents.learned_v1_ppo --traces DIR [DIR ...] --exclude-family NAME \\
        --minutes 10 --out runs/ppo-v1 [--eval-episodes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from edgesplit.agents.learned_v1 import N_FEATURES, LearnedV1Policy, TiltConfig, TiltModel


class TiltActionEnv(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``EdgeSplitDynamic-v1`` with the tilt's observation and action (see module doc)."""

    def __init__(self, env: gym.Env, cfg: TiltConfig | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, cfg=cfg)
        gym.Wrapper.__init__(self, env)
        self.cfg = cfg or TiltConfig()
        self.n = env.unwrapped.n_devices
        self._pol = LearnedV1Policy(model=TiltModel.zero(self.cfg), name="ppo-tilt")
        d = self.n * (N_FEATURES + 1)
        self.observation_space = spaces.Box(-10.0, 10.0, (d,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.n,), np.float32)

    def _obs(self) -> np.ndarray:
        self._x, self._base, self._sending = self._pol.features()
        o = np.concatenate([self._x[0], self._sending[0, :, None].astype(np.float64)], axis=1).ravel()
        return np.clip(o, -10.0, 10.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._pol.reset(self.env, seed)
        return self._obs(), info

    def step(self, action: np.ndarray):
        g = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * self.cfg.clip
        logits = np.where(self._sending, self._base + g[None], -np.inf)
        _, reward, term, trunc, info = self.env.step(self._pol.action_from_logits(logits))
        obs = self._obs() if not (term or trunc) else np.zeros(self.observation_space.shape, np.float32)
        return obs, reward, term, trunc, info


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train PPO on the tilt action and compare it with the PF backbone on held-out episodes."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(prog="python -m edgesplit.agents.learned_v1_ppo", description=__doc__.split("\n")[0])
    ap.add_argument("--traces", nargs="+", required=True, help="trace folders")
    ap.add_argument("--exclude-family", nargs="*", default=[], help="families left out of training")
    ap.add_argument("--eval-family", default=None, help="family to judge on (default: the first excluded)")
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    ap.add_argument("--n-devices", type=int, default=10, help="devices")
    ap.add_argument("--eval-episodes", type=int, default=4, help="evaluation episodes (5 rounds each)")
    ap.add_argument("--seed", type=int, default=0, help="seed")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from edgesplit import envs  # noqa: F401
    from edgesplit.agents.learned_v1_training import load_training_families

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_training_families(args.traces, args.exclude_family)

    def make(fams: list, rounds: int = 20):
        return lambda: TiltActionEnv(gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=args.n_devices, traces=fams,
                                              rounds=rounds))

    venv = DummyVecEnv([make(train) for _ in range(4)])
    venv.seed(args.seed)
    model = PPO("MlpPolicy", venv, n_steps=512, batch_size=256, gamma=0.995, gae_lambda=0.95, learning_rate=3e-4,
                ent_coef=0.0, policy_kwargs={"log_std_init": -1.5, "net_arch": [64, 64]}, seed=args.seed, verbose=0)

    class Budget(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.time()

        def _on_step(self) -> bool:
            if self.n_calls % 2048 == 0:
                el = time.time() - self.t0
                print(f"{self.num_timesteps} steps, {el:.0f} s, {self.num_timesteps / el:.0f} env steps/s",
                      file=sys.stderr, flush=True)
            return time.time() - self.t0 < 60 * args.minutes

    t0 = time.time()
    model.learn(total_timesteps=10**8, callback=Budget())
    wall = time.time() - t0
    model.save(out / "ppo")
    fam = args.eval_family or (args.exclude_family[0] if args.exclude_family else None)
    evals = load_training_families(args.traces, []) if fam is None else \
        [f for f in load_training_families(args.traces, []) if f.name == fam]
    env = make(evals, rounds=5)()
    res = {"ppo": [], "pf-backbone": []}
    for k in range(args.eval_episodes):
        for name in res:
            obs, _ = env.reset(seed=20_000 + k)
            total, done = 0.0, False
            while not done:
                a = model.predict(obs, deterministic=True)[0] if name == "ppo" else np.zeros(env.action_space.shape)
                obs, _, term, trunc, info = env.step(a)
                total += info["step_time_s"]
                done = term or trunc
            res[name].append(total)
    summary = {"steps": int(model.num_timesteps), "wall_s": round(wall, 1), "eval_family": fam,
               "mean_total_s": {k: float(np.mean(v)) for k, v in res.items()},
               "ppo_over_pf": float(np.mean(res["ppo"]) / np.mean(res["pf-backbone"]))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
