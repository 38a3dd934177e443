"""Token bucket: emulate a link of a given rate by making the sender (and receiver) wait.

A device's link share is ``share * rate_bps``. The cost model charges a device's traffic in both
directions to that one rate (``V_i / (beta_i r_i)`` adds activations up, gradients down and the
weights both ways), so each device holds **one** bucket for its sends and its receives: a
half-duplex link. Before a send the device pays for the bytes (and waits if the bucket is short);
after a receive it pays for the bytes that just arrived, which delays it exactly as if they had
come in at the link rate.

The bucket runs in debt: paying ``n`` bytes with ``t`` tokens in the bucket waits
``(n - t) / rate`` seconds. ``burst_bytes`` caps how many tokens an idle link saves up; the
default, one Ethernet MTU, makes the link a near-constant-rate pipe like the cost model's.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from edgesplit.errors import EdgeSplitError

DEFAULT_BURST_BYTES = 1500.0


class TokenBucket:
    """A thread-safe token bucket of ``rate_bytes_per_s`` bytes per second, ``burst_bytes`` deep.

    ``clock`` and ``sleep`` may be replaced (tests use a fake clock). ``rate_bytes_per_s = inf``
    never waits.
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float = DEFAULT_BURST_BYTES,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (rate_bytes_per_s > 0) or math.isnan(rate_bytes_per_s):
            raise EdgeSplitError(f"rate: a token bucket needs a rate > 0 bytes/s, got {rate_bytes_per_s!r}")
        if not (burst_bytes >= 0) or math.isinf(burst_bytes):
            raise EdgeSplitError(f"burst_bytes: must be a finite number >= 0, got {burst_bytes!r}")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst_bytes)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self.bytes_paid = 0
        self.waited_s = 0.0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self, nbytes: int) -> float:
        """Pay for ``nbytes`` and return how long the caller must wait (it does not sleep)."""
        if nbytes < 0:
            raise EdgeSplitError(f"nbytes: must be >= 0, got {nbytes}")
        with self._lock:
            self.bytes_paid += int(nbytes)
            if math.isinf(self.rate):
                return 0.0
            self._refill(self._clock())
            self._tokens -= nbytes
            return max(0.0, -self._tokens / self.rate)

    def consume(self, nbytes: int) -> float:
        """Pay for ``nbytes``, sleep until the link has carried them, return the seconds waited."""
        wait = self.reserve(nbytes)
        if wait > 0:
            deadline = self._clock() + wait
            self._sleep(wait)
            # sleep may return a little early on some platforms: top up to the deadline
            rest = deadline - self._clock()
            if rest > 0:
                self._sleep(rest)
        with self._lock:
            self.waited_s += wait
        return wait

    def seconds_for(self, nbytes: int) -> float:
        """Seconds the link needs for ``nbytes`` at its rate (ignoring the burst)."""
        return 0.0 if math.isinf(self.rate) else nbytes / self.rate
