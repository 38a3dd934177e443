"""Schedulers: exact equals brute force; nobody beats exact; constraints hold; times recompute."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edgesplit.costmodel import CostModel
from edgesplit.errors import EdgeSplitError
from edgesplit.schedulers import SCHEDULERS, get_scheduler, plan
from tests.conftest import random_scenario


def brute_force_round_time(cm: CostModel) -> float:
    """Every combination of feasible cuts, each with its optimal shares found by an independent
    bisection on T of sum_i v_i / (r_i (T - a_i)) = 1 (no Newton, no shared code)."""
    best = math.inf
    options = [np.flatnonzero(row) + 1 for row in cm.feasible]
    for combo in itertools.product(*options):
        cuts = np.array(combo)
        a, v = cm.select(cuts)
        r = cm.rate_bps
        lo, hi = float(np.max(a + v / r)), float(np.max(a) + np.sum(v / r))
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if np.sum(v / (r * (mid - a))) <= 1.0:
                hi = mid
            else:
                lo = mid
        best = min(best, hi)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_exact_equals_brute_force_and_bounds_every_scheduler(seed):
    rng = np.random.default_rng(seed)
    s = random_scenario(rng, int(rng.integers(1, 5)), int(rng.integers(2, 7)))
    cm = CostModel.from_scenario(s)
    brute = brute_force_round_time(cm)
    ex = plan(cm, "exact")
    assert ex.round_time_s == pytest.approx(brute, rel=1e-9)
    for name in SCHEDULERS:
        p = plan(cm, name)
        if not p.feasible:
            assert math.isinf(p.round_time_s)
            continue
        assert p.round_time_s >= ex.round_time_s * (1 - 1e-9), name
        # constraints
        assert ((p.cuts >= 1) & (p.cuts <= s.n_layers)).all(), name
        if name != "fl":
            assert cm.feasible[np.arange(s.n_devices), p.cuts - 1].all(), name
        assert (p.shares >= 0).all(), name
        if not p.sequential:
            assert p.shares.sum() <= 1 + 1e-9, name
        # round time recomputed independently from the returned cuts and shares
        per = [cm.compute_s[i, c - 1] + cm.traffic_bits[i, c - 1] / (p.shares[i] * cm.rate_bps[i])
               for i, c in enumerate(p.cuts)]
        want = sum(per) if p.sequential else max(per)
        assert p.round_time_s == pytest.approx(want, rel=1e-12), name


def test_fl_is_infeasible_when_the_model_does_not_fit():
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = random_scenario(rng, 4, 5)
        cm = CostModel.from_scenario(s)
        if not cm.feasible[:, -1].all():
            p = plan(cm, "fl")
            assert not p.feasible and math.isinf(p.round_time_s)
            assert "does not fit" in p.note
            return
    pytest.fail("no instance with a memory-short device was drawn")


def test_alternating_stops_and_equalises_times():
    rng = np.random.default_rng(7)
    s = random_scenario(rng, 20, 12, tight_memory=False)
    p = plan(s, "alternating")
    assert 1 <= p.iterations < 50
    np.testing.assert_allclose(p.per_device_time_s, p.round_time_s, rtol=1e-9)


def test_single_cut_baselines_use_one_cut():
    rng = np.random.default_rng(11)
    s = random_scenario(rng, 6, 8)
    for name in ("psl", "uniform-cut-opt-bw", "sl"):
        assert len(set(plan(s, name).cuts.tolist())) == 1, name
    np.testing.assert_allclose(plan(s, "psl").shares, 1 / 6)
    assert plan(s, "uniform-cut-opt-bw").round_time_s <= plan(s, "psl").round_time_s * (1 + 1e-12)


def test_random_is_seeded():
    rng = np.random.default_rng(5)
    s = random_scenario(rng, 5, 6)
    a, b, c = (plan(s, "random", seed=1), plan(s, "random", seed=1), plan(s, "random", seed=2))
    np.testing.assert_array_equal(a.shares, b.shares)
    assert not np.array_equal(a.shares, c.shares)


def test_zero_rate_gives_infinite_round_not_nan_or_hang():
    rng = np.random.default_rng(9)
    s = random_scenario(rng, 3, 4, tight_memory=False)
    s = s.with_rates(np.array([0.0, 1e7, 1e7]))
    for name in SCHEDULERS:
        p = plan(s, name)
        assert math.isinf(p.round_time_s), name
        assert not np.isnan(p.per_device_time_s).any(), name


def test_unknown_scheduler_is_named():
    with pytest.raises(EdgeSplitError, match="unknown name 'nope'.*alternating"):
        get_scheduler("nope")


def test_exact_scales_to_1000_devices():
    rng = np.random.default_rng(2)
    s = random_scenario(rng, 1000, 25, tight_memory=True)
    ex, alt = plan(s, "exact"), plan(s, "alternating")
    assert ex.round_time_s <= alt.round_time_s * (1 + 1e-9)
    assert ex.shares.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(100, 140))
def test_converged_alternating_is_globally_optimal(seed):
    """At a fixed point of alternating, every device's cut minimises its own time for its share,
    i.e. the share it needs at the common time T; those minimal shares sum to 1, which is exact's
    optimality condition (the demand is strictly decreasing in T). So a converged alternating run
    must match exact, which makes a sharp check of both implementations."""
    rng = np.random.default_rng(seed)
    s = random_scenario(rng, int(rng.integers(2, 30)), int(rng.integers(2, 26)))
    cm = CostModel.from_scenario(s)
    alt, ex = plan(cm, "alternating"), plan(cm, "exact")
    assert alt.iterations < 50  # converged
    assert alt.round_time_s == pytest.approx(ex.round_time_s, rel=1e-9)
