"""Training of the learned v1 tilt (:mod:`edgesplit.agents.learned_v1`): evolution strategies on a
batched round simulator.

Why not PPO on the env: the tilt acts every 5 s of simulated time (60-100 decisions per round), the
only signal is the round's end time, and on two shared cores the env plays a few hundred steps per
second. Black-box evolution strategies (OpenAI-ES: antithetic Gaussian perturbations of the few
hundred weights, Adam on the fitness gradient) evaluate every candidate on the *same* rounds, so
the fitness is the candidate's round time relative to the PF backbone's on identical links (common
random numbers: most of the trace noise cancels), and a numpy simulator plays hundreds of rounds
at once. PPO on the env was tried first (see ``docs/agents.md``).

The simulator replays one round of ``EdgeSplitDynamic-v1`` for a batch of rows:

- a scenario from the env's own generator (``reset(seed)``: speeds, memory, link classes,
  ``T_ref``), a position in the episode (0-19 rounds of history), per device a family (one for the
  whole round half of the time, else one per device, as the env draws) and a trace of it at a
  random offset, continued on other traces of the family, scaled by ``class rate / family mean``;
- the mean measured since the episode start, last round's measured rates (mean over the last
  ``0.8 T_ref`` s), the last measured 5 s windows: what ``policy_view()`` shows at the cut epoch;
- the round's plan: ``exact`` on the mean rates (:func:`round_plan`, as ``pf``), ``B_i`` the
  traffic of its cuts, ``A_i`` their compute; shares every ``interval_s`` from the tilt, renormalised over the
  devices still sending the moment one finishes (event-exact within each 1 s bin).

It does not model migration bits (a few rounds per episode change cuts) nor the shorter windows at
round ends; the policy is judged on the env itself, never on this simulator.

Honesty: only the families passed in are used; each is split by trace into a training part and a
validation part (``val_fraction``). Each candidate's checkpoint is chosen on a fixed validation
batch; the policy kept is chosen, among every candidate's best checkpoint, its tail average (the
mean weights of the second half of training) and the ensembles of those, on a fresh, larger
selection batch of the same validation traces (the checkpoint scores are biased by being the best
of many on their batch). Nothing is selected on a family that is evaluated later.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesplit.agents.classical import shrunk_mean_rates
from edgesplit.agents.learned_v1 import (TiltConfig, TiltEnsemble, TiltModel, pf_weights, round_plan,
                                         shares_from_logits, tilt_features, tilt_logits)


@dataclass
class ESConfig:
    """Hyper-parameters of the evolution strategy and the simulator (see ``agents/hyperparams``)."""

    population: int = 16
    """Antithetic pairs per generation."""
    sigma: float = 0.1
    """Std of the weight perturbations."""
    lr: float = 0.03
    """Adam step size."""
    batch_rounds: int = 24
    """Rounds every candidate plays per generation (the same rounds for all)."""
    generations: int = 400
    """At most this many generations."""
    minutes: float = 12.0
    """Wall-clock budget (stops earlier)."""
    val_rounds: int = 96
    """Fixed validation rounds (validation traces of the training families)."""
    eval_every: int = 10
    """Validate every this many generations."""
    select_rounds: int = 480
    """Rounds of the selection batch (:func:`train_candidates`): fresh rounds on the validation
    traces of the training families, on which the kept policy is chosen among every candidate's
    best checkpoint, its tail average and their ensembles."""
    tail_fraction: float = 0.5
    """The tail average is the mean of the weights over the last ``tail_fraction`` of the generations."""
    val_fraction: float = 0.25
    """Share of each training family's traces held out for validation."""
    n_devices: int = 10
    interval_s: float = 5.0
    history_rounds: int = 20
    """A simulated round is round ``k`` of an episode, ``k`` uniform in ``0 .. history_rounds - 1``
    (so ``k`` reference round times of links have been measured before it)."""
    horizon_s: float = 1800.0
    """A round not over after this many simulated seconds is cut there and charged 2x."""
    fitness: str = "raw"
    """``"raw"``: the candidates' mean log round time vs the backbone's; ``"rank"``: their centred
    ranks (OpenAI-ES fitness shaping: robust to a few extreme rounds)."""
    init_std: float = 0.5
    """Std of the random first-layer weights (the output layer starts at 0: the PF rule)."""
    seed: int = 0
    """Seed of the ES noise, the first-layer weights and the training batches."""
    split_seed: int | None = None
    """Seed of the split of each family's traces into training and validation traces
    (:func:`split_family`); ``None``: ``seed``. Candidates trained with different ES seeds share
    one split, so the selection batch is on traces none of them trained on."""
    augment_warp: float = 1.0
    """Domain randomisation of the *training* rounds (never of validation or selection rounds):
    each family of a round plays its links ``w`` times faster, ``w`` log-uniform in
    ``[1 / augment_warp, augment_warp]`` (1: off). See :func:`augmented_sequence`."""
    augment_gamma: float = 1.0
    """Likewise: each family of a round has its rates (per family mean) raised to a power ``g``,
    log-uniform in ``[1 / augment_gamma, augment_gamma]``, renormalised to the family mean (more or
    less bursty links, the same outages; 1: off)."""
    tilt: TiltConfig = field(default_factory=TiltConfig)

    def augments(self) -> bool:
        """Whether the training rounds are randomised (:attr:`augment_warp`, :attr:`augment_gamma`)."""
        return self.augment_warp > 1.0 or self.augment_gamma > 1.0

    def split(self) -> int:
        """The seed of the train/validation split (``split_seed``, or ``seed`` when unset)."""
        return int(self.seed if self.split_seed is None else self.split_seed)

    def __post_init__(self) -> None:
        if self.split_seed is not None and (isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int)
                                            or self.split_seed < 0):
            raise ValueError(f"split_seed: must be an integer >= 0 or None, got {self.split_seed!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {self.seed!r}")
        if self.fitness not in ("raw", "rank"):
            raise ValueError(f"fitness: must be 'raw' or 'rank', got {self.fitness!r}")
        if int(self.history_rounds) < 1:
            raise ValueError(f"history_rounds: must be >= 1, got {self.history_rounds!r}")
        for name in ("augment_warp", "augment_gamma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 1.0 <= v <= 10.0):
                raise ValueError(f"{name}: must be a number in [1, 10] (1 = off), got {v!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ESConfig":
        """From a YAML/JSON mapping; unknown keys raise ``ValueError`` naming them."""
        d = dict(d)
        tilt = TiltConfig(**d.pop("tilt", {}))
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"config: unknown keys {bad}; allowed: {sorted(known)}")
        return cls(**d, tilt=tilt)


# ----------------------------------------------------------------------------- link rates


class FamilyRates:
    """A trace family as 1 s rate arrays (bit/s, unscaled) with the family mean used for scaling."""

    def __init__(self, name: str, traces: Sequence[Any], mean_bps: float) -> None:
        self.name = name
        self.mean_bps = float(mean_bps)
        self.rates = [self._per_second(t) for t in traces]

    @staticmethod
    def _per_second(trace: Any) -> np.ndarray:
        t = np.asarray(trace.times_s, dtype=np.float64)
        r = np.asarray(trace.rates_bps, dtype=np.float64)
        P = float(trace.period_s)
        edges = np.concatenate([t, [P]])
        cum = np.concatenate([[0.0], np.cumsum(r * np.diff(edges))])
        n = max(int(math.floor(P)), 1)
        c = np.interp(np.arange(n + 1, dtype=np.float64), edges, cum)
        return np.diff(c)

    def power_mean(self, gamma: float) -> float:
        """Mean over every second of the family's traces of ``(rate / family mean) ** gamma`` (cached)."""
        cache = self.__dict__.setdefault("_power_means", {})
        if gamma not in cache:
            x = np.concatenate(self.rates) / self.mean_bps
            cache[gamma] = float(np.mean(x ** gamma))
        return cache[gamma]

    def sequence(self, rng: np.random.Generator, length: int, start: str = "random") -> np.ndarray:
        """``length`` seconds of a link: a random trace from a random offset, continued on other
        traces of the family (never looping the same one)."""
        k = int(rng.integers(len(self.rates)))
        tr = self.rates[k]
        off = int(rng.integers(len(tr))) if start == "random" else 0
        parts = [tr[off:]]
        n = parts[0].size
        while n < length:
            if len(self.rates) > 1:
                j = int(rng.integers(len(self.rates) - 1))
                k = j + 1 if j >= k else j
            parts.append(self.rates[k])
            n += self.rates[k].size
        return np.concatenate(parts)[:length]


AUGMENT_STEPS = 8
"""Log-uniform augmentation factors are drawn on a grid of ``2 * AUGMENT_STEPS + 1`` values (so
each family's power renormalisation is computed once per value)."""


def augmented_sequence(rng: np.random.Generator, fam: FamilyRates, length: int, warp: float, gamma: float) -> np.ndarray:
    """``length`` seconds of a link of ``fam`` with time running ``warp`` times as fast (second
    ``t`` is second ``floor(t * warp)`` of a :meth:`FamilyRates.sequence`) and rates ``x`` (per
    family mean) replaced by ``x ** gamma / mean(x ** gamma)``, the mean over every second of
    ``fam``'s traces (:meth:`FamilyRates.power_mean`): over those seconds the mean rate is then the
    family mean ``fam.mean_bps``; outages stay outages, fades deepen (``gamma > 1``) or flatten.
    With ``gamma = 1`` the rates are left as they are, so their mean over ``fam``'s seconds is that
    part's own (within 4 % of the family mean for the training parts of the five real families).
    ``warp = gamma = 1``: the plain sequence."""
    raw = fam.sequence(rng, int(math.ceil(length * warp)) + 1)
    if warp != 1.0:
        raw = raw[np.minimum((np.arange(length) * warp).astype(np.int64), raw.size - 1)]
    raw = raw[:length]
    if gamma == 1.0:
        return raw
    x = raw / fam.mean_bps
    return fam.mean_bps * x ** gamma / fam.power_mean(gamma)


def _log_uniform_grid(rng: np.random.Generator, top: float) -> float:
    """A factor in ``[1 / top, top]``, log-uniform on the :data:`AUGMENT_STEPS` grid (1 when ``top == 1``)."""
    if top <= 1.0:
        return 1.0
    k = int(rng.integers(-AUGMENT_STEPS, AUGMENT_STEPS + 1))
    return float(top ** (k / AUGMENT_STEPS))


def split_family(fam: Any, val_fraction: float, seed: int = 0) -> tuple[FamilyRates, FamilyRates]:
    """``(train, validation)`` parts of a :class:`edgesplit.traces.TraceFamily`, by trace: the
    ``train`` and ``test`` parts of :func:`edgesplit.traces.split_traces` (``val_fraction``,
    ``seed``); both scale by the whole family's mean, as the env does. The same validation traces
    in the env: ``edgesplit.traces.split_families(families, "test", val_fraction, seed)``."""
    from edgesplit.traces import split_traces

    train = split_traces(fam.traces, "train", val_fraction, seed)
    val = split_traces(fam.traces, "test", val_fraction, seed)
    return FamilyRates(fam.name, train, fam.mean_bps), FamilyRates(fam.name, val, fam.mean_bps)


# ----------------------------------------------------------------------------- rounds


@dataclass
class RoundBatch:
    """``M`` rounds ready to simulate (arrays ``(M, N)`` unless said otherwise)."""

    R: np.ndarray          # (M, N, S) the links' whole-band rates over the round's seconds
    past: np.ndarray       # (M, K, N) the measured windows before the round, most recent first
    past_dur: np.ndarray   # (M, K) their durations (s)
    mean_rate: np.ndarray  # the measured mean at the round's start (the nominal rate when nothing is measured)
    nominal: np.ndarray
    B: np.ndarray
    A: np.ndarray
    plan_shares: np.ndarray
    plan_time: np.ndarray  # (M,)
    measured_s: np.ndarray | None = None  # (M,) seconds measured before the round (None: 0)


def sample_rounds(rng: np.random.Generator, families: Sequence[FamilyRates], M: int, cfg: ESConfig,
                  env: Any, k_windows: int, augment: bool = False) -> RoundBatch:
    """``M`` rounds as the simulator plays them (see module doc); ``env`` is an
    ``EdgeSplitDynamic-v1`` instance used only for its scenario generator. ``augment`` (training
    rounds only): each family of a round gets its own time warp and power
    (:func:`augmented_sequence`, ``cfg.augment_warp``, ``cfg.augment_gamma``); without it, or
    with both at 1, no random number is drawn for it (the rounds are those of before)."""
    from edgesplit.schedulers import get_scheduler

    exact = get_scheduler("exact")
    tc = cfg.tilt
    N = cfg.n_devices
    S = int(cfg.horizon_s)
    dt = int(round(cfg.interval_s))
    out = {k: [] for k in ("R", "past", "past_dur", "mean_rate", "nominal", "B", "A", "plan_shares", "plan_time",
                           "measured_s")}
    for _ in range(M):
        env.reset(seed=int(rng.integers(2**31 - 1)))
        cm = env.cost_model
        nominal = np.asarray(cm.rate_bps, dtype=np.float64)
        T_ref = float(env.reference_time_s)
        rounds_before = int(rng.integers(0, cfg.history_rounds))
        Lp = int(round(rounds_before * T_ref))
        if rng.random() < 0.5:
            fams = [families[int(rng.integers(len(families)))]] * N
        else:
            fams = [families[int(rng.integers(len(families)))] for _ in range(N)]
        if augment and cfg.augments():
            draws: dict[int, tuple[float, float]] = {}
            for f in fams:
                if id(f) not in draws:
                    draws[id(f)] = (_log_uniform_grid(rng, cfg.augment_warp), _log_uniform_grid(rng, cfg.augment_gamma))
            seqs = np.stack([augmented_sequence(rng, f, Lp + S, *draws[id(f)]) * (nominal[i] / f.mean_bps)
                             for i, f in enumerate(fams)])
        else:
            seqs = np.stack([f.sequence(rng, Lp + S) * (nominal[i] / f.mean_bps) for i, f in enumerate(fams)])
        pre, R = seqs[:, :Lp], seqs[:, Lp:]
        if Lp > 0:
            mean_rate = pre.mean(axis=1)
            last_round = pre[:, -max(1, min(Lp, int(0.8 * T_ref))):].mean(axis=1)
            known = shrunk_mean_rates(mean_rate, nominal, float(Lp), tc.plan_prior_s) \
                if tc.plan_rates == "mean" else last_round
            # the last window before a cut epoch is the previous round's compute tail (after its
            # last transfer), then 5 s windows, as the env measures them
            tail = int(min(Lp - 1, max(1, round(rng.uniform(0.0, 0.3) * T_ref)))) if Lp > 1 else Lp
            wins, durs = [pre[:, Lp - tail:].mean(axis=1)], [float(tail)]
            end = Lp - tail
            while len(wins) < k_windows and end >= dt:
                wins.append(pre[:, end - dt:end].mean(axis=1))
                durs.append(float(dt))
                end -= dt
            while len(wins) < k_windows:
                wins.append(wins[-1])
                durs.append(0.0)
            w, wd = np.stack(wins), np.asarray(durs)
        else:
            mean_rate = nominal.copy()
            known = nominal.copy()
            w = np.broadcast_to(nominal, (k_windows, N))  # nothing measured: padding, as the env policy pads
            wd = np.zeros(k_windows)
        plan = round_plan(cm, np.maximum(known, 1e-3 * nominal), exact)
        compute, traffic = cm.select(plan.cuts)
        out["R"].append(R)
        out["past"].append(np.array(w))
        out["past_dur"].append(wd)
        out["mean_rate"].append(mean_rate)
        out["nominal"].append(nominal)
        out["B"].append(np.asarray(traffic, dtype=np.float64))
        out["A"].append(np.asarray(compute, dtype=np.float64))
        out["plan_shares"].append(np.asarray(plan.shares, dtype=np.float64))
        out["plan_time"].append(float(plan.round_time_s))
        out["measured_s"].append(float(Lp))
    return RoundBatch(**{k: np.asarray(v, dtype=np.float32 if k == "R" else np.float64) for k, v in out.items()})


def simulate(batch: RoundBatch, thetas: np.ndarray, cfg: ESConfig) -> np.ndarray:
    """Round times ``(C, M)`` of ``C`` parameter vectors ``thetas (C, P)`` (of ``cfg.tilt``) on the
    ``M`` rounds of ``batch`` (every candidate on the same rounds)."""
    thetas = np.atleast_2d(thetas)
    theta_rows = np.repeat(thetas, batch.R.shape[0], axis=0)
    return _simulate(batch, thetas.shape[0], lambda x, base, sending: tilt_logits(theta_rows, x, base, sending,
                                                                                  cfg.tilt), cfg)


def simulate_models(batch: RoundBatch, models: Sequence[Any], cfg: ESConfig) -> np.ndarray:
    """Round times ``(C, M)`` of ``C`` saved tilts or tilt ensembles (anything with ``logits``, on
    the backbone of ``cfg.tilt``) on the ``M`` rounds of ``batch``."""
    M = batch.R.shape[0]

    def logits(x: np.ndarray, base: np.ndarray, sending: np.ndarray) -> np.ndarray:
        return np.concatenate([m.logits(x[c * M:(c + 1) * M], base[c * M:(c + 1) * M], sending[c * M:(c + 1) * M])
                               for c, m in enumerate(models)])

    return _simulate(batch, len(models), logits, cfg)


def _simulate(batch: RoundBatch, C: int, logits_fn: Any, cfg: ESConfig) -> np.ndarray:
    """The simulator: ``C`` policies (``logits_fn(x, base, sending)`` gives the log-shares of all
    ``C * M`` rows, policy ``c`` on rows ``c * M .. (c + 1) * M - 1``), round times ``(C, M)``."""
    tc = cfg.tilt
    M, N, S = batch.R.shape
    rows = C * M
    ridx = np.tile(np.arange(M), C)
    R = batch.R
    B = batch.B[ridx]
    A = batch.A[ridx]
    past = batch.past[ridx].copy()
    past_dur = batch.past_dur[ridx].copy()
    window_s = tc.pf_window * cfg.interval_s
    mean0, nominal = batch.mean_rate[ridx], batch.nominal[ridx]
    measured = (np.zeros(M) if batch.measured_s is None else np.asarray(batch.measured_s, dtype=np.float64))[ridx]
    seen = np.zeros((rows, N))  # bits per unit share delivered since the round's start
    plan_shares, plan_time = batch.plan_shares[ridx], batch.plan_time[ridx]
    left = B.copy()
    sending = left > 0
    tau = np.where(sending, np.inf, 0.0)
    dt = int(round(cfg.interval_s))
    t = 0
    while sending.any() and t + dt <= S:
        # the measured mean since the episode start, as policy_view() gives it at this epoch
        span = measured + t
        mean_rate = np.where((span > 0)[:, None], (measured[:, None] * mean0 + seen) / np.maximum(span, 1e-12)[:, None],
                             nominal)
        x, base = tilt_features(past, mean_rate, nominal, left, B, sending, A, np.full(rows, float(t)),
                                plan_shares, plan_time, tc, avg_weights=pf_weights(past_dur, window_s))
        beta = shares_from_logits(logits_fn(x, base, sending))
        for s in range(t, t + dt):
            r = R[ridx, :, s].astype(np.float64)
            frac = np.ones(rows)  # part of this second still to play, per row
            while True:
                act = sending & (frac[:, None] > 0)
                if not act.any():
                    break
                b = np.where(act, beta, 0.0)
                tot = b.sum(axis=1, keepdims=True)
                b = b / np.where(tot > 0, tot, 1.0)
                cap = b * r  # bits per second now
                with np.errstate(divide="ignore", invalid="ignore"):
                    ttf = np.where(act & (cap > 0), left / np.where(cap > 0, cap, 1.0), np.inf)
                tmin = ttf.min(axis=1)
                step = np.minimum(tmin, frac)
                left = np.where(act, np.maximum(left - cap * step[:, None], 0.0), left)
                fin = act & (ttf <= step[:, None] * (1 + 1e-12)) & np.isfinite(ttf)
                if fin.any():
                    tau = np.where(fin, (s + 1.0 - frac + step)[:, None], tau)
                    left = np.where(fin, 0.0, left)
                    sending = sending & ~fin
                frac = np.where(tmin < frac, frac - step, 0.0)
                if not (frac > 0).any():
                    break
        win = R[ridx, :, t:t + dt].mean(axis=2).astype(np.float64)
        seen = seen + win * dt
        past = np.concatenate([win[:, None, :], past[:, :-1]], axis=1)
        past_dur = np.concatenate([np.full((rows, 1), float(dt)), past_dur[:, :-1]], axis=1)
        t += dt
    T = np.where(np.isfinite(tau), tau, 2.0 * S) + A
    return T.max(axis=1).reshape(C, M)


# ----------------------------------------------------------------------------- evolution strategies


def load_training_families(folders: Sequence[str | Path], exclude: Sequence[str] = ()) -> list[Any]:
    """The trace families in ``folders`` (``edgesplit.traces.load_families``), minus ``exclude``."""
    from edgesplit.traces import load_families

    fams = [f for f in load_families([str(p) for p in folders]) if f.name not in set(exclude)]
    if not fams:
        raise ValueError(f"traces: no family left to train on (folders {list(folders)}, excluded {list(exclude)})")
    return fams


def tuned_backbone(families: Sequence[Any], cfg: ESConfig, out: str | Path | None = None,
                   episodes: int = 8, rounds: int = 5, seed: int = 7000,
                   grid: dict[str, Sequence[float]] | None = None, progress: bool = True) -> tuple[ESConfig, Any]:
    """``cfg`` with the tilt's backbone set to ``pf`` tuned on ``families``
    (:func:`edgesplit.agents.classical_tuning.tune_pf`: exponent, window, planning prior), and the
    tuned :class:`~edgesplit.agents.classical_tuning.PFParams`. With ``out``, the tuning is written
    to ``out/pf.json`` (+ ``out/pf_tuning.csv``) and reused from there when present. The learned
    tilt then starts from (and is judged against) the strongest ``pf`` the training families
    support, never one tuned on a family it is judged on."""
    import dataclasses

    from edgesplit.agents.classical_tuning import PFParams, tune_pf

    path = Path(out) / "pf.json" if out is not None else None
    names = [f.name for f in families]
    if path is not None and path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("tuned_on") != names:
            raise ValueError(f"backbone: {path} was tuned on {doc.get('tuned_on')}, not on {names}; "
                             f"remove it to tune again")
        params = PFParams.from_json(doc["pf"])
    else:
        params, rows = tune_pf(families, episodes=episodes, rounds=rounds, n_devices=cfg.n_devices, seed=seed,
                               grid=grid, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name("pf_tuning.csv"), "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            path.write_text(json.dumps({"tuned_on": names, "pf": params.to_json(), "episodes": episodes,
                                        "rounds": rounds, "seed": seed, "n_devices": cfg.n_devices}, indent=2) + "\n")
    tilt = dataclasses.replace(cfg.tilt, alpha=params.exponent,
                               pf_window=max(1, int(round(params.window_s / cfg.interval_s))),
                               plan_prior_s=params.prior_s)
    return dataclasses.replace(cfg, tilt=tilt), params


def train_es(families: Sequence[Any], cfg: ESConfig, out: str | Path | None = None,
             log: Any = sys.stderr, init: TiltModel | None = None,
             extra_meta: dict[str, Any] | None = None) -> tuple[TiltModel, list[dict[str, Any]]]:
    """Train the tilt on ``families`` (``TraceFamily`` objects) with OpenAI-ES; returns the model
    with the best validation score and the log rows. Writes ``progress.csv`` (as it goes) and
    ``model.{npz,json}`` to ``out`` when given. ``init``: continue from these weights (same
    config; a fresh optimiser state) instead of a random start."""
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401  (registers the ids)

    t0 = time.time()
    tc = cfg.tilt
    k_windows = max(tc.pf_window, 6)
    rng = np.random.default_rng(cfg.seed)
    parts = [split_family(f, cfg.val_fraction, seed=cfg.split()) for f in families]
    train_f = [p[0] for p in parts]
    val_f = [p[1] for p in parts]
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=cfg.n_devices, traces=list(families)).unwrapped
    val_batch = sample_rounds(np.random.default_rng(cfg.seed + 10_000), val_f, cfg.val_rounds, cfg, env, k_windows)
    P = tc.n_params()
    theta = np.zeros(P)
    F2H = tc.n_inputs() * tc.hidden
    theta[:F2H] = rng.normal(0.0, cfg.init_std, F2H) / math.sqrt(tc.n_inputs())
    if init is not None:
        if init.cfg != tc:
            raise ValueError(f"init: the model's config {init.cfg} differs from the training config {tc}")
        theta = np.asarray(init.theta, dtype=np.float64).copy()
    m = np.zeros(P)
    v = np.zeros(P)
    rows: list[dict[str, Any]] = []
    best = (math.inf, theta.copy(), -1)
    out_dir = Path(out) if out is not None else None
    writer = None
    fh = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        fh = open(out_dir / "progress.csv", "w", newline="")
    steps = 0
    tail_from = int(math.floor(cfg.generations * (1.0 - cfg.tail_fraction)))
    tail_sum, tail_n = np.zeros(P), 0

    def validate(th: np.ndarray) -> float:
        T = simulate(val_batch, np.stack([np.zeros(P), th]), cfg)
        return float(np.mean(np.log(T[1] / T[0])))

    if init is not None:
        best = (validate(theta), theta.copy(), 0)
    try:
        for g in range(cfg.generations):
            batch = sample_rounds(rng, train_f, cfg.batch_rounds, cfg, env, k_windows, augment=True)
            eps = rng.normal(0.0, 1.0, (cfg.population, P))
            cands = np.concatenate([np.zeros((1, P)), theta[None], theta + cfg.sigma * eps, theta - cfg.sigma * eps])
            T = np.log(simulate(batch, cands, cfg))
            steps += int(cands.shape[0] * cfg.batch_rounds * np.ceil(np.exp(T).mean() / cfg.interval_s))
            ref = T[0]
            cur = float(np.mean(T[1] - ref))
            fp = (T[2:2 + cfg.population] - ref).mean(axis=1)
            fm = (T[2 + cfg.population:] - ref).mean(axis=1)
            if cfg.fitness == "rank":  # centred ranks of all 2 x population candidates (OpenAI-ES)
                r = np.empty(2 * cfg.population)
                r[np.argsort(np.concatenate([fp, fm]), kind="stable")] = np.arange(2 * cfg.population)
                r = r / (2 * cfg.population - 1) - 0.5
                fp, fm = r[:cfg.population], r[cfg.population:]
            grad = ((fp - fm)[:, None] * eps).mean(axis=0) / (2 * cfg.sigma)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad ** 2
            theta = theta - cfg.lr * (m / (1 - 0.9 ** (g + 1))) / (np.sqrt(v / (1 - 0.999 ** (g + 1))) + 1e-8)
            if g + 1 > tail_from:
                tail_sum += theta
                tail_n += 1
            row: dict[str, Any] = {"generation": g + 1, "wall_s": round(time.time() - t0, 1),
                                   "train_log_ratio_vs_pf": round(cur, 5), "val_log_ratio_vs_pf": "",
                                   "sim_interval_steps_per_s": round(steps / max(time.time() - t0, 1e-9))}
            last = (g + 1) % cfg.eval_every == 0 or g + 1 == cfg.generations or \
                time.time() - t0 > 60 * cfg.minutes
            if last:
                val = validate(theta)
                row["val_log_ratio_vs_pf"] = round(val, 5)
                if val < best[0]:
                    best = (val, theta.copy(), g + 1)
                print(f"gen {g + 1}: {row['wall_s']:.0f} s, train {cur:+.4f}, validation {val:+.4f} "
                      f"(log time ratio vs PF), {row['sim_interval_steps_per_s']} sim steps/s", file=log, flush=True)
            rows.append(row)
            if fh is not None:
                if writer is None:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                fh.flush()
            if time.time() - t0 > 60 * cfg.minutes:
                if g + 1 < cfg.generations:
                    print(f"stopped by the wall-clock cap ({cfg.minutes} min) after {g + 1} of {cfg.generations} "
                          f"generations: these weights depend on the machine's speed", file=log, flush=True)
                break
    finally:
        if fh is not None:
            fh.close()
    if best[2] < 0 or (best[0] >= 0.0 and init is None):
        # never better than PF on validation: ship PF itself (zero tilt), and say so
        best = (0.0, np.zeros(P), 0)
    meta = {"trained_on": [f.name for f in families], "validation_log_ratio_vs_pf": best[0],
            "best_generation": best[2], "generations": len(rows), "wall_s": round(time.time() - t0, 1),
            "stopped_by_minutes_cap": len(rows) < cfg.generations,
            "es": {k: v for k, v in asdict(cfg).items() if k != "tilt"}, "n_devices": cfg.n_devices,
            **(extra_meta or {})}
    if init is not None:
        meta["continued_from"] = {k: init.meta.get(k) for k in ("trained_on", "generations", "wall_s",
                                                                 "validation_log_ratio_vs_pf")}
    model = TiltModel(theta=best[1], cfg=tc, meta=meta)
    if out_dir is not None:
        model.save(out_dir / "model")
        tail = tail_sum / tail_n if tail_n else theta
        avg_meta = {**meta, "weights": f"mean over generations {len(rows) - tail_n + 1}..{len(rows)}"
                    if tail_n else "last generation", "validation_log_ratio_vs_pf": validate(tail),
                    "best_generation": None}
        TiltModel(theta=tail, cfg=tc, meta=avg_meta).save(out_dir / "model-avg")
    return model, rows


def load_config(path: str | Path | None) -> ESConfig:
    """The first candidate of :func:`load_candidates` (``None``: the defaults)."""
    return load_candidates(path)[0][1]


def load_candidates(path: str | Path | None) -> list[tuple[str, ESConfig]]:
    """``(name, config)`` candidates from a YAML file (``None``: the defaults, one candidate).

    The file holds the settings under ``EdgeSplitDynamic-v1:`` (or at the top level); an optional
    ``candidates:`` list of ``{name: ..., <overrides>}`` gives several configurations that share
    the other settings (a ``tilt:`` override is merged into the shared ``tilt``).
    :func:`train_candidates` trains each and keeps the one with the best validation score."""
    if path is None:
        return [("default", ESConfig())]
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config: {p} not found")
    doc = yaml.safe_load(p.read_text()) or {}
    if "EdgeSplitDynamic-v1" in doc:
        doc = doc["EdgeSplitDynamic-v1"]
    doc = dict(doc)
    cands = doc.pop("candidates", None)
    if not cands:
        return [("default", ESConfig.from_dict(doc))]
    out = []
    for k, c in enumerate(cands):
        c = dict(c)
        name = str(c.pop("name", f"candidate-{k}"))
        merged = {**doc, **c}
        merged["tilt"] = {**doc.get("tilt", {}), **c.get("tilt", {})}
        try:
            out.append((name, ESConfig.from_dict(merged)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: candidate {name!r}: {exc}") from None
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"config: candidate names must be distinct, got {[n for n, _ in out]}")
    return out


def check_shared_split(candidates: Sequence[tuple[str, ESConfig]]) -> None:
    """Raise ``ValueError`` unless every candidate has the same train/validation split
    (:meth:`ESConfig.split` and ``val_fraction``): the selection batch must be on traces that no
    candidate trained on, and on other rounds than any candidate's checkpoint validation (seed
    ``seed + 10000``; the selection's is the first candidate's ``seed + 20000``)."""
    splits = {(c.split(), float(c.val_fraction)) for _, c in candidates}
    if len(splits) > 1:
        got = {n: {"split": c.split(), "val_fraction": c.val_fraction} for n, c in candidates}
        raise ValueError(f"candidates: must share one train/validation split (split_seed, val_fraction), got {got}; "
                         f"set split_seed once for all")
    if candidates:
        sel = candidates[0][1].seed + 20_000  # the selection batch's seed (selection_scores)
        clash = [n for n, c in candidates if c.seed + 10_000 == sel]
        if clash:
            raise ValueError(f"candidates: seed of {clash} is the first candidate's + 10000, so its checkpoint "
                             f"validation rounds would be the selection rounds; choose another seed")


REUSE_FIELDS = ("seed", "val_fraction", "generations", "population", "sigma", "lr", "batch_rounds", "fitness",
                "n_devices", "interval_s", "augment_warp", "augment_gamma")
"""Settings a reused candidate (:func:`train_candidates`) must have been trained with."""


def check_reusable(name: str, model: TiltModel, cfg: ESConfig, network: bool = True) -> None:
    """Raise ``ValueError`` unless a candidate found on disk was trained as ``cfg`` would train it:
    the same split of the traces (else the selection rounds could hold traces it trained on), ES
    settings (:data:`REUSE_FIELDS`) and, with ``network``, network (``tilt``; without: for a
    ``cfg`` whose backbone is not tuned yet)."""
    es = dict(model.meta.get("es") or {})
    if not es:
        raise ValueError(f"candidate {name}: the saved model records no ES settings; remove its folder to retrain")
    saved = ESConfig.from_dict({k: v for k, v in es.items() if k in ESConfig.__dataclass_fields__})
    diffs = {k: (getattr(saved, k), getattr(cfg, k)) for k in REUSE_FIELDS if getattr(saved, k) != getattr(cfg, k)}
    if saved.split() != cfg.split():
        diffs["split"] = (saved.split(), cfg.split())
    if network and model.cfg != cfg.tilt:
        diffs["tilt"] = (asdict(model.cfg), asdict(cfg.tilt))
    if diffs:
        raise ValueError(f"candidate {name}: trained with other settings than the config's "
                         f"{ {k: {'saved': a, 'config': b} for k, (a, b) in diffs.items()} }; remove its folder to retrain")


def reseed(candidates: Sequence[tuple[str, ESConfig]], seed: int) -> list[tuple[str, ESConfig]]:
    """The candidates shifted so that the first one's ES seed is ``seed``: every ES seed and the
    split seed move by the same amount (candidates keep their seed offsets and their shared split)."""
    import dataclasses

    if not candidates:
        return []
    delta = int(seed) - int(candidates[0][1].seed)
    return [(n, dataclasses.replace(c, seed=c.seed + delta,
                                    split_seed=None if c.split_seed is None else c.split_seed + delta))
            for n, c in candidates]


def selection_options(trained: Sequence[tuple[str, TiltModel, TiltModel | None]]) -> dict[str, Any]:
    """The policies :func:`train_candidates` chooses among: each candidate's best checkpoint
    (``name``) and tail average (``name:avg``), and with several candidates the ensemble of the
    best checkpoints (``ensemble``) and of the tail averages (``ensemble:avg``)."""
    opts: dict[str, Any] = {}
    for name, best, avg in trained:
        opts[name] = best
        if avg is not None:
            opts[f"{name}:avg"] = avg
    if len(trained) > 1:
        opts["ensemble"] = TiltEnsemble([b for _, b, _ in trained])
        if all(a is not None for _, _, a in trained):
            opts["ensemble:avg"] = TiltEnsemble([a for _, _, a in trained])
    return opts


def selection_scores(families: Sequence[Any], options: dict[str, Any], cfg: ESConfig) -> dict[str, float]:
    """Mean log round time vs the PF backbone of every option on a fresh selection batch:
    ``cfg.select_rounds`` rounds (seed ``cfg.seed + 20000``) on the validation traces of
    ``families`` (the split of :func:`train_es`), never a family judged later. ``cfg``: the
    backbone every option shares."""
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401  (registers the ids)

    val_f = [split_family(f, cfg.val_fraction, seed=cfg.split())[1] for f in families]
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=cfg.n_devices, traces=list(families)).unwrapped
    batch = sample_rounds(np.random.default_rng(cfg.seed + 20_000), val_f, cfg.select_rounds, cfg, env,
                          max(cfg.tilt.pf_window, 6))
    names = list(options)
    T = np.log(simulate_models(batch, [TiltModel.zero(cfg.tilt)] + [options[n] for n in names], cfg))
    return {n: float(np.mean(T[k + 1] - T[0])) for k, n in enumerate(names)}


class _Prefixed:
    """A log stream that prefixes each line (candidates training side by side)."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self.stream, self.prefix, self._bol = stream, prefix, True

    def write(self, text: str) -> int:
        out = []
        for part in text.splitlines(keepends=True):
            out.append((self.prefix if self._bol else "") + part)
            self._bol = part.endswith("\n")
        self.stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _train_candidate(families: Sequence[Any], name: str, cfg: ESConfig, sub: Path, extra: dict[str, Any]) -> None:
    """One candidate in a worker process (:func:`train_candidates` with ``jobs > 1``)."""
    train_es(families, cfg, sub, log=_Prefixed(sys.stderr, f"[{name}] "), extra_meta=extra)


def train_candidates(families: Sequence[Any], candidates: Sequence[tuple[str, ESConfig]], out: str | Path,
                     log: Any = sys.stderr, backbone: bool = True, jobs: int = 1) -> "TiltModel | TiltEnsemble":
    """Train every candidate configuration on ``families`` (into ``out/<name>``: its best
    checkpoint ``model`` and its tail average ``model-avg``), then keep as ``out/model`` the
    option of :func:`selection_options` with the best score on a fresh selection batch
    (:func:`selection_scores`: validation traces of the *training* families, never a family judged
    later); a candidate already trained there is reused. With ``backbone``, each trains on ``pf``
    tuned on ``families`` (:func:`tuned_backbone`, tuned once, ``out/pf.json``). ``jobs``: train
    up to this many candidates at once, one process each (the result is the same as with 1).
    All candidates must share one train/validation split (:meth:`ESConfig.split`, ``val_fraction``),
    else the selection batch could hold traces a candidate trained on. Returns the kept policy
    (its metadata names the option and every score)."""
    out = Path(out)
    if int(jobs) < 1:
        raise ValueError(f"jobs: must be >= 1, got {jobs!r}")
    check_shared_split(candidates)
    t_start = time.time()
    todo: list[tuple[str, ESConfig, Path, dict[str, Any]]] = []
    prepared: list[tuple[str, Path]] = []
    extra: dict[str, Any] = {}
    cfg0: ESConfig | None = None
    for name, cfg in candidates:
        extra = {"candidate": name}
        if backbone:
            cfg, params = tuned_backbone(families, cfg, out)
            extra["backbone_pf"] = params.to_json()
        cfg0 = cfg0 or cfg
        sub = out / name
        prepared.append((name, sub))
        if (sub / "model.json").is_file():
            check_reusable(name, TiltModel.load(sub / "model"), cfg)
            print(f"candidate {name}: trained already ({sub})", file=log, flush=True)
        else:
            print(f"candidate {name}: training on {[f.name for f in families]}", file=log, flush=True)
            todo.append((name, cfg, sub, dict(extra)))
    if int(jobs) > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the workers: one thread each
        with ProcessPoolExecutor(max_workers=min(int(jobs), len(todo)), mp_context=mp.get_context("spawn")) as ex:
            for fut in [ex.submit(_train_candidate, families, *job) for job in todo]:
                fut.result()
    else:
        for name, cfg, sub, ex_meta in todo:
            train_es(families, cfg, sub, log=log, extra_meta=ex_meta)
    val_scores: dict[str, float] = {}
    trained: list[tuple[str, TiltModel, TiltModel | None]] = []
    for name, sub in prepared:
        model = TiltModel.load(sub / "model")
        avg = TiltModel.load(sub / "model-avg") if (sub / "model-avg.json").is_file() else None
        val_scores[name] = float(model.meta["validation_log_ratio_vs_pf"])
        trained.append((name, model, avg))
    assert cfg0 is not None
    options = selection_options(trained)
    t0 = time.time()
    scores = selection_scores(families, options, cfg0)
    kept = min(scores, key=lambda n: scores[n])
    choice = options[kept]
    meta = {"trained_on": [f.name for f in families], "selected": kept, "selection_log_ratio_vs_pf": scores,
            "selection_rounds": cfg0.select_rounds, "validation_log_ratio_vs_pf": scores[kept],
            "checkpoint_validation": val_scores, "n_devices": cfg0.n_devices,
            "wall_s": round(sum(float(m.meta.get("wall_s", 0.0)) for _, m, _ in trained) + time.time() - t0, 1),
            "elapsed_s": round(time.time() - t_start, 1), "jobs": int(jobs),
            "generations": sum(int(m.meta.get("generations", 0)) for _, m, _ in trained)}
    if "backbone_pf" in extra:
        meta["backbone_pf"] = extra["backbone_pf"]
    if isinstance(choice, TiltEnsemble):
        model = TiltEnsemble(choice.members, meta={**meta, "candidate": kept})
    else:
        model = TiltModel(theta=choice.theta, cfg=choice.cfg, meta={**choice.meta, **meta,
                                                                    "candidate": kept.split(":")[0]})
    model.save(out / "model")
    print(f"kept {kept} (selection batch of {cfg0.select_rounds} rounds, log time ratio vs pf: "
          f"{', '.join(f'{k} {v:+.4f}' for k, v in scores.items())})", file=log, flush=True)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train a tilt (see ``--help``)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(prog="python -m edgesplit.agents.learned_v1_training",
                                 description="Train the learned EdgeSplitDynamic-v1 scheduler (a residual tilt "
                                             "on the PF rule) with evolution strategies. pf is first tuned on the "
                                             "training families (OUT/pf.json); each candidate configuration of "
                                             "--config trains into OUT/<name>, and the one with the best validation "
                                             "score (held-out traces of the training families) is kept as OUT/model.")
    ap.add_argument("--traces", nargs="+", required=True, help="trace folders (a folder = a family; "
                    "pensieve-train holds fcc and hsdpa)")
    ap.add_argument("--exclude-family", nargs="*", default=[], help="families left out of training")
    ap.add_argument("--config", default=None, help="hyper-parameter YAML, optionally with candidates "
                    "(agents/hyperparams/edgesplit-dynamic-v1-learned.yml)")
    ap.add_argument("--out", required=True, help="output folder (pf.json, <candidate>/progress.csv, model.npz/json)")
    ap.add_argument("--seed", type=int, default=None, help="shift the seeds so that the first candidate's ES "
                    "seed is SEED (every candidate's ES seed and the shared split seed move by the same amount)")
    ap.add_argument("--jobs", type=int, default=1, help="candidates trained at once, one process each (default 1; "
                    "2 on a 2-core machine); the models are the same as with 1")
    ap.add_argument("--minutes", type=float, default=None, help="override the wall-clock budget (per candidate)")
    ap.add_argument("--generations", type=int, default=None, help="override the number of generations")
    ap.add_argument("--augment-warp", type=float, default=None, help="override every candidate's augment_warp "
                    "(randomised training rounds: time warp up to this factor; 1 = off)")
    ap.add_argument("--augment-gamma", type=float, default=None, help="override every candidate's augment_gamma "
                    "(randomised training rounds: rate power up to this factor; 1 = off)")
    ap.add_argument("--init", default=None, help="continue from a saved tilt (same config; first candidate only)")
    ap.add_argument("--backbone", choices=("tuned", "config"), default="tuned",
                    help="tuned (default): tune pf's exponent, window and planning prior on the training families "
                         "first (OUT/pf.json, ~1 min) and build the tilt on it; config: the config's tilt values")
    args = ap.parse_args(argv)
    import dataclasses

    try:
        cands = load_candidates(args.config)
        over = {k: v for k, v in (("minutes", args.minutes), ("generations", args.generations),
                                  ("augment_warp", args.augment_warp), ("augment_gamma", args.augment_gamma))
                if v is not None}
        cands = [(n, dataclasses.replace(c, **over)) for n, c in cands]
        if args.seed is not None:
            cands = reseed(cands, args.seed)
        check_shared_split(cands)
        if args.jobs < 1:
            raise ValueError(f"jobs: must be >= 1, got {args.jobs}")
        fams = load_training_families(args.traces, args.exclude_family)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"training on {[f.name for f in fams]} ({sum(len(f) for f in fams)} traces)", file=sys.stderr)
    if args.init:
        init = TiltModel.load(args.init)
        model, _ = train_es(fams, dataclasses.replace(cands[0][1], tilt=init.cfg), args.out, init=init,
                            extra_meta={k: init.meta[k] for k in ("backbone_pf", "candidate") if k in init.meta})
    else:
        model = train_candidates(fams, cands, args.out, backbone=args.backbone == "tuned", jobs=args.jobs)
    print(json.dumps({"out": str(args.out), "trained_on": model.meta["trained_on"],
                      "candidate": model.meta.get("candidate"), "selected": model.meta.get("selected"),
                      "validation_log_ratio_vs_pf": model.meta["validation_log_ratio_vs_pf"],
                      "wall_s": model.meta["wall_s"], "generations": model.meta["generations"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
