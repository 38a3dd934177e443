"""``EdgeSplitDynamic-v0``: parallel split learning over trace-driven links, with migration costs.

Kept for old results only: use ``EdgeSplitDynamic-v1`` (:mod:`edgesplit.envs.dynamic_v1`). See the
information caveat in :class:`EdgeSplitDynamicEnv`'s docstring."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesplit.devices import GeneratorConfig
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario
from edgesplit.traces import Trace, TraceHandle, TraceSet, default_traceset, load_traceset
from edgesplit.envs.base import DEFAULT_ROUNDS, MAX_OBS, EdgeSplitBaseEnv


def resolve_traces(traces: str | Path | Sequence[Trace] | TraceSet | None) -> TraceSet:
    """A :class:`TraceSet` from a folder or glob of trace files, a list of traces, a TraceSet, or
    ``None`` (the built-in synthetic set, so the env runs offline)."""
    if traces is None:
        return default_traceset()
    if isinstance(traces, TraceSet):
        return traces
    if isinstance(traces, (str, Path)):
        return load_traceset(traces)
    traces = list(traces)
    if not all(isinstance(t, Trace) for t in traces):
        raise ValueError("traces: expected a folder or glob, a TraceSet, or a list of Trace objects")
    return TraceSet(traces)


class EdgeSplitDynamicEnv(EdgeSplitBaseEnv):
    """
    ## Description

    **Information caveat (why v1 exists).** Each trace is scaled by its *own* mean, so a device's
    nominal rate (what ``static`` and learned policies see) is exactly the long-run mean of its
    coming link rates: the future leaks into the "nominal" rate. And traces loop, so per-round
    rates largely average a trace over its own period. Kept registered to reproduce old results;
    use ``EdgeSplitDynamic-v1`` (:class:`edgesplit.envs.dynamic_v1.EdgeSplitDynamicV1Env`) instead.

    ``EdgeSplit-v0`` (see :class:`edgesplit.envs.EdgeSplitEnv`) with links that change over time. Every
    device's link follows a throughput trace: at reset each device gets a random trace of the set
    and a random start offset into it, scaled by ``rate_class_i / trace_mean`` so that its mean is
    the device's link class rate (the scenario's ``rate_bps``). Traces repeat at their end.

    A round: each device first receives/sends its **migration** bits (if its cut changed), then
    its round traffic ``V_i(c_i)``, both at its share ``beta_i`` of its link, integrating the
    trace from the simulated clock (an outage stalls the transfer until the rate returns), then
    adds its compute ``A_i(c_i)`` (the cost model's; transfers and compute are serialised, which
    with constant rates gives exactly the cost model's ``T_i``). The round takes the slowest
    device's time and the clock advances by it.

    The agent never sees the coming rates: it observes each device's **measured** rate of the
    previous ``history`` rounds (bits sent / (share * transfer seconds), the whole-band rate the
    device saw, averaged over its transfer).

    **Migration.** Moving device ``i``'s cut from ``c'`` to ``c`` moves the layers between them to
    the other side, with their optimiser state: ``migration_factor * 8 * |W(c) - W(c')|`` bits
    over that device's link before its round traffic (``W`` = cumulative parameter bytes). The
    default factor 3 counts the three per-parameter tensors that DESIGN.md's memory constraint
    ``3 W(c)`` counts (weights, gradients, momentum buffer), i.e. exactly the training state those
    layers occupy. The first round is measured against the starting cuts.

    ## Action Space

    As ``EdgeSplit-v0``: ``Dict(cuts=MultiDiscrete([L] * N), shares=Box(0, 1, (N,)))``, index ``k``
    meaning cut ``k + 1``; shares divided by their sum; a cut deeper than memory allows is clipped
    to the deepest feasible one (``info["memory_clipped"]``); bad entries raise ``ValueError``.

    ## Observation Space

    ``Box(0, high, (N * (4 + history) + 1,), float32)``, feature-major:

    | Block                        | Observation                                        | Min | Max |
    |------------------------------|----------------------------------------------------|-----|-----|
    | 0 .. N-1                     | speed ``s_i / max_j s_j``, ``s_i = F(L)/F_i(L)``   | 0   | 1   |
    | N .. 2N-1                    | deepest memory-feasible cut ``/ L``                | 0   | 1   |
    | (2+h)N .. (3+h)N-1, h<history | measured rate ``h+1`` rounds ago ``/ max_j rate_class_j`` | 0 | 10 |
    | (2+H)N .. (3+H)N-1           | last round's device time ``T_i / T_ref``           | 0   | 10  |
    | (3+H)N .. (4+H)N-1           | cut in place ``c_i / L``                           | 0   | 1   |
    | (4+H)N                       | round progress                                     | 0   | 1   |

    At reset the rate history holds the trace means over the ``history`` windows of length
    ``T_ref`` just before the start (as if rounds had run there).

    ## Rewards

    ``-T / T_ref`` per round, ``T`` including migration, where ``T_ref`` is the alternating
    algorithm's round time on the devices' nominal (class-mean) rates, fixed for the episode
    (``info["reference_time_s"]``). Capped at ``max_penalty`` per round; a round that never ends
    (share 0 with bits to send) earns ``-max_penalty`` for every round left and terminates.

    ``info["alternating_round_time_s"]`` (when ``alternating_info=True``, the default) is the round
    time the alternating rule would have had this round with hindsight: its plan on the true mean
    rates of each link over ``[clock, clock + T_ref)``, costed by the cost model at those rates,
    without migration (``info["true_rate_bps"]`` holds the rates). It costs one alternating solve
    per step; pass ``alternating_info=False`` to train faster without it.

    ## Starting State

    As ``EdgeSplit-v0`` on the nominal rates: the alternating plan's cuts are in place; round 0,
    clock 0; traces and offsets drawn with ``np_random``.

    ## Episode End

    As ``EdgeSplit-v0``: termination after ``rounds`` rounds or a stalled round; truncation by the
    registered ``TimeLimit`` (``max_episode_steps = 100``).

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> env = gym.make("EdgeSplitDynamic-v0", n_devices=10, traces="../shared/data/traces/pensieve-train")
    ```

    All arguments of ``EdgeSplit-v0`` (``migration_factor`` defaults to 3.0 here), and:

    | Parameter          | Type                         | Default | Description                                        |
    |--------------------|------------------------------|---------|----------------------------------------------------|
    | `traces`           | folder, glob, list, TraceSet | None    | trace files (Pensieve or Mahimahi); None = built-in synthetic set |
    | `history`          | int                          | 3       | measured-rate rounds in the observation            |
    | `alternating_info` | bool                         | True    | compute ``info["alternating_round_time_s"]`` each round |

    ``info`` adds ``measured_rate_bps`` (per device, this round) and ``trace_index`` at reset.
    """

    def __init__(
        self,
        n_devices: int | None = None,
        model: str | LayerProfile = "vgg19",
        rounds: int = DEFAULT_ROUNDS,
        traces: str | Path | Sequence[Trace] | TraceSet | None = None,
        history: int = 3,
        alternating_info: bool = True,
        scenario: Scenario | str | Path | dict | None = None,
        generator: GeneratorConfig | dict | None = None,
        migration_factor: float = 3.0,
        max_penalty: float = 10.0,
        render_mode: str | None = None,
        **generator_options: Any,
    ) -> None:
        super().__init__(n_devices=n_devices, model=model, rounds=rounds, scenario=scenario,
                         generator=generator, migration_factor=migration_factor, max_penalty=max_penalty,
                         history=history, render_mode=render_mode, **generator_options)
        self.traceset = resolve_traces(traces)
        self.alternating_info = bool(alternating_info)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: scenario, alternating reference on nominal rates, traces and offsets."""
        super().reset(seed=seed)
        cm, plan = self._episode_costs(options)
        N, H = self.n_devices, self.history
        T_ref = self.reference_time_s
        ts = self.traceset
        rng = self.np_random
        k = rng.integers(0, len(ts), size=N)
        offset = rng.uniform(0.0, 1.0, size=N) * ts.period_s[k]
        self._trace_index = k
        self._h = ts.handle(k)
        self._offset = offset
        self._scale = cm.rate_bps / ts.mean_bps[k]  # bits/s of the device per unit of its trace
        self._inv_rnorm = 1.0 / cm.rate_bps.max()
        self._inv_rnorm_arr = np.full(N, self._inv_rnorm)
        # rate history: trace means over the H windows of length T_ref before the start
        edges = offset[None, :] - T_ref * np.arange(H + 1)[:, None]  # (H+1, N)
        cum = ts.cumulative_h(TraceHandle(*(np.broadcast_to(a, (H + 1, N)) for a in self._h)), edges)
        hist = self._scale * (cum[:-1] - cum[1:]) / T_ref  # row h: window h+1 rounds ago
        self._known = hist[0].copy()
        self._o_rates[:] = np.minimum(hist.ravel() * self._inv_rnorm, MAX_OBS)
        self._cur = (plan.cuts - 1).astype(np.intp)
        np.minimum(plan.per_device_time_s * self._inv_ref, MAX_OBS, out=self._o_time)
        self._o_cut[:] = self._cutnorm[self._cur]
        self._obs[-1] = 0.0
        self._round = 0
        self._clock = 0.0
        self._last = None
        info = {"reference_time_s": T_ref, "alternating_round_time_s": T_ref, "cuts": plan.cuts.copy(),
                "sim_clock_s": 0.0, "trace_index": k.copy(), "trace_offset_s": offset.copy()}
        return self._observation(), info

    def true_mean_rates_bps(self, start_s: float, duration_s: float | np.ndarray) -> np.ndarray:
        """Each device's true mean link rate over ``[start_s, start_s + duration_s)`` of the episode
        clock (``duration_s`` a scalar or one per device). Clairvoyant: for references only."""
        h = self._h
        p0 = self._offset + start_s
        ts = self.traceset
        return self._scale * (ts.cumulative_h(h, p0 + duration_s) - ts.cumulative_h(h, p0)) / duration_s

    def transfer_seconds(self, bits: np.ndarray, shares: np.ndarray, start_s: float | None = None) -> np.ndarray:
        """Seconds each device would need to send ``bits`` at the share ``shares`` of its link from
        ``start_s`` on the episode clock (default: now), integrating its trace exactly as ``step``
        does (outages stall; bits with a zero share take ``inf``). A query: the episode is not
        changed. Clairvoyant (it reads the coming rates), so for references and training
        baselines (``agents``' oracle and counterfactual reward), never for a real scheduler."""
        start = self._offset + (self._clock if start_s is None else float(start_s))
        bits = np.asarray(bits, dtype=np.float64)
        shares = np.asarray(shares, dtype=np.float64)
        if (shares > 0).all():
            return self.traceset.transfer_time_h(self._h, bits / (shares * self._scale), start)
        return self.traceset.transfer_time(self._trace_index, bits, start, shares * self._scale)

    def step(self, action: dict) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run one round over the traces with the given cuts and shares."""
        self._check_running()
        cuts, shares, zero, hi = self._parse_action(action)
        eff, clipped = self._mask(cuts, hi)
        flat = self._rowoff + eff
        traffic = self._V[flat]
        if self.migration_factor > 0:
            mig = np.abs(self._mig_table[eff] - self._mig_table[self._cur])
            bits = traffic + mig
        else:
            mig = np.zeros(self.n_devices)
            bits = traffic
        start = self._offset + self._clock
        if zero:
            tau = self.traceset.transfer_time(self._trace_index, bits, start, shares * self._scale)
        else:
            tau = self.traceset.transfer_time_h(self._h, bits / (shares * self._scale), start)
        per = self._A[flat] + tau
        clock0 = self._clock
        reward, terminated, info = self._finish_step(eff, shares, clipped, per, traffic, mig)
        if zero or not min(tau.tolist()) > 0:
            # a device with nothing to send reports the rate at the start; one that never finished, 0
            with np.errstate(divide="ignore", invalid="ignore"):
                measured = bits / (shares * tau)
            inst = self._scale * self.traceset.rate_at(self._trace_index, start)
            measured = np.where(np.isinf(tau), 0.0, np.where(bits > 0, measured, inst))
        else:
            measured = bits / (shares * tau)  # the whole-band rate each device saw, on average
        self._known = measured
        if self.history > 1:
            o = self._o_rates
            o[self.n_devices:] = o[:-self.n_devices]
        np.multiply(measured, self._inv_rnorm_arr, out=self._o_rate0)
        np.minimum(self._o_rate0, self._maxobs_arr, out=self._o_rate0)
        info["measured_rate_bps"] = measured
        if self.alternating_info:
            true = self.true_mean_rates_bps(clock0, self.reference_time_s)
            info["true_rate_bps"] = true
            info["alternating_round_time_s"] = float(self._alternating.plan(self.cost_model.with_rates(true)).round_time_s)
        self._last = info
        return self._observation(), reward, terminated, False, info
