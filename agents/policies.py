"""One policy interface for classical and learned schedulers.

A :class:`Policy` plays an EdgeSplit environment one round at a time::

    policy.reset(env, seed)              # after env.reset(seed=seed); binds the episode
    action = policy.act(obs, info)       # the native {"cuts", "shares"} action for the coming round

``obs`` and ``info`` are what the env returned last (from ``reset`` or ``step``). Every policy
returns the env's *native* action, so all of them run on the very same env and episodes.

=================  ==========================================================================
name               what it does each round
=================  ==========================================================================
``alternating``    the paper's alternating algorithm, re-solved on the last measured rates
``exact``          the global optimum (bisection), re-solved on the last measured rates
``static``         ``exact`` planned once at reset on the nominal (link-class mean) rates
``mpc``            (v1 only) cuts by ``exact`` on the measured mean rates; shares of the bits left
                   re-solved every interval on the last measured rates
``mpc-harmonic``   (v1 only) ... on the harmonic mean of the last ``k`` measured rates
``robust-mpc``     (v1 only) ... on that mean / (1 + the largest recent relative forecast error)
``pf``             (v1 only) the plan's shares tilted towards devices whose last rate is high
                   against their recent average (proportional-fair style)
``oracle``         the reference, not a policy: clairvoyant. v1: cuts by ``exact`` on the
                   round's true mean rates, shares of every interval by a linear program on the
                   future rates (:mod:`edgesplit.agents.classical_oracle`); v0: ``exact`` on the
                   true mean rates of the coming round (:class:`OraclePolicy`)
``psl``            best single cut with equal shares, re-solved on the last measured rates
``random``         a random feasible plan (seeded by the episode seed)
``learned``        the policy that ships with the package (``agents/shipped``)
a path             a policy saved by ``edgesplit train-agent`` (``.zip`` with its ``.json``)
=================  ==========================================================================

In ``EdgeSplitDynamic-v1`` the policy is called at every decision epoch (a cut epoch starting a
round, then a share epoch every ``interval_s``); the v1 implementations live in
:mod:`edgesplit.agents.classical` and read only ``env.unwrapped.policy_view()``. A policy that
only plans per round keeps its shares within the round. In ``EdgeSplit-v0`` (fixed rates) the
last measured rates are the true ones, so ``alternating``, ``static`` and ``oracle`` coincide up
to the solver (alternating vs exact).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from edgesplit.agents.factories import action_wrapper
from edgesplit.agents.features import FEATURES_VERSION, rate_features
from edgesplit.schedulers import get_scheduler
from edgesplit import envs

CLASSICAL: tuple[str, ...] = ("alternating", "exact", "static", "mpc", "mpc-harmonic", "robust-mpc", "pf",
                               "psl", "random")
"""Names of the built-in classical policies (real schedulers: no future information)."""

REFERENCE: tuple[str, ...] = ("oracle",)
"""Names of the references (clairvoyant; gaps are measured against them, they are not policies)."""

V1_ONLY: tuple[str, ...] = ("mpc", "mpc-harmonic", "robust-mpc", "pf")
"""Classical policies that need the interval epochs of ``EdgeSplitDynamic-v1``."""

V1_CLASSICAL: tuple[str, ...] = ("alternating", "exact", "static", "mpc", "mpc-harmonic", "robust-mpc", "pf")
"""The classical policies every ``EdgeSplitDynamic-v1`` comparison includes (the best of them is
the bar a learned scheduler must clear)."""


def policy_kinds(env_id: str = "EdgeSplitDynamic-v1") -> list[dict[str, str]]:
    """``[{"name", "kind"}]`` of every policy available for ``env_id``: ``classical``, ``reference``
    or ``learned`` (the shipped one; any saved path is learned too)."""
    names = [n for n in CLASSICAL if env_id == "EdgeSplitDynamic-v1" or n not in V1_ONLY]
    out = [{"name": n, "kind": "classical"} for n in names]
    out += [{"name": n, "kind": "reference"} for n in REFERENCE]
    out.append({"name": "learned", "kind": "learned"})
    return out

SHIPPED_STEM = "edgesplit-dynamic-n10"
"""Base name of the shipped policy's files in ``agents/shipped`` (``.zip`` + ``.json``)."""

METADATA_FORMAT = 1
"""Version of the JSON metadata written next to a saved model."""

from edgesplit.agents.loading import ALGO_NAMES as ALGOS  # noqa: E402  (H-rl: algorithms live in loading.py)


class Policy:
    """Base class: a scheduler that plays an EdgeSplit env round by round (see module doc)."""

    name: str = "policy"

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind to ``env`` for a new episode (call after ``env.reset``); ``seed`` seeds any randomness."""
        self.env = env
        self.base = env.unwrapped

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action (``{"cuts": indices 0..L-1, "shares"}``) for the coming round."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class SchedulerPolicy(Policy):
    """A scheduler of :mod:`edgesplit.schedulers` re-solved every round on the last measured rates
    (``once=False``) or solved once at reset on the nominal rates (``once=True``)."""

    def __init__(self, name: str, scheduler: str, once: bool = False, **options: Any) -> None:
        self.name = name
        self.scheduler = get_scheduler(scheduler, **options)
        self.once = once
        self._plan_action: dict[str, np.ndarray] | None = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind the episode; a ``once`` policy plans now, on the nominal rates."""
        super().reset(env, seed)
        self._plan_action = None
        if self.once:
            self._plan_action = envs.action_from_plan(self.scheduler.plan(self.base.cost_model))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The plan (re-solved on ``planning_cost_model()`` unless planned once)."""
        if self._plan_action is not None:
            return self._plan_action
        return envs.action_from_plan(self.scheduler.plan(self.base.planning_cost_model()))


class RandomPolicy(Policy):
    """A random feasible plan each round (``edgesplit``'s ``random`` scheduler), seeded per episode."""

    name = "random"

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind the episode and seed the generator with ``seed``."""
        super().reset(env, seed)
        self._rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """A fresh random plan."""
        seed = int(self._rng.integers(0, 2**31 - 1))
        return envs.action_from_plan(get_scheduler("random", seed=seed).plan(self.base.planning_cost_model()))


class OraclePolicy(Policy):
    """``exact`` on the true rates of the coming round: a clairvoyant reference, not a scheduler.

    In ``EdgeSplitDynamic-v0`` it reads the coming stretch of the traces through the env's
    clairvoyant queries. Device ``i``'s true rate is the mean of its link over its own transfer
    window ``[clock, clock + tau_i)`` (``true_mean_rates_bps``); ``tau_i`` depends on the plan, so
    it iterates: windows of last round's length, plan with ``exact``, each device's predicted
    transfer time as its new window, plan again (``iterations`` plans in all). Of these candidate
    plans it plays the one whose true round time (``transfer_seconds``: the exact trace
    integration ``step`` will do, migration included) is shortest. In ``EdgeSplit-v0`` the rates
    are known and constant, so it is ``exact`` on them.
    """

    name = "oracle"

    def __init__(self, iterations: int = 3) -> None:
        self.iterations = int(iterations)
        self._exact = get_scheduler("exact")

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The exact plan on the coming round's true rates."""
        base = self.base
        cm0 = base.cost_model
        if not hasattr(base, "true_mean_rates_bps"):
            return envs.action_from_plan(self._exact.plan(base.planning_cost_model()))
        clock = float(info.get("sim_clock_s", 0.0))
        last = float(info.get("round_time_s", base.reference_time_s))
        if not math.isfinite(last) or last <= 0:
            last = base.reference_time_s
        floor = 1e-3 * cm0.rate_bps
        window = np.full(base.n_devices, last)
        best: tuple[float, Any] = (math.inf, None)
        for _ in range(max(1, self.iterations)):
            rates = np.maximum(base.true_mean_rates_bps(clock, window), floor)
            cm = cm0.with_rates(rates)
            plan = self._exact.plan(cm)
            compute, traffic = cm0.select(plan.cuts)
            if hasattr(base, "transfer_seconds"):
                bits = traffic + base.migration_bits(plan.cuts)
                true_t = float(np.max(compute + base.transfer_seconds(bits, plan.shares, clock)))
            else:
                true_t = plan.round_time_s
            if true_t < best[0] or best[1] is None:
                best = (true_t, plan)
            window = np.maximum(plan.per_device_time_s - compute, 1e-3 * last)
        return envs.action_from_plan(best[1])


# ----------------------------------------------------------------------------- learned policies


def _load_algo(algo: str):
    from edgesplit.agents.loading import algo_class

    return algo_class(algo)


def metadata_path(path: str | Path) -> Path:
    """The metadata JSON of a saved policy given its ``.zip``, its ``.json`` or its run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.json"
    elif p.suffix == ".zip":
        p = p.with_suffix(".json")
    elif p.suffix != ".json":
        p = p.with_suffix(".json")
    return p


class LearnedPolicy(Policy):
    """A stable-baselines3 model saved by ``edgesplit train-agent``, with its metadata.

    The metadata (JSON next to the ``.zip``) says which env id, N, L, wrapper, history and
    feature version the model was trained for, and holds the observation normalisation
    statistics of ``VecNormalize``. :meth:`reset` refuses an env the model was not trained for,
    with a message naming the mismatch.
    """

    def __init__(self, path: str | Path, name: str | None = None, trust: bool = False) -> None:
        meta_file = metadata_path(path)
        if not meta_file.is_file():
            raise FileNotFoundError(f"policy: no metadata {meta_file} (a policy saved by `edgesplit "
                                    f"train-agent` is a .zip with a .json of the same name)")
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"policy: {meta_file} is not valid JSON ({exc})") from None
        for key in ("env_id", "n_devices", "n_layers", "wrapper", "algo", "history", "features", "obs_rms"):
            if key not in meta:
                raise ValueError(f"policy: metadata {meta_file} lacks the field {key!r}")
        zip_file = meta_file.with_name(meta.get("model_file", meta_file.with_suffix(".zip").name))
        if not zip_file.is_file():
            raise FileNotFoundError(f"policy: model file {zip_file} not found")
        self.meta: dict[str, Any] = meta
        self.path = zip_file
        self.name = name or str(meta.get("name", zip_file.stem))
        from edgesplit.agents.loading import load_model  # no unpickling unless trust (H-rl)

        self.model = load_model(zip_file, meta["algo"], trust=trust)
        rms = meta["obs_rms"]
        self._mean = np.asarray(rms["mean"], dtype=np.float64)
        self._std = np.sqrt(np.asarray(rms["var"], dtype=np.float64) + float(rms.get("epsilon", 1e-8)))
        self._clip = float(rms.get("clip_obs", 10.0))
        self._mapper: gym.Env | None = None

    def check_env(self, env: gym.Env) -> None:
        """Raise ``ValueError`` if ``env`` is not the kind of env this policy was trained for."""
        meta = self.meta
        base = env.unwrapped
        env_id = envs.canonical_id(env.spec.id) if env.spec is not None else type(base).__name__
        where = f"policy {self.path.name} was trained for {meta['env_id']} with N={meta['n_devices']}"
        if env_id != meta["env_id"]:
            raise ValueError(f"{where}; refusing to run it on {env_id} (train one for that env)")
        if base.n_devices != meta["n_devices"]:
            raise ValueError(f"{where}; refusing to run it with N={base.n_devices} devices "
                             f"(its observation and action sizes depend on N)")
        if base.n_layers != meta["n_layers"]:
            raise ValueError(f"{where} and L={meta['n_layers']} layers; this env has L={base.n_layers}")
        if getattr(base, "history", 1) != meta["history"]:
            raise ValueError(f"{where} and history={meta['history']}; this env has history={getattr(base, 'history', 1)}")
        if meta["features"] != FEATURES_VERSION:
            raise ValueError(f"policy {self.path.name}: features {meta['features']!r} are not this "
                             f"version's {FEATURES_VERSION!r}; retrain it")

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Check the env and bind the action mapping of the policy's wrapper."""
        self.check_env(env)
        super().reset(env, seed)
        self._mapper = action_wrapper(env, self.meta["wrapper"])
        self._rnn = None  # RecurrentPPO's state, fresh each episode (H-rl)

    def normalize(self, features: np.ndarray) -> np.ndarray:
        """``VecNormalize``'s observation normalisation with the saved statistics."""
        return np.clip((features - self._mean) / self._std, -self._clip, self._clip).astype(np.float32)

    def raw_action(self, obs: np.ndarray) -> np.ndarray:
        """The model's deterministic action (in the wrapper's space) for a raw env observation."""
        x = self.normalize(rate_features(obs, self.base))
        from edgesplit.agents.loading import predict_action  # LSTM state and cut masks (H-rl)

        a, self._rnn = predict_action(self.model, self.meta["algo"], x, self.base, getattr(self, "_rnn", None))
        return a

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action: the model's action mapped by its wrapper."""
        a = self.raw_action(obs)
        if isinstance(self._mapper.action_space, gym.spaces.Box):
            a = np.clip(a, -1.0, 1.0)
        return self._mapper.action(a)


def shipped_policy_path() -> Path:
    """The metadata JSON of the policy that ships with the package."""
    p = Path(str(resources.files("edgesplit.agents") / "shipped" / f"{SHIPPED_STEM}.json"))
    if not p.is_file():
        raise FileNotFoundError(f"policy: the shipped policy {p} is missing (reinstall the package)")
    return p


class ByEnvPolicy(Policy):
    """A policy with an ``EdgeSplitDynamic-v1`` implementation (a
    :class:`~edgesplit.agents.classical.TwoTimescalePolicy`, called at every decision epoch) and,
    optionally, one for the per-round envs; the env bound at :meth:`reset` picks which."""

    def __init__(self, name: str, v1: Any, v0: Policy | None = None) -> None:
        self.name = name
        self.v1 = v1
        self.v0 = v0
        self._active: Any = None

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind the episode with the implementation for ``env``."""
        super().reset(env, seed)
        from edgesplit.agents.classical import is_two_timescale

        if is_two_timescale(env):
            self.v1.bind(env, seed)
            self._active = self.v1
        elif self.v0 is not None:
            self.v0.reset(env, seed)
            self._active = self.v0
        else:
            raise ValueError(f"policy {self.name!r}: needs EdgeSplitDynamic-v1 (re-divides the band within a round)")

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action for the coming epoch (v1) or round."""
        if self._active is self.v1:
            return self.v1.act_view(self.base.policy_view())
        return self._active.act(obs, info)


def get_policy(spec: str | Path, **options: Any) -> Policy:
    """The policy called ``spec`` (a name of :data:`CLASSICAL` or :data:`REFERENCE`, ``learned``, or a
    saved policy's path). ``options`` go to the v1 implementation (e.g. ``pf``'s ``exponent`` and
    ``window_s``, ``mpc-harmonic``'s ``k``, the oracle's ``iterations``)."""
    from edgesplit.agents import classical as cl
    from edgesplit.agents.classical_oracle import OracleV1Policy

    name = str(spec)
    if name == "alternating":
        return ByEnvPolicy(name, cl.PlannerPolicy(name, "alternating", "round"), SchedulerPolicy(name, "alternating"))
    if name == "exact":
        return ByEnvPolicy(name, cl.PlannerPolicy(name, "exact", "round"), SchedulerPolicy(name, "exact"))
    if name == "static":
        return ByEnvPolicy(name, cl.PlannerPolicy(name, "exact", "nominal"), SchedulerPolicy(name, "exact", once=True))
    if name == "mpc":
        return ByEnvPolicy(name, cl.MPCPolicy(name, "last", **options))
    if name == "mpc-harmonic":
        return ByEnvPolicy(name, cl.MPCPolicy(name, "harmonic", **options))
    if name == "robust-mpc":
        return ByEnvPolicy(name, cl.MPCPolicy(name, "robust", **options))
    if name == "pf":
        return ByEnvPolicy(name, cl.ProportionalFairPolicy(name, **options))
    if name == "psl":
        return ByEnvPolicy(name, cl.PlannerPolicy(name, "psl", "round"), SchedulerPolicy(name, "psl"))
    if name == "random":
        return RandomPolicy()
    if name == "oracle":
        return ByEnvPolicy(name, OracleV1Policy(**{k: v for k, v in options.items() if k == "iterations"}),
                           OraclePolicy(**options))
    if name == "learned":  # v1: the shipped tilt (H-learn); per-round envs: the v0 PPO policy
        from edgesplit.agents.learned_v1 import LearnedV1Policy
        v0 = LearnedPolicy(shipped_policy_path(), name="learned")
        pol = ByEnvPolicy("learned", LearnedV1Policy(), v0)
        pol.meta = v0.meta  # the v0 policy's metadata, as before
        return pol
    p = Path(name)
    from edgesplit.agents.learned_v1 import LearnedV1Policy, is_tilt_file
    if is_tilt_file(p):  # a saved v1 tilt (.npz/.json, H-learn)
        return ByEnvPolicy(p.stem, LearnedV1Policy(p, name=p.stem))
    if p.suffix in (".zip", ".json") or p.is_dir() or p.exists():
        return LearnedPolicy(p)
    raise ValueError(f"policy: {name!r} is neither a policy name ({', '.join(CLASSICAL + REFERENCE)}, learned) "
                     f"nor an existing saved policy (.zip/.json or run folder)")
