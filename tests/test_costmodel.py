"""The cost model against an independent scalar transcription of DESIGN.md's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgesplit.costmodel import CostModel, optimal_shares, transfer_seconds
from edgesplit.errors import InfeasibleError
from edgesplit.scenario import Device, Scenario, Server
from tests.conftest import random_profile, random_scenario


def design_device_time(s: Scenario, i: int, c: int, beta: float) -> float:
    """DESIGN.md, written out term by term for one device and one cut (c in 1..L)."""
    p, d, b, L = s.profile, s.devices[i], s.batch_size, s.n_layers
    K = math.ceil(d.samples / b)
    F = lambda k: sum(p.fwd_s[l] + p.bwd_s[l] for l in range(k))  # noqa: E731
    W = lambda k: sum(p.param_bytes[l] for l in range(k))  # noqa: E731
    speed_s = s.server.speed / (s.n_devices if s.server.sharing == "shared" else 1)
    A = K * b * (F(c) / d.speed + (F(L) - F(c)) / speed_s)
    V = 8 * (K * b * 2 * p.activation_bytes[c - 1] + 2 * W(c)) if c < L else 8 * 2 * W(L)
    if V == 0:
        return A
    if beta * d.rate_bps == 0:
        return math.inf
    return A + V / (beta * d.rate_bps)


def design_memory_ok(s: Scenario, i: int, c: int) -> bool:
    p = s.profile
    need = 3 * sum(p.param_bytes[:c]) + s.batch_size * sum(p.activation_bytes[:c])
    return need <= s.devices[i].memory_bytes


def test_device_times_match_design_formulas(rng):
    for _ in range(30):
        s = random_scenario(rng, int(rng.integers(1, 6)), int(rng.integers(1, 9)))
        cm = CostModel.from_scenario(s)
        cuts = rng.integers(1, s.n_layers + 1, s.n_devices)
        shares = rng.dirichlet(np.ones(s.n_devices))
        got = cm.device_times(cuts, shares)
        want = [design_device_time(s, i, int(cuts[i]), shares[i]) for i in range(s.n_devices)]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert cm.round_time(cuts, shares) == pytest.approx(max(want), rel=1e-12)
        for i in range(s.n_devices):
            for c in range(1, s.n_layers + 1):
                assert cm.feasible[i, c - 1] == design_memory_ok(s, i, c)


def test_zero_rate_or_share_is_infinite_not_nan(rng):
    s = random_scenario(rng, 3, 4, tight_memory=False)
    s = s.with_rates(np.array([0.0, 1e7, 1e7]))
    cm = CostModel.from_scenario(s)
    t = cm.device_times(np.array([1, 2, 3]), np.array([0.5, 0.0, 0.5]))
    assert math.isinf(t[0]) and math.isinf(t[1]) and math.isfinite(t[2])
    assert not np.isnan(t).any()
    np.testing.assert_array_equal(transfer_seconds(np.array([0.0, 5.0]), np.array([0.0, 0.0])), [0.0, np.inf])


def test_shared_server_divides_speed(rng):
    s = random_scenario(rng, 4, 5, tight_memory=False)
    ded = Scenario(s.profile, s.batch_size, s.devices, Server(s.server.speed, "dedicated"))
    sha = Scenario(s.profile, s.batch_size, s.devices, Server(s.server.speed, "shared"))
    a1, a2 = CostModel.from_scenario(ded).compute_s, CostModel.from_scenario(sha).compute_s
    # at c = L the server does nothing, so sharing changes nothing there
    np.testing.assert_allclose(a1[:, -1], a2[:, -1])
    assert (a2[:, :-1] > a1[:, :-1]).all()


def test_optimal_shares_equalise_times_and_beat_perturbations(rng):
    for _ in range(50):
        n = int(rng.integers(1, 8))
        a = rng.uniform(0, 100, n)
        v = rng.uniform(1e6, 1e9, n)
        r = rng.uniform(1e6, 1e8, n)
        shares, T = optimal_shares(a, v, r)
        assert shares.sum() == pytest.approx(1.0, abs=1e-12)
        times = a + v / (shares * r)
        np.testing.assert_allclose(times, T, rtol=1e-9)
        for _ in range(5):  # no other split of the band does better
            other = rng.dirichlet(np.ones(n))
            assert np.max(a + v / (other * r)) >= T * (1 - 1e-12)


def test_memory_too_small_for_any_cut_is_one_clear_error(rng):
    p = random_profile(rng, 3)
    d = Device("tiny", 0.1, 1.0, 1e7, 100)
    with pytest.raises(InfeasibleError, match=r"devices\[0\]\.memory_bytes.*too small for any cut"):
        CostModel.from_scenario(Scenario(p, 16, (d,), Server()))


def test_with_rates_shares_arrays_and_validates(rng):
    s = random_scenario(rng, 3, 4, tight_memory=False)
    cm = CostModel.from_scenario(s)
    cm2 = cm.with_rates(np.array([1.0, 2.0, 3.0]))
    assert cm2.compute_s is cm.compute_s
    np.testing.assert_array_equal(cm2.rate_bps, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="rate_bps"):
        cm.with_rates(np.array([1.0, np.nan, 3.0]))
