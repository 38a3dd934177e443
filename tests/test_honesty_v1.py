"""Honesty of EdgeSplitDynamic-v1 (issue 9 item 8): what a policy sees never depends on the future.

Two trace families identical up to a time ``t*`` and different after it, with the same means (each
trace's tail after ``t*`` is a permutation of itself, so every trace keeps its mean and the family
keeps its mean, hence the scaling): every observation, every ``info`` entry and every
``policy_view()`` entry up to ``t*`` must be identical, whatever the policy does (the policies
here react to what they see). After ``t*`` they must differ (else the test could not fail).
"""

from __future__ import annotations

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
        rates = rng.gamma(2.0, 1.0, LENGTH) * 1e6 * (1 + j)
        rates[rng.random(LENGTH) < 0.05] = 0.0  # outages
        tail = rates.copy()
        cut = int(T_STAR)
        tail[cut:] = rng.permutation(tail[cut:])
        t = np.arange(LENGTH, dtype=float)
        past.append(Trace(f"a{j}", t, rates, float(LENGTH)))
        future.append(Trace(f"a{j}", t, tail, float(LENGTH)))
    fa, fb = TraceFamily("f", tuple(past)), TraceFamily("f", tuple(future))
    assert fa.mean_bps == pytest.approx(fb.mean_bps, rel=1e-12)
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


def _trajectory(fam: TraceFamily, policy: str, interval_s: float | None) -> list[tuple[float, object, dict, dict]]:
    env = gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=6, traces=[fam], trace_start="beginning",
                   interval_s=interval_s)
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


@pytest.mark.parametrize("policy,interval_s", [("pf", 5.0), ("robust-mpc", 5.0), ("alternating", None)])
def test_nothing_a_policy_sees_depends_on_the_future(policy: str, interval_s: float | None) -> None:
    fa, fb = _families()
    a = _trajectory(fa, policy, interval_s)
    b = _trajectory(fb, policy, interval_s)
    checked = 0
    for (ta, xa, ia, va), (tb, xb, ib, vb) in zip(a, b):
        if ta > T_STAR or tb > T_STAR:
            break
        assert ta == tb
        assert _same(xa, xb) and _same(ia, ib) and _same(va, vb), f"differs at t={ta}"
        checked += 1
    assert checked >= 2
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
