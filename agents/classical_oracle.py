"""The ``oracle`` of ``EdgeSplitDynamic-v1`` (DESIGN.md, "Dynamic bandwidth, honestly", item 4): a
clairvoyant reference, not a policy.

For a round starting at ``t0`` with per-device bits ``B_i`` and compute seconds ``A_i``, and the
interval grid ``e_j = t0 + j * interval_s``, the shares ``beta_ij`` (device ``i``, interval ``j``)
minimise the round time ``T``: bisection on ``T``; ``T`` is feasible iff the linear program

    sum_j beta_ij * cap_ij(T) >= B_i   for every device i
    sum_i beta_ij <= 1                 for every interval j
    beta_ij >= 0

has a solution, where ``cap_ij(T)`` is the bits device ``i``'s link delivers with the whole band in
``[e_j, min(e_{j+1}, T - A_i))`` (0 once ``e_j >= T - A_i``). Solved by SciPy's HiGHS
(``scipy.optimize.linprog(method="highs")``). The env renormalises shares over the devices still
sending, which can only make a device finish earlier, so playing these shares takes at most ``T``.

Cuts: the ``exact`` plan on the true mean rates of the round, as DESIGN.md says; the round's length
(needed for "the round's mean rates") is found by iterating: a window of the last round's length,
the plan, its LP time as the next window; of the candidate cuts the one with the shortest LP time
is played. Because the cuts are chosen on mean rates, a policy may occasionally beat the oracle
by a hair: see :data:`ORACLE_TOLERANCE`.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix

from edgesplit.schedulers import get_scheduler
from edgesplit.agents.classical import TwoTimescalePolicy

ORACLE_TOLERANCE = 0.02
"""A classical policy may beat the oracle's mean episode time by at most this fraction (2 %): the
oracle's cuts are the exact plan on the round's *mean* rates, not the cuts that are best for the
rates' course within the round, so it is a near bound, not a strict one."""

BISECTION_RTOL = 1e-4

LP_MARGIN = 1e-6
"""The LP asks each device for ``(1 + LP_MARGIN) B_i`` bits, so that the solver's feasibility
tolerance never leaves a device a few bits short (with a share of 0 in the intervals left)."""
"""Relative precision of the oracle's bisection on the round time."""


def lp_feasible(B: np.ndarray, caps: np.ndarray) -> np.ndarray | None:
    """Shares ``beta`` (J, N) with ``sum_j beta_ij caps_ij >= B_i`` and ``sum_i beta_ij <= 1``, or None.

    ``caps`` (J, N): bits each device gets with the whole band in each interval. Devices with
    ``B_i <= 0`` need nothing.
    """
    J, N = caps.shape
    need = B > 0
    if not need.any():
        return np.zeros((J, N))
    idx = np.flatnonzero(need)
    if (caps[:, idx].sum(axis=0) < B[idx] * (1 - 1e-12)).any():
        return None  # even the whole band in every interval is not enough
    sub = caps[:, idx]  # (J, M)
    jj, mm = np.nonzero(sub > 0)  # the variables: beta_ij with a positive capacity
    n = jj.size
    if n == 0:
        return None
    M = idx.size
    # rows 0..J-1: sum_i beta_ij <= 1 ; rows J..J+M-1: -sum_j beta_ij cap_ij / B_i <= -1
    rows = np.concatenate([jj, J + mm])
    colsx = np.concatenate([np.arange(n), np.arange(n)])
    vals = np.concatenate([np.ones(n), -sub[jj, mm] / B[idx][mm]])
    A = coo_matrix((vals, (rows, colsx)), shape=(J + M, n)).tocsr()
    b = np.concatenate([np.ones(J), -np.full(M, 1.0 + LP_MARGIN)])
    res = linprog(np.zeros(n), A_ub=A, b_ub=b, bounds=(0, 1), method="highs")
    if res.status != 0:
        return None
    beta = np.zeros((J, N))
    beta[jj, idx[mm]] = np.clip(res.x, 0.0, 1.0)  # HiGHS may return -1e-15
    return beta


def min_round_time_lp(B: np.ndarray, A: np.ndarray, t0: float, interval_s: float | None,
                      cumulative: Callable[[np.ndarray], np.ndarray], T_hint: float,
                      rtol: float = BISECTION_RTOL) -> tuple[float, np.ndarray, np.ndarray]:
    """The smallest round time ``T`` (from ``t0``) and the LP shares achieving it.

    ``cumulative(times)`` maps times of shape (E, N) (absolute, >= ``t0``) to each device's bits
    delivered with the whole band from ``t0`` (E, N). ``interval_s=None``: one interval (shares
    fixed for the round). Returns ``(T, shares (J, N), edges (J + 1,))``; shares of interval ``j``
    apply on ``[edges[j], edges[j+1])``.
    """
    B = np.asarray(B, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    N = B.size
    if not (B > 0).any():
        return float(A.max(initial=0.0)), np.zeros((1, N)), np.array([t0, t0 + float(A.max(initial=0.0))])

    def caps_for(T: float) -> tuple[np.ndarray, np.ndarray]:
        end = T - A  # each device's deadline for its last bit (relative to t0)
        if interval_s is None:
            edges = np.array([0.0, max(float(end.max()), 0.0)])
        else:
            J = max(1, int(math.ceil(max(float(end.max()), 0.0) / interval_s)))
            edges = np.arange(J + 1) * interval_s
        lo = np.minimum(edges[:-1, None], np.maximum(end[None, :], 0.0))
        hi = np.minimum(edges[1:, None], np.maximum(end[None, :], 0.0))
        pts = np.concatenate([lo, hi[-1:]], axis=0)  # (J + 1, N): e_j clipped at each deadline
        cum = cumulative(t0 + pts)
        caps = np.maximum(np.diff(cum, axis=0), 0.0)
        return caps, t0 + edges

    lo = float(A[B > 0].max())
    hi = float(T_hint) if math.isfinite(T_hint) and lo < T_hint < 4.0 * lo + 1e-9 else 1.25 * lo + 1e-9
    best = None
    for _ in range(60):  # bracket: grow hi until feasible
        caps, edges = caps_for(hi)
        beta = lp_feasible(B, caps)
        if beta is not None:
            best = (hi, beta, edges)
            break
        lo, hi = hi, hi * 2.0
    if best is None:
        raise RuntimeError("oracle: no feasible round time found (a link that never delivers?)")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        caps, edges = caps_for(mid)
        beta = lp_feasible(B, caps)
        if beta is not None:
            hi, best = mid, (mid, beta, edges)
        else:
            lo = mid
    return best


class OracleV1Policy(TwoTimescalePolicy):
    """The clairvoyant reference of ``EdgeSplitDynamic-v1`` (module doc). It alone reads the env's
    ``reference_only_*`` accessors."""

    name = "oracle"

    def __init__(self, iterations: int = 2) -> None:
        self.iterations = max(1, int(iterations))
        self._exact = get_scheduler("exact")

    def bind(self, env: gym.Env, seed: int | None = None) -> None:
        super().bind(env, seed)
        self._last_T: float | None = None

    def plan_round(self, view: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        base = self.base
        cm = view["cost_model"]
        t0 = float(view["clock_s"])
        interval = view["interval_s"]
        window = self._last_T or float(view["reference_time_s"])
        best: tuple[float, Any] | None = None
        cumulative = base.reference_only_cumulative_bits
        for _ in range(self.iterations):
            mean = base.reference_only_future_bits(np.array([t0, t0 + window]))[0] / window
            rates = np.maximum(mean, 1e-6 * cm.rate_bps)
            plan = self._exact.plan(cm.with_rates(rates))
            a, v = cm.select(plan.cuts)
            B = v + base.migration_bits(plan.cuts)
            T, beta, edges = min_round_time_lp(B, a, t0, interval, cumulative, T_hint=plan.round_time_s)
            if best is None or T < best[0]:
                best = (T, (plan.cuts, beta, edges))
            window = max(T, 1e-3 * window)  # the round's length under this plan: its true mean rates next
        T, (cuts, beta, edges) = best
        self._last_T = T
        self._beta = beta
        self._edges = edges
        shares = beta[0] if beta[0].sum() > 0 else np.ones(beta.shape[1])
        return cuts, shares

    def reshare(self, view: dict[str, Any]) -> np.ndarray:
        t = float(view["clock_s"])
        j = int(np.searchsorted(self._edges, t + 1e-9 * max(1.0, t), side="right")) - 1
        j = min(max(j, 0), self._beta.shape[0] - 1)
        sh = self._beta[j]
        if not (sh[view["sending"]] > 0).any():  # the LP gave this interval to devices now done
            sh = np.where(view["sending"], 1.0, 0.0)
        return sh
