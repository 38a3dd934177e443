"""Emulated compute speed: a device of speed ``s`` computes, then waits, so that its compute takes
``1/s`` times as long as measured on this host.

Two clocks measure "as long as measured":

``cpu`` (default)
    the CPU time of the computing thread (``time.thread_time``). Every worker runs torch with
    one intra-op thread and autograd runs CPU backward on the calling thread, so this is the time
    the compute would take on this host alone. The target is ``cpu / s`` of wall time from the
    start of the compute; time lost to other processes on a busy host (five processes share two
    cores here) is absorbed by the wait instead of being multiplied by ``1/s``.
``wall``
    the wall time of the compute; the target is ``wall / s``. Literal, but on a shared host the
    contention is stretched along with the compute.

``profile``
    the calibrated profile's time for the block (per-sample ``fwd_s``/``bwd_s`` of the units it
    runs, times the batch); the target is ``profile / s``. The real compute still runs (the
    numbers are real) but its duration no longer depends on the host's load: on a virtual machine
    whose two vCPUs are shared with other work even CPU time is inflated (a busy sibling
    hyperthread, steal time accounted as run time), so this is the clock for checking the cost
    model on a shared host.

If the compute already took longer (in wall time) than the target, there is no wait: a speed
above what the host delivers cannot be emulated (``late_s`` records by how much it overran).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from edgesplit.errors import EdgeSplitError

CLOCKS = ("cpu", "wall", "profile")


@dataclass
class ComputeEmulator:
    """Stretches compute blocks to ``1/speed`` of their measured time; keeps running totals."""

    speed: float
    clock: str = "cpu"
    measured_s: float = 0.0  # host compute by the chosen clock (the profile's seconds for "profile")
    target_s: float = 0.0  # what the compute was stretched to (measured / speed, or the own profile's)
    cpu_s: float = 0.0  # CPU time of the compute (always recorded)
    wall_s: float = 0.0  # wall time of the compute itself
    waited_s: float = 0.0  # emulation waits
    late_s: float = 0.0  # how far compute overran its target (could not be emulated)
    blocks: int = 0
    sync: Callable[[], None] | None = None  # waits for queued accelerator work (a GPU computes asynchronously)

    def __post_init__(self) -> None:
        if not (self.speed > 0) or math.isinf(self.speed) or math.isnan(self.speed):
            raise EdgeSplitError(f"speed: must be a finite number > 0, got {self.speed!r}")
        if self.clock not in CLOCKS:
            raise EdgeSplitError(f"emulation clock: must be one of {', '.join(CLOCKS)}, got {self.clock!r}")

    @contextmanager
    def compute(self, profile_s: float | None = None, own_s: float | None = None) -> Iterator[None]:
        """Run the block, then wait until ``measured / speed`` seconds have passed since it began
        (``profile_s / speed`` with the ``profile`` clock, which needs ``profile_s``).

        ``own_s``: the block's time on the emulated hardware from its own per-layer profile (a
        device class measured layer by layer). It replaces the one ``speed``: the target is
        ``own_s`` with the ``profile`` clock and ``measured * own_s / profile_s`` with the others
        (this host's measured time, stretched by the hardware's own ratio for exactly these layers)."""
        if own_s is not None and not (own_s >= 0 and math.isfinite(own_s)):
            raise EdgeSplitError(f"emulation: own_s must be a finite number >= 0, got {own_s!r}")
        if own_s is not None and self.clock != "profile" and not profile_s:
            raise EdgeSplitError("emulation: an own per-layer time needs the host profile's time of the block")
        if self.clock == "profile" and profile_s is None:
            raise EdgeSplitError("emulation: the profile clock needs the block's profiled seconds")
        w0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            w1 = time.perf_counter()
            c1 = time.thread_time()
            if self.clock == "profile":
                measured = float(profile_s) if profile_s is not None else float(own_s)  # type: ignore[arg-type]
            else:
                measured = (c1 - c0) if self.clock == "cpu" else (w1 - w0)
            if own_s is None:
                target = measured / self.speed
            elif self.clock == "profile":
                target = float(own_s)
            else:
                target = measured * float(own_s) / float(profile_s)  # type: ignore[arg-type]
            self.target_s += target
            self.measured_s += measured
            self.cpu_s += c1 - c0
            self.wall_s += w1 - w0
            self.blocks += 1
            wait = target - (w1 - w0)
            if wait > 0:
                pause_until(w0 + target)
                self.waited_s += wait
            else:
                self.late_s += -wait

    def reset(self) -> None:
        """Zero the running totals (e.g. at the start of a round)."""
        self.measured_s = self.target_s = self.cpu_s = self.wall_s = self.waited_s = self.late_s = 0.0
        self.blocks = 0


def pause_until(deadline: float) -> None:
    """Sleep until ``time.perf_counter()`` reaches ``deadline``."""
    while True:
        rest = deadline - time.perf_counter()
        if rest <= 0:
            return
        time.sleep(rest)
