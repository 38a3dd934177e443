"""Throughput traces: parsing both formats, the piecewise-constant integral, outages, rejection of
dead traces, the vectorised TraceSet, the synthetic default set, and the shared Pensieve folder."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgesplit.traces import (
    MAHIMAHI_PACKET_BITS,
    Trace,
    TraceError,
    TraceSet,
    default_traceset,
    detect_format,
    load_trace,
    load_traces,
    parse_mahimahi,
    parse_pensieve,
    scale_for,
    synthetic_traces,
)

from .conftest import SHARED_DATA

PENSIEVE_DIR = SHARED_DATA / "traces" / "pensieve-train"


@pytest.fixture
def steps() -> Trace:
    """Rates 2, 0, 4, 1 bit/s on [0,1), [1,2), [2,3), [3,4); period 4 s, 7 bits per period."""
    return Trace("steps", np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.0, 0.0, 4.0, 1.0]), 4.0)


def brute_transfer(tr: Trace, bits: float, start: float, scale: float) -> float:
    """Independent reference: walk bin by bin, one period after another."""
    edges = np.append(tr.times_s, tr.period_s)
    P, m = tr.period_s, tr.n_bins
    lap = math.floor(start / P)
    t = start - lap * P
    j = min(int(np.searchsorted(edges, t, side="right")) - 1, m - 1)
    base, left = lap * P, bits
    while True:
        r = tr.rates_bps[j] * scale
        cap = r * (edges[j + 1] - t)
        if r > 0 and cap >= left:
            return base + t + left / r - start
        left -= cap
        j += 1
        if j == m:
            j, base = 0, base + P
        t = edges[j]


# ----------------------------------------------------------------------------- the integral


def test_transfer_time_equals_hand_integral(steps: Trace) -> None:
    assert steps.mean_bps == pytest.approx(7 / 4)
    # from 0.5: 1 bit by t=1, nothing until 2, then 2 bits at 4 bit/s: done at 2.5
    assert steps.transfer_time(3.0, 0.5) == pytest.approx(2.0, abs=1e-12)
    # a whole period (7 bits) then 3 more: 2 by t=5, stall to 6, 1 bit at 4 bit/s -> 6.25
    assert steps.transfer_time(10.0, 0.0) == pytest.approx(6.25, abs=1e-12)
    # ending exactly at a bin edge does not wait for the next positive bin
    assert steps.transfer_time(2.0, 0.0) == pytest.approx(1.0, abs=1e-12)
    assert steps.transfer_time(7.0, 0.0) == pytest.approx(4.0, abs=1e-12)
    # scale multiplies the rate: 6 bits at twice the trace = 3 trace-bits from 0.5
    assert steps.transfer_time(6.0, 0.5, scale=2.0) == pytest.approx(2.0, abs=1e-12)
    # a start far in the future wraps around: 100 periods later is the same
    assert steps.transfer_time(3.0, 400.5) == pytest.approx(2.0, abs=1e-9)
    # bits delivered: from 0.5 to 10.5 = 1 + 0 + 4 + 1 + 7 + (2 + 0 + 2) = 17
    assert steps.bits_between(0.5, 10.5) == pytest.approx(17.0)
    assert steps.rate_at(-0.5) == 1.0 and steps.rate_at(5.5) == 0.0


def test_outage_stalls_until_the_rate_returns() -> None:
    tr = Trace("outage", np.array([0.0, 1.0]), np.array([5.0, 0.0]), 101.0)  # 1 s up, 100 s down
    assert tr.transfer_time(6.0, 0.0) == pytest.approx(101.2)  # 5 bits, stall 100 s, 1 bit in 0.2 s
    assert tr.transfer_time(1.0, 50.0) == pytest.approx(51.2)  # starting inside the outage
    assert tr.outage_fraction == pytest.approx(100 / 101)


def test_never_nan_and_edge_cases(steps: Trace) -> None:
    assert steps.transfer_time(0.0, 1.5) == 0.0
    assert steps.transfer_time(-5.0, 0.0) == 0.0
    assert steps.transfer_time(1.0, 0.0, scale=0.0) == math.inf
    assert steps.transfer_time(math.inf, 0.0) == math.inf
    huge = steps.transfer_time(7e12, 0.0)
    assert math.isfinite(huge) and huge == pytest.approx(4e12, rel=1e-9)
    with pytest.raises(TraceError, match="NaN"):
        steps.transfer_time(float("nan"), 0.0)
    with pytest.raises(TraceError, match="scale"):
        steps.transfer_time(1.0, 0.0, scale=-1.0)


def test_vectorised_matches_scalar_and_brute_force() -> None:
    rng = np.random.default_rng(7)
    traces = []
    for k in range(6):
        m = int(rng.integers(1, 9))
        t = np.concatenate(([0.0], np.sort(rng.choice(np.arange(1, 60), m - 1, replace=False)))).astype(float)
        r = rng.uniform(0, 5, m)
        r[rng.uniform(size=m) < 0.35] = 0.0
        r[0] += 0.1
        traces.append(Trace(f"t{k}", t, r, float(t[-1] + rng.uniform(0.5, 3.0))))
    ts = TraceSet(traces)
    n = 400
    k = rng.integers(0, len(traces), n)
    bits = rng.uniform(0, 400, n) * 10 ** rng.uniform(-3, 1, n)
    start = rng.uniform(0, 500, n)
    scale = rng.uniform(0.1, 3.0, n)
    got = ts.transfer_time(k, bits, start, scale)
    for i in range(n):
        assert got[i] == pytest.approx(traces[k[i]].transfer_time(bits[i], start[i], scale[i]), rel=1e-12, abs=1e-12)
        assert got[i] == pytest.approx(brute_transfer(traces[k[i]], bits[i], start[i], scale[i]), rel=1e-9, abs=1e-9)
    # what is sent in that time is exactly the bits asked for
    sent = ts.bits_between(k, start, start + got) * scale
    np.testing.assert_allclose(sent, bits, rtol=1e-9, atol=1e-9)


def test_scale_to_a_link_class(steps: Trace) -> None:
    f = scale_for(steps, 20e6)
    assert steps.bits_between(0.0, steps.period_s, scale=f) / steps.period_s == pytest.approx(20e6)


def test_trace_pickles(steps: Trace) -> None:
    steps.transfer_time(1.0, 0.0)  # builds the cached TraceSet
    back = pickle.loads(pickle.dumps(steps))
    assert back.transfer_time(3.0, 0.5) == steps.transfer_time(3.0, 0.5)


# ----------------------------------------------------------------------------- parsing and loading


def test_pensieve_parse_tabs_and_spaces() -> None:
    text = "10.0\t1.5\n11.0 0.0\n12.0   3.0\n"
    tr = parse_pensieve(text, "p")
    np.testing.assert_array_equal(tr.times_s, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(tr.rates_bps, [1.5e6, 0.0, 3.0e6])
    assert tr.period_s == 3.0  # last value holds for the median spacing
    assert tr.mean_bps == pytest.approx(1.5e6)
    assert detect_format(text) == "pensieve"


def test_mahimahi_parse_into_bins() -> None:
    text = "0\n0\n0\n1500\n2000\n"  # five 1500-byte opportunities; period 2 s
    tr = parse_mahimahi(text, "m", bin_s=1.0)
    assert tr.period_s == 2.0
    np.testing.assert_array_equal(tr.rates_bps, [3 * MAHIMAHI_PACKET_BITS, 2 * MAHIMAHI_PACKET_BITS])
    assert tr.total_bits == 5 * MAHIMAHI_PACKET_BITS
    fine = parse_mahimahi(text, "m", bin_s=0.1)
    assert fine.n_bins == 20 and fine.total_bits == 5 * MAHIMAHI_PACKET_BITS
    assert detect_format(text) == "mahimahi"


def test_folder_with_both_formats_is_auto_detected(tmp_path: Path) -> None:
    (tmp_path / "a_pensieve.log").write_text("0 1.0\n1 2.0\n2 0.0\n")
    (tmp_path / "b_mahimahi.up").write_text("\n".join(str(x) for x in range(0, 3000, 2)) + "\n")
    traces = load_traces(tmp_path)
    assert [Path(t.name).name for t in traces] == ["a_pensieve.log", "b_mahimahi.up"]
    assert traces[0].mean_bps == pytest.approx(1e6)
    assert traces[1].mean_bps == pytest.approx(1500 * MAHIMAHI_PACKET_BITS / 3.0, rel=1e-3)
    assert len(load_traces(str(tmp_path / "*.log"))) == 1


def test_all_zero_trace_is_rejected_with_its_file_name(tmp_path: Path) -> None:
    dead = tmp_path / "dead-link.log"
    dead.write_text("0 0\n1 0.0\n2 0\n")
    with pytest.raises(TraceError, match="dead-link.log.*0"):
        load_trace(dead)
    with pytest.raises(TraceError, match="dead-link.log"):
        load_traces(tmp_path)


@pytest.mark.parametrize("content, pattern", [
    ("", "empty"),
    ("0 1\n2 1\n1 1\n", "line 3.*does not increase"),
    ("0 1\n1 abc\n", "line 2"),
    ("0 1\n1 -2\n", "line 2.*>= 0"),
    ("0 1\n1 nan\n", "line 2"),
])
def test_malformed_files_name_file_and_line(tmp_path: Path, content: str, pattern: str) -> None:
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(TraceError, match=f"bad.txt.*{pattern}"):
        load_trace(f)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="not found"):
        load_trace(tmp_path / "nope.log")
    with pytest.raises(TraceError, match="no trace files"):
        load_traces(str(tmp_path / "*.none"))


def test_bad_trace_arrays_are_rejected() -> None:
    with pytest.raises(TraceError, match="increase"):
        Trace("x", np.array([0.0, 2.0, 1.0]), np.array([1.0, 1.0, 1.0]), 3.0)
    with pytest.raises(TraceError, match=">= 0"):
        Trace("x", np.array([0.0]), np.array([-1.0]), 1.0)
    with pytest.raises(TraceError, match="period"):
        Trace("x", np.array([0.0, 1.0]), np.array([1.0, 1.0]), 1.0)


# ----------------------------------------------------------------------------- synthetic and shared traces


def test_synthetic_traces_are_seeded_and_plausible() -> None:
    a = synthetic_traces(n_traces=8, seed=3)
    b = synthetic_traces(n_traces=8, seed=3)
    c = synthetic_traces(n_traces=8, seed=4)
    assert all(np.array_equal(x.rates_bps, y.rates_bps) for x, y in zip(a, b))
    assert not np.array_equal(a[0].rates_bps, c[0].rates_bps)
    ts = default_traceset()
    means = ts.mean_bps / 1e6
    assert 0.6 < means.mean() < 2.5 and means.min() > 0.1  # Pensieve-like: about 1.3 Mbit/s
    outages = [t.outage_fraction for t in ts.traces]
    assert 0.002 < np.mean(outages) < 0.1  # occasional outages


def test_pensieve_folder_loads_when_present() -> None:
    if not PENSIEVE_DIR.is_dir():
        pytest.skip(f"{PENSIEVE_DIR} not present")
    traces = load_traces(PENSIEVE_DIR)
    assert len(traces) == len([p for p in PENSIEVE_DIR.iterdir() if p.is_file()]) == 127
    means = np.array([t.mean_bps for t in traces]) / 1e6
    assert (means > 0).all() and 0.8 < means.mean() < 2.0
    assert any(t.outage_fraction > 0 for t in traces)
    ts = TraceSet(traces)
    tau = ts.transfer_time(np.arange(len(traces)), 1e8, 100.0, 1.0)
    assert np.isfinite(tau).all() and (tau > 0).all()
