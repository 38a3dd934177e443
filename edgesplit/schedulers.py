"""Schedulers: choose a cut and a bandwidth share per device. One interface for all.

``get_scheduler(name).plan(scenario_or_costmodel) -> Plan``. The names (DESIGN.md):

=========================  ===========================================  ==============
name                       cuts                                         shares
=========================  ===========================================  ==============
``alternating``            the paper's alternating algorithm            optimal
``exact``                  global optimum (bisection on the round time) optimal
``fl``                     all L (whole model on the device)            equal
``sl``                     best single cut, devices one after another   1 (each, in turn)
``psl``                    best single cut for all                      equal
``psl-fixed``              a conventional cut after the first block     equal
``edgesplit-cuts-equal-bw`` alternating's cuts                          equal
``per-device-cuts-equal-bw`` each device's best cut for equal shares      equal
``uniform-cut-opt-bw``     best single cut                              optimal
``random``                 random feasible                              random (Dirichlet)
=========================  ===========================================  ==============

Every scheduler accepts ``seed=`` (only ``random`` uses it), so callers never special-case a name.
Devices may carry their own per-layer profiles: the schedulers only see the cost model's arrays
``A[i, c]`` and ``V[i, c]``, so ``exact`` stays the global optimum and ``alternating`` the paper's
algorithm whatever the per-device times are.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgesplit.costmodel import CostModel, optimal_shares, optimal_shares_batch, round_time_of, transfer_seconds
from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario


@dataclass
class Plan:
    """A schedule and its cost. Cuts are layers on each device (1..L)."""

    scheduler: str
    cuts: np.ndarray
    shares: np.ndarray
    round_time_s: float
    per_device_time_s: np.ndarray
    solve_time_s: float = 0.0
    feasible: bool = True
    sequential: bool = False
    iterations: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, strict JSON: infinite (or undefined) times become ``null`` and the
        note says so."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        note = self.note
        if not math.isfinite(self.round_time_s) or not np.isfinite(self.per_device_time_s).all():
            extra = "null times are infinite: a device never finishes (no link, no share, or no feasible plan)"
            note = f"{note}; {extra}" if note else extra
        return {
            "scheduler": self.scheduler,
            "round_time_s": num(self.round_time_s),
            "cuts": [int(c) for c in self.cuts],
            "shares": [num(b) for b in self.shares],
            "per_device_time_s": [num(t) for t in self.per_device_time_s],
            "solve_time_s": float(self.solve_time_s),
            "feasible": bool(self.feasible),
            "sequential": bool(self.sequential),
            "iterations": int(self.iterations),
            "note": note,
        }


# ----------------------------------------------------------------------------- helpers


def best_cuts_for_shares(cm: CostModel, shares: np.ndarray) -> np.ndarray:
    """Per device, the feasible cut minimising its own time with the given shares."""
    v = cm.seconds_alone()
    s = np.asarray(shares, dtype=np.float64)
    if s.min() > 0:  # hot path: every device has band
        t = cm.compute_s + v / s[:, None]
    else:
        t = cm.compute_s + transfer_seconds(v, np.broadcast_to(s[:, None], v.shape))
    t[~cm.feasible] = np.inf
    return np.argmin(t, axis=1) + 1


def common_feasible_cuts(cm: CostModel) -> np.ndarray:
    """Cuts (1..L) that fit every device's memory."""
    return np.flatnonzero(cm.feasible.all(axis=0)) + 1


def conventional_cut(profile: LayerProfile) -> int:
    """The cut 'after the first block' used by ``psl-fixed``: the first pooling unit, else 1."""
    for i, name in enumerate(profile.names):
        if "pool" in name.lower():
            return i + 1
    return 1


def equal_shares(n: int) -> np.ndarray:
    """``1/N`` each."""
    return np.full(n, 1.0 / n)


# ----------------------------------------------------------------------------- schedulers


def _alternating(cm: CostModel, max_iter: int = 50) -> tuple[np.ndarray, np.ndarray, dict]:
    """EdgeSplit's alternating algorithm: start from equal shares; alternate best cuts for the
    shares and optimal shares for the cuts until the cuts stop changing. Keeps the best plan
    seen (guards against a cycle)."""
    shares = equal_shares(cm.n_devices)
    cuts = best_cuts_for_shares(cm, shares)
    best = (math.inf, cuts, shares)
    it = 0
    for it in range(1, max_iter + 1):
        a, v = cm.select(cuts)
        shares, T = optimal_shares(a, v, cm.rate_bps)
        if T < best[0]:
            best = (T, cuts, shares)
        new_cuts = best_cuts_for_shares(cm, shares)
        if np.array_equal(new_cuts, cuts):
            break
        cuts = new_cuts
    return best[1], best[2], {"iterations": it}


def _exact(cm: CostModel, rtol: float = 1e-13) -> tuple[np.ndarray, np.ndarray, dict]:
    """Global optimum: ``T`` is feasible iff ``sum_i min_c v_ic / (T - A_ic) <= 1`` over the
    feasible cuts with ``A_ic < T``. Bisection on ``T``, then optimal shares for the cuts
    chosen at the feasible end."""
    A = cm.compute_s
    v = cm.seconds_alone()
    feas = cm.feasible & np.isfinite(v)
    n = cm.n_devices
    if not feas.any(axis=1).all():  # some device cannot finish at all (zero rate)
        cuts = np.argmin(np.where(cm.feasible, A, np.inf), axis=1) + 1
        return cuts, equal_shares(n), {"iterations": 0, "note": "a device with traffic has rate 0"}
    alone = np.where(feas, A + v, np.inf)
    lo = float(np.max(np.min(alone, axis=1)))  # no device can beat its whole-band time
    hi = float(np.max(np.min(np.where(feas, A + n * v, np.inf), axis=1)))  # equal shares work
    no_traffic = v == 0

    def demand(T: float) -> tuple[float, np.ndarray]:
        gap = T - A
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(gap > 0, v / gap, np.inf)
        d = np.where(no_traffic & (gap >= 0), 0.0, d)
        d[~feas] = np.inf
        return float(np.min(d, axis=1).sum()), d

    it = 0
    if demand(lo)[0] <= 1.0:
        hi = lo
    else:
        while hi - lo > rtol * hi and it < 200:
            mid = 0.5 * (lo + hi)
            if demand(mid)[0] <= 1.0:
                hi = mid
            else:
                lo = mid
            it += 1
    cuts = np.argmin(demand(hi)[1], axis=1) + 1
    a, vb = cm.select(cuts)
    shares, _ = optimal_shares(a, vb, cm.rate_bps)
    return cuts, shares, {"iterations": it}


def _fl(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    L = cm.n_layers
    cuts = np.full(cm.n_devices, L)
    short = np.flatnonzero(~cm.feasible[:, L - 1])
    extra: dict = {}
    if short.size:
        extra = {"feasible": False, "note": f"whole model does not fit devices {short.tolist()}"}
    return cuts, equal_shares(cm.n_devices), extra


def _sl(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    cands = common_feasible_cuts(cm)
    v = cm.seconds_alone()
    totals = (cm.compute_s + v)[:, cands - 1].sum(axis=0)
    c = int(cands[int(np.argmin(totals))])
    return np.full(cm.n_devices, c), np.ones(cm.n_devices), {"sequential": True}


def _psl(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    cands = common_feasible_cuts(cm)
    n = cm.n_devices
    v = cm.seconds_alone()
    t = (cm.compute_s + n * v)[:, cands - 1].max(axis=0)
    c = int(cands[int(np.argmin(t))])
    return np.full(n, c), equal_shares(n), {}


def _psl_fixed(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    c = conventional_cut(cm.scenario.profile)
    deepest = cm.deepest_feasible_cut()
    cuts = np.minimum(c, deepest)
    extra = {}
    if (cuts < c).any():
        extra["note"] = f"cut {c} does not fit devices {np.flatnonzero(cuts < c).tolist()}: used their deepest"
    return cuts, equal_shares(cm.n_devices), extra


def _cuts_equal_bw(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    cuts, _, info = _alternating(cm)
    return cuts, equal_shares(cm.n_devices), info


def _per_device_cuts_equal_bw(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-device cuts alone: with the shares fixed at ``1/N``, every device takes the cut that
    minimises its own time, which minimises the round time over all per-device cuts."""
    shares = equal_shares(cm.n_devices)
    return best_cuts_for_shares(cm, shares), shares, {}


def _uniform_cut_opt_bw(cm: CostModel) -> tuple[np.ndarray, np.ndarray, dict]:
    cands = common_feasible_cuts(cm)
    a = cm.compute_s[:, cands - 1].T
    vb = cm.traffic_bits[:, cands - 1].T
    T = optimal_shares_batch(a, vb, cm.rate_bps[None, :])
    c = int(cands[int(np.argmin(T))])
    cuts = np.full(cm.n_devices, c)
    a1, v1 = cm.select(cuts)
    shares, _ = optimal_shares(a1, v1, cm.rate_bps)
    return cuts, shares, {}


def _random(cm: CostModel, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    cuts = np.array([rng.choice(np.flatnonzero(row)) + 1 for row in cm.feasible])
    return cuts, rng.dirichlet(np.ones(cm.n_devices)), {}


_REGISTRY: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, dict]]] = {
    "alternating": _alternating,
    "exact": _exact,
    "fl": _fl,
    "sl": _sl,
    "psl": _psl,
    "psl-fixed": _psl_fixed,
    "edgesplit-cuts-equal-bw": _cuts_equal_bw,
    "per-device-cuts-equal-bw": _per_device_cuts_equal_bw,
    "uniform-cut-opt-bw": _uniform_cut_opt_bw,
    "random": _random,
}

SCHEDULERS: tuple[str, ...] = tuple(_REGISTRY)
SEEDED: frozenset[str] = frozenset({"random"})
"""The schedulers whose plan depends on ``seed``."""
BASELINES: tuple[str, ...] = tuple(n for n in SCHEDULERS if n not in ("alternating", "exact"))


def evaluate_plan(cm: CostModel, cuts: np.ndarray, shares: np.ndarray,
                  sequential: bool = False) -> tuple[float, np.ndarray]:
    """Round time and per-device times of a plan, computed from scratch by the cost model."""
    per = cm.device_times(np.asarray(cuts, dtype=np.int64), shares)
    return round_time_of(per, sequential), per


@dataclass
class Scheduler:
    """A named scheduler; ``plan`` accepts a :class:`Scenario` or a :class:`CostModel`."""

    name: str
    options: dict = field(default_factory=dict)

    def plan(self, problem: Scenario | CostModel) -> Plan:
        """Solve and return the plan, its round time recomputed by the cost model."""
        cm = problem if isinstance(problem, CostModel) else CostModel.from_scenario(problem)
        t0 = time.perf_counter()
        opts = self.options
        if "seed" in opts and self.name not in SEEDED:  # deterministic: the seed changes nothing
            opts = {k: v for k, v in opts.items() if k != "seed"}
        cuts, shares, info = _REGISTRY[self.name](cm, **opts)
        solve = time.perf_counter() - t0
        cuts = np.asarray(cuts, dtype=np.int64)
        shares = np.asarray(shares, dtype=np.float64)
        sequential = bool(info.get("sequential", False))
        round_s, per = evaluate_plan(cm, cuts, shares, sequential)
        feasible = bool(info.get("feasible", True)) and math.isfinite(round_s)
        if not bool(info.get("feasible", True)):
            round_s = math.inf
        return Plan(
            scheduler=self.name,
            cuts=cuts,
            shares=shares,
            round_time_s=round_s,
            per_device_time_s=per,
            solve_time_s=solve,
            feasible=feasible,
            sequential=sequential,
            iterations=int(info.get("iterations", 0)),
            note=str(info.get("note", "")),
        )


def get_scheduler(name: str, **options: Any) -> Scheduler:
    """The scheduler called ``name`` (see :data:`SCHEDULERS`). Every scheduler accepts ``seed``
    (only ``random`` uses it); ``alternating`` also ``max_iter``, ``exact`` ``rtol``."""
    if name not in _REGISTRY:
        raise EdgeSplitError(f"scheduler: unknown name {name!r}; choose one of {', '.join(SCHEDULERS)}")
    allowed = (set(inspect.signature(_REGISTRY[name]).parameters) - {"cm"}) | {"seed"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise EdgeSplitError(f"scheduler {name}: unknown option {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return Scheduler(name, dict(options))


def plan(problem: Scenario | CostModel, scheduler: str = "alternating", **options: Any) -> Plan:
    """Shorthand for ``get_scheduler(scheduler, **options).plan(problem)``."""
    return get_scheduler(scheduler, **options).plan(problem)
