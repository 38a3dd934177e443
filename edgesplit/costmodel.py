"""The round-time cost model of DESIGN.md, vectorised over devices x cuts.

Notation (DESIGN.md, normative): layers ``l = 1..L``; a cut ``c`` in ``1..L`` means the device runs
layers ``1..c``. With ``F(c) = sum_{l<=c} (fwd_s + bwd_s)`` and ``W(c) = sum_{l<=c} param_bytes``:

- compute   ``A_i(c) = K_i b (F_i(c) + (F_S(L) - F_S(c)) / share_S)``, ``F_i`` the device's own
  prefix time (its profile's, or ``F(c) / speed_i``), ``F_S`` the server's likewise
- traffic   ``V_i(c) = 8 (K_i b 2 act[c] + 2 W(c))`` for ``c < L``, ``V_i(L) = 16 W(L)``
- time      ``T_i = A_i(c_i) + V_i(c_i) / (beta_i rate_i)``, round time ``T = max_i T_i``
- memory    ``3 W(c) + b sum_{l<=c} act[l] <= memory_i``

Arrays here are indexed ``[i, c - 1]``. Traffic over a zero rate or a zero share is an infinite
time, never a NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgesplit.errors import InfeasibleError
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario, effective_speed


def prefix_weights(param_bytes: np.ndarray) -> np.ndarray:
    """``W(c) = sum_{l<=c} param_bytes[l]`` for ``c = 1..L`` (bytes)."""
    return np.cumsum(param_bytes)


def memory_need_bytes(param_bytes: np.ndarray, activation_bytes: np.ndarray, batch_size: int) -> np.ndarray:
    """Device memory needed for each cut ``c = 1..L``: ``3 W(c) + b sum_{l<=c} act[l]``."""
    return 3.0 * prefix_weights(param_bytes) + batch_size * np.cumsum(activation_bytes)


def profile_memory_need_bytes(p: LayerProfile, batch_size: int) -> np.ndarray:
    """:func:`memory_need_bytes` from a profile's cached prefix sums (same formula)."""
    return 3.0 * p.prefix_param_bytes + batch_size * p.prefix_activation_bytes


def server_share(s: Scenario) -> float:
    """``share_S``: the fraction of the server each device's server-side work gets (1 for a
    ``dedicated`` server, ``1/N`` for a ``shared`` one)."""
    return 1.0 / s.n_devices if s.server.sharing == "shared" else 1.0


def _device_columns(s: Scenario) -> np.ndarray:
    """``(N, 4)`` array of every device's speed, samples, memory_bytes, rate_bps (one pass)."""
    return np.array([(d.speed, d.samples, d.memory_bytes, d.rate_bps) for d in s.devices], dtype=np.float64)


def device_prefix_seconds(s: Scenario, speed: np.ndarray | None = None) -> np.ndarray:
    """``F_i(c)``, shape ``(N, L)``: per-sample prefix compute time of each device, from its own
    profile or ``F(c) / speed_i`` (DESIGN.md, per-device profiles)."""
    F = s.profile.prefix_train_s
    if speed is None:
        speed = s.array("speed")
    out = F[None, :] / speed[:, None]
    for i, d in enumerate(s.devices):
        if d.profile is not None:
            out[i] = d.profile.prefix_train_s
    return out


def server_prefix_seconds(s: Scenario) -> np.ndarray:
    """``F_S(c)``, shape ``(L,)``: per-sample prefix time on the whole server (its own profile or
    ``F(c) / speed_S``), before the ``share_S`` split."""
    if s.server.profile is not None:
        return s.server.profile.prefix_train_s
    return s.profile.prefix_train_s / s.server.speed


def server_seconds_per_sample(s: Scenario) -> np.ndarray:
    """``(F_S(L) - F_S(c)) / share_S`` for ``c = 1..L``: server seconds per sample of one device
    whose cut is ``c`` (0 at ``c = L``)."""
    FS = server_prefix_seconds(s)
    return (FS[-1] - FS) / server_share(s)


def iterations_per_round(s: Scenario) -> np.ndarray:
    """``K_i = ceil(samples_i / b)`` per device."""
    return np.ceil(s.array("samples") / s.batch_size)


def compute_seconds(s: Scenario, samples_per_round: np.ndarray | None = None,
                    speed: np.ndarray | None = None) -> np.ndarray:
    """``A_i(c) = K_i b (F_i(c) + (F_S(L) - F_S(c)) / share_S)``, shape ``(N, L)``
    (``samples_per_round`` = ``K_i b`` and ``speed`` may be passed when already at hand)."""
    if samples_per_round is None:
        samples_per_round = iterations_per_round(s) * s.batch_size
    out = device_prefix_seconds(s, speed)
    out += server_seconds_per_sample(s)[None, :]
    out *= samples_per_round[:, None]
    return out


def cut_exchange_bits(activation_bytes: np.ndarray | float) -> np.ndarray:
    """``8 * 2 * a``: the bits of ``a`` bytes of cut activations sent up plus their gradients sent down."""
    return 16.0 * np.asarray(activation_bytes, dtype=np.float64)


def aggregation_bits(client_weight_bytes: np.ndarray | float) -> np.ndarray:
    """``8 * 2 * W``: the bits of the client-side weights sent up and back for aggregation."""
    return 16.0 * np.asarray(client_weight_bytes, dtype=np.float64)


def activation_bits_per_iteration(p: LayerProfile, batch_size: int) -> np.ndarray:
    """Bits of one iteration at cut ``c = 1..L``: ``8 b 2 act[c]`` (activations up, gradients down;
    0 at ``c = L``, where nothing is split)."""
    out = cut_exchange_bits(batch_size * np.asarray(p.activation_bytes, dtype=np.float64))
    out[-1] = 0.0
    return out


def weight_bits_per_round(p: LayerProfile) -> np.ndarray:
    """Bits of the client-side weights sent up and back for aggregation: ``8 * 2 W(c)``."""
    return aggregation_bits(p.prefix_param_bytes)


def traffic_bits_per_round(s: Scenario, samples_per_round: np.ndarray | None = None) -> np.ndarray:
    """``V_i(c) = 8 (K_i b 2 act[c] + 2 W(c))`` for ``c < L`` and ``16 W(L)`` at ``c = L``, shape ``(N, L)``:
    ``K_i`` times :func:`activation_bits_per_iteration` plus :func:`weight_bits_per_round`."""
    p = s.profile
    b = s.batch_size
    if samples_per_round is None:
        samples_per_round = iterations_per_round(s) * b
    traffic = (samples_per_round / b)[:, None] * activation_bits_per_iteration(p, b)[None, :]
    traffic += weight_bits_per_round(p)[None, :]
    return traffic


def round_time_of(device_times_s: np.ndarray, sequential: bool = False) -> float:
    """The round time from per-device times: ``max_i T_i`` (parallel) or ``sum_i T_i`` (``sl``,
    devices one after another)."""
    t = np.asarray(device_times_s, dtype=np.float64)
    return float(t.sum() if sequential else t.max())


@dataclass(eq=False)
class CostModel:
    """Precomputed cost arrays of one scenario.

    Attributes (N devices, L cuts):
        compute_s  ``A[i, c-1]``, seconds of compute per round
        traffic_bits ``V[i, c-1]``, bits per round
        feasible   ``[i, c-1]``, whether cut c fits device i's memory
        rate_bps   ``[i]``, link rates (whole band)
    """

    scenario: Scenario
    compute_s: np.ndarray
    traffic_bits: np.ndarray
    feasible: np.ndarray
    rate_bps: np.ndarray
    memory_need: np.ndarray

    @classmethod
    def from_scenario(cls, s: Scenario, check_feasible: bool = True) -> "CostModel":
        """Compute the arrays; raise :class:`InfeasibleError` if a device fits no cut at all."""
        p = s.profile
        b = s.batch_size
        cols = _device_columns(s)
        speed, memory = cols[:, 0], cols[:, 2]
        per_round = np.ceil(cols[:, 1] / b) * b  # K_i b
        compute = compute_seconds(s, per_round, speed)
        traffic = traffic_bits_per_round(s, per_round)
        need = profile_memory_need_bytes(p, b)
        feasible = need[None, :] <= memory[:, None]
        if check_feasible:
            none = np.flatnonzero(~feasible.any(axis=1))
            if none.size:
                i = int(none[0])
                raise InfeasibleError(
                    f"devices[{i}].memory_bytes: {memory[i]:.4g} bytes is too small for any cut "
                    f"(the smallest, cut 1, needs {need[0]:.4g} bytes with batch_size {b})"
                )
        cm = cls(
            scenario=s,
            compute_s=compute,
            traffic_bits=traffic,
            feasible=feasible,
            rate_bps=cols[:, 3].copy(),
            memory_need=need,
        )
        cm.__dict__["_speed"] = speed
        return cm

    @property
    def effective_speed(self) -> np.ndarray:
        """``F(L) / F_i(L)`` per device: its whole-model throughput relative to the profiling host
        (its ``speed`` when it has no profile of its own)."""
        s = self.scenario
        speed = self.__dict__.get("_speed")
        if speed is None:
            speed = s.array("speed")
        if not any(d.profile is not None for d in s.devices):
            return speed
        return np.array([effective_speed(s.profile, d.profile) if d.profile is not None else speed[i]
                         for i, d in enumerate(s.devices)])

    @property
    def n_devices(self) -> int:
        """N."""
        return self.compute_s.shape[0]

    @property
    def n_layers(self) -> int:
        """L."""
        return self.compute_s.shape[1]

    def with_rates(self, rate_bps: np.ndarray) -> "CostModel":
        """The same model with other link rates (cheap: arrays are shared, not copied)."""
        rate = np.asarray(rate_bps, dtype=np.float64)
        if rate.shape != self.rate_bps.shape:
            raise ValueError(f"rate_bps: expected shape {self.rate_bps.shape}, got {rate.shape}")
        if np.isnan(rate).any() or (rate < 0).any():
            raise ValueError("rate_bps: rates must be >= 0 and not NaN")
        cm = CostModel(self.scenario, self.compute_s, self.traffic_bits, self.feasible, rate, self.memory_need)
        if "_speed" in self.__dict__:
            cm.__dict__["_speed"] = self.__dict__["_speed"]
        return cm

    def seconds_alone(self) -> np.ndarray:
        """``V_i(c) / rate_i``: transfer seconds with the whole band (inf for rate 0; cached)."""
        cached = self.__dict__.get("_seconds_alone")
        if cached is None:
            r = self.rate_bps[:, None]
            if self.rate_bps.min() > 0:
                cached = self.traffic_bits / r
            else:
                cached = transfer_seconds(self.traffic_bits, np.broadcast_to(r, self.traffic_bits.shape))
            self.__dict__["_seconds_alone"] = cached
        return cached

    def deepest_feasible_cut(self) -> np.ndarray:
        """Per device, the deepest cut (1..L) that fits in memory."""
        L = self.n_layers
        return L - np.argmax(self.feasible[:, ::-1], axis=1)

    def select(self, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Compute seconds and traffic bits of each device at its cut (cuts are 1..L)."""
        idx = np.asarray(cuts, dtype=np.intp) - 1
        rows = np.arange(self.n_devices)
        return self.compute_s[rows, idx], self.traffic_bits[rows, idx]

    def device_times(self, cuts: np.ndarray, shares: np.ndarray) -> np.ndarray:
        """``T_i`` for each device (inf where traffic meets a zero rate or share)."""
        a, v = self.select(cuts)
        return a + transfer_seconds(v, np.asarray(shares, dtype=np.float64) * self.rate_bps)

    def round_time(self, cuts: np.ndarray, shares: np.ndarray, sequential: bool = False) -> float:
        """``T = max_i T_i`` (``sum_i T_i`` with ``sequential``)."""
        return round_time_of(self.device_times(cuts, shares), sequential)

    def check_plan(self, cuts: np.ndarray, shares: np.ndarray, sequential: bool = False) -> None:
        """Raise :class:`InfeasibleError` if cuts are out of range or over memory, or shares are bad."""
        cuts = np.asarray(cuts)
        shares = np.asarray(shares, dtype=np.float64)
        if cuts.shape != (self.n_devices,) or shares.shape != (self.n_devices,):
            raise InfeasibleError(f"plan: expected {self.n_devices} cuts and shares")
        if ((cuts < 1) | (cuts > self.n_layers)).any():
            raise InfeasibleError(f"cuts: must lie in 1..{self.n_layers}, got {cuts.tolist()}")
        if not self.feasible[np.arange(self.n_devices), cuts - 1].all():
            i = int(np.flatnonzero(~self.feasible[np.arange(self.n_devices), cuts - 1])[0])
            raise InfeasibleError(f"cuts[{i}]: cut {cuts[i]} does not fit device {i}'s memory")
        if np.isnan(shares).any() or (shares < 0).any():
            raise InfeasibleError("shares: must be >= 0 and not NaN")
        if not sequential and shares.sum() > 1 + 1e-9:
            raise InfeasibleError(f"shares: must sum to at most 1, got {shares.sum():.6g}")


def transfer_seconds(bits: np.ndarray, rate_bps: np.ndarray) -> np.ndarray:
    """``bits / rate`` with ``0 / 0 = 0`` and ``x / 0 = inf`` for ``x > 0`` (never NaN)."""
    bits = np.asarray(bits, dtype=np.float64)
    rate = np.asarray(rate_bps, dtype=np.float64)
    if rate.min(initial=np.inf) > 0:  # fast path: every rate positive
        return bits / rate
    out = np.zeros(np.broadcast(bits, rate).shape)
    pos = bits > 0
    with np.errstate(divide="ignore"):
        np.divide(bits, rate, out=out, where=pos & (rate > 0))
    out[pos & ~(rate > 0)] = np.inf
    return out


def optimal_shares(compute_s: np.ndarray, traffic_bits: np.ndarray, rate_bps: np.ndarray,
                   rtol: float = 1e-13) -> tuple[np.ndarray, float]:
    """Shares that minimise ``max_i a_i + v_i / (beta_i r_i)`` subject to ``sum beta <= 1``.

    They equalise the device times of all devices with traffic: ``T`` solves
    ``sum_i v_i / (r_i (T - a_i)) = 1``. The left side is convex and decreasing in ``T``, so
    Newton's method started left of the root (at ``max_i a_i + v_i/r_i``, where every term is
    at most 1 and one term alone is 1) climbs to it monotonically. Returns ``(shares, T)``;
    shares sum to 1 (devices without traffic get 0). ``T`` is ``inf`` if a device with traffic
    has a zero rate.
    """
    a = np.asarray(compute_s, dtype=np.float64)
    v_bits = np.asarray(traffic_bits, dtype=np.float64)
    r = np.asarray(rate_bps, dtype=np.float64)
    if r.min() > 0:
        v = v_bits / r
        if v.min() > 0:  # every device sends, every link is up: the hot path
            return _equalise(a, v, rtol)
    n = a.shape[0]
    shares = np.zeros(n)
    pos = v_bits > 0
    if not pos.any():
        return np.full(n, 1.0 / n), float(a.max())
    if (r[pos] <= 0).any():
        shares[pos] = 1.0 / pos.sum()
        return shares, math.inf
    sub, T = _equalise(a[pos], v_bits[pos] / r[pos], rtol)
    shares[pos] = sub
    return shares, float(max(T, a[~pos].max(initial=-math.inf)))


def _equalise(a: np.ndarray, v: np.ndarray, rtol: float) -> tuple[np.ndarray, float]:
    """Newton on ``sum_i v_i / (T - a_i) = 1`` for ``v_i > 0`` (seconds with the whole band).

    Returns shares summing to 1 and the round time they give. Kept lean: it runs inside the
    alternating loop of every environment step.
    """
    if a.shape[0] <= 64:  # small N: plain floats beat numpy's per-call overhead several times
        return _equalise_small(a.tolist(), v.tolist(), rtol)
    T = float((a + v).max())
    for _ in range(100):
        gap = np.maximum(T - a, np.spacing(T))  # T - a_i can round to 0 when v_i << a_i
        terms = v / gap
        g = float(terms.sum())
        if g - 1.0 <= rtol:
            break
        step = (g - 1.0) / float((terms / gap).sum())
        T += step
        if step <= rtol * T:
            break
    shares = v / np.maximum(T - a, np.spacing(T))
    shares /= shares.sum()  # the last Newton iterate is at or left of the root: sum >= 1
    return shares, float((a + v / shares).max())


def _equalise_small(a: list[float], v: list[float], rtol: float) -> tuple[np.ndarray, float]:
    """:func:`_equalise` in plain Python floats (same iteration, same result)."""
    pairs = list(zip(a, v))
    T = max(ai + vi for ai, vi in pairs)
    tiny = math.ulp(T)
    for _ in range(100):
        g = dg = 0.0
        for ai, vi in pairs:
            gap = T - ai
            if gap < tiny:  # T - a_i rounds to 0 when v_i << a_i (a device computing for ages)
                gap = tiny
            t = vi / gap
            g += t
            dg += t / gap
        if g - 1.0 <= rtol:
            break
        step = (g - 1.0) / dg
        T += step
        if step <= rtol * T:
            break
    tiny = math.ulp(T)
    raw = [vi / max(T - ai, tiny) for ai, vi in pairs]
    total = sum(raw)
    shares = np.array(raw) / total
    return shares, max(ai + vi / si for (ai, vi), si in zip(pairs, shares.tolist()))


def optimal_shares_batch(compute_s: np.ndarray, traffic_bits: np.ndarray, rate_bps: np.ndarray,
                         iters: int = 60) -> np.ndarray:
    """Optimal round time for many cut vectors at once (rows of ``compute_s``), by Newton.

    Used by brute force and by the single-cut baselines. ``rate_bps`` broadcasts over rows.
    """
    a = np.asarray(compute_s, dtype=np.float64)
    vb = np.asarray(traffic_bits, dtype=np.float64)
    r = np.broadcast_to(np.asarray(rate_bps, dtype=np.float64), a.shape)
    pos = vb > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(pos, np.where(r > 0, vb / np.where(r > 0, r, 1.0), np.inf), 0.0)
    dead = np.isinf(v).any(axis=1)
    v = np.where(np.isinf(v), 0.0, v)
    T = np.max(np.where(pos, a + v, a), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = _newton_rows(T, a, v, pos, iters)
    T = np.maximum(T, a.max(axis=1))
    T[dead] = np.inf
    return T


def _newton_rows(T: np.ndarray, a: np.ndarray, v: np.ndarray, pos: np.ndarray, iters: int) -> np.ndarray:
    """Row-wise monotone Newton on ``sum_i v_i / (T - a_i) = 1`` from the left."""
    for _ in range(iters):
        gap = np.where(pos, T[:, None] - a, 1.0)
        terms = np.where(pos, v / gap, 0.0)
        g = terms.sum(axis=1)
        dg = np.where(pos, terms / gap, 0.0).sum(axis=1)
        step = np.where(g > 1.0, (g - 1.0) / np.where(dg > 0, dg, 1.0), 0.0)
        T = T + step
        if np.all(step <= 1e-14 * T):
            break
    return T
