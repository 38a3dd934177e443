"""Classical schedulers for ``EdgeSplitDynamic-v1`` (two time scales), behind the policy interface.

Each policy sees only ``env.unwrapped.policy_view()`` (what a real scheduler knows: nominal rates,
measured rates of elapsed windows and rounds, bits left, compute seconds; never a coming rate).
At a **cut epoch** it returns cuts and initial shares; at a **share epoch** new shares for the
devices still sending (the env ignores the cuts then, and renormalises the shares over the
devices still sending).

==================  ========================================================  =========================================
name                cuts (at the round's start)                               shares within the round
==================  ========================================================  =========================================
``alternating``     the paper's alternating plan on last round's measured     fixed (the plan's)
                    rates (the nominal ones before any round)
``exact``           the global optimum (bisection) on the same rates          fixed
``static``          ``exact`` on the nominal rates, once per episode           fixed
``mpc``             ``exact`` on the measured mean rates so far                re-solved every interval for the bits left
                                                                              on the last window's measured rates
``mpc-harmonic``    as ``mpc``                                                 ... on the harmonic mean of the last ``k``
``robust-mpc``      as ``mpc``                                                 ... on that mean / (1 + the largest relative
                                                                              forecast error of the last ``k``)
``pf``              as ``mpc``                                                 the plan's shares times
                                                                              ``(last rate / mean of the last window_s) ** exponent``
==================  ========================================================  =========================================

``mpc``, ``mpc-harmonic``, ``robust-mpc`` and ``pf`` take ``prior_s``: the measured mean they
plan on is shrunk towards the nominal rate as if that had been measured for ``prior_s`` seconds
(:func:`shrunk_mean_rates`; default 0 = the measured mean, ``inf`` = the nominal rates, as
``static``). :func:`edgesplit.agents.classical_tuning.tune_pf` tunes ``pf``'s exponent, window
and prior on training families (the study's ``pf-tuned``).

Measured rates of 0 (outages) are floored at ``RATE_FLOOR`` times the nominal rate wherever a
planner divides by them. ``pf``'s defaults (``exponent``, ``window_s``) were tuned on the
built-in synthetic family (see :data:`PF_TUNING`): ``pf``'s figures on that family (what a plain
``edgesplit evaluate`` runs on) are in-sample; the leave-one-family-out study judges only on real
trace families, on which nothing was tuned.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from edgesplit.costmodel import CostModel, optimal_shares
from edgesplit.schedulers import Plan, get_scheduler

RATE_FLOOR = 1e-3
"""Measured rates are floored at this fraction of the nominal rate where a planner divides by them."""

PF_EXPONENT = 4.0
"""Default exponent of ``pf`` (see :data:`PF_TUNING`)."""

PF_WINDOW_S = 60.0
"""Default averaging window of ``pf``, in simulated seconds (see :data:`PF_TUNING`)."""

PF_TUNING = ("tuned on the built-in synthetic family (so pf is in-sample there, e.g. in a default `edgesplit "
             "evaluate`; the leave-one-family-out study judges only on real families): "
             "N = 10, 20 rounds, seeds 1000-1005, "
             "grid exponent {0.5, 1, 2, 3} x window {30, 60, 120, 300} s, then {4, 6} x {60, 120} s "
             "(`python -m experiments.tune_pf`); mean total time / static's: 0.967 (0.5, 30 s) ... 0.881 (3, 60 s), "
             "0.868 (4, 60 s), 0.867 (6, 60 s): flat beyond 4, so 4 and 60 s")
"""How ``pf``'s defaults were chosen."""

HARMONIC_K = 5
"""Default ``k`` (windows) of ``mpc-harmonic`` and ``robust-mpc``."""


def is_two_timescale(env: gym.Env) -> bool:
    """Whether ``env`` is an ``EdgeSplitDynamic-v1``-style env (it offers ``policy_view``)."""
    return hasattr(env.unwrapped, "policy_view")


class TwoTimescalePolicy:
    """Base of the v1 classical policies: :meth:`plan_round` at a cut epoch, :meth:`reshare` at a
    share epoch (default: keep the round's shares). Mixed into :class:`edgesplit.agents.policies.Policy`."""

    name = "two-timescale"

    def bind(self, env: gym.Env, seed: int | None = None) -> None:
        """Bind a new episode (after ``env.reset``)."""
        self.base = env.unwrapped
        if not is_two_timescale(env):
            raise ValueError(f"policy {self.name!r}: needs EdgeSplitDynamic-v1 (an env with policy_view())")
        self._shares = None

    def act_view(self, view: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action for the epoch ``view`` describes."""
        if view["phase"] == "cuts":
            cuts, shares = self.plan_round(view)
            self._cuts = np.asarray(cuts, dtype=np.int64)
            self._shares = np.asarray(shares, dtype=np.float64)
        else:
            self._shares = self.reshare(view)
        return {"cuts": self._cuts - 1, "shares": self._shares}

    def plan_round(self, view: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(cuts 1..L, shares) for the coming round."""
        raise NotImplementedError

    def reshare(self, view: dict[str, Any]) -> np.ndarray:
        """Shares for a share epoch (default: the round's shares)."""
        return self._shares


def _floor(rates: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    return np.maximum(np.nan_to_num(rates, nan=0.0), RATE_FLOOR * nominal)


def last_round_rates(view: dict[str, Any]) -> np.ndarray:
    """Last round's measured rates (each link over its device's transfer), nominal before any round."""
    rr = view["round_rates_bps"]
    return rr[0] if len(rr) else view["nominal_rate_bps"]


def shrunk_mean_rates(mean_bps: np.ndarray, nominal_bps: np.ndarray, measured_s: float,
                      prior_s: float) -> np.ndarray:
    """The measured mean rates shrunk towards the link class's nominal rates, as if the nominal
    rate had been measured for ``prior_s`` seconds before the ``measured_s`` seconds seen so far:
    ``(prior_s * nominal + measured_s * mean) / (prior_s + measured_s)``. ``prior_s = 0``: the
    measured mean; ``inf``: the nominal rates. A link's trace continues on other traces of its
    family, so over a long horizon its rate tends to the family's (= the class's) mean, and the
    mean measured on the trace it is on now is a noisy forecast of it. The one place this
    formula lives (the classical planners and the learned tilt both call it)."""
    mean = np.asarray(mean_bps, dtype=np.float64)
    nom = np.asarray(nominal_bps, dtype=np.float64)
    if math.isinf(prior_s) or measured_s <= 0:
        return nom.copy()
    if prior_s <= 0:
        return mean.copy()
    return (prior_s * nom + measured_s * mean) / (prior_s + measured_s)


def _check_prior(prior_s: float) -> float:
    p = float(prior_s)
    if not p >= 0:
        raise ValueError(f"prior_s: must be >= 0 seconds (inf = plan on the nominal rates), got {prior_s!r}")
    return p


class PlannerPolicy(TwoTimescalePolicy):
    """A scheduler of :mod:`edgesplit.schedulers` at each cut epoch on ``rates`` (``"round"``: last
    round's measured rates; ``"mean"``: the measured mean so far, shrunk towards the nominal rates
    with a prior of ``prior_s`` seconds, see :func:`shrunk_mean_rates`; ``"nominal"``: planned
    once), shares fixed within the round."""

    def __init__(self, name: str, scheduler: str = "exact", rates: str = "round", prior_s: float = 0.0) -> None:
        if rates not in ("round", "mean", "nominal"):
            raise ValueError(f"rates: must be round, mean or nominal, got {rates!r}")
        self.name = name
        self.scheduler = get_scheduler(scheduler)
        self.rates = rates
        self.prior_s = _check_prior(prior_s)
        self._static: tuple[np.ndarray, np.ndarray] | None = None

    def bind(self, env: gym.Env, seed: int | None = None) -> None:
        super().bind(env, seed)
        self._static = None

    def planning_rates(self, view: dict[str, Any]) -> np.ndarray:
        """The rates this policy plans a round on."""
        nom = view["nominal_rate_bps"]
        if self.rates == "nominal":
            return nom
        if self.rates == "round":
            return _floor(last_round_rates(view), nom)
        return _floor(shrunk_mean_rates(view["mean_rate_bps"], nom, float(view["clock_s"]), self.prior_s), nom)

    def plan(self, view: dict[str, Any]) -> Plan:
        """The scheduler's plan on :meth:`planning_rates`."""
        cm: CostModel = view["cost_model"]
        return self.scheduler.plan(cm.with_rates(self.planning_rates(view)))

    def plan_round(self, view: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.rates == "nominal":
            if self._static is None:
                p = self.plan(view)
                self._static = (p.cuts, p.shares)
            return self._static
        p = self.plan(view)
        return p.cuts, p.shares


def harmonic_mean(rates: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Per device, the harmonic mean of ``rates`` (rows = windows), each floored at ``floor``."""
    r = np.maximum(rates, floor)
    return r.shape[0] / (1.0 / r).sum(axis=0)


class MPCPolicy(PlannerPolicy):
    """Forecast-and-re-solve: at every share epoch, the optimal shares of the bits left for the
    devices still sending (``optimal_shares`` with their compute ``A_i``) at forecast rates:
    ``last`` (the last window's measured rate), ``harmonic`` (harmonic mean of the last ``k``) or
    ``robust`` (that mean / (1 + the largest relative error of the last ``k`` harmonic forecasts))."""

    def __init__(self, name: str, forecast: str = "last", k: int = HARMONIC_K, rates: str = "mean",
                 prior_s: float = 0.0) -> None:
        super().__init__(name, "exact", rates, prior_s)
        if forecast not in ("last", "harmonic", "robust"):
            raise ValueError(f"forecast: must be last, harmonic or robust, got {forecast!r}")
        if int(k) < 1:
            raise ValueError(f"k: must be >= 1, got {k!r}")
        self.forecast_kind = forecast
        self.k = int(k)

    def forecast(self, view: dict[str, Any]) -> np.ndarray:
        """Forecast whole-band rate per device for the coming interval."""
        nom = view["nominal_rate_bps"]
        floor = RATE_FLOOR * nom
        past = view["past_rates_bps"]
        if past.shape[0] == 0:
            return nom
        if self.forecast_kind == "last":
            return np.maximum(past[0], floor)
        k = self.k
        hm = harmonic_mean(past[:k], floor)
        if self.forecast_kind == "harmonic":
            return hm
        # robust: the largest relative error of the harmonic forecasts of the last k windows
        err = np.zeros_like(nom)
        for j in range(min(k, past.shape[0] - 1)):
            pred = harmonic_mean(past[j + 1:j + 1 + k], floor)
            actual = np.maximum(past[j], floor)
            err = np.maximum(err, np.abs(pred - actual) / actual)
        return np.maximum(hm / (1.0 + err), floor)

    def reshare(self, view: dict[str, Any]) -> np.ndarray:
        sending = view["sending"]
        if not sending.any():
            return self._shares
        r = self.forecast(view)
        shares = np.zeros(sending.size)
        sub, _ = optimal_shares(view["compute_s"][sending], view["bits_left"][sending], r[sending])
        shares[sending] = sub
        return shares


class ProportionalFairPolicy(PlannerPolicy):
    """Opportunistic re-division in the style of proportional-fair cellular schedulers: at every
    share epoch, the round plan's share of each device still sending times
    ``(last window's rate / its mean over the last window_s seconds) ** exponent``."""

    def __init__(self, name: str = "pf", exponent: float = PF_EXPONENT, window_s: float = PF_WINDOW_S,
                 rates: str = "mean", prior_s: float = 0.0) -> None:
        super().__init__(name, "exact", rates, prior_s)
        if not exponent >= 0:
            raise ValueError(f"exponent: must be >= 0, got {exponent!r}")
        if not window_s > 0:
            raise ValueError(f"window_s: must be > 0, got {window_s!r}")
        self.exponent = float(exponent)
        self.window_s = float(window_s)

    def plan_round(self, view: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        cuts, shares = super().plan_round(view)
        self._plan_shares = np.asarray(shares, dtype=np.float64)
        return cuts, shares

    def reshare(self, view: dict[str, Any]) -> np.ndarray:
        past, dur = view["past_rates_bps"], view["past_durations_s"]
        if past.shape[0] == 0:
            return self._plan_shares
        floor = RATE_FLOOR * view["nominal_rate_bps"]
        n = int(np.searchsorted(np.cumsum(dur), self.window_s)) + 1
        w = dur[:n]
        avg = np.maximum((past[:n] * w[:, None]).sum(axis=0) / w.sum(), floor)
        tilt = (np.maximum(past[0], floor) / avg) ** self.exponent
        shares = np.where(view["sending"], self._plan_shares * tilt, 0.0)
        if not shares.sum() > 0 or not np.isfinite(shares).all():
            return self._plan_shares
        return shares
