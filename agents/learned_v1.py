"""The learned scheduler of ``EdgeSplitDynamic-v1``: a residual tilt on the opportunistic (PF) rule.

Where learning can add value a real scheduler could have (issue 9, item 5): within a round the band
is re-divided every ``interval_s`` seconds, and the classical rules each use one signal. ``pf``
tilts the round plan's shares towards devices whose current rate is high against their recent
average; ``mpc`` re-solves the remaining bits on a rate estimate. Neither weighs both, nor the
variability of a link, its outages, how far behind a device is, or the family's dynamics
(Starlink's periodic reconfigurations, short outages that end).

The learned policy keeps the classical rule as its backbone and learns only a correction: each
share epoch, device ``i`` gets the share

    beta_i  ∝  plan_i * (cur_i / avg_i) ** alpha * exp(g(x_i, mean_j x_j))

over the devices still sending, where the first two factors are the ``pf`` rule (``plan_i`` the
round plan's share, ``cur_i`` the last measured window, ``avg_i`` the mean of the last
``pf_window`` windows) and ``g`` is a small MLP shared by all devices (permutation-equivariant)
on the features :data:`FEATURE_NAMES` of the device and their mean (``context="mean_max"``: and
their maximum) over the devices still sending. ``g = 0`` is the ``pf`` rule of
:mod:`edgesplit.agents.classical` with the tilt's exponent ``alpha``, window and planning prior
(in training: ``pf`` tuned on the training families), which is where training starts. The cuts (and the plan) of a round are
the ``exact`` plan on the measured mean rates so far, as ``pf`` and the ``mpc`` family plan. Every feature is something a real scheduler knows (``policy_view()``): measured rates
of elapsed windows, bits left, compute seconds, elapsed time; never a coming rate nor a statistic
of the trace a device is on.

The network is a numpy MLP (a few hundred weights) saved as ``.npz`` with a ``.json`` of
metadata; inference needs neither torch nor stable-baselines3. Training (black-box evolution
strategies on a batched round simulator) is in :mod:`edgesplit.agents.learned_v1_training`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "log_cur_over_avg",      # pf's signal: last window vs the mean of the last pf_window windows
    "log_cur_over_mean",     # last window vs the mean measured since the episode start
    "outage",                # last window below 10 % of the recent average
    "log_prev_over_avg",     # the window before the last vs the recent average
    "log_lag3_over_avg",     # three windows ago (15 s at 5 s) vs the recent average
    "rate_volatility",       # std of the log rate over the last 6 windows
    "bits_left_frac",        # bits still to send / bits of the round
    "log_mpc_over_plan",     # share that re-solves the remaining bits on the long-run mean / plan share
    "log_mean_over_nominal", # measured long-run mean vs the link class
    "compute_over_plan",     # A_i / the plan's round time
    "elapsed_over_plan",     # elapsed seconds in the round / the plan's round time
    "log_finish_over_plan",  # finish time if the device kept its plan share at its recent average rate / plan time
)
"""Per-device features of the learned tilt (in this order)."""

N_FEATURES = len(FEATURE_NAMES)
FORMAT = 2
"""Version of the saved-policy format (``.npz`` + ``.json``)."""

SHIPPED_V1_STEM = "edgesplit-dynamic-v1-n10"
"""Base name of the shipped v1 policy in ``agents/shipped`` (``.npz`` + ``.json``)."""

_FLOOR = 1e-3  # bit/s: rates are floored here before any log


@dataclass
class TiltConfig:
    """Fixed (not learned) parts of the policy: the PF backbone and the network's size."""

    alpha: float = 1.0
    """PF exponent of ``cur / avg`` (set from the tuned ``pf`` when trained with ``--backbone tuned``)."""
    pf_window: int = 24
    """Windows in PF's recent average (24 x 5 s = 2 minutes, ``pf``'s ``window_s``)."""
    plan_rates: str = "mean"
    """Rates the round is planned on: ``"mean"`` (measured mean since the episode start, as ``pf``)
    or ``"round"`` (last round's measured rates)."""
    plan_prior_s: float = 0.0
    """With ``plan_rates="mean"``: the measured mean is shrunk towards the nominal rates with a
    prior of this many seconds (``pf``'s ``prior_s``; :func:`edgesplit.agents.classical.shrunk_mean_rates`)."""
    hidden: int = 16
    """Hidden units of the shared MLP."""
    context: str = "mean"
    """What the network sees of the other devices: ``"mean"`` (the mean of the features over the
    devices still sending) or ``"mean_max"`` (and their maximum: the straggler's)."""
    clip: float = 6.0
    """The learned log-tilt is clipped to ``[-clip, clip]``."""

    def n_inputs(self) -> int:
        """Inputs of the MLP per device: ``[x_i, mean x]`` or ``[x_i, mean x, max x]``."""
        if self.context not in ("mean", "mean_max"):
            raise ValueError(f"context: must be 'mean' or 'mean_max', got {self.context!r}")
        return (2 if self.context == "mean" else 3) * N_FEATURES

    def n_params(self) -> int:
        """Number of weights of the MLP ``inputs -> hidden -> 1``."""
        return self.n_inputs() * self.hidden + self.hidden + self.hidden + 1


# ----------------------------------------------------------------------------- equal-finish shares


def equal_finish_shares(bits: np.ndarray, compute_s: np.ndarray, rates_bps: np.ndarray, active: np.ndarray,
                        now_s: float | np.ndarray = 0.0, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Shares that make every active device finish at the same time ``T`` if each link kept the
    given rate: ``beta_i = bits_i / (rate_i (T - now - A_i))`` with ``sum beta = 1`` (bisection on
    ``T``, row-wise). Arrays ``(M, N)``; returns ``(shares (M, N), T (M,))``; inactive devices get 0.
    This is the exact plan's division of the band for fixed cuts."""
    r = np.maximum(rates_bps, _FLOOR)
    act = active & (bits > 0)
    bm = np.where(act, bits, 0.0)
    now = np.asarray(now_s, dtype=np.float64).reshape(-1, 1) if np.ndim(now_s) else float(now_s)
    a = np.where(act, compute_s, 0.0)
    lo = (now + np.where(act, compute_s, -np.inf)).max(axis=1) if np.ndim(now) else \
        now + np.where(act, compute_s, -np.inf).max(axis=1)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = lo + (bm / r).sum(axis=1) + 1e-9
    for _ in range(iterations):
        m = 0.5 * (lo + hi)
        gap = np.maximum(m[:, None] - now - a, 1e-12)
        f = (bm / (r * gap)).sum(axis=1)
        big = f > 1.0
        lo = np.where(big, m, lo)
        hi = np.where(big, hi, m)
    gap = np.maximum(hi[:, None] - now - a, 1e-12)
    b = np.where(act, bm / (r * gap), 0.0)
    s = b.sum(axis=1, keepdims=True)
    return np.where(s > 0, b / np.where(s > 0, s, 1.0), 0.0), hi


# ----------------------------------------------------------------------------- features


def tilt_features(past_rates: np.ndarray, mean_rate: np.ndarray, nominal: np.ndarray, bits_left: np.ndarray,
                  bits_total: np.ndarray, sending: np.ndarray, compute_s: np.ndarray, elapsed_s: np.ndarray,
                  plan_shares: np.ndarray, plan_time_s: np.ndarray, cfg: TiltConfig,
                  avg_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features :data:`FEATURE_NAMES` ``(M, N, F)`` and the PF backbone's log-share ``(M, N)``.

    ``past_rates`` ``(M, K, N)``: each link's measured whole-band rate over the last ``K`` elapsed
    windows, most recent first (``K >= 1``; pad with the nominal rate when there are fewer);
    ``mean_rate``: measured mean since the episode start; ``elapsed_s``, ``plan_time_s``: ``(M,)``.
    ``avg_weights`` ``(M, K)``: weights of the windows in PF's recent average (their durations, 0
    beyond PF's window, as ``pf`` does); ``None``, or a row of zeros (nothing measured yet): the
    first ``cfg.pf_window`` windows, equally.
    The one place these formulas live: the simulator used for training and the env policy both
    call it."""
    f = _FLOOR
    cur = np.maximum(past_rates[:, 0], f)
    if avg_weights is None:
        w = min(cfg.pf_window, past_rates.shape[1])
        avg = np.maximum(past_rates[:, :w].mean(axis=1), f)
    else:
        wt = np.asarray(avg_weights, dtype=np.float64)
        first = (np.arange(past_rates.shape[1]) < min(cfg.pf_window, past_rates.shape[1])).astype(np.float64)
        wt = np.where(wt.sum(axis=1, keepdims=True) > 0, wt, first[None, :])[..., None]  # nothing measured yet
        avg = np.maximum((past_rates * wt).sum(axis=1) / wt.sum(axis=1), f)
    mean = np.maximum(mean_rate, f)
    prev = np.maximum(past_rates[:, min(1, past_rates.shape[1] - 1)], f)
    lag3 = np.maximum(past_rates[:, min(3, past_rates.shape[1] - 1)], f)
    logs = np.log(np.maximum(past_rates[:, :6], f))
    vol = logs.std(axis=1) if logs.shape[1] > 1 else np.zeros_like(cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(bits_total > 0, bits_left / np.where(bits_total > 0, bits_total, 1.0), 0.0)
    T = np.maximum(np.asarray(plan_time_s, dtype=np.float64), 1e-9)[:, None]
    el = np.asarray(elapsed_s, dtype=np.float64)[:, None]
    mpc, _ = equal_finish_shares(bits_left, compute_s, mean, sending, el, iterations=40)
    plan = np.maximum(plan_shares, 1e-9)
    x = np.stack([
        np.clip(np.log(cur / avg), -8, 8),
        np.clip(np.log(cur / mean), -8, 8),
        (cur < 0.1 * avg).astype(np.float64),
        np.clip(np.log(prev / avg), -8, 8),
        np.clip(np.log(lag3 / avg), -8, 8),
        np.minimum(vol, 8.0),
        np.clip(left, 0.0, 1.0),
        np.clip(np.log(np.maximum(mpc, 1e-6) / plan), -8, 8),
        np.clip(np.log(mean / np.maximum(nominal, f)), -8, 8),
        np.minimum(compute_s / T, 10.0),
        np.broadcast_to(np.minimum(el / T, 10.0), cur.shape),
        np.clip(np.log(np.maximum(el + bits_left / (plan * avg) + compute_s, 1e-9) / T), -8, 8),
    ], axis=-1)
    base = np.log(plan) + (el > 0) * cfg.alpha * np.clip(np.log(cur / avg), -8, 8)
    return x, base


# ----------------------------------------------------------------------------- the network


def unpack(theta: np.ndarray, cfg: TiltConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(W1 (P, 2F, H), b1 (P, H), w2 (P, H), b2 (P,))`` from parameter rows ``theta (P, n_params)``."""
    F2, H = cfg.n_inputs(), cfg.hidden
    theta = np.atleast_2d(theta)
    i = 0
    W1 = theta[:, i:i + F2 * H].reshape(-1, F2, H)
    i += F2 * H
    b1 = theta[:, i:i + H]
    i += H
    w2 = theta[:, i:i + H]
    i += H
    b2 = theta[:, i]
    return W1, b1, w2, b2


def tilt_logits(theta: np.ndarray, x: np.ndarray, base: np.ndarray, sending: np.ndarray,
                cfg: TiltConfig) -> np.ndarray:
    """Log-shares ``base + g(x_i, mean x)`` (``-inf`` for devices not sending), ``(M, N)``.

    ``theta``: one parameter vector, or ``C`` of them ``(C, n_params)`` with ``M`` a multiple of
    ``C``: rows ``c * M/C .. (c+1) * M/C - 1`` use vector ``c`` (a population in training)."""
    W1, b1, w2, b2 = unpack(theta, cfg)
    C = W1.shape[0]
    M, N, F = x.shape
    if M % C:
        raise ValueError(f"theta: {C} parameter vectors do not divide {M} rows")
    s = sending.astype(np.float64)
    cnt = np.maximum(s.sum(axis=1, keepdims=True), 1.0)
    ctx = (x * s[..., None]).sum(axis=1, keepdims=True) / cnt[..., None]
    parts = [x, np.broadcast_to(ctx, x.shape)]
    if cfg.context == "mean_max":
        mx = np.where(s[..., None] > 0, x, -np.inf).max(axis=1, keepdims=True)
        parts.append(np.broadcast_to(np.where(np.isfinite(mx), mx, 0.0), x.shape))
    z = np.concatenate(parts, axis=-1).reshape(C, (M // C) * N, cfg.n_inputs())
    h = np.tanh(np.matmul(z, W1) + b1[:, None, :])           # (C, M/C * N, H)
    g = (np.matmul(h, w2[:, :, None])[..., 0] + b2[:, None]).reshape(M, N)
    g = np.clip(g, -cfg.clip, cfg.clip)
    return np.where(sending, base + g, -np.inf)


MIN_SHARE = 1e-3
"""Smallest share a device still sending gets (the tilt never starves a link completely)."""


def shares_from_logits(logits: np.ndarray) -> np.ndarray:
    """Softmax over each row's finite entries (0 elsewhere), each at least :data:`MIN_SHARE` before
    renormalising; a row with no finite entry gets all zeros."""
    mx = logits.max(axis=1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(logits - mx)
    s = e.sum(axis=1, keepdims=True)
    p = np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)
    p = np.where(np.isfinite(logits), np.maximum(p, MIN_SHARE), 0.0)
    s = p.sum(axis=1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1.0), 0.0)


# ----------------------------------------------------------------------------- saved policy


def _saved_files(path: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """``(stem.json, stem.npz, the JSON document)`` of a saved tilt given as ``stem``,
    ``stem.npz`` or ``stem.json``; ``FileNotFoundError`` when either file is missing."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    js, npz = stem.with_suffix(".json"), stem.with_suffix(".npz")
    if not js.is_file() or not npz.is_file():
        raise FileNotFoundError(f"policy: a learned v1 policy is {stem}.npz with {stem}.json; not found")
    return js, npz, json.loads(js.read_text())


def _write_saved(stem: str | Path, arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``stem.npz`` (``arrays``) and ``stem.json`` (``doc``); returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    np.savez_compressed(npz, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    js.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return npz, js


@dataclass
class TiltModel:
    """A trained tilt: parameters, config and metadata (what it was trained on, how)."""

    theta: np.ndarray
    cfg: TiltConfig = field(default_factory=TiltConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``stem.npz`` (the weights) and ``stem.json`` (config + metadata)."""
        return _write_saved(stem, {"theta": self.theta},
                            {"format": FORMAT, "kind": "edgesplit-v1-tilt", "env_id": "EdgeSplitDynamic-v1",
                             "features": list(FEATURE_NAMES), "config": _config_json(self.cfg), **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "TiltModel":
        """Load from ``stem``, ``stem.npz`` or ``stem.json``; checks the format and the feature list."""
        js, npz, doc = _saved_files(path)
        if doc.get("format") != FORMAT or doc.get("kind") != "edgesplit-v1-tilt":
            raise ValueError(f"policy: {js} is not a v1 tilt policy of format {FORMAT}")
        if list(doc.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError(f"policy: {js} was trained on other features ({doc.get('features')})")
        cfg = _config_from_json(doc["config"])
        theta = np.load(npz)["theta"]
        if theta.shape != (cfg.n_params(),):
            raise ValueError(f"policy: {npz} holds {theta.shape} weights, the config needs {cfg.n_params()}")
        meta = {k: v for k, v in doc.items() if k not in ("format", "kind", "features", "config", "env_id")}
        return cls(theta=theta, cfg=cfg, meta=meta)

    @classmethod
    def zero(cls, cfg: TiltConfig | None = None) -> "TiltModel":
        """The untrained tilt (all weights 0): exactly the PF backbone."""
        cfg = cfg or TiltConfig()
        return cls(theta=np.zeros(cfg.n_params()), cfg=cfg)

    def logits(self, x: np.ndarray, base: np.ndarray, sending: np.ndarray) -> np.ndarray:
        """Log-shares ``(M, N)`` for features ``x`` and the backbone ``base`` (:func:`tilt_logits`)."""
        return tilt_logits(self.theta, x, base, sending, self.cfg)


BACKBONE_FIELDS: tuple[str, ...] = ("alpha", "pf_window", "plan_rates", "plan_prior_s")
"""The :class:`TiltConfig` fields that define the features and the PF backbone (the members of an
ensemble must agree on them; ``hidden``, ``context`` and ``clip`` may differ)."""


@dataclass
class TiltEnsemble:
    """Several tilts on one PF backbone; the learned log-tilt is the mean of the members' (each
    clipped first). Saved as ``stem.npz`` (``theta_0``, ``theta_1``, ...) and ``stem.json`` (kind
    ``edgesplit-v1-tilt-ensemble``, the members' configs)."""

    members: list[TiltModel]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("members: an ensemble needs at least one tilt")
        first = self.members[0].cfg
        for k, m in enumerate(self.members[1:], 1):
            bad = [f for f in BACKBONE_FIELDS if getattr(m.cfg, f) != getattr(first, f)]
            if bad:
                raise ValueError(f"members: tilt {k} differs from tilt 0 in {bad} (the backbone must be shared)")

    @property
    def cfg(self) -> TiltConfig:
        """The shared backbone (the first member's config)."""
        return self.members[0].cfg

    def logits(self, x: np.ndarray, base: np.ndarray, sending: np.ndarray) -> np.ndarray:
        """``base + mean_k g_k`` over the devices sending, ``-inf`` elsewhere."""
        return np.mean([m.logits(x, base, sending) for m in self.members], axis=0)

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``stem.npz`` and ``stem.json``."""
        return _write_saved(stem, {f"theta_{k}": m.theta for k, m in enumerate(self.members)},
                            {"format": FORMAT, "kind": ENSEMBLE_KIND, "env_id": "EdgeSplitDynamic-v1",
                             "features": list(FEATURE_NAMES), "members": [_config_json(m.cfg) for m in self.members],
                             "member_meta": [m.meta for m in self.members], **self.meta})


ENSEMBLE_KIND = "edgesplit-v1-tilt-ensemble"
TILT_KINDS = ("edgesplit-v1-tilt", ENSEMBLE_KIND)


def _config_json(cfg: TiltConfig) -> dict[str, Any]:
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(cfg).items()}


def _config_from_json(config: dict[str, Any]) -> TiltConfig:
    config = dict(config)
    if config.get("plan_prior_s") == "inf":
        config["plan_prior_s"] = math.inf
    return TiltConfig(**config)


def load_tilt(path: str | Path) -> "TiltModel | TiltEnsemble":
    """A saved tilt or tilt ensemble (``stem``, ``stem.npz`` or ``stem.json``), by its kind."""
    js, npz, doc = _saved_files(path)
    if doc.get("kind") != ENSEMBLE_KIND:
        return TiltModel.load(js)
    if doc.get("format") != FORMAT or list(doc.get("features", [])) != list(FEATURE_NAMES):
        raise ValueError(f"policy: {js} is not a v1 tilt ensemble of format {FORMAT} on the current features")
    arrays = np.load(npz)
    cfgs = [_config_from_json(c) for c in doc["members"]]
    metas = doc.get("member_meta") or [{} for _ in cfgs]
    members = []
    for k, (cfg, meta) in enumerate(zip(cfgs, metas)):
        theta = arrays[f"theta_{k}"]
        if theta.shape != (cfg.n_params(),):
            raise ValueError(f"policy: {npz} member {k} holds {theta.shape} weights, its config needs {cfg.n_params()}")
        members.append(TiltModel(theta=theta, cfg=cfg, meta=meta))
    meta = {k: v for k, v in doc.items()
            if k not in ("format", "kind", "features", "members", "member_meta", "env_id")}
    return TiltEnsemble(members=members, meta=meta)


def is_tilt_file(path: str | Path) -> bool:
    """Whether ``path`` is a saved v1 tilt or tilt ensemble (``.npz``, or a ``.json`` of one of :data:`TILT_KINDS`)."""
    p = Path(path)
    if p.suffix == ".npz":
        return True
    if p.suffix == ".json" and p.is_file():
        try:
            return json.loads(p.read_text()).get("kind") in TILT_KINDS
        except (ValueError, OSError):
            return False
    return False


def shipped_v1_path() -> Path:
    """Stem of the shipped v1 policy (``agents/shipped/edgesplit-dynamic-v1-n10``)."""
    return Path(str(resources.files("edgesplit.agents") / "shipped" / SHIPPED_V1_STEM))


# ----------------------------------------------------------------------------- env policy


def pf_weights(durations_s: np.ndarray, window_s: float) -> np.ndarray:
    """Weights of the measured windows (rows of ``durations_s`` ``(M, K)``, most recent first) in
    PF's recent average: their durations, for the windows up to and including the one that brings
    the total to ``window_s`` (``pf``'s rule), 0 after."""
    d = np.asarray(durations_s, dtype=np.float64)
    n = (np.cumsum(d, axis=1) < window_s).sum(axis=1, keepdims=True) + 1
    return np.where(np.arange(d.shape[1])[None, :] < n, d, 0.0)


def _view_arrays(view: dict[str, Any], cfg: TiltConfig) -> tuple[np.ndarray, np.ndarray]:
    """The measured windows, most recent first, padded with the nominal rate, ``(1, K, N)``, and
    PF's averaging weights ``(1, K)``: the durations of the windows within ``pf_window`` intervals
    (``pf``'s rule: the windows up to and including the one that reaches ``window_s``), 0 for the
    padding (all 0 before anything is measured: :func:`tilt_features` then averages the padding).
    The training simulator pads the same way, so a first round plays identically in both."""
    nominal = np.asarray(view["nominal_rate_bps"], dtype=np.float64)
    past = np.asarray(view["past_rates_bps"], dtype=np.float64).reshape(-1, nominal.size)
    dur = np.asarray(view.get("past_durations_s", np.ones(past.shape[0])), dtype=np.float64)[:past.shape[0]]
    window_s = cfg.pf_window * float(view.get("interval_s") or 5.0)
    n = int(np.searchsorted(np.cumsum(dur), window_s)) + 1 if past.shape[0] else 0
    k = max(n, cfg.pf_window, 6)
    past, dur = past[:k], dur[:k]
    wts = pf_weights(dur[None], window_s)[0] if dur.size else dur
    if past.shape[0] < k:
        extra = k - past.shape[0]
        past = np.concatenate([past, np.broadcast_to(nominal, (extra, nominal.size))])
        wts = np.concatenate([wts, np.zeros(extra)])
    return past[None], wts[None]


def round_plan(cost_model: Any, known_rates_bps: np.ndarray, scheduler: Any = None) -> Any:
    """The round's plan: ``exact`` on the rates a round-level planner knows (floored at 1e-3 of
    the nominal rates), as the classical policies plan. Returns the :class:`edgesplit.schedulers` plan."""
    if scheduler is None:
        from edgesplit.schedulers import get_scheduler
        scheduler = get_scheduler("exact")
    floor = 1e-3 * np.asarray(cost_model.rate_bps, dtype=np.float64)
    return scheduler.plan(cost_model.with_rates(np.maximum(np.asarray(known_rates_bps, dtype=np.float64), floor)))


def planning_rates(view: dict[str, Any], cfg: TiltConfig) -> np.ndarray:
    """The rates a round is planned on (``cfg.plan_rates``), from ``policy_view()``."""
    n = np.asarray(view["nominal_rate_bps"]).size
    if cfg.plan_rates == "mean":
        from edgesplit.agents.classical import shrunk_mean_rates
        return shrunk_mean_rates(view["mean_rate_bps"], view["nominal_rate_bps"], float(view["clock_s"]),
                                 cfg.plan_prior_s)
    if cfg.plan_rates == "round":
        rr = np.asarray(view["round_rates_bps"], dtype=np.float64).reshape(-1, n)
        return rr[0] if rr.shape[0] else np.asarray(view["nominal_rate_bps"], dtype=np.float64)
    raise ValueError(f"plan_rates: must be 'mean' or 'round', got {cfg.plan_rates!r}")


def _policy_base():
    from edgesplit.agents.policies import Policy
    return Policy


class LearnedV1Policy(_policy_base()):
    """The learned tilt playing ``EdgeSplitDynamic-v1`` through ``policy_view()`` (see module doc).

    Cut epoch: the ``exact`` plan on the measured mean rates so far (``cfg.plan_rates``) gives the
    cuts and the plan's shares (as ``pf``); every epoch the shares are the PF backbone (at the cut
    epoch: the plan's shares) tilted by the network (or the mean tilt of an ensemble). ``path``: a
    saved tilt or tilt ensemble (stem, ``.npz`` or ``.json``); ``None`` = the shipped one.
    """

    def __init__(self, path: str | Path | None = None, name: str = "learned",
                 model: "TiltModel | TiltEnsemble | None" = None) -> None:
        self.model = model if model is not None else load_tilt(path if path is not None else shipped_v1_path())
        self.name = name
        from edgesplit.schedulers import get_scheduler
        self._exact = get_scheduler("exact")

    def reset(self, env: Any, seed: int | None = None) -> None:
        """Bind the episode; refuses an env without ``policy_view`` (the tilt is for v1)."""
        super().reset(env, seed)
        if not hasattr(self.base, "policy_view"):
            raise ValueError(f"policy {self.name}: the learned v1 tilt needs EdgeSplitDynamic-v1 "
                             f"(an env with policy_view()), got {type(self.base).__name__}")
        self._plan = None

    def bind(self, env: Any, seed: int | None = None) -> None:
        """:meth:`reset` under the name the v1 dispatch (``ByEnvPolicy``) calls."""
        self.reset(env, seed)

    def act_view(self, view: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action for the epoch ``view`` (``policy_view()``) describes."""
        x, base, sending = self.features(view)
        return self.action_from_logits(self.model.logits(x, base, sending))

    def features(self, view: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x (1, N, F), base (1, N), sending (1, N))`` for the coming epoch (plans the round at a
        cut epoch); ``view``: ``policy_view()`` (read from the env when not given)."""
        if view is None:
            view = self.base.policy_view()
        cm = view["cost_model"]
        if view["phase"] == "cuts" or self._plan is None:
            known = planning_rates(view, self.model.cfg)
            plan = round_plan(cm, known, self._exact)
            compute, traffic = cm.select(plan.cuts)
            self._plan = plan
            self._cuts = np.asarray(plan.cuts, dtype=np.int64) - 1
            bits = np.asarray(traffic, dtype=np.float64)
            total, left, sending, A, elapsed = bits, bits, bits > 0, np.asarray(compute, dtype=np.float64), 0.0
        else:
            total = np.asarray(view["bits_total"], dtype=np.float64)
            left = np.asarray(view["bits_left"], dtype=np.float64)
            sending = np.asarray(view["sending"], dtype=bool)
            A = np.asarray(view["compute_s"], dtype=np.float64)
            elapsed = float(view["elapsed_in_round_s"])
        cfg = self.model.cfg
        past, wts = _view_arrays(view, cfg)
        x, base = tilt_features(past, np.asarray(view["mean_rate_bps"], dtype=np.float64)[None],
                                np.asarray(view["nominal_rate_bps"], dtype=np.float64)[None], left[None], total[None],
                                sending[None], A[None], np.array([elapsed]),
                                np.asarray(self._plan.shares, dtype=np.float64)[None],
                                np.array([float(self._plan.round_time_s)]), cfg, avg_weights=wts)
        return x, base, sending[None]

    def action_from_logits(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """The native action for log-shares ``(1, N)`` (cuts: the round plan's)."""
        shares = shares_from_logits(logits)[0]
        return {"cuts": self._cuts.copy(), "shares": shares.astype(np.float32)}

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The native action for the coming epoch."""
        return self.act_view(self.base.policy_view())

    def backbone(self, interval_s: float = 5.0, name: str = "pf-backbone") -> Any:
        """The classical rule this tilt corrects: ``pf`` with the tilt's exponent, averaging window
        (``pf_window`` windows of ``interval_s``), planning rates and prior; for the shipped policy
        and every fold of the study, ``pf`` tuned on the training families (the study's
        ``pf-tuned``). Evaluations put it among the classical policies, so what is credited to
        learning is what the network adds, not what tuning ``pf`` gives."""
        from edgesplit.agents.policies import get_policy

        cfg = self.model.cfg
        pol = get_policy("pf", exponent=cfg.alpha, window_s=cfg.pf_window * float(interval_s),
                         rates=cfg.plan_rates, prior_s=cfg.plan_prior_s)
        pol.name = name
        return pol
