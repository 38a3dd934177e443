"""Link-throughput traces: loaders, a piecewise-constant rate model and fast transfer times.

A :class:`Trace` is a piecewise-constant rate ``rates_bps[j]`` on ``[times_s[j], times_s[j+1])``
(the last bin lasts until ``period_s``) that repeats forever: time ``t`` reads the trace at
``t mod period_s``. Two file formats are read, and told apart automatically:

- **Pensieve** ("cooked" traces): one line per sample, ``time_s<TAB or spaces>throughput_mbps``.
  The value of a line holds until the next line's time; the last one for the median spacing.
  Times are shifted so that the trace starts at 0.
- **Mahimahi**: one line per 1500-byte delivery opportunity, an integer timestamp in ms; the
  trace repeats with the last timestamp as its period. It becomes a piecewise-constant rate by
  counting opportunities in bins of ``bin_s`` seconds (1 s by default).

:meth:`Trace.transfer_time` integrates the rate from a start time: an outage (rate 0) stalls a
transfer until the rate returns. A trace whose every value is 0 is rejected when it is built (its
name, usually the file name, is in the message), so a transfer always ends: never NaN, never an
endless loop. :class:`TraceSet` does the same for many traces at once, vectorised (one numpy pass
for N devices, each on its own trace), which is what the dynamic environment calls every round.

To use a trace for a device of link class ``rate_bps``, scale it by ``rate_bps / trace.mean_bps``
(:func:`scale_for`): the device then has the class rate on average and the trace's shape.
:func:`synthetic_traces` makes a seeded default set (a three-state Gilbert-Elliott Markov chain
with occasional outages, means around the Pensieve traces' 1.3 Mbit/s), so everything runs
offline without any trace files.

This module is part of the core library: it imports numpy only.
"""

from __future__ import annotations

import glob as _glob
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from edgesplit.errors import EdgeSplitError

MAHIMAHI_PACKET_BITS = 1500 * 8
"""Bits per Mahimahi delivery opportunity (one 1500-byte packet)."""


MAX_RATE_BPS = 1e15
"""Largest rate a trace may hold (1 Pbit/s): larger values are rejected, so sums never overflow."""

MIN_MEAN_BPS = 1e-6
"""Smallest mean rate of a trace (1e-6 bit/s): below it sums and ratios lose meaning (denormals)."""

MAX_TRACE_S = 1e7
"""Longest trace (about 116 days): a longer one is a malformed file (e.g. a timestamp in the wrong unit)."""

MAX_BINS = 10_000_000
"""Most constant-rate bins in one trace (Mahimahi binning refuses timestamps that need more)."""


class TraceError(EdgeSplitError):
    """A trace file or trace array is missing, malformed, or never delivers anything."""


# ----------------------------------------------------------------------------- the trace


@dataclass(frozen=True, eq=False)
class Trace:
    """A periodic piecewise-constant link rate.

    ``times_s[j]`` (strictly increasing, ``times_s[0] == 0``) starts bin ``j``, whose rate is
    ``rates_bps[j]``; the last bin ends at ``period_s``, after which the trace repeats.
    """

    name: str
    times_s: np.ndarray
    rates_bps: np.ndarray
    period_s: float

    def __post_init__(self) -> None:
        t = np.asarray(self.times_s, dtype=np.float64).copy()
        r = np.asarray(self.rates_bps, dtype=np.float64).copy()
        name = self.name
        if t.ndim != 1 or r.ndim != 1 or t.size != r.size or t.size == 0:
            raise TraceError(f"{name}: times and rates must be 1-D arrays of the same non-zero length")
        if not np.isfinite(t).all() or not np.isfinite(r).all():
            raise TraceError(f"{name}: times and rates must be finite numbers")
        if t[0] != 0.0:
            raise TraceError(f"{name}: the first bin must start at time 0, got {t[0]!r}")
        if t.size > 1 and not (np.diff(t) > 0).all():
            j = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
            raise TraceError(f"{name}: times must increase strictly (bin {j}: {t[j]!r} after {t[j - 1]!r})")
        period = float(self.period_s)
        if not math.isfinite(period) or not period > t[-1]:
            raise TraceError(f"{name}: period_s must be finite and after the last bin start {t[-1]!r}, got {period!r}")
        if (r < 0).any():
            j = int(np.flatnonzero(r < 0)[0])
            raise TraceError(f"{name}: rates must be >= 0 (bin {j}: {r[j]!r})")
        if not (r > 0).any():
            raise TraceError(f"{name}: every throughput value is 0; a link that never delivers cannot be used")
        if period > MAX_TRACE_S:
            raise TraceError(f"{name}: the trace lasts {period:.4g} s; at most {MAX_TRACE_S:.0e} s is allowed "
                             f"(a timestamp in the wrong unit?)")
        if r.max() > MAX_RATE_BPS:
            j = int(np.argmax(r))
            raise TraceError(f"{name}: rates must be <= {MAX_RATE_BPS:.0e} bit/s (bin {j}: {r[j]!r})")
        mean = float(np.dot(r, np.diff(np.append(t, period)))) / period
        if not mean >= MIN_MEAN_BPS:
            raise TraceError(f"{name}: mean rate {mean!r} bit/s is below {MIN_MEAN_BPS} bit/s; such a link "
                             f"never finishes a round")
        t.setflags(write=False)
        r.setflags(write=False)
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "rates_bps", r)
        object.__setattr__(self, "period_s", period)

    @property
    def n_bins(self) -> int:
        """Number of constant-rate bins."""
        return int(self.times_s.size)

    @property
    def durations_s(self) -> np.ndarray:
        """Length of each bin in seconds."""
        return np.diff(np.append(self.times_s, self.period_s))

    @property
    def total_bits(self) -> float:
        """Bits delivered over one period."""
        return float(np.dot(self.rates_bps, self.durations_s))

    @property
    def mean_bps(self) -> float:
        """Time-averaged rate over one period (always > 0)."""
        return self.total_bits / self.period_s

    @property
    def outage_fraction(self) -> float:
        """Fraction of the period with rate 0."""
        return float(self.durations_s[self.rates_bps == 0].sum() / self.period_s)

    def _set(self) -> "TraceSet":
        ts = self.__dict__.get("_traceset")
        if ts is None:
            ts = TraceSet([self])
            object.__setattr__(self, "_traceset", ts)
        return ts

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_traceset", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def rate_at(self, t_s: float | np.ndarray, scale: float | np.ndarray = 1.0) -> np.ndarray | float:
        """``scale`` times the rate at time(s) ``t_s`` (wrapping around the period)."""
        out = self._set().rate_at(np.zeros(np.shape(t_s), dtype=np.intp), t_s) * scale
        return float(out) if np.ndim(out) == 0 else out

    def bits_between(self, start_s: float | np.ndarray, end_s: float | np.ndarray,
                     scale: float | np.ndarray = 1.0) -> np.ndarray | float:
        """Bits delivered between ``start_s`` and ``end_s`` at ``scale`` times the trace."""
        shape = np.broadcast(np.asarray(start_s), np.asarray(end_s)).shape
        out = self._set().bits_between(np.zeros(shape, dtype=np.intp), start_s, end_s) * scale
        return float(out) if np.ndim(out) == 0 else out

    def transfer_time(self, bits: float | np.ndarray, start_s: float | np.ndarray = 0.0,
                      scale: float | np.ndarray = 1.0) -> np.ndarray | float:
        """Seconds to send ``bits`` starting at ``start_s`` when the rate is ``scale`` times the trace.

        Outages stall the transfer until the rate returns; ``bits <= 0`` takes 0 s; ``scale == 0``
        (or ``bits == inf``) with bits to send takes ``inf``. Never NaN. Vectorised: the
        arguments broadcast against each other.
        """
        shape = np.broadcast(np.asarray(bits), np.asarray(start_s), np.asarray(scale)).shape
        out = self._set().transfer_time(np.zeros(shape, dtype=np.intp), bits, start_s, scale)
        return float(out) if np.ndim(out) == 0 else out

    def scaled_to(self, rate_bps: float) -> float:
        """The factor that gives this trace a mean of ``rate_bps`` (see :func:`scale_for`)."""
        return scale_for(self, rate_bps)


def scale_for(trace: Trace, rate_bps: float) -> float:
    """``rate_bps / trace.mean_bps``: multiply the trace by this to give it a link class's mean rate."""
    return float(rate_bps) / trace.mean_bps


# ----------------------------------------------------------------------------- many traces, vectorised


class TraceHandle(NamedTuple):
    """Per-element parameters of the traces chosen for a vector of queries (see :meth:`TraceSet.handle`)."""

    P: np.ndarray  # period (s)
    Q: np.ndarray  # bits per period (unscaled)
    invQ: np.ndarray
    base: np.ndarray  # the trace's offset in the flat cumulative array
    tb: np.ndarray  # the trace's offset in the flat time array
    s1: np.ndarray  # index of its first edge, plus one
    e: np.ndarray  # index of its last edge
    zeros: np.ndarray


class TraceSet:
    """Many traces laid end to end in flat arrays, for vectorised queries.

    Every query takes ``k``, an integer array choosing a trace per element, and broadcasts it
    against the other arguments. For the fastest repeated queries over a fixed assignment of
    traces (the dynamic environment: one trace per device for a whole episode) take a
    :meth:`handle` once and use :meth:`transfer_time_h` / :meth:`cumulative_h`.
    """

    def __init__(self, traces: Sequence[Trace]):
        traces = list(traces)
        if not traces:
            raise TraceError("traces: need at least one trace")
        self.traces: tuple[Trace, ...] = tuple(traces)
        tloc, tglob, eglob, rate, inv = [], [], [], [], []
        starts, ends, periods, totals, bases, tbases = [], [], [], [], [], []
        base = 0.0
        tbase = 0.0
        pos = 0
        for tr in traces:
            edges = np.append(tr.times_s, tr.period_s)
            cum = np.concatenate(([0.0], np.cumsum(tr.rates_bps * np.diff(edges))))
            r = np.append(tr.rates_bps, 0.0)
            tloc.append(edges)
            tglob.append(edges + tbase)
            eglob.append(cum + base)
            rate.append(r)
            with np.errstate(divide="ignore"):
                inv.append(np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0))
            starts.append(pos)
            ends.append(pos + edges.size - 1)
            periods.append(tr.period_s)
            totals.append(cum[-1])
            bases.append(base)
            tbases.append(tbase)
            pos += edges.size
            base += cum[-1]
            tbase += tr.period_s
        self._tloc = np.concatenate(tloc)
        self._tglob = np.concatenate(tglob)
        self._eglob = np.concatenate(eglob)
        self._rate = np.concatenate(rate)
        self._inv = np.concatenate(inv)
        self.start_index = np.asarray(starts, dtype=np.intp)
        self.end_index = np.asarray(ends, dtype=np.intp)
        self.period_s = np.asarray(periods, dtype=np.float64)
        self.total_bits = np.asarray(totals, dtype=np.float64)
        self._base = np.asarray(bases, dtype=np.float64)
        self._tbase = np.asarray(tbases, dtype=np.float64)
        self.mean_bps = self.total_bits / self.period_s
        # the same arrays shifted by one (X_prev[i] = X[i-1]): gathers with a searchsorted result directly
        self._eloc = self._eglob - np.repeat(self._base, self.end_index - self.start_index + 1)
        shift = lambda x: np.concatenate((x[:1], x[:-1]))  # noqa: E731
        self._eloc_prev = shift(self._eloc)
        self._eglob_prev = shift(self._eglob)
        self._tloc_prev = shift(self._tloc)
        self._rate_prev = shift(self._rate)
        self._inv_prev = shift(self._inv)

    def __len__(self) -> int:
        return len(self.traces)

    @property
    def names(self) -> list[str]:
        """The traces' names, in order."""
        return [t.name for t in self.traces]

    # -- handles: per-element trace parameters gathered once

    def handle(self, k: np.ndarray) -> "TraceHandle":
        """Per-element parameters of traces ``k`` for the ``*_h`` methods (gather once, query often)."""
        k = np.asarray(k, dtype=np.intp)
        if k.size and (k.min() < 0 or k.max() >= len(self.traces)):
            raise TraceError(f"k: trace indices must lie in 0..{len(self.traces) - 1}")
        P = self.period_s[k]
        Q = self.total_bits[k]
        return TraceHandle(P, Q, 1.0 / Q, self._base[k], self._tbase[k], self.start_index[k] + 1,
                           self.end_index[k], np.zeros(k.shape))

    def cumulative_h(self, h: "TraceHandle", t: np.ndarray) -> np.ndarray:
        """Bits (unscaled) delivered from time 0 to time ``t`` (any real ``t``; negative gives negative bits)."""
        t = np.asarray(t, dtype=np.float64)
        laps = np.floor(t / h.P)
        pos = t - laps * h.P
        # ir = index of the bin holding pos, plus one (the *_prev arrays are shifted by one)
        ir = self._tglob.searchsorted(h.tb + pos, side="right")
        ir = np.minimum(np.maximum(ir, h.s1), h.e)
        return laps * h.Q + self._eloc_prev[ir] + self._rate_prev[ir] * (pos - self._tloc_prev[ir])

    def transfer_time_h(self, h: "TraceHandle", bits: np.ndarray, start_s: np.ndarray) -> np.ndarray:
        """Seconds to deliver ``bits`` (finite, >= 0, in units of the unscaled trace) from ``start_s``.

        The fast path (about 30 numpy operations whatever the number of elements), no argument
        checks; elements with ``bits == 0`` take 0 s.
        """
        P = h.P
        pos = np.remainder(start_s, P)
        ir = np.minimum(self._tglob.searchsorted(h.tb + pos, side="right"), h.e)
        c0 = self._eloc_prev[ir] + self._rate_prev[ir] * (pos - self._tloc_prev[ir])  # bits since period start
        rel = c0 + bits
        laps1 = np.ceil(rel * h.invQ)  # whole periods to skip, plus one, so the remainder is in (0, Q]
        target = (h.base + rel) - (laps1 * h.Q - h.Q)  # flat-array cumulative value to reach
        jr = self._eglob.searchsorted(target)
        jr = np.minimum(np.maximum(jr, h.s1), h.e)  # the bin where it is reached, plus one
        end = self._tloc_prev[jr] + (target - self._eglob_prev[jr]) * self._inv_prev[jr]
        out = (laps1 * P - P) + end - pos
        return np.maximum(out, h.zeros)

    # -- general, checked queries

    def rate_at(self, k: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """Rate (bits/s, unscaled) of trace ``k`` at time ``t_s`` (wrapping)."""
        k, t = np.broadcast_arrays(np.asarray(k, dtype=np.intp), np.asarray(t_s, dtype=np.float64))
        h = self.handle(k)
        pos = np.remainder(t, h.P)
        ir = np.minimum(np.maximum(self._tglob.searchsorted(h.tb + pos, side="right"), h.s1), h.e)
        return self._rate_prev[ir]

    def bits_between(self, k: np.ndarray, start_s: np.ndarray | float, end_s: np.ndarray | float) -> np.ndarray:
        """Bits (unscaled) trace ``k`` delivers between ``start_s`` and ``end_s``."""
        k, a, b = np.broadcast_arrays(np.asarray(k, dtype=np.intp), np.asarray(start_s, dtype=np.float64),
                                      np.asarray(end_s, dtype=np.float64))
        h = self.handle(k)
        return self.cumulative_h(h, b) - self.cumulative_h(h, a)

    def mean_rate(self, k: np.ndarray, start_s: np.ndarray | float, duration_s: np.ndarray | float) -> np.ndarray:
        """Average rate (unscaled) of trace ``k`` over ``[start_s, start_s + duration_s)``."""
        d = np.asarray(duration_s, dtype=np.float64)
        return self.bits_between(k, start_s, np.asarray(start_s) + d) / d

    def transfer_time(self, k: np.ndarray, bits: np.ndarray | float, start_s: np.ndarray | float,
                      scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Seconds to send ``bits`` from ``start_s`` at ``scale`` times trace ``k`` (vectorised).

        ``bits <= 0`` takes 0 s; a zero ``scale`` or infinite ``bits`` with bits to send takes
        ``inf``; NaN arguments raise :class:`TraceError`.
        """
        k, b, t, sc = np.broadcast_arrays(np.asarray(k, dtype=np.intp), np.asarray(bits, dtype=np.float64),
                                          np.asarray(start_s, dtype=np.float64),
                                          np.asarray(scale, dtype=np.float64))
        if np.isnan(b).any() or np.isnan(t).any() or np.isnan(sc).any():
            raise TraceError("transfer_time: bits, start_s and scale must not be NaN")
        if (sc < 0).any():
            raise TraceError("transfer_time: scale must be >= 0")
        if not np.isfinite(t).all():
            raise TraceError("transfer_time: start_s must be finite")
        todo = b > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            units = np.where(todo, b / np.where(sc > 0, sc, 1.0), 0.0)
        dead = todo & (~(sc > 0) | ~np.isfinite(units))
        units = np.where(dead, 0.0, units)
        out = self.transfer_time_h(self.handle(k), units, t)
        out = np.where(dead, np.inf, out)
        return out


# ----------------------------------------------------------------------------- parsing and loading


def _data_lines(text: str) -> list[tuple[int, str]]:
    return [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1)
            if ln.strip() and not ln.lstrip().startswith("#")]


def _bad_line(name: str, lines: list[tuple[int, str]], ncols: int, what: str) -> TraceError:
    for n, ln in lines:
        parts = ln.split()
        if len(parts) < ncols:
            return TraceError(f"{name}: line {n}: expected {what}, got {ln!r}")
        try:
            vals = [float(x) for x in parts[:ncols]]
        except ValueError:
            return TraceError(f"{name}: line {n}: not a number in {ln!r}")
        if not all(math.isfinite(v) for v in vals):
            return TraceError(f"{name}: line {n}: not a finite number in {ln!r}")
    return TraceError(f"{name}: malformed trace")


def parse_pensieve(text: str, name: str = "trace") -> Trace:
    """Parse Pensieve lines ``time_s throughput_mbps`` (tab or spaces; extra columns ignored)."""
    lines = _data_lines(text)
    if not lines:
        raise TraceError(f"{name}: empty trace file")
    try:
        if all(len(ln.split()) == 2 for _, ln in lines):  # the usual two columns: one conversion
            rows = np.array(" ".join(ln for _, ln in lines).split(), dtype=np.float64).reshape(-1, 2)
        else:
            rows = np.array([[float(x) for x in ln.split()[:2]] for _, ln in lines], dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 2 or not np.isfinite(rows).all():
            raise ValueError
    except (ValueError, IndexError):
        raise _bad_line(name, lines, 2, "'time_s throughput_mbps'") from None
    t, mbps = rows[:, 0], rows[:, 1]
    if np.abs(rows).max() > 1e12:
        j = int(np.argmax(np.abs(rows).max(axis=1) > 1e12))  # the first line out of range
        raise TraceError(f"{name}: line {lines[j][0]}: value out of range (|x| <= 1e12 allowed) in {lines[j][1]!r}")
    d = np.diff(t)
    if (d <= 0).any():
        j = int(np.flatnonzero(d <= 0)[0]) + 1
        raise TraceError(f"{name}: line {lines[j][0]}: time {t[j]!r} does not increase (previous {t[j - 1]!r})")
    if (mbps < 0).any():
        j = int(np.flatnonzero(mbps < 0)[0])
        raise TraceError(f"{name}: line {lines[j][0]}: throughput must be >= 0, got {mbps[j]!r}")
    last = float(np.median(d)) if d.size else 1.0
    t = t - t[0]
    return Trace(name, t, mbps * 1e6, float(t[-1] + last))


def parse_mahimahi(text: str, name: str = "trace", bin_s: float = 1.0) -> Trace:
    """Parse Mahimahi lines (ms timestamps of 1500-byte delivery opportunities) into ``bin_s`` bins."""
    if not (bin_s > 0 and math.isfinite(bin_s)):
        raise TraceError(f"bin_s: must be a positive number, got {bin_s!r}")
    lines = _data_lines(text)
    if not lines:
        raise TraceError(f"{name}: empty trace file")
    try:
        ms = np.array([int(ln) for _, ln in lines], dtype=np.int64)
    except OverflowError:
        raise TraceError(f"{name}: a timestamp is too large (timestamps are ms since the start)") from None
    except ValueError:
        for n, ln in lines:
            try:
                int(ln)
            except ValueError:
                raise TraceError(f"{name}: line {n}: expected one integer timestamp in ms, got {ln!r}") from None
        raise
    if (ms < 0).any():
        j = int(np.flatnonzero(ms < 0)[0])
        raise TraceError(f"{name}: line {lines[j][0]}: timestamp must be >= 0, got {ms[j]}")
    if (np.diff(ms) < 0).any():
        j = int(np.flatnonzero(np.diff(ms) < 0)[0]) + 1
        raise TraceError(f"{name}: line {lines[j][0]}: timestamps must not decrease ({ms[j]} after {ms[j - 1]})")
    period = float(ms[-1]) / 1000.0
    if period <= 0:
        raise TraceError(f"{name}: the last timestamp must be > 0 ms (it is the trace's period)")
    if period > MAX_TRACE_S or period / bin_s > MAX_BINS:
        raise TraceError(f"{name}: the last timestamp {int(ms[-1])} ms makes a trace of {period:.4g} s in "
                         f"{period / bin_s:.4g} bins of {bin_s} s; at most {MAX_TRACE_S:.0e} s and "
                         f"{MAX_BINS:.0e} bins are allowed (timestamps must be in ms)")
    n_bins = max(1, int(math.ceil(period / bin_s - 1e-9)))
    idx = np.minimum((ms / 1000.0 / bin_s).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    starts = np.arange(n_bins, dtype=np.float64) * bin_s
    lengths = np.diff(np.append(starts, period))
    return Trace(name, starts, counts * MAHIMAHI_PACKET_BITS / lengths, period)


def detect_format(text: str) -> str:
    """``"pensieve"`` (two or more numeric columns) or ``"mahimahi"`` (one integer column)."""
    lines = _data_lines(text)
    if not lines:
        return "empty"
    ncols = len(lines[0][1].split())
    if ncols >= 2:
        return "pensieve"
    return "mahimahi"


def parse_trace(text: str, name: str = "trace", fmt: str = "auto", bin_s: float = 1.0) -> Trace:
    """Parse trace text in ``fmt`` (``auto``, ``pensieve`` or ``mahimahi``)."""
    if fmt == "auto":
        fmt = detect_format(text)
        if fmt == "empty":
            raise TraceError(f"{name}: empty trace file")
    if fmt == "pensieve":
        return parse_pensieve(text, name)
    if fmt == "mahimahi":
        return parse_mahimahi(text, name, bin_s)
    raise TraceError(f"fmt: must be 'auto', 'pensieve' or 'mahimahi', got {fmt!r}")


def load_trace(path: str | Path, fmt: str = "auto", bin_s: float = 1.0) -> Trace:
    """Read one trace file (format auto-detected); the trace is named after the file."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text trace file") from None
    return parse_trace(text, name=str(path), fmt=fmt, bin_s=bin_s)


def _expand(spec: str | Path) -> list[Path]:
    p = Path(spec)
    if p.is_dir():
        files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in sorted(_glob.glob(str(spec))) if Path(f).is_file()]
    return files


def load_traces(folder_or_glob: str | Path | Iterable[str | Path], fmt: str = "auto",
                bin_s: float = 1.0) -> list[Trace]:
    """Load every trace in a folder, a glob pattern, a file, or a list of those (sorted by path)."""
    specs = [folder_or_glob] if isinstance(folder_or_glob, (str, Path)) else list(folder_or_glob)
    files: list[Path] = []
    for spec in specs:
        found = _expand(spec)
        if not found:
            raise TraceError(f"traces: no trace files found at {str(spec)!r}")
        files.extend(found)
    return [load_trace(f, fmt=fmt, bin_s=bin_s) for f in files]


@lru_cache(maxsize=8)
def _cached_traceset(spec: str, fmt: str, bin_s: float) -> TraceSet:
    return TraceSet(load_traces(spec, fmt=fmt, bin_s=bin_s))


def load_traceset(folder_or_glob: str | Path, fmt: str = "auto", bin_s: float = 1.0) -> TraceSet:
    """:func:`load_traces` into a :class:`TraceSet`, cached per (path, format, bin) in this process."""
    return _cached_traceset(str(folder_or_glob), fmt, float(bin_s))


# ----------------------------------------------------------------------------- synthetic traces


# Gilbert-Elliott chain with three states (good, bad, outage); per-step transition probabilities.
_GE_TRANSITIONS = np.array([
    [0.960, 0.035, 0.005],  # good -> good, bad, outage
    [0.120, 0.860, 0.020],  # bad
    [0.350, 0.150, 0.500],  # outage: mean length 2 steps
])
_GE_LEVEL = np.array([1.0, 0.3, 0.0])  # relative rate in each state


def synthetic_trace(rng: np.random.Generator, duration_s: float = 900.0, step_s: float = 1.0,
                    mean_mbps: float = 1.3, name: str = "synthetic") -> Trace:
    """One Gilbert-Elliott trace: good/bad/outage states, log-normal AR(1) jitter, rescaled to ``mean_mbps``."""
    n = max(2, int(round(duration_s / step_s)))
    u = rng.uniform(size=n).tolist()
    noise = (rng.normal(0.0, 1.0, size=n) * (0.6 * math.sqrt(1 - 0.8**2))).tolist()
    cum = np.cumsum(_GE_TRANSITIONS, axis=1).tolist()
    state = [0] * n
    jitter = [1.0] * n
    s, x = 0, 0.0
    for i in range(n):  # ~1000 steps per trace, once per trace set: a plain loop is fast enough
        c = cum[s]
        s = 0 if u[i] < c[0] else (1 if u[i] < c[1] else 2)
        state[i] = s
        x = 0.8 * x + noise[i]  # AR(1) in log space, stationary std 0.6
        jitter[i] = math.exp(x)
    state = np.asarray(state, dtype=np.intp)
    jitter = np.asarray(jitter)
    rate = _GE_LEVEL[state] * jitter
    if not (rate > 0).any():
        rate[0] = 1.0
    rate *= mean_mbps / rate.mean()
    return Trace(name, np.arange(n) * step_s, rate * 1e6, n * step_s)


def synthetic_traces(n_traces: int = 32, duration_s: float = 900.0, step_s: float = 1.0,
                     mean_mbps: float = 1.3, seed: int = 0) -> list[Trace]:
    """A seeded default trace set: per-trace means log-normal around ``mean_mbps`` (spread like
    Pensieve's, about 0.2-4 Mbit/s), each trace a Gilbert-Elliott chain with ~2-4 % outage time."""
    if n_traces < 1:
        raise TraceError(f"n_traces: must be >= 1, got {n_traces!r}")
    rng = np.random.default_rng(seed)
    means = np.clip(mean_mbps * np.exp(rng.normal(-0.125, 0.5, n_traces)), 0.15, 4.0)
    return [synthetic_trace(rng, duration_s, step_s, float(m), name=f"synthetic-{seed}-{i:03d}")
            for i, m in enumerate(means)]


@lru_cache(maxsize=4)
def default_traceset(seed: int = 0) -> TraceSet:
    """The built-in synthetic :class:`TraceSet` (32 traces of 15 min, 1 s bins), cached."""
    return TraceSet(synthetic_traces(seed=seed))


# ----------------------------------------------------------------------------- trace families


PENSIEVE_FAMILIES: dict[str, str] = {"trace_": "fcc", "bus.": "hsdpa", "car.": "hsdpa", "ferry.": "hsdpa",
                                     "metro.": "hsdpa", "train.": "hsdpa", "tram.": "hsdpa"}
"""File-name prefixes of the Pensieve traces: FCC broadband (``trace_<id>_http---<site>``) and the
Norway HSDPA 3G logs (``<vehicle>.<route>-report.<date>.log``); both sit in one folder."""


def family_of_file(path: str | Path, default: str | None = None) -> str:
    """The family a trace file belongs to: ``fcc`` or ``hsdpa`` for Pensieve's files (by name),
    ``synthetic`` for the built-in set, else ``default`` (the folder's name when ``None``)."""
    p = Path(path)
    base = p.name
    if base.startswith("synthetic"):
        return "synthetic"
    for prefix, fam in PENSIEVE_FAMILIES.items():
        if base.startswith(prefix):
            return fam
    return default if default is not None else (p.parent.name or "traces")


@dataclass(frozen=True, eq=False)
class TraceFamily:
    """A named family of traces of one kind of link (e.g. ``hsdpa``, ``conext23-att``).

    ``mean_bps`` is the family's long-run rate, ``sum(bits) / sum(seconds)`` over its traces: the
    rate a link that plays one trace of the family after another, drawn uniformly, has in the long
    run. A device of link class ``rate_bps`` on this family is scaled by ``rate_bps / mean_bps``
    (the same factor for every trace of the family, so a device's true mean rate differs from its
    nominal one as real links differ from their class).
    """

    name: str
    traces: tuple[Trace, ...]
    #: the family's long-run rate when ``traces`` is a part of it (:func:`split_families`): the mean
    #: of the WHOLE family, so the scaling of a held-out part never reflects its own traces' means
    full_mean_bps: float | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.name:
            raise TraceError("family: the name must not be empty")
        traces = tuple(self.traces)
        if not traces:
            raise TraceError(f"family {self.name!r}: needs at least one trace")
        if not all(isinstance(t, Trace) for t in traces):
            raise TraceError(f"family {self.name!r}: expected Trace objects")
        object.__setattr__(self, "traces", traces)
        if self.full_mean_bps is not None:
            m = float(self.full_mean_bps)
            if not (math.isfinite(m) and m > 0):
                raise TraceError(f"family {self.name!r}: full_mean_bps must be a finite rate > 0, got {m}")
            object.__setattr__(self, "full_mean_bps", m)

    def __len__(self) -> int:
        return len(self.traces)

    @property
    def mean_bps(self) -> float:
        """Long-run rate of the family: total bits over total seconds of its traces (or
        ``full_mean_bps``, the whole family's, when this is a part of it)."""
        if self.full_mean_bps is not None:
            return self.full_mean_bps
        return float(sum(t.total_bits for t in self.traces) / sum(t.period_s for t in self.traces))

    @property
    def names(self) -> list[str]:
        """The traces' names."""
        return [t.name for t in self.traces]


def group_families(traces: Sequence[Trace], default: str | None = None) -> list[TraceFamily]:
    """Traces grouped into families by :func:`family_of_file` of their names (sorted by family name;
    traces keep their order)."""
    groups: dict[str, list[Trace]] = {}
    for t in traces:
        groups.setdefault(family_of_file(t.name, default), []).append(t)
    return [TraceFamily(name, tuple(groups[name])) for name in sorted(groups)]


def load_families(specs: str | Path | Iterable[str | Path], fmt: str = "auto", bin_s: float = 1.0) -> list[TraceFamily]:
    """Trace families from one or several folders (globs, files): a folder is a family, except that
    Pensieve's folder holds two (FCC and Norway HSDPA, told apart by file name: :func:`family_of_file`).
    Families of the same name from different folders are merged."""
    specs_l = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs_l:
        raise TraceError("traces: no folder given")
    merged: dict[str, list[Trace]] = {}
    for spec in specs_l:
        p = Path(spec)
        default = p.name if p.is_dir() else (p.parent.name or "traces")
        for fam in group_families(load_traces(spec, fmt=fmt, bin_s=bin_s), default):
            merged.setdefault(fam.name, []).extend(fam.traces)
    return [TraceFamily(name, tuple(merged[name])) for name in sorted(merged)]


@lru_cache(maxsize=1)
def default_families() -> tuple[TraceFamily, ...]:
    """The offline default: the built-in synthetic traces as one family ``synthetic``."""
    return (TraceFamily("synthetic", default_traceset().traces),)


MIN_SPLIT_SIDE = 2
"""Fewest traces of a family on each side of a :func:`split_traces` split (a v1 device that reaches
the end of its trace continues on ANOTHER trace of its family, so a family needs 2)."""


def split_traces(traces: Sequence[Trace], split: str, test_fraction: float = 0.3, seed: int = 0) -> list[Trace]:
    """The ``train``, ``test`` or ``all`` part of ``traces``: per family (:func:`family_of_file`), a
    seeded permutation of the traces sorted by base name; the first ``round(test_fraction * n)``
    (clamped so that each side keeps at least :data:`MIN_SPLIT_SIDE` = 2 traces) are ``test``, the
    rest ``train``. Deterministic, and disjoint by construction for a family of 4 or more traces.
    Fallback: a family of fewer than 4 traces cannot give 2 to each side, so it is left WHOLE on both
    sides (train and test then share its traces; hold out whole families to judge on unseen links).
    (Within-family splits; for judging on unseen link kinds, hold out whole families instead.)"""
    if split not in ("train", "test", "all"):
        raise ValueError(f"trace_split: must be train, test or all, got {split!r}")
    if split == "all":
        return list(traces)
    families: dict[str, list[Trace]] = {}
    for t in sorted(traces, key=lambda t: Path(t.name).name):
        families.setdefault(family_of_file(t.name, "traces"), []).append(t)
    out: list[Trace] = []
    rng = np.random.default_rng(seed)
    for fam in sorted(families):
        group = families[fam]
        perm = rng.permutation(len(group))
        if len(group) < 2 * MIN_SPLIT_SIDE:  # documented fallback: the family whole on both sides
            out.extend(group)
            continue
        n_test = int(round(test_fraction * len(group)))
        n_test = min(max(n_test, MIN_SPLIT_SIDE), len(group) - MIN_SPLIT_SIDE)
        test_idx = set(perm[:n_test].tolist())
        out.extend(t for j, t in enumerate(group) if (j in test_idx) == (split == "test"))
    if not out:
        raise ValueError(f"trace_split: the {split!r} part of {len(traces)} traces is empty")
    return out


def split_families(families: Sequence[TraceFamily], split: str, test_fraction: float = 0.3,
                   seed: int = 0) -> list[TraceFamily]:
    """:func:`split_traces` of every family, each part carrying its WHOLE family's mean rate
    (``full_mean_bps``, computed before splitting) so a part is scaled like the family it comes from."""
    if split == "all":
        return list(families)
    return [TraceFamily(f.name, tuple(split_traces(f.traces, split, test_fraction, seed)), full_mean_bps=f.mean_bps)
            for f in families]


def load_trace_list(traces: str | Path | None, split: str = "all") -> list[Trace]:
    """Traces from a folder or glob (``None``: the built-in synthetic set), then :func:`split_traces`."""
    found = list(default_traceset().traces) if traces is None else load_traces(traces)
    return split_traces(found, split)


def load_family_split(traces: str | Path | Sequence[str | Path] | None, split: str = "all") -> list[TraceFamily]:
    """Families from folder(s) (``None``: the built-in synthetic family), then :func:`split_families`:
    each part keeps its WHOLE family's mean (what ``EdgeSplitDynamic-v1`` scales by)."""
    whole = list(default_families()) if traces is None else load_families(traces)
    return split_families(whole, split)


def builtin_trace_dir(name: str = "pensieve") -> Path:
    """The folder of a set of traces shipped with the package (``pensieve``: 5 FCC + 4 Norway HSDPA
    traces of the Pensieve project, MIT licence; see ``edgesplit/data/traces/README.md``)."""
    p = Path(__file__).resolve().parent / "data" / "traces" / name
    if not p.is_dir():
        raise TraceError(f"traces: no built-in trace set {name!r} at {p}")
    return p
