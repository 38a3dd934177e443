"""Fuzz tests (Hypothesis) of trace files (Pensieve and Mahimahi text) and of EdgeSplitDynamic-v1
actions. The property: a clear error (``TraceError``/``ValueError``, which the CLI turns into one
line and exit 2) or a valid result (a trace with a finite positive mean; an observation inside the
space, never NaN). Kept fast: few examples each, no deadline."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgesplit import envs  # noqa: E402,F401
from edgesplit.traces import Trace, TraceError, TraceFamily, TraceSet, parse_trace  # noqa: E402

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 5e-324, 1e-300, 1e300, 1.7e308, 1e15, 1e12, 1e-18, 3.0]),
    st.integers(min_value=-(10 ** 20), max_value=10 ** 20),
)


def _check_trace(tr: Trace) -> None:
    assert math.isfinite(tr.mean_bps) and tr.mean_bps > 0
    assert np.isfinite(tr.rates_bps).all() and np.isfinite(tr.times_s).all()
    ts = TraceSet([tr])
    t = ts.transfer_time(np.zeros(3, dtype=np.intp), np.array([1.0, tr.total_bits, 3 * tr.total_bits]), 0.0)
    assert np.isfinite(t).all() and (t >= 0).all()


@FAST
@given(st.lists(st.tuples(number, number), min_size=1, max_size=12))
def test_pensieve_text_gives_a_valid_trace_or_a_clear_error(rows) -> None:
    text = "\n".join(f"{a!r} {b!r}" for a, b in rows)
    try:
        tr = parse_trace(text, "fuzz", fmt="pensieve")
    except TraceError as exc:
        assert "fuzz" in str(exc) or "line" in str(exc)
        return
    _check_trace(tr)


@FAST
@given(st.lists(st.one_of(st.integers(min_value=-5, max_value=10 ** 16),
                          st.sampled_from([10 ** 15, 10 ** 12, 0, 1, 2, 10 ** 30])), min_size=1, max_size=20))
def test_mahimahi_text_gives_a_valid_trace_or_a_clear_error(stamps) -> None:
    text = "\n".join(str(s) for s in stamps)
    try:
        tr = parse_trace(text, "fuzz", fmt="mahimahi")
    except TraceError as exc:
        assert "fuzz" in str(exc)
        return
    _check_trace(tr)


def test_huge_mahimahi_timestamp_is_refused_quickly() -> None:
    with pytest.raises(TraceError, match="timestamp"):
        parse_trace("0\n1000000000000000\n", "big", fmt="mahimahi")


def test_rates_near_1e300_are_refused_with_the_file_name() -> None:
    with pytest.raises(TraceError, match="huge: line 1:"):  # the first bad line, not the largest value
        parse_trace("0 1e300\n1 2e300\n", "huge", fmt="pensieve")
    with pytest.raises(TraceError, match="huge: line 2:"):
        parse_trace("0 1.0\n1 1e13\n2 1e300\n", "huge", fmt="pensieve")
    with pytest.raises(TraceError, match="rates must be"):
        Trace("huge", np.array([0.0, 1.0]), np.array([1e300, 1e300]), 2.0)


_ENV = None


def _env() -> gym.Env:
    global _ENV
    if _ENV is None:
        fam = TraceFamily("f", (Trace("a", np.arange(20.0), np.abs(np.sin(np.arange(20.0))) * 1e6, 20.0),
                                Trace("b", np.arange(30.0), np.full(30, 2e6) * (np.arange(30) % 4 != 0), 30.0)))
        _ENV = gym.make("EdgeSplitDynamic-v1", n_devices=3, rounds=2, traces=[fam], interval_s=2.0,
                        max_round_factor=3.0)
    return _ENV


share_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0.0, 1e-300, 5e-324, 1e300, 1.0, -1.0, float("nan")]))


@FAST
@given(st.lists(st.tuples(st.lists(st.integers(min_value=-3, max_value=40), min_size=3, max_size=3),
                          st.lists(share_value, min_size=3, max_size=3)), min_size=1, max_size=25),
       st.integers(min_value=0, max_value=3))
def test_dynamic_env_actions_give_a_valid_step_or_a_clear_error(actions, seed) -> None:
    env = _env()
    obs, info = env.reset(seed=seed)
    for cuts, shares in actions:
        try:
            obs, r, term, trunc, info = env.step({"cuts": np.asarray(cuts), "shares": np.asarray(shares)})
        except ValueError as exc:
            assert "action" in str(exc)
            continue
        assert not np.isnan(obs).any() and env.observation_space.contains(obs)
        assert not math.isnan(r) and r <= 0
        assert math.isfinite(info["sim_clock_s"])
        if term or trunc:
            with pytest.raises(RuntimeError, match="reset"):
                env.unwrapped.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
            obs, info = env.reset(seed=seed)
