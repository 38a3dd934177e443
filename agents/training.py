"""Train stable-baselines3 / sb3-contrib schedulers on the EdgeSplit environments (RL Zoo habits).

- :func:`seed_everything` seeds Python, numpy and torch in one place (and pins torch threads);
- a run is named ``env__algo__seed__unixtime`` and lives in ``OUT/<run name>/``; the folder is made
  only once the model is built, so a bad hyper-parameter leaves nothing behind;
- hyper-parameters: the algorithm's defaults (:data:`DEFAULT_HYPERPARAMS`), then a Zoo-style YAML
  file (``--config``, :func:`load_zoo_config`), then ``--hp KEY=VALUE``; every key and value is
  checked against the algorithm (:func:`edgesplit.agents.loading.check_hyperparams`) and the result
  is written to ``hyperparams.json`` before training starts;
- SB3 ``Monitor`` CSVs (``monitor/*.monitor.csv``), SB3's logs (``progress.csv``; TensorBoard in
  ``tb/`` whenever the ``tensorboard`` package is installed), a progress bar on stderr;
- periodic evaluation on validation episodes against classical schedulers, the best model kept
  (:class:`edgesplit.agents.callbacks.EvalGapCallback`);
- atomic checkpoints (:class:`edgesplit.agents.callbacks.AtomicCheckpointCallback`); ``resume=True``
  continues the latest run of the same env, algo and seed from its newest *readable* checkpoint
  (an unreadable one, or one without its normalisation statistics, is skipped with a message),
  appends to ``progress.csv``, the monitor CSVs and ``evaluations.csv``, and stops at ``timesteps``
  in all;
- ``VecNormalize`` statistics are saved with the model (``model.norm.json``, read back without
  pickle; ``vecnormalize.pkl`` for SB3/Zoo users; the observation statistics again in
  ``model.json`` so that a policy is one ``.zip`` plus one ``.json``).

Run folder::

    OUT/EdgeSplitDynamic-v0__ppo__0__1717171717/
        hyperparams.json  model.zip  model.json  model.norm.json  vecnormalize.pkl  progress.csv
        evaluations.csv  best_model.zip  best_model.json  monitor/  checkpoints/  tb/
"""

from __future__ import annotations

import ast
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgesplit.agents.callbacks import (AtomicCheckpointCallback, EvalGapCallback, SpeedCallback, StopAtTimesteps, save_checkpoint,
                                        save_model_atomic, save_vecnormalize_atomic)
from edgesplit.agents.environment import (FEATURES_VERSION, REWARDS, WRAPPER_NAMES, env_kwargs, load_trace_list,
                                          make_agent_env, make_base_env)
from edgesplit.agents.loading import (ALGO_NAMES, BOX_ONLY, DISCRETE_ONLY, HyperparamError, MissingExtraError,
                                      ModelFileError, algo_class, check_hyperparams, load_model, normalize_state,
                                      restore_normalize, suggest_algo_error, write_json_atomic)
from edgesplit.agents.policies import METADATA_FORMAT
from edgesplit.errors import EdgeSplitError
from edgesplit.traces import TraceFamily, load_family_split

_PPO_LIKE = {"n_steps": 256, "batch_size": 256, "n_epochs": 10, "learning_rate": 3e-4, "gamma": 0.9,
             "gae_lambda": 0.9, "clip_range": 0.2, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5,
             "policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "log_std_init": -2.0}}
_OFF_POLICY = {"learning_rate": 3e-4, "buffer_size": 100_000, "learning_starts": 1000, "batch_size": 256,
               "gamma": 0.9, "tau": 0.005, "train_freq": 8, "gradient_steps": 2, "policy_kwargs": {"net_arch": [64, 64]}}
DEFAULT_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": _PPO_LIKE,
    "ppo_mask": {k: v for k, v in _PPO_LIKE.items() if k != "policy_kwargs"} | {"policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}},
    "ppo_lstm": {k: v for k, v in _PPO_LIKE.items() if k != "policy_kwargs"}
    | {"policy_kwargs": {"net_arch": {"pi": [64], "vf": [64]}, "lstm_hidden_size": 64, "log_std_init": -2.0}},
    "trpo": {"n_steps": 256, "batch_size": 256, "learning_rate": 1e-3, "gamma": 0.9, "gae_lambda": 0.9,
             "policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "log_std_init": -2.0}},
    "a2c": {"n_steps": 16, "learning_rate": 7e-4, "gamma": 0.9, "gae_lambda": 0.9, "ent_coef": 0.0,
            "policy_kwargs": {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "log_std_init": -2.0}},
    "sac": dict(_OFF_POLICY),
    "td3": _OFF_POLICY | {"action_noise_sigma": 0.1},
    "tqc": dict(_OFF_POLICY),
}
"""Per-algorithm defaults (``gamma = 0.9``: a round's plan matters mostly for that round)."""

ALGOS = ALGO_NAMES
NETS: tuple[str, ...] = ("auto", "device", "mlp")
"""Policy networks: ``device`` (:class:`edgesplit.agents.networks.DeviceSharedPolicy`, PPO/A2C), ``mlp``
(SB3's ``MlpPolicy``; ``MlpLstmPolicy`` for ppo_lstm), ``auto`` (``device`` for PPO/A2C, ``mlp`` otherwise)."""

DISCRETE_ONLY_ON_POLICY = ("ppo", "a2c", "ppo_mask", "ppo_lstm", "trpo")
"""Algorithms that accept the ``hybrid`` wrapper's ``MultiDiscrete`` action."""

DEFAULT_EVAL_BASELINES: tuple[str, ...] = ("alternating", "exact", "static", "oracle")
"""Classical policies the periodic evaluation compares with (``oracle`` gives the gap closed)."""


def seed_everything(seed: int, threads: int = 1) -> None:
    """Seed ``random``, numpy's legacy generator and torch; pin torch to ``threads`` threads."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, int(threads)))
    os.environ["PYTHONHASHSEED"] = str(seed)


def canonical_env_id(env_id: str) -> str:
    """``env_id`` without the ``edgesplit/`` namespace (the form the agents' helpers take)."""
    return env_id.split("/", 1)[1] if env_id.startswith("edgesplit/") else env_id


def run_name(env_id: str, algo: str, seed: int, when: float | None = None) -> str:
    """``env__algo__seed__unixtime`` (the namespace dropped: a folder name has no ``/``)."""
    return f"{canonical_env_id(env_id)}__{algo}__{seed}__{int(time.time() if when is None else when)}"


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
    tensorboard: bool | None = None
    threads: int = 1
    print_every_s: float = 30.0
    hyperparams: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    eval_every: int = 0
    eval_episodes: int = 5
    eval_baselines: tuple[str, ...] = DEFAULT_EVAL_BASELINES
    normalize: dict[str, bool] = field(default_factory=dict)
    explicit: tuple[str, ...] = ()
    command: str = ""

    def check(self) -> None:
        """Raise ``ValueError`` naming a bad field."""
        self.env_id = canonical_env_id(self.env_id)
        if self.algo not in ALGOS:
            raise ValueError(f"algo: must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.wrapper not in WRAPPER_NAMES:
            raise ValueError(f"wrapper: must be one of {', '.join(WRAPPER_NAMES)}, got {self.wrapper!r}")
        if self.wrapper == "hybrid" and self.algo in BOX_ONLY:
            raise ValueError(f"wrapper: hybrid has a MultiDiscrete action, which {self.algo} does not "
                             f"support; use an on-policy algorithm ({', '.join(DISCRETE_ONLY_ON_POLICY)}), or a "
                             f"Box wrapper (flat, shares, forecast)")
        if self.algo in DISCRETE_ONLY and self.wrapper != "hybrid":
            raise ValueError(f"wrapper: {self.algo} (MaskablePPO) masks the cuts that do not fit memory, so it "
                             f"needs the hybrid wrapper (--wrapper hybrid), not {self.wrapper}")
        for name in ("timesteps", "n_devices", "n_envs", "checkpoint_every", "history", "threads", "eval_episodes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
        if not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every: must be an integer >= 0 (0 = no evaluation), got {self.eval_every!r}")
        if self.net not in NETS:
            raise ValueError(f"net: must be one of {', '.join(NETS)}, got {self.net!r}")
        if self.net == "device" and self.algo not in ("ppo", "a2c"):
            raise ValueError(f"net: the device-shared network is for ppo and a2c, not {self.algo}; use --net mlp")
        if self.reward not in REWARDS:
            raise ValueError(f"reward: must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if self.vec not in ("dummy", "subproc"):
            raise ValueError(f"vec: must be dummy or subproc, got {self.vec!r}")
        if self.eval_every and "oracle" not in self.eval_baselines:
            raise ValueError(f"eval_baselines: must include oracle (the gap closed is measured to it), got "
                             f"{', '.join(self.eval_baselines)}")
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
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def effective_history(cfg: TrainConfig) -> int:
    """The env's measured-rate history: ``cfg.history`` in the dynamic envs, 1 in ``EdgeSplit-v0``."""
    return 1 if canonical_env_id(cfg.env_id) == "EdgeSplit-v0" else cfg.history


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


def offline_traces(traces: Any) -> Any:
    """``traces`` (a path, a glob or a list of them) without the README's shared trace folders
    (``.../shared/data/traces/...``) that are absent, with a note on stderr, so the README's commands
    also run in a clone without ``../shared``: the paths that exist are kept; ``None`` (the built-in
    synthetic set) only when nothing is left. Any other missing path is left for the trace loader to
    refuse."""
    if traces is None:
        return None
    import glob

    is_list = isinstance(traces, (list, tuple))
    items = [str(t) for t in (traces if is_list else [traces])]
    gone = [t for t in items
            if "shared/data/traces" in Path(t).as_posix() and not (Path(t).exists() or glob.glob(t))]
    if not gone:
        return traces
    kept = [t for t in items if t not in gone]
    if kept:
        _say(f"note: --traces {' '.join(gone)}: not found (no ../shared here); left out, using {' '.join(kept)}")
        return kept if is_list else kept[0]
    _say(f"note: --traces {' '.join(gone)}: not found (no ../shared here); using the built-in synthetic traces "
         f"instead (figures differ from the README's, which use the traces in ../shared/data/traces)")
    return None


def parse_hyperparam(text: str) -> tuple[str, Any]:
    """``key=value`` with a JSON value (bare words are strings): ``n_steps=128``, ``gamma=0.95``."""
    if "=" not in text:
        raise HyperparamError(f"--hp: expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise HyperparamError(f"--hp: expected KEY=VALUE with a non-empty KEY, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


# ----------------------------------------------------------------------------- Zoo-style config files

ZOO_WRAPPERS: dict[str, tuple[str, str]] = {
    "edgesplit.envs.wrappers.ForecastAction": ("wrapper", "forecast"),
    "edgesplit.agents.features.RateFeatures": ("features", "rate"),
    "edgesplit.agents.rewards.CounterfactualReward": ("reward", "counterfactual"),
    "edgesplit.agents.environment.ForecastAction": ("wrapper", "forecast"),
    "edgesplit.envs.wrappers.CutsOnlyAction": ("wrapper", "hybrid"),
    "edgesplit.envs.wrappers.FlatBoxAction": ("wrapper", "flat"),
    "edgesplit.envs.wrappers.SharesOnlyAction": ("wrapper", "shares"),
    "edgesplit.agents.environment.CounterfactualReward": ("reward", "counterfactual"),
    "edgesplit.agents.environment.RateFeatures": ("features", "rate"),
    "edgesplit.agents.training.CutMasks": ("masks", "cuts"),
}
"""``env_wrapper`` entries of a Zoo hyper-parameter file and what they set here."""

_ZOO_POLICIES = {"MlpPolicy": "mlp", "MlpLstmPolicy": "mlp", "edgesplit.agents.networks.DeviceSharedPolicy": "device"}
_SAFE_NAMES = {"nn.ReLU": "ReLU", "nn.Tanh": "Tanh", "nn.ELU": "ELU", "nn.LeakyReLU": "LeakyReLU", "nn.SiLU": "SiLU"}


def _literal(node: ast.AST, where: str) -> Any:
    """A literal, ``dict(...)`` or a whitelisted ``nn.X`` from a Zoo ``policy_kwargs`` string (no eval)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, where) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k, where): _literal(v, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, where) for e in node.elts]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and f"{node.value.id}.{node.attr}" in _SAFE_NAMES:
        return {"__torch_nn__": _SAFE_NAMES[f"{node.value.id}.{node.attr}"]}
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise HyperparamError(f"{where}: only literals, dict(...) and nn.ReLU/Tanh/ELU/LeakyReLU/SiLU are "
                              f"allowed, got {ast.unparse(node)!r}") from None


def _resolve_torch_names(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"__torch_nn__"}:
            from torch import nn

            return getattr(nn, v["__torch_nn__"])
        return {k: _resolve_torch_names(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_resolve_torch_names(x) for x in v]
    return v


def load_zoo_config(path: str | Path, env_id: str, algo: str) -> dict[str, Any]:
    """Read the section for ``env_id`` of a RL-Zoo-style hyper-parameter file (``hyperparams/ALGO.yml``).

    Returns ``{"hyperparams": {...}, "settings": {...}}``: the algorithm's keyword arguments, and
    what the Zoo keys set here (``n_timesteps`` -> timesteps, ``n_envs``, ``policy`` -> net,
    ``env_wrapper`` -> wrapper/reward, ``normalize``, ``noise_type``/``noise_std`` -> action noise).
    The section may be named ``edgesplit/ID`` or ``ID``. ``policy_kwargs`` strings are parsed, not
    evaluated. Unknown keys are passed on and checked as hyper-parameters of ``algo``.
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"--config: cannot read {p} ({exc.strerror or exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HyperparamError(f"--config {p}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict):
        raise HyperparamError(f"--config {p}: must map env ids to hyper-parameters (RL Zoo format)")
    base = canonical_env_id(env_id)
    section = None
    for key in (f"edgesplit/{base}", base, env_id):
        if key in doc:
            section = doc[key]
            break
    if section is None:
        raise HyperparamError(f"--config {p}: no section for {env_id}; sections: {', '.join(map(str, doc))}")
    if not isinstance(section, dict):
        raise HyperparamError(f"--config {p} [{env_id}]: must be a mapping of hyper-parameters")
    hp = dict(section)
    settings: dict[str, Any] = {}
    where = f"--config {p.name} [{env_id}]"
    if "n_timesteps" in hp:
        settings["timesteps"] = int(float(hp.pop("n_timesteps")))
    if "n_envs" in hp:
        settings["n_envs"] = int(hp.pop("n_envs"))
    if "policy" in hp:
        pol = str(hp.pop("policy"))
        if pol not in _ZOO_POLICIES:
            raise HyperparamError(f"{where} policy: must be one of {', '.join(_ZOO_POLICIES)}, got {pol!r}")
        settings["net"] = _ZOO_POLICIES[pol]
    if "normalize" in hp:
        norm = hp.pop("normalize")
        if isinstance(norm, str):
            norm = _literal(ast.parse(norm, mode="eval").body, where)
        if norm is False:
            raise HyperparamError(f"{where} normalize: edgesplit always normalises observations (VecNormalize); "
                                  f"use normalize: true or dict(norm_obs=True, norm_reward=False)")
        if isinstance(norm, dict):
            settings["normalize"] = {k: bool(v) for k, v in norm.items() if k in ("norm_obs", "norm_reward")}
    if "env_wrapper" in hp:
        wrappers = hp.pop("env_wrapper")
        for w in wrappers if isinstance(wrappers, list) else [wrappers]:
            name = next(iter(w)) if isinstance(w, dict) else str(w)
            if name not in ZOO_WRAPPERS:
                raise HyperparamError(f"{where} env_wrapper: {name!r} is not one of {', '.join(ZOO_WRAPPERS)}")
            k, v = ZOO_WRAPPERS[name]
            if k in ("wrapper", "reward"):
                settings[k] = v
    if "noise_type" in hp:
        kind = str(hp.pop("noise_type"))
        if kind != "normal":
            raise HyperparamError(f"{where} noise_type: only 'normal' is supported, got {kind!r}")
        hp["action_noise_sigma"] = float(hp.pop("noise_std", 0.1))
    for key in ("policy_kwargs",):
        if isinstance(hp.get(key), str):
            hp[key] = _literal(ast.parse(hp[key], mode="eval").body, f"{where} {key}")
    for key in ("frame_stack", "callback", "vec_env_wrapper", "monitor_kwargs"):
        if key in hp:
            raise HyperparamError(f"{where} {key}: not supported by edgesplit train-agent (use rl_zoo3 for it)")
    return {"hyperparams": hp, "settings": settings}


# ----------------------------------------------------------------------------- envs


class CutMasks(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``action_masks()`` for MaskablePPO from the memory-feasible cuts (wrap the ``hybrid`` env).

    The mask has ``N * L`` entries (row-major by device): entry ``(i, k)`` is true iff cut ``k + 1``
    fits device ``i``'s memory (the cost model's ``feasible``), so the agent never picks a cut the
    env would have to repair. A device with no feasible cut gets an all-true row (the env decides).
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.action_space, gym.spaces.MultiDiscrete):
            raise ValueError("CutMasks: expects the hybrid wrapper's MultiDiscrete action")

    def action_masks(self) -> np.ndarray:
        """``N * L`` booleans: cut ``k + 1`` fits device ``i``."""
        feasible = np.asarray(self.env.unwrapped.cost_model.feasible, dtype=bool).copy()
        feasible[~feasible.any(axis=1), :] = True
        return feasible.reshape(-1)


def with_cut_masks(env: gym.Env) -> gym.Env:
    """``env`` (a ``hybrid`` env) with :class:`CutMasks`."""
    return CutMasks(env)


def _env_factory(cfg: TrainConfig, traces: list | None):
    def factory() -> Any:
        env = make_agent_env(cfg.env_id, cfg.wrapper, cfg.n_devices, traces, cfg.history, cfg.reward)
        return with_cut_masks(env) if cfg.algo == "ppo_mask" else env

    return factory


def _make_vec_env(cfg: TrainConfig, traces: list | None, seed: int, monitor_dir: Path | None = None,
                  append: bool = False):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    cls = SubprocVecEnv if cfg.vec == "subproc" else DummyVecEnv
    kwargs = {"start_method": "fork"} if cfg.vec == "subproc" and platform.system() == "Linux" else None
    mon = {"info_keywords": ("round_time_s",), "override_existing": not append}
    return make_vec_env(_env_factory(cfg, traces), n_envs=cfg.n_envs, seed=seed, vec_env_cls=cls,
                        vec_env_kwargs=kwargs, monitor_dir=str(monitor_dir) if monitor_dir else None,
                        monitor_kwargs=mon)


# ----------------------------------------------------------------------------- resume


@dataclass
class Checkpoint:
    """A candidate to resume from: a model zip and its normalisation statistics (JSON)."""

    steps: int
    model: Path
    norm: Path


def checkpoints_of(run: Path) -> list[Checkpoint]:
    """The run's checkpoints and final model, newest first (by steps)."""
    found: list[Checkpoint] = []
    for z in (run / "checkpoints").glob("model_*_steps.zip"):
        m = re.fullmatch(r"model_(\d+)_steps", z.stem)
        if m:
            found.append(Checkpoint(int(m.group(1)), z, z.with_name(f"{z.stem}.norm.json")))
    final = run / "model.zip"
    if final.is_file():
        steps = 0
        try:
            steps = int(json.loads((run / "model.json").read_text()).get("timesteps", 0))
        except (OSError, ValueError, AttributeError):
            pass
        found.append(Checkpoint(steps, final, run / "model.norm.json"))
    return sorted(found, key=lambda c: (c.steps, c.model.name == "model.zip"), reverse=True)


def _latest_run(out: Path, env_id: str, algo: str, seed: int) -> Path | None:
    prefix = f"{canonical_env_id(env_id)}__{algo}__{seed}__"
    runs = sorted((d for d in out.glob(prefix + "*") if d.is_dir() and checkpoints_of(d)), key=lambda d: d.name)
    return runs[-1] if runs else None


def _find_resume(out: Path, env_id: str, algo: str, seed: int) -> tuple[Path, Path, Path | None, int] | None:
    """Latest run of (env, algo, seed) in ``out`` and its newest checkpoint (or final model)."""
    run = _latest_run(out, env_id, algo, seed)
    if run is None:
        return None
    c = checkpoints_of(run)[0]
    return run, c.model, c.norm if c.norm.is_file() else None, c.steps


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _append_logger(run_dir: Path, tensorboard: bool) -> Any:
    """SB3's logger writing ``progress.csv`` in append mode (and TensorBoard if asked)."""
    from stable_baselines3.common.logger import CSVOutputFormat, Logger, make_output_format

    class AppendCSV(CSVOutputFormat):
        def __init__(self, filename: str) -> None:  # noqa: D401 - SB3 API
            exists = os.path.isfile(filename) and os.path.getsize(filename) > 0
            self.file = open(filename, "r+" if exists else "w+")
            self.keys = []
            if exists:
                header = self.file.readline().rstrip("\n")
                self.keys = header.split(",") if header else []
                self.file.seek(0, os.SEEK_END)
            self.separator = ","
            self.quotechar = '"'

    formats = [AppendCSV(str(run_dir / "progress.csv"))]
    if tensorboard:
        formats.append(make_output_format("tensorboard", str(run_dir / "tb")))
    return Logger(folder=str(run_dir), output_formats=formats)


def _tensorboard_wanted(cfg: TrainConfig) -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if cfg.tensorboard:
            raise MissingExtraError("--tensorboard: the tensorboard package is not installed; "
                                    "pip install -e '.[tensorboard]' (or pip install tensorboard)") from None
        return False
    return cfg.tensorboard is not False


def _metadata(cfg: TrainConfig, model: Any, vec: Any, n_layers: int, timesteps: int, wall_s: float,
              sps: float, env_sps: float, n_traces: int) -> dict[str, Any]:
    rms = vec.obs_rms
    return {
        "format": METADATA_FORMAT,
        "name": f"{cfg.algo}-{cfg.wrapper}",
        "model_file": "model.zip",
        "env_id": canonical_env_id(cfg.env_id),
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


def apply_zoo_config(cfg: TrainConfig) -> dict[str, Any]:
    """Merge ``cfg.config`` (a Zoo-style file) into ``cfg``: its settings fill the fields the user
    did not give (``cfg.explicit``); return the hyper-parameters (defaults < file < ``--hp``),
    checked against the algorithm."""
    file_hp: dict[str, Any] = {}
    if cfg.config:
        zoo = load_zoo_config(cfg.config, cfg.env_id, cfg.algo)
        file_hp = zoo["hyperparams"]
        for key, value in zoo["settings"].items():
            if key == "normalize":
                cfg.normalize = value
            elif key not in cfg.explicit:
                setattr(cfg, key, value)
    cfg.check()
    merged = hyperparams_for(cfg.algo, {**file_hp, **cfg.hyperparams})
    check_hyperparams(cfg.algo, {**file_hp, **cfg.hyperparams}, "--config/--hp" if cfg.config else "--hp")
    check_hyperparams(cfg.algo, merged, "--hp")
    return merged


def _schedule(v: Any) -> Any:
    """A Zoo schedule string ``lin_X`` -> SB3's linear schedule; anything else unchanged."""
    if isinstance(v, str) and v.startswith("lin_"):
        from stable_baselines3.common.utils import LinearSchedule

        return LinearSchedule(float(v[4:]), 0.0, 1.0)
    return v


def _policy_for(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """The policy (class or SB3 alias) and extra ``policy_kwargs`` for ``cfg``."""
    if resolved_net(cfg) == "device":
        from edgesplit.agents.networks import DeviceSharedPolicy

        return DeviceSharedPolicy, {"n_devices": cfg.n_devices, "history": effective_history(cfg)}
    return ("MlpLstmPolicy" if cfg.algo == "ppo_lstm" else "MlpPolicy"), {}


def _build_model(cfg: TrainConfig, vec: Any, hp: dict[str, Any], run_dir: Path, tensorboard: bool) -> Any:
    from stable_baselines3.common.noise import NormalActionNoise

    kwargs = {k: _schedule(v) if k in ("learning_rate", "clip_range", "clip_range_vf") else v for k, v in hp.items()}
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    sigma = kwargs.pop("action_noise_sigma", None)
    if sigma is not None:
        n = vec.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), float(sigma) * np.ones(n))
    if tensorboard:
        kwargs["tensorboard_log"] = str(run_dir / "tb")
    policy, extra = _policy_for(cfg)
    pk = _resolve_torch_names(dict(kwargs.get("policy_kwargs", {})))
    if extra:
        pk.pop("net_arch", None)
        pk.update(extra)
    kwargs["policy_kwargs"] = pk
    try:
        return algo_class(cfg.algo)(policy, vec, seed=cfg.seed, device="cpu", verbose=0, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        if isinstance(exc, EdgeSplitError):
            raise
        raise suggest_algo_error(cfg.algo, exc) from None


def _metadata_for(cfg: TrainConfig, model: Any, vec: Any, hp: dict[str, Any], timesteps: int, wall_s: float = 0.0,
                  sps: float = 0.0, env_sps: float = 0.0, n_traces: int = 0, model_file: str = "model.zip") -> dict[str, Any]:
    n_layers = vec.get_attr("n_layers")[0] if hasattr(vec, "get_attr") else 0
    meta = _metadata(cfg, model, vec, n_layers, timesteps, wall_s, sps, env_sps, n_traces)
    meta["model_file"] = model_file
    meta["training"]["hyperparams"] = hp
    return meta


def _resume(cfg: TrainConfig, out: Path, traces: list | None, hp: dict[str, Any]) -> tuple[Path, Any, Any, Checkpoint] | None:
    """Load the newest readable checkpoint of the latest run of (env, algo, seed); ``None`` if that
    run already has ``cfg.timesteps`` steps."""
    run = _latest_run(out, cfg.env_id, cfg.algo, cfg.seed)
    if run is None:
        raise FileNotFoundError(f"--resume: no run of {canonical_env_id(cfg.env_id)}__{cfg.algo}__{cfg.seed}__* "
                                f"with a checkpoint in {out}")
    try:
        saved = json.loads((run / "hyperparams.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"--resume: {run / 'hyperparams.json'} unreadable ({exc})") from None
    for key in ("wrapper", "n_devices", "history", "env_id", "algo", "net", "reward"):
        was = canonical_env_id(saved.get(key, "")) if key == "env_id" else saved.get(key)
        if was != getattr(cfg, key):
            raise ValueError(f"--resume: {run.name} was trained with {key}={was!r}, not {getattr(cfg, key)!r}")
    cands = checkpoints_of(run)
    if cands[0].steps >= cfg.timesteps:
        return None
    venv = _make_vec_env(cfg, traces, cfg.seed, run / "monitor", append=True)
    policy, _ = _policy_for(cfg)
    for i, c in enumerate(cands):
        nxt = f"; falling back to {cands[i + 1].model.name} ({cands[i + 1].steps} steps)" if i + 1 < len(cands) else ""
        if not c.norm.is_file():
            _say(f"[train] {c.model.relative_to(run)}: its normalisation statistics {c.norm.name} are missing{nxt}")
            continue
        try:
            vec = restore_normalize(json.loads(c.norm.read_text()), venv)
            model = load_model(c.model, cfg.algo, env=vec, policy_class=policy,
                               replace={"learning_rate": _schedule(hp.get("learning_rate", 3e-4))})
        except (ModelFileError, ValueError, OSError) as exc:
            _say(f"[train] {c.model.relative_to(run)} is unreadable ({' '.join(str(exc).split())[:200]}){nxt}")
            continue
        if i > 0:
            _say(f"[train] resuming from the previous good checkpoint {c.model.relative_to(run)}")
        vec.training = True
        vec.seed(cfg.seed + c.steps)
        if hp.get("action_noise_sigma") is not None:
            from stable_baselines3.common.noise import NormalActionNoise

            n = vec.action_space.shape[0]
            model.action_noise = NormalActionNoise(np.zeros(n), float(hp["action_noise_sigma"]) * np.ones(n))
        model.num_timesteps = c.steps
        return run, model, vec, c
    venv.close()
    raise ModelFileError(f"--resume: no readable checkpoint in {run} (tried {len(cands)}: "
                         f"{', '.join(c.model.name for c in cands)})")


def _truncate_logs(run: Path, steps: int) -> None:
    """Drop the rows logged after checkpoint ``steps`` (they will be logged again after resuming)."""
    import csv

    for name, col in (("progress.csv", "time/total_timesteps"), ("evaluations.csv", "timesteps")):
        path = run / name
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or col not in rows[0]:
            continue
        j = rows[0].index(col)
        keep = [rows[0]] + [r for r in rows[1:] if j < len(r) and r[j] != "" and float(r[j]) <= steps]
        if len(keep) != len(rows):
            tmp = path.with_name(name + ".tmp")
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh, lineterminator="\n").writerows(keep)
            os.replace(tmp, path)


def live_policy(model: Any, vec: Any, meta: dict[str, Any], name: str = "agent") -> Any:
    """A :class:`~edgesplit.agents.policies.Policy` that plays ``model`` (in training) with the
    current normalisation statistics of ``vec``; recurrent and masked models are played with their
    state and cut masks (:func:`edgesplit.agents.loading.predict_action`, as saved policies are)."""
    from edgesplit.agents.policies import LearnedPolicy

    class _Live(LearnedPolicy):
        def __init__(self) -> None:  # no file: the model is in memory
            self.meta, self.path, self.name, self.model = meta, Path("(in training)"), name, model
            rms = vec.obs_rms
            self._mean = np.asarray(rms.mean, dtype=np.float64).copy()
            self._std = np.sqrt(np.asarray(rms.var, dtype=np.float64) + float(vec.epsilon))
            self._clip = float(vec.clip_obs)
            self._mapper = None

    return _Live()


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) one run; return where it went, how fast it was and its evaluations."""
    hp = apply_zoo_config(cfg)  # checks cfg once the file's settings are in
    algo_class(cfg.algo)  # a missing extra fails here, before anything is written
    tensorboard = _tensorboard_wanted(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} exists and is not a folder")
    seed_everything(cfg.seed, cfg.threads)
    dynamic = canonical_env_id(cfg.env_id) != "EdgeSplit-v0"
    traces: list | None = load_trace_list(cfg.traces, cfg.trace_split) if dynamic else None
    if canonical_env_id(cfg.env_id) == "EdgeSplitDynamic-v1" and cfg.trace_split != "all":
        # v1 scales a family by its mean: a split part carries its WHOLE family's mean (not its own)
        traces = load_family_split(cfg.traces, cfg.trace_split)

    resumed: Checkpoint | None = None
    made_dir: Path | None = None
    if cfg.resume:
        res = _resume(cfg, out, traces, hp)
        if res is None:
            run = _latest_run(out, cfg.env_id, cfg.algo, cfg.seed)
            done = checkpoints_of(run)[0].steps
            _say(f"[train] {run.name} already has {done} >= {cfg.timesteps} steps; nothing to do")
            return TrainResult(run, run / "model.zip", run / "model.json", done, 0.0, 0.0, 0.0, None)
        run_dir, model, vec, resumed = res
        seed_everything(cfg.seed + resumed.steps, cfg.threads)  # fresh but reproducible randomness
        _truncate_logs(run_dir, resumed.steps)
        _say(f"[train] resuming {run_dir.name} from {resumed.model.name} at {resumed.steps} steps")
    else:
        from stable_baselines3.common.vec_env import VecNormalize

        out.mkdir(parents=True, exist_ok=True)
        run_dir = out / run_name(cfg.env_id, cfg.algo, cfg.seed)
        while run_dir.exists():  # two runs in the same second
            run_dir = run_dir.with_name(run_dir.name + "x")
        run_dir.mkdir(parents=True)
        made_dir = run_dir
        try:
            venv = _make_vec_env(cfg, traces, cfg.seed, run_dir / "monitor")
            norm = {"norm_obs": True, "norm_reward": True} | getattr(cfg, "normalize", {})
            vec = VecNormalize(venv, gamma=float(hp.get("gamma", 0.99)), clip_obs=10.0, **norm)
            model = _build_model(cfg, vec, hp, run_dir, tensorboard)
            write_json_atomic(run_dir / "hyperparams.json", {**asdict(cfg), "hyperparams": hp})
        except BaseException:
            shutil.rmtree(made_dir, ignore_errors=True)  # nothing was trained: leave no orphan folder
            raise
    _say(f"[train] run {run_dir}")
    model.set_logger(_append_logger(run_dir, tensorboard))

    callbacks: list[Any] = [AtomicCheckpointCallback(run_dir / "checkpoints", cfg.checkpoint_every)]
    speed = SpeedCallback(cfg.timesteps, cfg.progress_bar, cfg.print_every_s)
    callbacks.append(speed)
    callbacks.append(StopAtTimesteps(cfg.timesteps))
    n_traces = sum(len(t) if isinstance(t, TraceFamily) else 1 for t in traces) if traces is not None else 0
    evaluator = None
    if cfg.eval_every:
        def on_best(steps: int, row: dict[str, Any]) -> None:
            meta = _metadata_for(cfg, model, vec, hp, steps, n_traces=n_traces, model_file="best_model.zip")
            meta["name"] = f"{cfg.algo}-{cfg.wrapper}-best"
            meta["validation"] = {k: v for k, v in row.items() if k != "new_best"}
            write_json_atomic(run_dir / "best_model.json", meta)

        def make_policy(m: Any, v: Any) -> Any:
            return live_policy(m, v, _metadata_for(cfg, m, v, hp, m.num_timesteps))

        evaluator = EvalGapCallback(lambda: make_base_env(cfg.env_id, cfg.n_devices, traces, cfg.history),
                                    make_policy, run_dir, cfg.eval_every, cfg.eval_episodes, cfg.eval_baselines,
                                    on_best=on_best)
        callbacks.append(evaluator)
    from stable_baselines3.common.callbacks import CallbackList

    rollout = int(hp.get("n_steps", 0)) * cfg.n_envs if cfg.algo in DISCRETE_ONLY_ON_POLICY else 0
    if rollout and (cfg.timesteps - model.num_timesteps) % rollout:
        _say(f"[train] note: {cfg.timesteps - model.num_timesteps} steps to go is not a multiple of a rollout "
             f"(n_steps x n_envs = {rollout}); the run stops at {cfg.timesteps} steps and the last "
             f"{(cfg.timesteps - model.num_timesteps) % rollout} are collected but not trained on")
    t0 = time.perf_counter()
    try:
        model.learn(total_timesteps=cfg.timesteps - model.num_timesteps, callback=CallbackList(callbacks),
                    reset_num_timesteps=(resumed is None), progress_bar=False,
                    tb_log_name="run")
    except BaseException:
        if made_dir is not None and model.num_timesteps == 0:
            shutil.rmtree(made_dir, ignore_errors=True)
        raise
    wall = time.perf_counter() - t0
    model_path = run_dir / "model.zip"
    write_json_atomic(run_dir / "model.norm.json", normalize_state(vec))
    save_vecnormalize_atomic(vec, run_dir / "vecnormalize.pkl")
    save_model_atomic(model, model_path)
    meta = _metadata_for(cfg, model, vec, hp, model.num_timesteps, wall, speed.steps_per_s, speed.env_steps_per_s, n_traces)
    meta_path = run_dir / "model.json"
    write_json_atomic(meta_path, meta)
    vec.close()
    _say(f"[train] {model.num_timesteps} steps in {wall:.0f} s: {speed.steps_per_s:.0f} steps/s overall, "
         f"{speed.env_steps_per_s:.0f} env steps/s inside {type(model).__name__}; saved {model_path}")
    return TrainResult(run_dir, model_path, meta_path, model.num_timesteps, wall, speed.steps_per_s,
                       speed.env_steps_per_s, str(resumed.model) if resumed else None,
                       evaluator.history if evaluator else [])




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
