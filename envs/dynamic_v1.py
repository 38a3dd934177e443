"""``EdgeSplitDynamic-v1``: honest dynamic bandwidth at two time scales (DESIGN.md, "Dynamic
bandwidth, honestly").

What the env knows and what a policy may see (also the table in ``docs/envs.md``):

=====================================  =================================  ==========================================
quantity                               the env knows                      a policy may see
=====================================  =================================  ==========================================
link class (nominal rate ``r_i``)      yes                                yes (observation, ``policy_view()``)
the device's trace family and trace    yes                                no
the trace's or family's mean           yes (for the scaling)              no
rates of elapsed windows (measured)    yes                                yes: every device's whole-band link rate
                                                                          over each elapsed decision window
                                                                          (link probing, like cellular CQI reports)
bits still to send, who still sends    yes                                yes
compute seconds ``A_i`` of the cuts    yes                                yes
coming rates                           yes                                no (only the oracle's clearly named
                                                                          reference-only accessor
                                                                          :meth:`EdgeSplitDynamicV1Env.reference_only_future_bits`)
=====================================  =================================  ==========================================

This module imports gymnasium (it is part of ``edgesplit.envs``); the trace arithmetic is in
:mod:`edgesplit.traces`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from gymnasium import spaces

from edgesplit.costmodel import CostModel
from edgesplit.devices import GB
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario
from edgesplit.traces import (Trace, TraceError, TraceFamily, TraceSet, default_families, group_families,
                              load_families)
from edgesplit.envs.base import MAX_OBS, EdgeSplitBaseEnv, _positive
from edgesplit.envs.layout import v1_layout

DEFAULT_INTERVAL_S = 5.0
"""Default re-division period of the band within a round (simulated seconds)."""

DEFAULT_V1_ROUNDS = 20
"""Rounds per ``EdgeSplitDynamic-v1`` episode by default."""

LOG_WINDOWS = 256
"""Elapsed decision windows kept in the measured-rate log of :meth:`EdgeSplitDynamicV1Env.policy_view`."""

ROUND_HISTORY = 8
"""Past rounds kept in ``policy_view()["round_rates_bps"]``."""

PHASE_CUTS = "cuts"
PHASE_SHARES = "shares"

FamilySpec = str | Path | Sequence[str | Path] | Sequence[Trace] | Sequence[TraceFamily] | TraceFamily | None


def resolve_families(traces: FamilySpec) -> tuple[TraceFamily, ...]:
    """Trace families from ``traces``: ``None`` (the built-in synthetic family), a folder/glob or a
    list of them (a folder is a family; Pensieve's folder holds ``fcc`` and ``hsdpa``), a list of
    :class:`Trace` (grouped by file name, see :func:`edgesplit.traces.family_of_file`), or
    :class:`TraceFamily` objects."""
    if traces is None:
        return default_families()
    if isinstance(traces, TraceFamily):
        return (traces,)
    if isinstance(traces, (str, Path)):
        return tuple(load_families(traces))
    items = list(traces)
    if not items:
        raise ValueError("traces: an empty list; give folders, Trace objects or TraceFamily objects")
    if all(isinstance(t, TraceFamily) for t in items):
        names = [f.name for f in items]
        if len(set(names)) != len(names):
            raise ValueError(f"traces: family names must be unique, got {names}")
        return tuple(items)
    if all(isinstance(t, Trace) for t in items):
        return tuple(group_families(items, default="traces"))
    if all(isinstance(t, (str, Path)) for t in items):
        return tuple(load_families(items))
    raise ValueError("traces: expected None, a folder or glob, a list of folders, Trace objects or TraceFamily objects")


class EdgeSplitDynamicV1Env(EdgeSplitBaseEnv):
    """
    ## Description

    Parallel split learning over trace-driven links, with the information model of DESIGN.md
    ("Dynamic bandwidth, honestly"). Each device has a link *class* (its nominal rate ``r_i``, the
    scenario's ``rate_bps``) and, hidden from the policy, a trace family and a trace: at reset it
    draws a family (uniformly) and a trace of it with ``np_random``; its link is the trace scaled
    by ``r_i / mean of the family`` (not the trace's own mean, so its true long-run rate differs
    from its class the way real links do). At the end of a trace it continues on *another* trace
    of the same family (drawn from a per-device generator seeded by ``np_random`` at reset, so the
    continuation does not depend on the policy); a trace never loops.

    **Two time scales.** A round starts with a *cut epoch*: the action's cuts (and initial shares)
    apply. Device ``i`` then sends ``B_i = V_i(c_i) + migration bits`` and afterwards computes
    ``A_i(c_i)``; its time is ``tau_i + A_i``. Every ``interval_s`` simulated seconds after the
    round's start there is a *share epoch*: the action's shares re-divide the band among the
    devices still sending (its cuts are ignored). Shares are always renormalised over the devices
    still sending, also the moment one finishes within an interval (no band is left idle by a
    share given to a device that is done). The round ends at ``max_i tau_i + A_i``; the next step
    is the next round's cut epoch. ``interval_s=None``: one decision per round (cut epochs only).

    One env step = one decision epoch. The observation's ``phase`` entry (and ``info["phase"]``)
    says which kind the next step is.

    **Migration** as in ``EdgeSplitDynamic-v0``: changing a cut sends
    ``migration_factor * 8 * |W(c) - W(c')|`` more bits that round.

    **Measurements.** After each step the env measures every device's whole-band link rate over
    the elapsed window (link probing, like a cellular CQI report: also for devices that did not
    send). :meth:`policy_view` gives classical policies these and everything else a real
    scheduler knows; it never holds a coming rate or a statistic of a device's trace.

    ## Action Space

    ``Dict(cuts=MultiDiscrete([L] * N), shares=Box(0, 1, (N,)))`` as ``EdgeSplit-v0`` (cut index
    ``k`` = cut ``k + 1``; a cut deeper than memory allows is clipped to the deepest feasible one,
    ``info["memory_clipped"]``). In a share epoch only ``shares`` is read; shares of devices that
    are done are ignored, the others are divided by their sum. Shares that are all 0 (among the
    devices still sending, in a share epoch), NaN, infinite or negative raise ``ValueError``.

    ## Observation Space

    ``Box(low, high, (N * (9 + history) + 3,), float32)``, feature-major (block ``f`` holds
    feature ``f`` of devices ``0..N-1``):

    | Block          | Observation                                                         | Min | Max |
    |----------------|---------------------------------------------------------------------|-----|-----|
    | 0              | speed ``speed_i / max_j speed_j``                                   | 0   | 1   |
    | 1              | deepest memory-feasible cut ``/ L``                                 | 0   | 1   |
    | 2              | nominal rate ``r_i / max_j r_j``                                    | 0   | 1   |
    | 3 .. 2+H       | measured link rate of the ``h``-th last window ``/ r_i`` (h = 1..H) | 0   | 10  |
    | 3+H            | measured mean link rate since the episode start ``/ r_i``           | 0   | 10  |
    | 4+H            | cut in place ``c_i / L``                                            | 0   | 1   |
    | 5+H            | compute seconds ``A_i`` of the cut in place ``/ T_ref``             | 0   | 10  |
    | 6+H            | bits still to send ``/ B_i`` (0 in a cut epoch)                     | 0   | 1   |
    | 7+H            | still sending (1/0)                                                 | 0   | 1   |
    | 8+H            | last round's device time ``(tau_i + A_i) / T_ref``                  | 0   | 10  |
    | last 3 entries | phase (1 = cut epoch), elapsed time in the round ``/ T_ref``, rounds done ``/ rounds`` | 0 | 10 |

    Values above 10 are shown as 10 (``MAX_OBS``). Before any measurement the rate entries are
    1 (the nominal rate: all a scheduler knows then).

    ## Rewards

    ``-(simulated seconds elapsed in the step) / T_ref``, so an episode's return is
    ``-total_time / T_ref``. ``T_ref`` is the alternating plan's round time on the nominal rates
    (``info["reference_time_s"]``). A round that lasts longer than ``max_round_factor * T_ref``
    (50 by default: in practice only with shares of about 0 for a device that still sends, or a
    share-0 device in a one-decision round) is *stalled*: that step earns ``-max_penalty`` for
    every round left (this one included) and the episode terminates (``info["stalled"]``).

    ## Starting State

    Round 0, clock 0, a cut epoch; the alternating plan's cuts on the nominal rates are in
    place; scenario, families, traces and start offsets drawn with ``np_random``
    (``trace_start="beginning"`` starts every device at its trace's beginning).

    ## Episode End

    Termination after ``rounds`` rounds or a stalled round (an episode has ``rounds`` cut epochs and
    a variable number of share epochs). The registered ``TimeLimit`` (``max_episode_steps =
    100,000``) is only a safety net.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> from edgesplit import envs
    >>> env = gym.make("EdgeSplitDynamic-v1", n_devices=10,
    ...                traces=["../shared/data/traces/pensieve-train", "../shared/data/traces/conext23-att"])
    ```

    All arguments of ``EdgeSplit-v0`` (``rounds`` defaults to 20, ``migration_factor`` to 3.0), and:

    | Parameter     | Type                                | Default    | Description                                    |
    |---------------|-------------------------------------|------------|------------------------------------------------|
    | `traces`      | folder(s), Traces, TraceFamily(s)   | None       | families (a folder = a family); None = built-in synthetic family |
    | `interval_s`  | float or None                       | 5.0        | re-division period within a round; None = one decision per round |
    | `history`     | int                                 | 4          | measured windows in the observation            |
    | `trace_start` | ``"random"`` or ``"beginning"``     | "random"   | where each device starts in its first trace    |
    | `max_round_factor` | float                          | 50.0       | a round longer than this times ``T_ref`` stalls |

    ``interval_s = 5 s`` by default: an edge server or a base station re-divides its band far
    faster (ms), but the traces are 1 Hz (FCC: 5 s) samples, so shorter intervals would only
    re-divide within a constant bin; 5 s gives 60-100 decisions in a typical 300-500 s round,
    fine enough to follow Starlink's 15 s reconfigurations, and matches the calibration of issue 9.

    ``info`` always holds ``phase`` (of the next step), ``round``, ``sim_clock_s``,
    ``step_time_s`` (seconds elapsed in the step), ``elapsed_in_round_s``, ``reference_time_s``,
    ``sending`` and ``bits_left``; on the step that ends a round also ``round_done = True``,
    ``round_time_s``, ``per_device_time_s``, ``traffic_bits``, ``migration_bits``, ``cuts``,
    ``memory_clipped`` and ``stalled``. Nothing in ``info`` depends on coming rates.
    """

    def __init__(
        self,
        n_devices: int | None = None,
        model: str | LayerProfile = "vgg19",
        rounds: int = DEFAULT_V1_ROUNDS,
        traces: FamilySpec = None,
        interval_s: float | None = DEFAULT_INTERVAL_S,
        history: int = 4,
        trace_start: str = "random",
        scenario: Scenario | str | Path | dict | None = None,
        heterogeneity: float = 10.0,
        rate_range_bps: tuple[float, float] = (5e6, 50e6),
        memory_range_bytes: tuple[float, float] = (1 * GB, 8 * GB),
        fastest_speed: float = 0.5,
        samples: int = 500,
        batch_size: int = 32,
        server_speed: float = 10.0,
        sharing: str = "dedicated",
        migration_factor: float = 3.0,
        max_penalty: float = 10.0,
        max_round_factor: float = 50.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(n_devices=n_devices, model=model, rounds=rounds, scenario=scenario,
                         heterogeneity=heterogeneity, rate_range_bps=rate_range_bps,
                         memory_range_bytes=memory_range_bytes, fastest_speed=fastest_speed,
                         samples=samples, batch_size=batch_size, server_speed=server_speed,
                         sharing=sharing, migration_factor=migration_factor, max_penalty=max_penalty,
                         history=history, render_mode=render_mode)
        if interval_s is not None:
            interval_s = _positive(interval_s, "interval_s")
            if not math.isfinite(interval_s):
                raise ValueError(f"interval_s: must be a finite number of seconds or None, got {interval_s!r}")
            interval_s = float(interval_s)
        self.interval_s: float | None = interval_s
        self.max_round_factor = _positive(max_round_factor, "max_round_factor")
        if trace_start not in ("random", "beginning"):
            raise ValueError(f"trace_start: must be 'random' or 'beginning', got {trace_start!r}")
        self.trace_start = trace_start
        self.families: tuple[TraceFamily, ...] = resolve_families(traces)
        for fam in self.families:  # a device at the end of its trace goes on ANOTHER trace of its family
            if len(fam) < 2:
                raise ValueError(f"traces: family {fam.name!r} has {len(fam)} trace; at least 2 are needed "
                                 f"(a device continues on another trace of its family, never loops one)")
        all_traces: list[Trace] = []
        starts = []
        for fam in self.families:
            starts.append(len(all_traces))
            all_traces.extend(fam.traces)
        self.traceset = TraceSet(all_traces)
        self._fam_start = np.asarray(starts, dtype=np.intp)
        self._fam_size = np.asarray([len(f) for f in self.families], dtype=np.intp)
        self._fam_mean = np.asarray([f.mean_bps for f in self.families], dtype=np.float64)
        self.family_names: tuple[str, ...] = tuple(f.name for f in self.families)

        lay = v1_layout(self.n_devices, self.history)
        high = np.ones(lay.dim)
        for f in ("rates", "mean_rate", "compute", "time"):
            high[lay.block(f)] = MAX_OBS
        high[lay.scalar("elapsed")] = MAX_OBS
        self.observation_space = spaces.Box(np.zeros_like(high, dtype=np.float32), high.astype(np.float32),
                                            dtype=np.float32)
        self._obs = np.zeros(high.shape, dtype=np.float64)
        self._make_views()
        self._done = True
        self._phase = PHASE_CUTS

    _VIEWS = ("_o_speed", "_o_deep", "_o_nom", "_o_rates", "_o_rate0", "_o_mean", "_o_cut", "_o_A", "_o_left",
              "_o_send", "_o_time")

    def _make_views(self) -> None:
        lay, o = v1_layout(self.n_devices, self.history), self._obs
        self._o_speed, self._o_deep, self._o_nom = o[lay.block("speed")], o[lay.block("deepest")], o[lay.block("nominal")]
        self._o_rates, self._o_rate0 = o[lay.block("rates")], o[lay.first_block("rates")]
        self._o_mean, self._o_cut, self._o_A = o[lay.block("mean_rate")], o[lay.block("cut")], o[lay.block("compute")]
        self._o_left, self._o_send, self._o_time = o[lay.block("left")], o[lay.block("sending")], o[lay.block("time")]

    # ------------------------------------------------------------------ the links

    def _draw_next(self, i: int) -> int:
        """Append device ``i``'s next trace (another of its family) to its queue and return it."""
        q = self._queue[i]
        prev = q[-1] if q else int(self._k[i])
        f = int(self._fam[i])
        size = int(self._fam_size[f])  # >= 2 (checked in __init__): uniform over the family's other traces
        j = int(self._dev_rng[i].integers(0, size - 1))
        nxt = int(self._fam_start[f]) + j
        if nxt >= prev:
            nxt += 1
        q.append(nxt)
        return nxt

    def _upcoming(self, i: int, j: int) -> int:
        """Device ``i``'s ``j``-th trace after the current one (0 = the next)."""
        q = self._queue[i]
        while len(q) <= j:
            self._draw_next(i)
        return q[j]

    def _units_far(self, i: int, t: float) -> float:
        """Device ``i``'s cumulative units at global time ``t`` beyond its current trace (slow path)."""
        ts = self.traceset
        k = int(self._k[i])
        u = float(self._segU[i] + ts.total_bits[k])
        tt = float(self._seg0[i] + ts.period_s[k])
        j = 0
        while True:
            k2 = self._upcoming(i, j)
            P2 = float(ts.period_s[k2])
            if t - tt <= P2:
                return u + float(ts.bits_between(np.intp(k2), 0.0, t - tt))
            u += float(ts.total_bits[k2])
            tt += P2
            j += 1

    def _units_at(self, t: float) -> np.ndarray:
        """Every device's cumulative units (bits of its unscaled trace since its start) at global time
        ``t`` (>= the clock); the state is not changed."""
        h = self._h
        pos = t - self._seg0
        far = pos > h.P
        u = self._segU + self.traceset.cumulative_h(h, np.minimum(pos, h.P))
        if far.any():
            for i in np.flatnonzero(far).tolist():
                u[i] = self._units_far(i, t)
        return u

    def _advance_to(self, t: float) -> None:
        """Move the clock to ``t``: switch every device whose trace ended to its next trace."""
        h = self._h
        pos = t - self._seg0
        far = pos > h.P
        if far.any():
            ts = self.traceset
            for i in np.flatnonzero(far).tolist():
                while t - self._seg0[i] > ts.period_s[self._k[i]]:
                    k = int(self._k[i])
                    self._seg0[i] += ts.period_s[k]
                    self._segU[i] += ts.total_bits[k]
                    nxt = self._upcoming(i, 0)
                    self._queue[i].pop(0)
                    self._k[i] = nxt
                    self._segments[i].append((float(self._seg0[i]), nxt))
                    self._switches += 1
            self._h = ts.handle(self._k)
        self._clock = t

    def _time_to_units(self, idx: np.ndarray, units: np.ndarray, horizon_s: float = math.inf) -> np.ndarray:
        """Seconds from the clock until devices ``idx`` have delivered ``units`` more (>= 0); ``inf``
        for infinite ``units`` or beyond ``horizon_s`` seconds (the walk over coming traces stops there)."""
        ts = self.traceset
        h = self._h
        k = self._k[idx]
        pos = self._clock - self._seg0[idx]
        hi = ts.handle(k) if idx.size != self.n_devices else h
        c0 = ts.cumulative_h(hi, pos)
        rest = hi.Q - c0
        out = ts.transfer_time_h(hi, np.minimum(units, rest), pos)
        far = units > rest
        if far.any():  # beyond the current trace: whole coming traces in floats, the last one batched
            js, ks, lefts, ts_acc = [], [], [], []
            Q_all, P_all = ts.total_bits, ts.period_s
            for j in np.flatnonzero(far).tolist():
                i = int(idx[j])
                left = float(units[j] - rest[j])
                t = float(hi.P[j] - pos[j])
                n = 0
                while True:
                    if not (t <= horizon_s and math.isfinite(left)):
                        out[j] = math.inf
                        break
                    k2 = self._upcoming(i, n)
                    Q2 = float(Q_all[k2])
                    if left <= Q2:
                        js.append(j)
                        ks.append(k2)
                        lefts.append(left)
                        ts_acc.append(t)
                        break
                    left -= Q2
                    t += float(P_all[k2])
                    n += 1
            if js:
                hk = ts.handle(np.asarray(ks, dtype=np.intp))
                out[js] = np.asarray(ts_acc) + ts.transfer_time_h(hk, np.asarray(lefts), np.zeros(len(js)))
        return out

    # ------------------------------------------------------------------ episode

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: scenario, alternating reference on nominal rates, families, traces, offsets."""
        super(EdgeSplitBaseEnv, self).reset(seed=seed)
        cm, plan = self._episode_costs(options)
        N = self.n_devices
        rng = self.np_random
        ts = self.traceset
        fam = rng.integers(0, len(self.families), size=N)
        k = self._fam_start[fam] + (rng.random(N) * self._fam_size[fam]).astype(np.intp)
        k = np.minimum(k, self._fam_start[fam] + self._fam_size[fam] - 1)
        if self.trace_start == "random":
            offset = rng.random(N) * ts.period_s[k]
        else:
            offset = np.zeros(N)
        dev_seeds = rng.integers(0, 2**63 - 1, size=N)
        self._dev_rng = [np.random.default_rng(int(s)) for s in dev_seeds]
        self._queue: list[list[int]] = [[] for _ in range(N)]
        self._fam = fam
        self._k = k.astype(np.intp)
        self._h = ts.handle(self._k)
        self._seg0 = -offset
        self._segU = np.zeros(N)
        self._switches = 0
        self._segments = [[(float(-offset[i]), int(self._k[i]))] for i in range(N)]
        self._clock = 0.0
        self._nominal = cm.rate_bps.copy()
        self._scale = self._nominal / self._fam_mean[fam]  # bits/s per unit of the trace
        self._start_trace = self._k.copy()
        self._start_offset = offset
        self._U = self._units_at(0.0)
        self._U0 = self._U.copy()
        # measured-rate log (ring buffer, most recent at _log_pos - 1)
        self._log_rates = np.zeros((LOG_WINDOWS, N))
        self._log_dur = np.zeros(LOG_WINDOWS)
        self._log_n = 0
        self._log_pos = 0
        self._round_rates: list[np.ndarray] = []
        self._cur = (plan.cuts - 1).astype(np.intp)
        self._round = 0
        self._phase = PHASE_CUTS
        self._epoch = 0
        self._round_start = 0.0
        self._B = np.zeros(N)
        self._left = np.zeros(N)
        self._sending = np.zeros(N, dtype=bool)
        self._tau = np.zeros(N)
        self._shares = np.full(N, 1.0 / N)
        self._A_cur = self._A[self._rowoff + self._cur]
        self._last_per = plan.per_device_time_s.copy()
        self._done = False
        self._last = None
        # static observation blocks
        self._o_nom[:] = self._nominal / self._nominal.max()
        self._inv_nom = 1.0 / self._nominal
        self._o_rates[:] = 1.0
        self._o_mean[:] = 1.0
        self._o_cut[:] = self._cutnorm[self._cur]
        np.minimum(self._A_cur * self._inv_ref, MAX_OBS, out=self._o_A)
        self._o_left[:] = 0.0
        self._o_send[:] = 0.0
        np.minimum(self._last_per * self._inv_ref, MAX_OBS, out=self._o_time)
        self._set_scalars()
        info = {"phase": PHASE_CUTS, "round": 0, "sim_clock_s": 0.0, "step_time_s": 0.0,
                "elapsed_in_round_s": 0.0, "reference_time_s": self.reference_time_s,
                "cuts": plan.cuts.copy(), "sending": self._sending.copy(), "bits_left": self._left.copy()}
        return self._observation(), info

    def _set_scalars(self) -> None:
        o = self._obs
        o[-3] = 1.0 if self._phase == PHASE_CUTS else 0.0
        o[-2] = min((self._clock - self._round_start) * self._inv_ref, MAX_OBS)
        o[-1] = min(self._round / self.rounds, 1.0)

    def _parse_shares(self, action: Any) -> np.ndarray:
        """Shares of a share epoch (cuts ignored): checked, not yet normalised."""
        try:
            shares = action["shares"]
        except (TypeError, KeyError, IndexError):
            raise ValueError("action: expected a dict with key 'shares' (and 'cuts')") from None
        shares = np.asarray(shares)
        N = self.n_devices
        if shares.shape != (N,):
            raise ValueError(f"action['shares']: expected shape ({N},), got {shares.shape}")
        if shares.dtype.kind not in "fiu":
            raise ValueError(f"action['shares']: expected numbers, got dtype {shares.dtype}")
        shares = shares.astype(np.float64)
        if not np.isfinite(shares).all():
            i = int(np.flatnonzero(~np.isfinite(shares))[0])
            raise ValueError(f"action['shares'][{i}]: {shares[i]} is not finite (NaN or inf)")
        if (shares < 0).any():
            i = int(np.flatnonzero(shares < 0)[0])
            raise ValueError(f"action['shares'][{i}]: {shares[i]} is negative; shares must be >= 0")
        return shares

    def step(self, action: dict) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One decision epoch: a cut epoch (cuts + shares) or a share epoch (shares only)."""
        if self._done:
            raise RuntimeError("step: the episode has ended (or reset() was never called); call reset() first")
        N = self.n_devices
        t_step = self._clock
        info: dict[str, Any] = {}
        if self._phase == PHASE_CUTS:
            cuts, shares, _, hi = self._parse_action(action)
            eff, clipped = self._mask(cuts, hi)
            flat = self._rowoff + eff
            traffic = self._V[flat]
            if self.migration_factor > 0:
                mig = np.abs(self._mig_table[eff] - self._mig_table[self._cur])
            else:
                mig = np.zeros(N)
            self._B = traffic + mig
            self._left = self._B.copy()
            self._sending = self._B > 0
            self._tau = np.zeros(N)
            self._A_cur = self._A[flat]
            self._cur = eff
            self._round_start = self._clock
            self._U_round = self._U.copy()
            self._U_fin = self._U.copy()
            self._epoch = 0
            self._traffic, self._mig, self._clipped = traffic, mig, clipped
        else:
            shares = self._parse_shares(action)
            if not (shares[self._sending] > 0).any():
                raise ValueError("action['shares']: every device still sending has share 0; "
                                 "at least one of them needs bandwidth")
        self._shares = shares
        stalled = self._run_epoch(shares)
        dt = self._clock - t_step
        round_done = not self._sending.any() or stalled
        reward = -dt * self._inv_ref
        terminated = False
        if stalled:
            reward = -self.max_penalty * (self.rounds - self._round)
        if round_done:
            per = self._tau + self._A_cur
            if stalled:
                per = np.where(self._sending, np.inf, per)
            T = float(per.max())
            self._round += 1
            self._last_per = per
            info.update({"round_done": True, "round_time_s": T, "per_device_time_s": per,
                         "traffic_bits": self._traffic, "migration_bits": self._mig, "cuts": self._cur + 1,
                         "memory_clipped": self._clipped, "stalled": stalled})
            # per-device measured rate over its own transfer (the link's mean rate while it sent)
            if not stalled:
                self._round_rates.insert(0, self._round_rate)
                del self._round_rates[ROUND_HISTORY:]
            self._phase = PHASE_CUTS
            terminated = stalled or self._round >= self.rounds
            self._done = terminated
        else:
            self._phase = PHASE_SHARES
            self._epoch += 1
        # measured link rates over the elapsed window
        U1 = self._U
        if dt > 0:
            rate = self._scale * (U1 - self._U_step) / dt
            self._log_rates[self._log_pos] = rate
            self._log_dur[self._log_pos] = dt
            self._log_pos = (self._log_pos + 1) % LOG_WINDOWS
            self._log_n = min(self._log_n + 1, LOG_WINDOWS)
            H = self.history
            if H > 1:
                o = self._o_rates
                o[N:] = o[:-N]
            np.minimum(rate * self._inv_nom, MAX_OBS, out=self._o_rate0)
            if self._clock > 0:
                np.minimum(self._scale * (U1 - self._U0) / self._clock * self._inv_nom, MAX_OBS, out=self._o_mean)
        self._o_cut[:] = self._cutnorm[self._cur]
        np.minimum(self._A_cur * self._inv_ref, MAX_OBS, out=self._o_A)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(self._B > 0, self._left / np.where(self._B > 0, self._B, 1.0), 0.0)
        self._o_left[:] = np.clip(frac, 0.0, 1.0) if self._phase == PHASE_SHARES else 0.0
        self._o_send[:] = self._sending if self._phase == PHASE_SHARES else 0.0
        if round_done:  # an infinite (stalled) device time shows as MAX_OBS
            lp = self._last_per * self._inv_ref
            self._o_time[:] = np.where(lp < MAX_OBS, lp, MAX_OBS)
        self._set_scalars()
        info.update({
            "phase": self._phase, "round": self._round, "sim_clock_s": self._clock, "step_time_s": dt,
            "elapsed_in_round_s": 0.0 if round_done else self._clock - self._round_start,
            "reference_time_s": self.reference_time_s, "sending": self._sending.copy(),
            "bits_left": self._left.copy(), "shares": self._shares_eff.copy(),
        })
        self._last = info
        return self._observation(), float(reward), terminated, False, info

    def _run_epoch(self, shares: np.ndarray) -> bool:
        """Simulate from the clock to the end of this epoch (next interval boundary, or the round's
        end once no device sends). Returns whether the round stalled."""
        self._U_step = self._U.copy()
        if self.interval_s is None:
            t_end = math.inf
        else:
            t_end = self._round_start + (self._epoch + 1) * self.interval_s
        stall_at = self._round_start + self.max_round_factor * self.reference_time_s
        t_end = min(t_end, stall_at)
        sending = self._sending
        left = self._left
        eff_sh = np.where(sending, shares, 0.0)
        tot0 = eff_sh.sum()
        self._shares_eff = eff_sh / tot0 if tot0 > 0 else eff_sh
        scale = self._scale
        finite_end = self.interval_s is not None  # round mode: no boundary, only the stall horizon
        while sending.any():
            total = eff_sh.sum()  # only devices still sending keep a share in eff_sh
            if not total > 0:  # the devices left have share 0: the band idles until the epoch ends
                if not finite_end:
                    return self._stall()
                self._U = self._units_at(t_end)
                self._advance_to(t_end)
                if t_end >= stall_at:
                    return self._stall()
                break
            per_unit = eff_sh * (scale / total)  # bits per unit of trace, for each device
            if finite_end:
                U_end = self._units_at(t_end)
                can = per_unit * (U_end - self._U)  # bits each device gets by the epoch's end
                cand = sending & (left <= can * (1.0 + 1e-12))
                if not cand.any():  # nobody finishes in this epoch: the common case, one query
                    np.maximum(left - can, 0.0, out=left)
                    self._advance_to(t_end)
                    self._U = U_end
                    if t_end >= stall_at:
                        return self._stall()
                    break
                idx = np.flatnonzero(cand)
            else:
                idx = np.flatnonzero(sending & (per_unit > 0))
                if idx.size == 0:
                    return self._stall()
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                units = np.where(left[idx] > 0, left[idx] / per_unit[idx], 0.0)
            ttf = self._time_to_units(idx, units, stall_at - self._clock)
            tmin = float(ttf.min())
            if not math.isfinite(tmin):
                return self._stall()
            t_fin = min(self._clock + tmin, t_end)
            U1 = self._units_at(t_fin)
            np.maximum(left - per_unit * (U1 - self._U), 0.0, out=left)
            fin = idx[ttf <= tmin + 1e-9 * max(1.0, tmin)]
            left[fin] = 0.0
            self._U_fin[fin] = U1[fin]
            sending[fin] = False
            eff_sh[fin] = 0.0
            self._tau[fin] = t_fin - self._round_start
            self._advance_to(t_fin)
            self._U = U1
        if not sending.any():
            # the round's measured rates: each link's mean over its device's own transfer
            tau = self._tau
            U_end = self._U_fin
            with np.errstate(divide="ignore", invalid="ignore"):
                rr = np.where(tau > 0, scale * (U_end - self._U_round) / np.where(tau > 0, tau, 1.0), np.nan)
            # a device that sent nothing has no transfer to measure: its last measured rate instead
            self._round_rate = np.where(np.isfinite(rr), rr, self._last_measured_rate())
            end = self._round_start + float((tau + self._A_cur).max())
            if end > self._clock:
                U1 = self._units_at(end)
                self._advance_to(end)
                self._U = U1
        return False

    def _stall(self) -> bool:
        self._round_rate = None
        return True

    def _last_measured_rate(self) -> np.ndarray:
        """Each link's whole-band rate over the last elapsed window (the nominal rate before any):
        never the trace's bin at the clock, which at a bin edge lies wholly in the future."""
        if self._log_n == 0:
            return self._nominal.copy()
        return self._log_rates[(self._log_pos - 1) % LOG_WINDOWS].copy()

    # ------------------------------------------------------------------ what a policy may know

    def policy_view(self) -> dict[str, Any]:
        """Everything a real scheduler knows now (no coming rate, no statistic of a trace):

        ``phase`` (``"cuts"`` or ``"shares"``), ``round``, ``rounds``, ``interval_s``,
        ``elapsed_in_round_s``, ``clock_s``; ``nominal_rate_bps`` (N,);
        ``past_rates_bps`` (m, N): each link's measured whole-band rate over the last ``m`` elapsed
        windows, most recent first, with ``past_durations_s`` (m,); ``round_rates_bps`` (r, N):
        each link's mean rate over its device's transfer in each of the last ``r`` rounds, most
        recent first; ``mean_rate_bps`` (N,): the measured mean since the episode's start (the
        nominal rate at the start); ``cuts`` (1..L, in place / of this round), ``compute_s`` (A_i
        of those cuts), ``bits_total`` (B_i of this round, 0 in a cut epoch), ``bits_left``,
        ``sending`` (bool), ``tau_s`` (transfer seconds of the devices done, this round),
        ``shares`` (last effective shares), ``cost_model`` (at the nominal rates), ``reference_time_s``.
        """
        n = self._log_n
        order = (self._log_pos - 1 - np.arange(n)) % LOG_WINDOWS
        in_round = self._phase == PHASE_SHARES
        return {
            "phase": self._phase,
            "round": self._round,
            "rounds": self.rounds,
            "interval_s": self.interval_s,
            "elapsed_in_round_s": self._clock - self._round_start if in_round else 0.0,
            "clock_s": self._clock,
            "nominal_rate_bps": self._nominal.copy(),
            "past_rates_bps": self._log_rates[order].copy(),
            "past_durations_s": self._log_dur[order].copy(),
            "round_rates_bps": np.array(self._round_rates).reshape(-1, self.n_devices),
            "mean_rate_bps": (self._scale * (self._U - self._U0) / self._clock) if self._clock > 0
            else self._nominal.copy(),
            "cuts": self._cur + 1,
            "compute_s": self._A_cur.copy(),
            "bits_total": self._B.copy() if in_round else np.zeros(self.n_devices),
            "bits_left": self._left.copy() if in_round else np.zeros(self.n_devices),
            "sending": self._sending.copy() if in_round else np.zeros(self.n_devices, dtype=bool),
            "tau_s": self._tau.copy(),
            "shares": getattr(self, "_shares_eff", self._shares).copy(),
            "cost_model": self.cost_model,
            "reference_time_s": self.reference_time_s,
        }

    def known_rates_bps(self) -> np.ndarray:
        """The rates a round-level planner knows: last round's measured rates (nominal before any)."""
        return self._round_rates[0].copy() if self._round_rates else self._nominal.copy()

    def planning_cost_model(self) -> CostModel:
        """The cost model at :meth:`known_rates_bps` (what ``alternating`` plans on)."""
        return self.cost_model.with_rates(np.maximum(self.known_rates_bps(), 1e-9 * self._nominal))

    # ------------------------------------------------------------------ reference only

    def reference_only_future_bits(self, edges_s: np.ndarray) -> np.ndarray:
        """REFERENCE ONLY (the ``oracle``): bits each link delivers with the whole band in the windows
        ``[edges_s[j], edges_s[j+1])`` of the global clock (``edges_s`` increasing, from the clock on).
        Shape ``(len(edges_s) - 1, N)``. It reads the coming rates: no policy may call it; the
        honesty tests check that nothing a policy sees depends on them."""
        e = np.asarray(edges_s, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or (np.diff(e) < 0).any():
            raise ValueError("edges_s: expected an increasing 1-D array of >= 2 times")
        return np.diff(self.reference_only_cumulative_bits(e), axis=0)

    def reference_only_cumulative_bits(self, times_s: np.ndarray) -> np.ndarray:
        """REFERENCE ONLY (the ``oracle``): bits each link delivers with the whole band from the clock
        to each of ``times_s`` (global clock, each >= the clock): ``times_s`` of shape ``(E,)`` (the
        same times for every device) or ``(E, N)`` (per device); returns ``(E, N)``. Reads the
        coming rates: no policy may call it."""
        t = np.asarray(times_s, dtype=np.float64)
        N = self.n_devices
        if t.ndim == 1:
            t = np.broadcast_to(t[:, None], (t.size, N))
        if t.ndim != 2 or t.shape[1] != N:
            raise ValueError(f"times_s: expected shape (E,) or (E, {N}), got {np.shape(times_s)}")
        if not np.isfinite(t).all() or (t < self._clock - 1e-9).any():
            raise ValueError("times_s: every time must be finite and not before the clock")
        t = np.maximum(t, self._clock)
        return (self._units_grid(t) - self._U) * self._scale

    def _units_grid(self, times: np.ndarray) -> np.ndarray:
        """Cumulative units of device ``i`` at ``times[:, i]`` (>= the clock): shape (E, N)."""
        ts = self.traceset
        N = self.n_devices
        out = np.empty(times.shape)
        for i in range(N):
            col = times[:, i]
            tmax = float(col.max())
            k = int(self._k[i])
            seg_t = [float(self._seg0[i])]
            seg_u = [float(self._segU[i])]
            seg_k = [k]
            t_end = seg_t[0] + float(ts.period_s[k])
            j = 0
            while t_end < tmax:
                k2 = self._upcoming(i, j)
                seg_t.append(t_end)
                seg_u.append(seg_u[-1] + float(ts.total_bits[seg_k[-1]]))
                seg_k.append(k2)
                t_end += float(ts.period_s[k2])
                j += 1
            st = np.asarray(seg_t)
            which = np.maximum(np.searchsorted(st, col, side="right") - 1, 0)
            kk = np.asarray(seg_k, dtype=np.intp)[which]
            loc = np.minimum(col - st[which], ts.period_s[kk])
            out[:, i] = np.asarray(seg_u)[which] + ts.bits_between(kk, 0.0, loc)
        return out

    def reference_only_trace_info(self) -> dict[str, Any]:
        """REFERENCE ONLY (tests, debugging): each device's family, starting trace and offset."""
        return {"family": [self.family_names[f] for f in self._fam], "start_trace": self._start_trace.copy(),
                "start_offset_s": self._start_offset.copy(), "switches": self._switches,
                "segments": [list(seg) for seg in self._segments],
                "trace_names": [self.traceset.traces[k].name for k in self._start_trace]}

    def render(self) -> str | None:
        """``ansi``: a text summary of the last step."""
        if self.render_mode is None:
            return super().render()
        if self._last is None:
            return f"{type(self).__name__}: N={self.n_devices}, L={self.n_layers}, not started\n"
        info = self._last
        lines = [f"round {info['round']}/{self.rounds}  next {info['phase']}  clock {info['sim_clock_s']:.6g} s  "
                 f"step {info['step_time_s']:.4g} s"]
        lines.append("dev  cut  share   bits_left  sending")
        for i in range(self.n_devices):
            lines.append(f"{i:3d}  {int(self._cur[i]) + 1:3d}  {info['shares'][i]:.3f}  {info['bits_left'][i]:10.4g}  "
                         f"{bool(info['sending'][i])}")
        return "\n".join(lines) + "\n"
