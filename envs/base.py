"""Shared machinery of the simulated EdgeSplit environments: arguments, spaces, action checks,
the observation layout and rendering. The numbers come from :mod:`edgesplit` (cost model,
scenario generator, schedulers); this module only arranges them.

Observation layout (feature-major, ``F = 4 + history`` features per device, then one scalar)::

    [ speed (N) | deepest feasible cut (N) | rate t-1 (N) ... rate t-H (N) | last time (N) | cut (N) | progress ]

=======================  =========================================================  ===========
feature                  value                                                      range
=======================  =========================================================  ===========
speed                    ``s_i / max_j s_j``, ``s_i = F(L) / F_i(L)`` (see below)         (0, 1]
deepest feasible cut     ``c_max_i / L`` (deepest cut that fits the memory)         (0, 1]
rate t-h                 measured rate ``h+1`` rounds ago ``/ max_j rate_class_j``   [0, 10]
last time                last round's device time ``T_i / T_ref``                   [0, 10]
cut                      the cut in place ``c_i / L``                               (0, 1]
progress                 rounds done ``/ rounds``                                   [0, 1]
=======================  =========================================================  ===========

Values above 10 are shown as 10 (``MAX_OBS``); an infinite device time as 10.

A device's hardware shows in two numbers: ``s_i``, its whole-model throughput relative to the
profiling host (``speed_i`` for a device without its own profile; ``F(L) / F_i(L)`` for one with its
own per-layer profile), and its deepest memory-feasible cut. The *shape* of a per-layer profile
(which layers the hardware runs comparatively fast) is not observed; it shows only through the
device times of the rounds played (``last time``). Observations keep the same size either way.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import logger, spaces
from gymnasium.error import ResetNeeded

from edgesplit.costmodel import CostModel
from edgesplit.devices import GeneratorConfig, generate_scenario, generator_config
from edgesplit.profiles import LayerProfile, load_builtin_profile
from edgesplit.scenario import Scenario, load_scenario, scenario_from_dict
from edgesplit.schedulers import Plan, get_scheduler
from edgesplit.envs.layout import per_round_layout

MAX_OBS = 10.0
"""Upper bound of the unbounded observation features (rates, device times), in their units."""

DEFAULT_ROUNDS = 100
"""Rounds per episode by default (also the registered ``max_episode_steps``)."""


@lru_cache(maxsize=16)
def _builtin_profile(name: str) -> LayerProfile:
    return load_builtin_profile(name)


def resolve_profile(model: str | LayerProfile) -> LayerProfile:
    """A shipped profile by name (cached; profiles are immutable) or a :class:`LayerProfile` as is."""
    if isinstance(model, LayerProfile):
        return model
    if not isinstance(model, str):
        raise ValueError(f"model: expected a shipped profile name or a LayerProfile, got {model!r}")
    return _builtin_profile(model)


def resolve_scenario(scenario: Scenario | str | Path | dict) -> Scenario:
    """A :class:`Scenario` from a Scenario, a scenario file path or a parsed scenario dict."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, (str, Path)):
        return load_scenario(scenario)
    if isinstance(scenario, dict):
        return scenario_from_dict(scenario)
    raise ValueError(f"scenario: expected a Scenario, a file path or a dict, got {type(scenario).__name__}")


def _positive(value: Any, name: str, integer: bool = False, allow_zero: bool = False) -> Any:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(float(value)) or (value < 0 if allow_zero else value <= 0):
        raise ValueError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return int(value) if integer else float(value)


class EdgeSplitBaseEnv(gym.Env[np.ndarray, dict]):
    """Common base of :class:`edgesplit.envs.EdgeSplitEnv` and :class:`edgesplit.envs.EdgeSplitDynamicEnv` (see those)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        n_devices: int | None = None,
        model: str | LayerProfile = "vgg19",
        rounds: int = DEFAULT_ROUNDS,
        scenario: Scenario | str | Path | dict | None = None,
        generator: GeneratorConfig | dict | None = None,
        migration_factor: float = 0.0,
        max_penalty: float = 10.0,
        history: int = 1,
        render_mode: str | None = None,
        **generator_options: Any,
    ) -> None:
        """See the subclasses. ``generator`` (a :class:`edgesplit.devices.GeneratorConfig` or a dict
        of its fields) says how episodes draw their devices; its fields may also be passed as
        keyword arguments (``heterogeneity=20``, ``device_classes=("laptop", "edge-device-d1")``),
        which override it. Unknown keyword arguments raise ``ValueError`` naming them."""
        self.generator: GeneratorConfig = generator_config(generator, **generator_options)
        self.rounds = _positive(rounds, "rounds", integer=True)
        self.max_penalty = _positive(max_penalty, "max_penalty")
        self.migration_factor = _positive(migration_factor, "migration_factor", allow_zero=True)
        self.history = _positive(history, "history", integer=True)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        if scenario is not None:
            self.fixed_scenario: Scenario | None = resolve_scenario(scenario)
            self.profile = self.fixed_scenario.profile
            if n_devices is not None and n_devices != self.fixed_scenario.n_devices:
                raise ValueError(f"n_devices: {n_devices} differs from the scenario's {self.fixed_scenario.n_devices} devices")
            n_devices = self.fixed_scenario.n_devices
            self._check_scenario(self.fixed_scenario, "scenario")
        else:
            self.fixed_scenario = None
            self.profile = resolve_profile(model)
            n_devices = 10 if n_devices is None else _positive(n_devices, "n_devices", integer=True)
        self.n_devices: int = int(n_devices)
        self.n_layers: int = int(self.profile.n_layers)
        if self.fixed_scenario is None:  # fail now, with the generator's message, not at reset
            self._check_scenario(generate_scenario(self.profile, self.n_devices, self.generator, seed=0),
                                 "generated scenario")
        self._alternating = get_scheduler("alternating")

        N, L, H = self.n_devices, self.n_layers, self.history
        self.action_space = spaces.Dict({
            "cuts": spaces.MultiDiscrete(np.full(N, L, dtype=np.int64)),
            "shares": spaces.Box(0.0, 1.0, shape=(N,), dtype=np.float32),
        })
        high = np.concatenate([
            np.ones(2 * N), np.full(H * N, MAX_OBS), np.full(N, MAX_OBS), np.ones(N), [1.0],
        ]).astype(np.float32)
        self.observation_space = spaces.Box(np.zeros_like(high), high, dtype=np.float32)
        # observation blocks: views into one float64 buffer, cast to float32 on the way out
        self._obs = np.zeros(high.shape, dtype=np.float64)
        self._make_views()
        self._rowoff = np.arange(N, dtype=np.intp) * L
        self._cutnorm = (np.arange(1, L + 1, dtype=np.float64) / L)
        self._cuts1 = np.arange(1, L + 1, dtype=np.int64)
        self._maxobs_arr = np.full(N, MAX_OBS)
        self._inv_ref_arr = np.ones(N)
        self._round = 0
        self._clock = 0.0
        self._last: dict[str, Any] | None = None
        self._fixed_cache: tuple[CostModel, Plan] | None = None  # see _episode_costs
        self._needs_reset = True  # until reset(); again once an episode has terminated

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        """Seed ``np_random`` (gymnasium) and allow stepping; subclasses build the episode."""
        super().reset(seed=seed, options=options)
        self._needs_reset = False

    def _check_running(self) -> None:
        """Raise ``gymnasium.error.ResetNeeded`` before the first reset and after termination
        (``step`` calls it first; :meth:`reset` and a terminating :meth:`_finish_step` set the flag)."""
        if self._needs_reset:
            raise ResetNeeded("step: the episode has terminated (or never started); call reset() first")

    _VIEWS = ("_o_speed", "_o_deep", "_o_rates", "_o_rate0", "_o_time", "_o_cut")

    def _make_views(self) -> None:
        """The observation blocks as views into ``self._obs`` (see the module docstring)."""
        lay, o = per_round_layout(self.n_devices, self.history), self._obs  # the layout, defined once (H-dyn)
        self._o_speed, self._o_deep, self._o_rates = o[lay.block("speed")], o[lay.block("deepest")], o[lay.block("rates")]
        self._o_rate0, self._o_time, self._o_cut = o[lay.first_block("rates")], o[lay.block("time")], o[lay.block("cut")]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self._VIEWS:  # views would unpickle as copies: rebuild them instead
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_views()

    # ------------------------------------------------------------------ scenario handling

    def _check_scenario(self, s: Scenario, where: str) -> None:
        if self.fixed_scenario is not None and where != "scenario":
            fs = self.fixed_scenario
            if s.n_devices != fs.n_devices or s.n_layers != fs.n_layers:
                raise ValueError(f"{where}: expected {fs.n_devices} devices and {fs.n_layers} layers "
                                 f"(the spaces' size), got {s.n_devices} and {s.n_layers}")
        rates = s.array("rate_bps")
        if not (rates > 0).all():
            i = int(np.flatnonzero(~(rates > 0))[0])
            raise ValueError(f"{where}: devices[{i}].rate_bps must be > 0 in an environment (a device "
                             f"without a link never finishes a round)")
        CostModel.from_scenario(s)  # raises InfeasibleError naming a device that fits no cut

    def _episode_scenario(self, options: dict | None) -> Scenario:
        """The scenario of a new episode: ``options['scenario']``, the fixed one, or a fresh draw."""
        if options and options.get("scenario") is not None:
            s = resolve_scenario(options["scenario"])
            if s.n_devices != self.n_devices or s.n_layers != self.n_layers:
                raise ValueError(f"options['scenario']: expected {self.n_devices} devices and {self.n_layers} "
                                 f"layers (the spaces' size), got {s.n_devices} and {s.n_layers}")
            self._check_scenario(s, "options['scenario']")
            return s
        if self.fixed_scenario is not None:
            return self.fixed_scenario
        return generate_scenario(self.profile, self.n_devices, self.generator, rng=self.np_random)

    def _episode_costs(self, options: dict | None) -> tuple[CostModel, Plan]:
        """The cost model and alternating reference of a new episode (see :meth:`_episode_scenario`),
        installed with :meth:`_setup_costs` and :meth:`_set_reference`; returns ``(cm, plan)``.
        With a fixed scenario (and no ``options['scenario']``) they are built once and reused:
        the nominal rates are fixed, so every episode has the same costs and reference."""
        use_fixed = self.fixed_scenario is not None and not (options and options.get("scenario") is not None)
        if use_fixed and self._fixed_cache is not None:
            cm, plan = self._fixed_cache
        else:
            cm = CostModel.from_scenario(self._episode_scenario(options))
            plan = self._reference(cm)
            if use_fixed:
                self._fixed_cache = (cm, plan)
        self._setup_costs(cm)
        self._set_reference(plan)
        return cm, plan

    def _setup_costs(self, cm: CostModel) -> None:
        """Cache the cost model's arrays for the step (flat, indexed ``i * L + c - 1``)."""
        self.cost_model = cm
        self.scenario = cm.scenario
        self._A = np.ascontiguousarray(cm.compute_s).ravel()
        self._V = np.ascontiguousarray(cm.traffic_bits).ravel()
        self._deepest0 = (cm.deepest_feasible_cut() - 1).astype(np.intp)
        self._min_deep = int(self._deepest0.min())
        if getattr(self, "_mig_profile", None) is not cm.scenario.profile:  # once per profile
            W = np.cumsum(cm.scenario.profile.param_bytes)
            self._mig_table = self.migration_factor * 8.0 * W  # bits of state per cut, see migration_bits
            self._mig_profile = cm.scenario.profile
        self._rates = cm.rate_bps
        speed = cm.effective_speed  # whole-model throughput F(L)/F_i(L); per-layer shape not observed
        self._o_speed[:] = speed / speed.max()
        self._o_deep[:] = self._cutnorm[self._deepest0]

    def _set_reference(self, plan: Plan) -> None:
        """Make ``plan`` (the alternating plan at reset) the reward's reference."""
        self.alternating_plan = plan
        self.reference_time_s = float(plan.round_time_s)
        self._inv_ref = 1.0 / self.reference_time_s
        self._inv_ref_arr = np.full(self.n_devices, self._inv_ref)

    def _reference(self, cm: CostModel) -> Plan:
        """The alternating plan on ``cm`` (the reward's reference)."""
        return self._alternating.plan(cm)

    # ------------------------------------------------------------------ actions

    def parse_action(self, action: Any) -> tuple[np.ndarray, np.ndarray, bool]:
        """Check a native action; return (cut indices 0..L-1, shares normalised to sum 1, any zero share).

        Raises ``ValueError`` naming the problem: a missing key, a wrong shape, a NaN or infinite
        entry, a cut index outside ``0..L-1``, a negative share, or shares that are all 0.
        """
        return self._parse_action(action)[:3]

    def _mask(self, cuts: np.ndarray, deepest_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The memory mask: (effective cut indices, which were clipped). Skips the work when the
        deepest requested cut fits every device (the common case)."""
        if deepest_index <= self._min_deep:
            return cuts.copy(), np.zeros(self.n_devices, dtype=bool)  # copy: the caller may reuse its buffer
        deep = self._deepest0
        return np.minimum(cuts, deep), cuts > deep

    def _parse_action(self, action: Any) -> tuple[np.ndarray, np.ndarray, bool, int]:
        """:meth:`parse_action` plus the largest cut index asked for."""
        try:
            cuts = action["cuts"]
            shares = action["shares"]
        except (TypeError, KeyError, IndexError):
            raise ValueError("action: expected a dict with keys 'cuts' and 'shares'") from None
        N, L = self.n_devices, self.n_layers
        cuts = np.asarray(cuts)
        shares = np.asarray(shares)
        if cuts.shape != (N,):
            raise ValueError(f"action['cuts']: expected shape ({N},), got {cuts.shape}")
        if shares.shape != (N,):
            raise ValueError(f"action['shares']: expected shape ({N},), got {shares.shape}")
        if shares.dtype.kind not in "fiu":
            raise ValueError(f"action['shares']: expected numbers, got dtype {shares.dtype}")
        if cuts.dtype.kind not in "iu":
            if cuts.dtype.kind != "f":
                raise ValueError(f"action['cuts']: expected integers, got dtype {cuts.dtype}")
            bad = np.flatnonzero(~np.isfinite(cuts))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"action['cuts'][{i}]: {cuts[i]} is not finite (NaN or inf)")
            if (cuts != np.floor(cuts)).any():
                i = int(np.flatnonzero(cuts != np.floor(cuts))[0])
                raise ValueError(f"action['cuts'][{i}]: {cuts[i]} is not an integer")
            cuts = cuts.astype(np.intp)
        cl = cuts.tolist()
        hi = max(cl)
        if hi >= L or min(cl) < 0:
            i = next(j for j, c in enumerate(cl) if c < 0 or c >= L)
            raise ValueError(f"action['cuts'][{i}]: {cl[i]} is out of range 0..{L - 1} "
                             f"(index k means the device runs layers 1..k+1)")
        sl = shares.tolist()
        total = sum(sl)
        if not math.isfinite(total):
            for i, x in enumerate(sl):
                if not math.isfinite(x):
                    raise ValueError(f"action['shares'][{i}]: {x} is not finite (NaN or inf)")
            shares = np.divide(shares, max(sl), dtype=np.float64)  # finite, but the sum overflowed
            sl = shares.tolist()
            total = sum(sl)
        low = min(sl)
        if low < 0:
            i = sl.index(low)
            raise ValueError(f"action['shares'][{i}]: {low} is negative; shares must be >= 0")
        if total <= 0:
            raise ValueError("action['shares']: all shares are 0; at least one device needs bandwidth")
        return cuts, np.divide(shares, total, dtype=np.float64), low == 0.0, hi

    def effective_cuts(self, cut_index: np.ndarray) -> np.ndarray:
        """Cut indices (0..L-1) after the memory mask: each clipped to its device's deepest feasible cut."""
        return np.minimum(np.asarray(cut_index, dtype=np.intp), self._deepest0)

    def migration_bits(self, new_cuts: np.ndarray, old_cuts: np.ndarray | None = None) -> np.ndarray:
        """Bits each device sends to move its cut from ``old_cuts`` (default: the cuts in place) to
        ``new_cuts`` (both 1..L): ``migration_factor * 8 * |W(new) - W(old)|``."""
        old = self.current_cuts() if old_cuts is None else np.asarray(old_cuts, dtype=np.intp)
        new = np.asarray(new_cuts, dtype=np.intp)
        return np.abs(self._mig_table[new - 1] - self._mig_table[old - 1])

    def current_cuts(self) -> np.ndarray:
        """The cuts in place (1..L), i.e. those of the last round (or the initial ones)."""
        return self._cur + 1

    def known_rates_bps(self) -> np.ndarray:
        """The link rates the agent knows now (the last measured ones)."""
        return self._known.copy()

    def planning_cost_model(self) -> CostModel:
        """The cost model at the rates the agent knows (what a planner may use for the next round)."""
        return self.cost_model.with_rates(self._known)

    # ------------------------------------------------------------------ episode bookkeeping

    def _finish_step(self, eff: np.ndarray, shares: np.ndarray, clipped: np.ndarray, per: np.ndarray,
                     traffic: np.ndarray, mig: np.ndarray) -> tuple[float, bool, dict]:
        """Round time, reward, obs blocks common to both envs; returns (reward, terminated, info)."""
        T = max(per.tolist())
        remaining = self.rounds - self._round
        self._round += 1
        ratio = T * self._inv_ref
        stalled = not math.isfinite(T)
        if stalled:
            reward = -self.max_penalty * remaining
        else:
            reward = -ratio if ratio < self.max_penalty else -self.max_penalty
            self._clock += T
        o_time = self._o_time
        np.multiply(per, self._inv_ref_arr, out=o_time)  # array operands: no scalar conversion cost
        np.minimum(o_time, self._maxobs_arr, out=o_time)
        self._o_cut[:] = self._cutnorm[eff]
        self._obs[-1] = min(self._round / self.rounds, 1.0)
        self._cur = eff
        info = {
            "round": self._round,
            "round_time_s": T,
            "per_device_time_s": per,
            "traffic_bits": traffic,
            "migration_bits": mig,
            "sim_clock_s": self._clock,
            "reference_time_s": self.reference_time_s,
            "cuts": self._cuts1[eff],
            "shares": shares,
            "memory_clipped": clipped,
            "stalled": stalled,
        }
        terminated = stalled or self._round >= self.rounds
        if terminated:
            self._needs_reset = True
        return float(reward), terminated, info

    def _observation(self) -> np.ndarray:
        """A fresh float32 copy of the observation buffer."""
        return self._obs.astype(np.float32)

    def render(self) -> str | None:
        """``ansi``: a text summary of the last round (cuts, shares, device times)."""
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; use render_mode='ansi'")
            return None
        if self._last is None:
            return f"{type(self).__name__}: N={self.n_devices}, L={self.n_layers}, not started\n"
        info = self._last
        lines = [f"round {info['round']}/{self.rounds}  time {info['round_time_s']:.4g} s  "
                 f"(alternating {info.get('alternating_round_time_s', float('nan')):.4g} s)  clock {info['sim_clock_s']:.6g} s"]
        lines.append("dev  cut  share    time_s   clipped")
        for i in range(self.n_devices):
            lines.append(f"{i:3d}  {int(info['cuts'][i]):3d}  {info['shares'][i]:.3f}  "
                         f"{info['per_device_time_s'][i]:8.4g}  {bool(info['memory_clipped'][i])}")
        return "\n".join(lines) + "\n"
