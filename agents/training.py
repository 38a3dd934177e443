"""Train stable-baselines3 schedulers on the EdgeSplit environments (CleanRL habits).

- :func:`seed_everything` seeds Python, numpy and torch in one place (and pins torch threads);
- a run is named ``env__algo__seed__unixtime`` and lives in ``OUT/<run name>/``;
- its hyper-parameters are written to ``hyperparams.json`` before training starts;
- env steps per second are measured inside the algorithm (time spent collecting rollouts) and
  printed, next to the overall steps per second (rollouts plus gradient updates);
- ``VecNormalize`` statistics are saved with the model (``vecnormalize.pkl``, and the observation
  statistics again in ``model.json`` so that a shipped policy is one ``.zip`` plus one ``.json``);
- a checkpoint every ``checkpoint_every`` steps (``checkpoints/``, with the normalisation
  statistics), and ``resume=True`` continues the latest run of the same env, algo and seed from its
  latest checkpoint up to ``timesteps`` in all;
- a progress bar (tqdm) and SB3's logs (``progress.csv``; TensorBoard if asked and installed).

Run folder::

    OUT/EdgeSplitDynamic-v0__ppo__0__1717171717/
        hyperparams.json  model.zip  model.json  vecnormalize.pkl  progress.csv  checkpoints/
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from edgesplit.agents.environment import (FEATURES_VERSION, REWARDS, WRAPPER_NAMES, env_kwargs, load_trace_list, make_agent_env)
from edgesplit.agents.policies import ALGOS, METADATA_FORMAT, _load_algo

DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 256, "batch_size": 256, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.9,
            "gae_lambda": 0.9, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5,
            "policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "log_std_init": -2.0}},
    "a2c": {"n_steps": 16, "learning_rate": 7e-4, "gamma": 0.9, "gae_lambda": 0.9, "ent_coef": 0.0,
            "policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "log_std_init": -2.0}},
    "sac": {"learning_rate": 3e-4, "buffer_size": 100_000, "learning_starts": 1000, "batch_size": 256,
            "gamma": 0.9, "tau": 0.005, "train_freq": 8, "gradient_steps": 2,
            "policy_kwargs": {"net_arch": [64, 64]}},
    "td3": {"learning_rate": 3e-4, "buffer_size": 100_000, "learning_starts": 1000, "batch_size": 256,
            "gamma": 0.9, "tau": 0.005, "train_freq": 8, "gradient_steps": 2, "action_noise_sigma": 0.1,
            "policy_kwargs": {"net_arch": [64, 64]}},
}
"""Per-algorithm defaults (``gamma = 0.9``: a round's plan matters mostly for that round)."""

NETS: tuple[str, ...] = ("auto", "device", "mlp")
"""Policy networks: ``device`` (:class:`edgesplit.agents.networks.DeviceSharedPolicy`, PPO/A2C), ``mlp``
(SB3's ``MlpPolicy``), ``auto`` (``device`` for PPO/A2C, ``mlp`` for SAC/TD3)."""

DISCRETE_ONLY_ON_POLICY = ("ppo", "a2c")
"""Algorithms that accept the ``hybrid`` wrapper's ``MultiDiscrete`` action."""


def seed_everything(seed: int, threads: int = 1) -> None:
    """Seed ``random``, numpy's legacy generator and torch; pin torch to ``threads`` threads."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(threads)))
    os.environ["PYTHONHASHSEED"] = str(seed)


def run_name(env_id: str, algo: str, seed: int, when: float | None = None) -> str:
    """``env__algo__seed__unixtime``."""
    return f"{env_id}__{algo}__{seed}__{int(time.time() if when is None else when)}"


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``hyperparams.json``)."""

    env_id: str = "EdgeSplitDynamic-v0"
    algo: str = "ppo"
    wrapper: str = "forecast"
    timesteps: int = 100_000
    seed: int = 0
    out: str = "runs"
    n_devices: int = 10
    traces: str | None = None
    trace_split: str = "all"
    history: int = 3
    reward: str = "env"
    net: str = "auto"
    n_envs: int = 8
    vec: str = "dummy"
    checkpoint_every: int = 50_000
    resume: bool = False
    progress_bar: bool = True
    tensorboard: bool = False
    threads: int = 1
    print_every_s: float = 30.0
    hyperparams: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def check(self) -> None:
        """Raise ``ValueError`` naming a bad field."""
        if self.algo not in ALGOS:
            raise ValueError(f"algo: must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.wrapper not in WRAPPER_NAMES:
            raise ValueError(f"wrapper: must be one of {', '.join(WRAPPER_NAMES)}, got {self.wrapper!r}")
        if self.wrapper == "hybrid" and self.algo not in DISCRETE_ONLY_ON_POLICY:
            raise ValueError(f"wrapper: hybrid has a MultiDiscrete action, which {self.algo} does not "
                             f"support; use ppo or a2c, or a Box wrapper (flat, shares, forecast)")
        for name in ("timesteps", "n_devices", "n_envs", "checkpoint_every", "history", "threads"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {', '.join(NETS)}, got {self.net!r}")
        if self.net == "device" and self.algo not in ("ppo", "a2c"):
            raise ValueError(f"net: the device-shared network is for ppo and a2c, not {self.algo}; use --net mlp")
        if self.reward not in REWARDS:
            raise ValueError(f"reward: must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if self.vec not in ("dummy", "subproc"):
            raise ValueError(f"vec: must be dummy or subproc, got {self.vec!r}")
        env_kwargs(self.env_id, self.n_devices, None, self.history)  # checks the env id


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    run_dir: Path
    model_path: Path
    metadata_path: Path
    timesteps: int
    wall_s: float
    steps_per_s: float
    env_steps_per_s: float
    resumed_from: str | None = None


def effective_history(cfg: TrainConfig) -> int:
    """The env's measured-rate history: ``cfg.history`` in the dynamic env, 1 in ``EdgeSplit-v0``."""
    return cfg.history if cfg.env_id == "EdgeSplitDynamic-v0" else 1


def resolved_net(cfg: TrainConfig) -> str:
    """``cfg.net`` with ``auto`` resolved (``device`` for PPO/A2C, ``mlp`` otherwise)."""
    if cfg.net != "auto":
        return cfg.net
    return "device" if cfg.algo in ("ppo", "a2c") else "mlp"


def hyperparams_for(algo: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The algorithm's defaults updated with ``overrides`` (``policy_kwargs`` merged key by key)."""
    hp = json.loads(json.dumps(DEFAULT_HYPERPARAMS[algo]))
    for k, v in (overrides or {}).items():
        if k == "policy_kwargs" and isinstance(v, dict):
            hp.setdefault("policy_kwargs", {}).update(v)
        else:
            hp[k] = v
    return hp


def parse_hyperparam(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (bare words are strings): ``n_steps=128``, ``gamma=0.95``."""
    if "=" not in text:
        raise ValueError(f"--hp: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _make_vec_env(cfg: TrainConfig, traces: list | None, seed: int):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    def factory() -> Any:
        return make_agent_env(cfg.env_id, cfg.wrapper, cfg.n_devices, traces, cfg.history, cfg.reward)

    cls = SubprocVecEnv if cfg.vec == "subproc" else DummyVecEnv
    kwargs = {"start_method": "fork"} if cfg.vec == "subproc" and platform.system() == "Linux" else None
    return make_vec_env(factory, n_envs=cfg.n_envs, seed=seed, vec_env_cls=cls, vec_env_kwargs=kwargs)


def _find_resume(out: Path, env_id: str, algo: str, seed: int) -> tuple[Path, Path, Path | None, int] | None:
    """Latest run of (env, algo, seed) in ``out`` and its latest checkpoint (or final model)."""
    prefix = f"{env_id}__{algo}__{seed}__"
    runs = sorted((d for d in out.glob(prefix + "*") if d.is_dir()), key=lambda d: d.name)
    for run in reversed(runs):
        best: tuple[int, Path, Path | None] | None = None
        for z in (run / "checkpoints").glob("model_*_steps.zip"):
            m = re.fullmatch(r"model_(\d+)_steps", z.stem)
            if m:
                steps = int(m.group(1))
                vn = run / "checkpoints" / f"model_vecnormalize_{steps}_steps.pkl"
                if best is None or steps > best[0]:
                    best = (steps, z, vn if vn.is_file() else None)
        final = run / "model.zip"
        if final.is_file():
            meta = run / "model.json"
            steps = json.loads(meta.read_text()).get("timesteps", 0) if meta.is_file() else 0
            if best is None or steps >= best[0]:
                vn = run / "vecnormalize.pkl"
                best = (steps, final, vn if vn.is_file() else None)
        if best is not None:
            return run, best[1], best[2], best[0]
    return None


class SpeedCallback(BaseCallback):
    """Progress bar, env steps per second inside the algorithm, and a printed line every
    ``print_every_s`` seconds (steps, overall steps/s, env steps/s, mean round time / T_ref)."""

    def __init__(self, total: int, progress_bar: bool = True, print_every_s: float = 30.0) -> None:
        super().__init__()
        self.total = int(total)
        self.progress_bar = progress_bar
        self.print_every_s = float(print_every_s)
        self.rollout_s = 0.0
        self.rollout_steps = 0
        self._t_roll = 0.0
        self._n_roll = 0
        self._t0 = 0.0
        self._steps0 = 0
        self._last_print = 0.0
        self.bar: Any = None
        self.ratios: deque[float] = deque(maxlen=4096)

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._last_print = self._t0
        self._steps0 = self.num_timesteps
        if self.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", desc="train",
                            dynamic_ncols=True, file=sys.stderr)

    def _on_rollout_start(self) -> None:
        self._t_roll = time.perf_counter()
        self._n_roll = self.num_timesteps

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._t_roll
        self.rollout_steps += self.num_timesteps - self._n_roll
        self.logger.record("time/env_steps_per_s", self.env_steps_per_s)
        now = time.perf_counter()
        if now - self._last_print >= self.print_every_s:
            self._last_print = now
            self.report()

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.model.n_envs)
        for info in self.locals.get("infos", ()):
            t, ref = info.get("round_time_s"), info.get("reference_time_s")
            if t is not None and ref and math.isfinite(t):
                self.ratios.append(t / ref)
        return True

    @property
    def env_steps_per_s(self) -> float:
        """Env steps per second while collecting rollouts (policy inference included, updates not)."""
        return self.rollout_steps / self.rollout_s if self.rollout_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        """Env steps per second of wall time since training started (updates included)."""
        dt = time.perf_counter() - self._t0
        return (self.num_timesteps - self._steps0) / dt if dt > 0 else 0.0

    def report(self) -> None:
        """Print one line of figures (through the progress bar when there is one)."""
        ratio = f"  round time / T_ref {np.mean(self.ratios):.3f} (last {len(self.ratios)} rounds)" if self.ratios else ""
        msg = (f"[train] {self.num_timesteps} steps  SPS {self.steps_per_s:.0f}  env steps/s "
               f"(inside {type(self.model).__name__}) {self.env_steps_per_s:.0f}{ratio}")
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.report()


def _metadata(cfg: TrainConfig, model: Any, vec: Any, n_layers: int, timesteps: int, wall_s: float,
              sps: float, env_sps: float, n_traces: int) -> dict[str, Any]:
    rms = vec.obs_rms
    return {
        "format": METADATA_FORMAT,
        "name": f"{cfg.algo}-{cfg.wrapper}",
        "model_file": "model.zip",
        "env_id": cfg.env_id,
        "n_devices": cfg.n_devices,
        "n_layers": int(n_layers),
        "wrapper": cfg.wrapper,
        "algo": cfg.algo,
        "net": resolved_net(cfg),
        "history": effective_history(cfg),
        "features": FEATURES_VERSION,
        "obs_dim": int(model.observation_space.shape[0]),
        "obs_rms": {"mean": rms.mean.tolist(), "var": rms.var.tolist(), "clip_obs": float(vec.clip_obs),
                    "epsilon": float(vec.epsilon)},
        "timesteps": int(timesteps),
        "training": {"command": cfg.command, "seed": cfg.seed, "traces": cfg.traces, "trace_split": cfg.trace_split,
                     "reward": cfg.reward, "n_traces": n_traces, "n_envs": cfg.n_envs, "vec": cfg.vec, "wall_s": round(wall_s, 1),
                     "steps_per_s": round(sps, 1), "env_steps_per_s": round(env_sps, 1),
                     "hyperparams": hyperparams_for(cfg.algo, cfg.hyperparams)},
    }


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) one run; return where it went and how fast it was."""
    cfg.check()
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import VecNormalize

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.threads)
    traces = load_trace_list(cfg.traces, cfg.trace_split) if cfg.env_id == "EdgeSplitDynamic-v0" else None
    hp = hyperparams_for(cfg.algo, cfg.hyperparams)
    algo_cls = _load_algo(cfg.algo)

    resume = _find_resume(out, cfg.env_id, cfg.algo, cfg.seed) if cfg.resume else None
    if cfg.resume and resume is None:
        raise FileNotFoundError(f"--resume: no run of {cfg.env_id}__{cfg.algo}__{cfg.seed}__* with a "
                                f"checkpoint in {out}")
    if resume is not None:
        run_dir, ckpt, vn_file, done = resume
        if done >= cfg.timesteps:
            print(f"[train] {run_dir.name} already has {done} >= {cfg.timesteps} steps; nothing to do")
            meta = run_dir / "model.json"
            return TrainResult(run_dir, run_dir / "model.zip", meta, done, 0.0, 0.0, 0.0, str(ckpt))
        saved = json.loads((run_dir / "hyperparams.json").read_text())
        for key in ("wrapper", "n_devices", "history", "env_id", "algo", "net", "reward"):
            if saved.get(key) != getattr(cfg, key):
                raise ValueError(f"--resume: {run_dir.name} was trained with {key}={saved.get(key)!r}, "
                                 f"not {getattr(cfg, key)!r}")
        seed_everything(cfg.seed + done, cfg.threads)  # fresh but reproducible randomness after resuming
        venv = _make_vec_env(cfg, traces, cfg.seed + done)
        if vn_file is None:
            raise FileNotFoundError(f"--resume: {ckpt} has no VecNormalize statistics next to it")
        vec = VecNormalize.load(str(vn_file), venv)
        vec.training = True
        model = algo_cls.load(str(ckpt), env=vec, device="cpu")
        print(f"[train] resuming {run_dir.name} from {ckpt.name} at {model.num_timesteps} steps")
    else:
        run_dir = out / run_name(cfg.env_id, cfg.algo, cfg.seed)
        while run_dir.exists():  # two runs in the same second
            run_dir = run_dir.with_name(run_dir.name + "x")
        run_dir.mkdir(parents=True)
        (run_dir / "hyperparams.json").write_text(json.dumps({**asdict(cfg), "hyperparams": hp}, indent=2))
        venv = _make_vec_env(cfg, traces, cfg.seed)
        gamma = float(hp.get("gamma", 0.99))
        vec = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=gamma, clip_obs=10.0)
        kwargs = dict(hp)
        sigma = kwargs.pop("action_noise_sigma", None)
        if sigma is not None:
            n = vec.action_space.shape[0]
            kwargs["action_noise"] = NormalActionNoise(np.zeros(n), float(sigma) * np.ones(n))
        if cfg.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ValueError("--tensorboard: the tensorboard package is not installed") from None
            kwargs["tensorboard_log"] = str(run_dir / "tb")
        policy: Any = "MlpPolicy"
        if resolved_net(cfg) == "device":
            from edgesplit.agents.networks import DeviceSharedPolicy

            policy = DeviceSharedPolicy
            pk = dict(kwargs.get("policy_kwargs", {}))
            pk.pop("net_arch", None)
            pk.update(n_devices=cfg.n_devices, history=effective_history(cfg))
            kwargs["policy_kwargs"] = pk
        model = algo_cls(policy, vec, seed=cfg.seed, device="cpu", verbose=0, **kwargs)
        done = 0
    print(f"[train] run {run_dir}")
    fmt = ["csv"] + (["tensorboard"] if cfg.tensorboard else [])
    model.set_logger(configure(str(run_dir), fmt))

    ckpt_cb = CheckpointCallback(save_freq=max(cfg.checkpoint_every // cfg.n_envs, 1),
                                 save_path=str(run_dir / "checkpoints"), name_prefix="model",
                                 save_vecnormalize=True)
    speed = SpeedCallback(cfg.timesteps, cfg.progress_bar, cfg.print_every_s)
    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.timesteps - model.num_timesteps, callback=CallbackList([ckpt_cb, speed]),
                reset_num_timesteps=(resume is None), progress_bar=False)
    wall = time.perf_counter() - t0
    model_path = run_dir / "model.zip"
    model.save(str(model_path))
    vec.save(str(run_dir / "vecnormalize.pkl"))
    n_layers = vec.get_attr("n_layers")[0] if hasattr(vec, "get_attr") else 0
    meta = _metadata(cfg, model, vec, n_layers, model.num_timesteps, wall, speed.steps_per_s,
                     speed.env_steps_per_s, len(traces) if traces is not None else 0)
    meta_path = run_dir / "model.json"
    meta_path.write_text(json.dumps(meta, indent=2))
    vec.close()
    print(f"[train] {model.num_timesteps} steps in {wall:.0f} s: {speed.steps_per_s:.0f} steps/s overall, "
          f"{speed.env_steps_per_s:.0f} env steps/s inside {type(model).__name__}; saved {model_path}")
    return TrainResult(run_dir, model_path, meta_path, model.num_timesteps, wall, speed.steps_per_s,
                       speed.env_steps_per_s, str(resume[1]) if resume else None)


def export_policy(run_dir: str | Path, dest_dir: str | Path, stem: str,
                  results: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Copy a run's ``model.zip`` and ``model.json`` to ``dest_dir/stem.{zip,json}`` (how the shipped
    policy is made), pointing the metadata at the new zip and adding ``results`` to it."""
    import shutil

    run_dir, dest_dir = Path(run_dir), Path(dest_dir)
    meta = json.loads((run_dir / "model.json").read_text())
    dest_dir.mkdir(parents=True, exist_ok=True)
    zip_path = dest_dir / f"{stem}.zip"
    shutil.copyfile(run_dir / "model.zip", zip_path)
    meta["model_file"] = zip_path.name
    meta["name"] = stem
    if results is not None:
        meta["results"] = results
    json_path = dest_dir / f"{stem}.json"
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    return zip_path, json_path
