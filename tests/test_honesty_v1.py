"""Honesty of EdgeSplitDynamic-v1 (issue 9 item 8): what a policy sees never depends on the future.

Two trace families identical up to a time ``t*`` and different after it, with the same means (each
trace's tail after ``t*`` is a permutation of itself, so every trace keeps its mean and the family
keeps its mean, hence the scaling): every observation, every ``info`` entry and every
``policy_view()`` entry up to ``t*`` must be identical, whatever the policy does (the policies
here react to what they see). After ``t*`` they must differ (else the test could not fail).
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

from edgesplit import envs  # noqa: F401
from edgesplit.agents.policies import get_policy
from edgesplit.traces import Trace, TraceFamily

T_STAR = 400.0
LENGTH = 900


def _families() -> tuple[TraceFamily, TraceFamily]:
    rng = np.random.default_rng(42)
    past, future = [], []
    for j in range(4):
        # whole bit/s: sums of integers are exact in any order, so the permuted tail keeps the
        # family mean to the last bit (with real-valued rates the order of summation moves it by
        # an ulp, and everything scaled by it with it)
        rates = np.round(rng.gamma(2.0, 1.0, LENGTH) * 1e6 * (1 + j))
        rates[rng.random(LENGTH) < 0.05] = 0.0  # outages
        tail = rates.copy()
        cut = int(T_STAR)
        tail[cut:] = rng.permutation(tail[cut:])
        t = np.arange(LENGTH, dtype=float)
        past.append(Trace(f"a{j}", t, rates, float(LENGTH)))
        future.append(Trace(f"a{j}", t, tail, float(LENGTH)))
    fa, fb = TraceFamily("f", tuple(past)), TraceFamily("f", tuple(future))
    assert fa.mean_bps == fb.mean_bps
    return fa, fb


def _same(x, y) -> bool:
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if hasattr(x, "compute_s"):  # a CostModel: compare its arrays
        return all(np.array_equal(getattr(x, k), getattr(y, k)) for k in ("compute_s", "traffic_bits", "rate_bps"))
    if isinstance(x, tuple):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return np.array_equal(np.asarray(x), np.asarray(y))
    return x == y


def _honest_env(fam: TraceFamily, interval_s: float | None) -> gym.Env:
    """The env every test here plays: 4 devices, 6 rounds, every trace played from its beginning."""
    return gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=6, traces=[fam], trace_start="beginning",
                    interval_s=interval_s)


def _trajectory_env(env: gym.Env, policy: str) -> list[tuple[float, object, dict, dict]]:
    """One seeded episode of ``policy`` on ``env``: (sim clock, (obs[, reward]), info, policy_view()) a step."""
    pol = get_policy(policy)
    obs, info = env.reset(seed=3)
    pol.reset(env, 3)
    base = env.unwrapped
    out = [(0.0, obs, info, base.policy_view())]
    while True:
        obs, r, term, trunc, info = env.step(pol.act(obs, info))
        out.append((info["sim_clock_s"], (obs, r), info, base.policy_view()))
        if term or trunc:
            return out


def _trajectory(fam: TraceFamily, policy: str, interval_s: float | None) -> list[tuple[float, object, dict, dict]]:
    return _trajectory_env(_honest_env(fam, interval_s), policy)


def _before_t_star(a: list, b: list) -> list:
    """The steps of trajectories ``a`` and ``b``, paired, until either clock is past ``t*``."""
    return list(itertools.takewhile(lambda p: p[0][0] <= T_STAR and p[1][0] <= T_STAR, zip(a, b)))


@pytest.mark.parametrize("policy,interval_s", [("pf", 5.0), ("robust-mpc", 5.0), ("alternating", None)])
def test_nothing_a_policy_sees_depends_on_the_future(policy: str, interval_s: float | None) -> None:
    fa, fb = _families()
    a = _trajectory(fa, policy, interval_s)
    b = _trajectory(fb, policy, interval_s)
    before = _before_t_star(a, b)
    for (ta, xa, ia, va), (tb, xb, ib, vb) in before:
        assert ta == tb
        assert _same(xa, xb) and _same(ia, ib) and _same(va, vb), f"differs at t={ta}"
    assert len(before) >= 2
    # after t* the futures differ, and so does what is measured
    assert not all(_same(xa, xb) for (_, xa, _, _), (_, xb, _, _) in zip(a, b))


def test_scaling_uses_the_family_mean_not_a_trace_statistic() -> None:
    """Changing one trace's values (not the family's mean) changes no device's scale on other traces."""
    fa, _ = _families()
    env = gym.make("EdgeSplitDynamic-v1", n_devices=4, traces=[fa])
    env.reset(seed=0)
    scale = env.unwrapped._scale.copy()
    nominal = env.unwrapped.policy_view()["nominal_rate_bps"]
    assert np.allclose(scale, nominal / fa.mean_bps)


SHORT = 100  # seconds: ~100 s traces switch several times before t*


def _short_families(policy: str, interval_s: float | None) -> tuple[TraceFamily, TraceFamily]:
    """12 traces of 80-120 s (several switches before ``t*``). Family ``b`` is ``a`` with, for every
    trace not played whole before ``t*`` (whatever device plays it), the part no device reached by
    ``t*`` permuted AND the trace lengthened by 37 s at exactly the family's mean rate: identical
    past, a different future, different trace lengths and loop points, the same family mean."""
    rng = np.random.default_rng(7)
    past = []
    for j in range(12):
        n = int(rng.integers(SHORT - 20, SHORT + 21))
        rates = rng.gamma(2.0, 1.0, n) * 1e6 * (1 + j % 3)
        rates[rng.random(n) < 0.05] = 0.0
        past.append(Trace(f"s{j:02d}", np.arange(n, dtype=float), rates, float(n)))
    fa = TraceFamily("f", tuple(past))
    # where each trace is played before t* (the links do not depend on the actions)
    env = _honest_env(fa, interval_s)
    traj = _trajectory_env(env, policy)
    assert traj[-1][0] > T_STAR
    seen = np.zeros(len(past))  # the furthest local second of each trace reached by t*
    for segs in env.unwrapped.reference_only_trace_info()["segments"]:
        assert sum(t0 < T_STAR for t0, _ in segs) >= 3  # several switches before t*
        for t0, k in segs:
            if t0 < T_STAR:
                seen[k] = max(seen[k], min(T_STAR - t0, past[k].period_s))
    m = fa.mean_bps
    future, changed = [], 0
    for k, tr in enumerate(past):
        n = tr.rates_bps.size
        first = int(np.ceil(seen[k])) + 1  # the bins from here on were never reached before t*
        if first >= n:
            future.append(tr)
            continue
        rates = tr.rates_bps.copy()
        rates[first:] = rng.permutation(rates[first:])
        rates = np.concatenate([rates, np.full(37, m)])  # 37 s more at the family mean: same mean
        future.append(Trace(tr.name, np.arange(rates.size, dtype=float), rates, float(rates.size)))
        changed += 1
    assert changed >= 2
    assert TraceFamily("f", tuple(future)).mean_bps == pytest.approx(fa.mean_bps, rel=1e-12)
    fb = TraceFamily("f", tuple(future), full_mean_bps=fa.mean_bps)  # the same mean to the last bit
    assert [t.period_s for t in fa.traces] != [t.period_s for t in fb.traces]
    return fa, fb


def _close(x, y, rtol: float = 1e-9) -> bool:
    """:func:`_same` up to floating-point rounding (the traces' concatenation, hence the order of the
    sums, differs when lengths differ): a leak shows at far more than ``rtol``."""
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k], rtol) for k in x)
    if hasattr(x, "compute_s"):
        return all(_close(getattr(x, k), getattr(y, k), rtol) for k in ("compute_s", "traffic_bits", "rate_bps"))
    if isinstance(x, tuple):
        return len(x) == len(y) and all(_close(u, v, rtol) for u, v in zip(x, y))
    if isinstance(x, (np.ndarray, float)) or isinstance(y, (np.ndarray, float)):
        u, v = np.asarray(x), np.asarray(y)
        if u.dtype.kind in "fc" or v.dtype.kind in "fc":
            return u.shape == v.shape and bool(np.allclose(u, v, rtol=rtol, atol=0.0, equal_nan=True))
        return np.array_equal(u, v)
    return x == y


@pytest.mark.parametrize("policy,interval_s", [("pf", 5.0), ("alternating", None)])
def test_short_traces_leak_neither_length_nor_loop_point(policy: str, interval_s: float | None) -> None:
    """As above with ~100 s traces (devices switch traces several times before t*): the length of a
    trace in play and where it ends must not show before t* either."""
    fa, fb = _short_families(policy, interval_s)
    a = _trajectory(fa, policy, interval_s)
    b = _trajectory(fb, policy, interval_s)
    before = _before_t_star(a, b)
    for (ta, xa, ia, va), (tb, xb, ib, vb) in before:
        assert ta == pytest.approx(tb, rel=1e-9)
        assert _close(xa, xb) and _close(ia, ib) and _close(va, vb), f"differs at t={ta}"
    assert len(before) >= 2
    assert not all(_close(xa, xb) for (_, xa, _, _), (_, xb, _, _) in zip(a, b))
