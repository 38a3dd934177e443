"""Algorithms, hyper-parameter checks and loading saved models without running code from files.

**Algorithms** (:data:`ALGOS`, the names RL Baselines3 Zoo uses): ``ppo``, ``a2c``, ``sac``, ``td3``
from stable-baselines3; ``ppo_mask`` (MaskablePPO), ``ppo_lstm`` (RecurrentPPO), ``tqc`` and
``trpo`` from sb3-contrib (a dependency).

**Safe loading** (:func:`load_model`). A stable-baselines3 ``.zip`` holds the network weights as
torch state dicts (``*.pth``, read with ``torch.load(weights_only=True)``: tensors only) and the
rest as JSON (``data``) in which objects that are not plain data (the policy class, the spaces,
schedules, buffers) are cloudpickle blobs. Unpickling a blob runs whatever code it names, so a
crafted zip can run code when it is loaded. :func:`load_model` never unpickles: it hands
stable-baselines3 a replacement for every blob (``custom_objects``) built from what we know (the
env's spaces, the policy class named in our metadata, constant schedules parsed from their text),
and refuses a file with any other blob unless ``trust=True`` (``--trust``). Files this package
writes and reads back itself (a run's checkpoints, its ``*.norm.json`` normalisation statistics)
never need ``trust``; ``vecnormalize.pkl`` is written for SB3/Zoo users but never read by us.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from edgesplit.errors import EdgeSplitError


class ModelFileError(EdgeSplitError):
    """A model file is missing, truncated, malformed or would need unpickling to load."""


class HyperparamError(EdgeSplitError):
    """A hyper-parameter name or value the algorithm does not accept."""


class MissingExtraError(EdgeSplitError):
    """An optional dependency (an install extra) is not installed."""


ALGOS: dict[str, tuple[str, str]] = {
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
    "sac": ("stable_baselines3", "SAC"),
    "td3": ("stable_baselines3", "TD3"),
    "ppo_mask": ("sb3_contrib", "MaskablePPO"),
    "ppo_lstm": ("sb3_contrib", "RecurrentPPO"),
    "tqc": ("sb3_contrib", "TQC"),
    "trpo": ("sb3_contrib", "TRPO"),
}
"""Algorithm name (RL Zoo's) -> (package, class)."""

ALGO_NAMES: tuple[str, ...] = tuple(ALGOS)
ON_POLICY: tuple[str, ...] = ("ppo", "a2c", "ppo_mask", "ppo_lstm", "trpo")
"""Algorithms that take a ``MultiDiscrete`` action (the ``hybrid`` wrapper) as well as a Box."""
BOX_ONLY: tuple[str, ...] = ("sac", "td3", "tqc")
"""Algorithms that need a Box action (``flat``, ``shares`` or ``forecast`` wrapper)."""
DISCRETE_ONLY: tuple[str, ...] = ("ppo_mask",)
"""Algorithms that need a discrete action: MaskablePPO with the ``hybrid`` wrapper's cut masks."""

EXTRA_KEYS: tuple[str, ...] = ("action_noise_sigma",)
"""Hyper-parameters of ours that are not constructor arguments (``action_noise_sigma``: the std of
Gaussian action noise for sac/td3/tqc)."""

_NOT_HYPERPARAMS = {"self", "policy", "env", "_init_setup_model", "device", "seed", "verbose",
                    "tensorboard_log", "action_noise", "replay_buffer_class", "rollout_buffer_class"}

_POSITIVE = {"learning_rate", "clip_range", "max_grad_norm", "n_steps", "batch_size", "n_epochs",
             "buffer_size", "vf_coef", "target_kl", "n_critics", "top_quantiles_to_drop_per_net",
             "cg_max_steps", "n_critic_updates", "policy_delay", "target_policy_noise", "target_noise_clip"}
_NONNEG = {"ent_coef", "learning_starts", "sde_sample_freq"}
_UNIT = {"gamma", "gae_lambda", "tau"}


def algo_class(algo: str) -> type:
    """The class of algorithm ``algo``; sb3-contrib's need the ``contrib`` extra."""
    if algo not in ALGOS:
        raise ValueError(f"algo: must be one of {', '.join(ALGO_NAMES)}, got {algo!r}")
    package, cls = ALGOS[algo]
    try:
        module = __import__(package)
    except ImportError:
        raise MissingExtraError(f"algo: {algo} is in sb3-contrib, which is not installed; "
                                f"pip install sb3-contrib (a dependency of edgesplit: reinstall with bash install.sh)") from None
    return getattr(module, cls)


def hyperparam_names(algo: str) -> list[str]:
    """The hyper-parameters ``algo`` accepts (its constructor's keyword arguments, and ours)."""
    sig = inspect.signature(algo_class(algo).__init__)
    names = [n for n, p in sig.parameters.items()
             if n not in _NOT_HYPERPARAMS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if algo in BOX_ONLY:
        names += list(EXTRA_KEYS)
    return sorted(names)


def _is_schedule_text(v: Any) -> bool:
    return isinstance(v, str) and re.fullmatch(r"lin_[0-9.eE+-]+", v) is not None


def check_hyperparams(algo: str, hp: dict[str, Any], where: str = "--hp") -> None:
    """Raise :class:`HyperparamError` (one line naming the key and what it accepts) for a key
    ``algo`` does not take or a value of the wrong type or out of range."""
    sig = inspect.signature(algo_class(algo).__init__)
    names = hyperparam_names(algo)
    label = ALGOS[algo][1]
    for key, value in hp.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise HyperparamError(f"{where} {key}: not a {label} hyper-parameter{hint}; allowed: {', '.join(names)}")
        param = sig.parameters.get(key)
        default = param.default if param is not None else None
        what = f"{where} {key}={value!r}"
        if key in ("learning_rate", "clip_range", "clip_range_vf") and _is_schedule_text(value):
            continue
        if key == "policy_kwargs":
            if not isinstance(value, dict):
                raise HyperparamError(f"{what}: must be a mapping (JSON object), e.g. {{\"net_arch\": [64, 64]}}")
            continue
        if key == "train_freq" and isinstance(value, list) and len(value) == 2:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise HyperparamError(f"{what}: must be true or false")
            continue
        if isinstance(default, int) or key in ("n_steps", "batch_size", "n_epochs", "buffer_size"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise HyperparamError(f"{what}: must be an integer")
        elif isinstance(default, float) or callable(default) or key in _UNIT | _POSITIVE | _NONNEG:
            if key == "ent_coef" and isinstance(value, str) and (value == "auto" or value.startswith("auto_")):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise HyperparamError(f"{what}: must be a finite number")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key in _UNIT and not 0.0 <= value <= 1.0:
                raise HyperparamError(f"{what}: must be in [0, 1]")
            if key in _POSITIVE and not value > 0:
                raise HyperparamError(f"{what}: must be > 0")
            if key in _NONNEG and not value >= 0:
                raise HyperparamError(f"{what}: must be >= 0")
            if key == "gradient_steps" and not (value == -1 or value >= 1):
                raise HyperparamError(f"{what}: must be -1 or an integer >= 1")


def suggest_algo_error(algo: str, exc: BaseException) -> HyperparamError:
    """A one-line :class:`HyperparamError` for an exception the algorithm's constructor raised."""
    msg = " ".join(str(exc).split())
    return HyperparamError(f"hyper-parameters of {algo}: {msg}")


# ----------------------------------------------------------------------------- safe loading

_RESETTABLE = {"_last_obs", "_last_episode_starts", "_last_original_obs", "ep_info_buffer",
               "ep_success_buffer", "_last_lstm_states", "rollout_buffer_class", "replay_buffer_class",
               "action_noise", "rollout_buffer_kwargs", "replay_buffer_kwargs"}
"""Blobs that are training state only: replaced by ``None`` (stable-baselines3 rebuilds them)."""

_SCHEDULES = {"lr_schedule", "clip_range", "clip_range_vf", "learning_rate"}


def _constant_schedule(entry: dict[str, Any], fallback: float | None) -> Any:
    from stable_baselines3.common.utils import FloatSchedule

    text = str(entry.get("value_schedule", entry.get("val", "")))
    m = re.search(r"val=([0-9.eE+-]+)", text)
    if m:
        return FloatSchedule(float(m.group(1)))
    return FloatSchedule(float(fallback if fallback is not None else 0.0))


def read_zip_data(path: str | Path) -> dict[str, Any]:
    """The JSON ``data`` of a stable-baselines3 zip (no unpickling); :class:`ModelFileError` if the
    file is not a readable model zip."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"policy: {p} not found" if not p.exists() else f"policy: {p} is not a file")
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            if "data" not in names or not any(n.endswith(".pth") for n in names):
                raise ModelFileError(f"policy: {p} is a zip but not a stable-baselines3 model (no data/weights)")
            data = json.loads(z.read("data").decode("utf-8"))
            for n in names:  # read every member once: a truncated file fails here, with its name
                z.read(n)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError,
            json.JSONDecodeError, KeyError, ValueError, NotImplementedError) as exc:
        raise ModelFileError(f"policy: {p} is not a readable stable-baselines3 model zip "
                             f"(truncated or corrupt: {type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"policy: {p}: its data is not a JSON object")
    return data


def guess_algo(data: dict[str, Any]) -> str | None:
    """The algorithm a zip was saved by, from the module of its policy class and its parameters."""
    pc = data.get("policy_class", {})
    module = str(pc.get("__module__", "")) if isinstance(pc, dict) else ""
    if "maskable" in module:
        return "ppo_mask"
    if "recurrent" in module:
        return "ppo_lstm"
    if "tqc" in module:
        return "tqc"
    if "sac" in module:
        return "sac"
    if "td3" in module:
        return "td3"
    if "cg_max_steps" in data:
        return "trpo"
    if "clip_range" in data and "n_epochs" in data:
        return "ppo"
    if "n_steps" in data and "gae_lambda" in data:
        return "a2c"
    return None


def _shape_of(entry: Any) -> tuple[int, ...] | None:
    if not isinstance(entry, dict) or "_shape" not in entry:
        return None
    try:
        return tuple(int(x) for x in json.loads(str(entry["_shape"]).replace("(", "[").replace(")", "]").replace(",]", "]")))
    except (ValueError, TypeError):
        return None


def _floats(text: str) -> list[float]:
    if "..." in text:
        raise ValueError("abbreviated array")
    return [float(x) for x in text.replace("[", " ").replace("]", " ").replace(",", " ").split()]


def space_from_json(entry: dict[str, Any]) -> Any:
    """A ``Box``, ``Discrete`` or ``MultiDiscrete`` rebuilt from the plain fields SB3 writes next
    to the pickled space (no unpickling); ``None`` if it cannot be rebuilt safely."""
    import numpy as np
    from gymnasium import spaces

    kind = str(entry.get(":type:", ""))
    try:
        shape = _shape_of(entry)
        if kind.endswith("spaces.box.Box'>") and shape is not None:
            dtype = np.dtype(str(entry.get("dtype", "float32")))
            low = np.asarray(_floats(str(entry["low"])), dtype=dtype).reshape(shape)
            high = np.asarray(_floats(str(entry["high"])), dtype=dtype).reshape(shape)
            return spaces.Box(low, high, dtype=dtype)
        if kind.endswith("spaces.multi_discrete.MultiDiscrete'>"):
            return spaces.MultiDiscrete(np.asarray(_floats(str(entry["nvec"])), dtype=np.int64))
        if kind.endswith("spaces.discrete.Discrete'>"):
            return spaces.Discrete(int(entry["n"]), start=int(entry.get("start", 0)))
    except (KeyError, ValueError, TypeError):
        return None
    return None


_TORCH_CLASSES = {"torch.optim.rmsprop.RMSprop": ("optim", "RMSprop"), "torch.optim.adam.Adam": ("optim", "Adam"),
                  "torch.optim.adamw.AdamW": ("optim", "AdamW"), "torch.optim.sgd.SGD": ("optim", "SGD"),
                  "torch.nn.modules.activation.ReLU": ("nn", "ReLU"), "torch.nn.modules.activation.Tanh": ("nn", "Tanh"),
                  "torch.nn.modules.activation.ELU": ("nn", "ELU"), "torch.nn.modules.activation.LeakyReLU": ("nn", "LeakyReLU"),
                  "torch.nn.modules.activation.SiLU": ("nn", "SiLU"), "torch.nn.modules.activation.GELU": ("nn", "GELU")}


def kwargs_from_json(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A pickled ``policy_kwargs`` dict rebuilt from the text SB3 writes next to it: literals, and
    well-known torch optimisers and activations by name; ``None`` if anything else is in it."""
    import ast

    out: dict[str, Any] = {}
    for k, v in entry.items():
        if k.startswith(":"):
            continue
        text = str(v)
        m = re.fullmatch(r"<class '([A-Za-z0-9_.]+)'>", text)
        if m:
            if m.group(1) not in _TORCH_CLASSES:
                return None
            import torch

            mod, name = _TORCH_CLASSES[m.group(1)]
            out[k] = getattr(getattr(torch, mod), name)
            continue
        try:
            out[k] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return None
    return out


def load_model(path: str | Path, algo: str | None = None, observation_space: Any = None, action_space: Any = None,
               policy_class: Any = None, trust: bool = False, env: Any = None,
               replace: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Load a stable-baselines3 / sb3-contrib zip without unpickling anything (see module doc).

    ``observation_space`` / ``action_space``: the spaces of the env it will play (checked against
    the shapes recorded in the file); ``policy_class``: the class or SB3 alias of its policy
    (default: the algorithm's ``MlpPolicy``; the device-shared network when the file names
    :mod:`edgesplit.agents.networks`). ``replace``: further ``custom_objects`` (e.g. the schedules
    of a resumed run). ``trust=True`` lets stable-baselines3 unpickle what we cannot
    replace (only for files you made or trust). ``env`` and ``kwargs`` go to ``ALGO.load``.
    """
    p = Path(path)
    data = read_zip_data(p)
    algo = algo or guess_algo(data)
    if algo is None:
        raise ModelFileError(f"policy: cannot tell which algorithm saved {p}; name it (--algo)")
    cls = algo_class(algo)
    if env is not None:
        observation_space = observation_space or env.observation_space
        action_space = action_space or env.action_space
    custom: dict[str, Any] = {}
    blobs = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    refused = []
    for key in blobs:
        entry = data[key]
        if key in _RESETTABLE:
            custom[key] = None
        elif key in _SCHEDULES:
            lr = data.get("learning_rate")
            custom[key] = _constant_schedule(entry, lr if isinstance(lr, (int, float)) else None)
        elif key in ("observation_space", "action_space"):
            space = observation_space if key == "observation_space" else action_space
            if space is None:
                space = space_from_json(entry)
            if space is None:
                refused.append(key)
                continue
            saved = _shape_of(entry)
            if saved is not None and space.shape is not None and tuple(space.shape) != saved:
                raise ModelFileError(f"policy: {p.name} was saved for an {key.replace('_', ' ')} of shape {saved}, "
                                     f"this env has {tuple(space.shape)} (another N, wrapper or history?)")
            custom[key] = space
        elif key == "policy_kwargs" and kwargs_from_json(entry) is not None:
            custom[key] = kwargs_from_json(entry)
        elif key == "policy_class":
            if policy_class is not None:
                custom[key] = cls.policy_aliases.get(policy_class, policy_class) if isinstance(policy_class, str) else policy_class
                continue
            module = str(entry.get("__module__", ""))
            if module.endswith("agents.networks"):
                from edgesplit.agents.networks import DeviceSharedPolicy

                custom[key] = DeviceSharedPolicy
            elif module.startswith(("stable_baselines3.", "sb3_contrib.")):
                custom[key] = cls.policy_aliases["MlpLstmPolicy" if algo == "ppo_lstm" else "MlpPolicy"]
            else:
                refused.append(f"policy_class ({module or 'unknown module'})")
        else:
            refused.append(key)
    custom.update(replace or {})
    refused = [r for r in refused if r.split(" ")[0] not in (replace or {})]
    if refused and not trust:
        raise ModelFileError(f"policy: {p.name} stores {', '.join(refused)} as pickled Python objects; loading them "
                             f"would run code from the file. Pass --trust (trust=True) only if you made it or trust it")
    if trust:
        for key in refused:
            custom.pop(key.split(" ")[0], None)
    try:
        return cls.load(str(p), env=env, custom_objects=custom, device=kwargs.pop("device", "cpu"), **kwargs)
    except (ValueError, RuntimeError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile,
            zlib.error, OSError) as exc:
        raise ModelFileError(f"policy: {p} could not be loaded as a {ALGOS[algo][1]} model "
                             f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None


def predict_action(model: Any, algo: str, x: Any, base: Any = None, state: Any = None) -> tuple[Any, Any]:
    """``model``'s deterministic action for the normalised observation ``x`` and the new recurrent
    state: RecurrentPPO (``ppo_lstm``) carries its LSTM state (``state=None`` at an episode's
    start), MaskablePPO (``ppo_mask``) gets the memory-feasible cut masks of ``base`` (the env)."""
    import numpy as np

    if algo == "ppo_lstm":
        a, new = model.predict(x, state=state, episode_start=np.array([state is None]), deterministic=True)
        return a, new
    if algo == "ppo_mask" and base is not None:
        feas = np.asarray(base.cost_model.feasible, dtype=bool).copy()
        feas[~feas.any(axis=1), :] = True
        a, _ = model.predict(x, action_masks=feas.reshape(-1), deterministic=True)
        return a, None
    a, _ = model.predict(x, deterministic=True)
    return a, None


# ----------------------------------------------------------------------------- normalisation as JSON


def normalize_state(vec: Any) -> dict[str, Any]:
    """``VecNormalize``'s statistics and settings as plain JSON (no pickle)."""
    def rms(r: Any) -> dict[str, Any]:
        return {"mean": [float(x) for x in r.mean.ravel()], "var": [float(x) for x in r.var.ravel()],
                "count": float(r.count), "shape": list(r.mean.shape)}

    return {"format": 1, "obs_rms": rms(vec.obs_rms), "ret_rms": rms(vec.ret_rms), "clip_obs": float(vec.clip_obs),
            "clip_reward": float(vec.clip_reward), "gamma": float(vec.gamma), "epsilon": float(vec.epsilon),
            "norm_obs": bool(vec.norm_obs), "norm_reward": bool(vec.norm_reward)}


def restore_normalize(state: dict[str, Any], venv: Any, training: bool = True) -> Any:
    """A ``VecNormalize`` around ``venv`` with the statistics of :func:`normalize_state`."""
    import numpy as np
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        vec = VecNormalize(venv, training=training, norm_obs=bool(state["norm_obs"]),
                           norm_reward=bool(state["norm_reward"]), clip_obs=float(state["clip_obs"]),
                           clip_reward=float(state["clip_reward"]), gamma=float(state["gamma"]),
                           epsilon=float(state["epsilon"]))
        for name in ("obs_rms", "ret_rms"):
            r, s = getattr(vec, name), state[name]
            shape = tuple(s["shape"])
            if tuple(r.mean.shape) != shape:
                raise ValueError(f"{name} has shape {shape}, the env {tuple(r.mean.shape)}")
            r.mean = np.asarray(s["mean"], dtype=np.float64).reshape(shape)
            r.var = np.asarray(s["var"], dtype=np.float64).reshape(shape)
            r.count = float(s["count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"normalisation statistics: malformed ({type(exc).__name__}: {exc})") from None
    return vec


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and ``os.replace`` (never half a file)."""
    import os

    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
