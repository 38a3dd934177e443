"""Evaluate policies on the same episodes: same seeds, same traces, same devices.

Episode ``k`` of an evaluation with seed ``S`` is ``env.reset(seed=S + k)``: the scenario (devices),
each device's trace and start offset are drawn from that seed, so every policy meets exactly the
same episodes (common random numbers). Policies are deterministic given the seed, so the same
seed gives the same numbers.

Functions other modules may call (e.g. periodic evaluation during training):

- :func:`run_episode` (one episode of one policy: total simulated time),
- :func:`evaluate_policies` (policies x episodes -> a per-episode DataFrame),
- :func:`evaluate_v1` (``EdgeSplitDynamic-v1``: the policy, every classical policy of
  :data:`~edgesplit.agents.policies.V1_CLASSICAL` and the oracle on the same episodes of each trace
  family; summary with interquartile means and stratified bootstrap CIs),
- :func:`summarize_v1`, :func:`iqm`, :func:`stratified_bootstrap_ci`,
- :func:`evaluate` (what ``edgesplit evaluate`` runs; v0 and v1).

Aggregation (v1): per-episode ratios (policy total / reference total on the same episode) are
aggregated with the interquartile mean (IQM: the mean of the middle 50 %) and 95 % confidence
intervals from a stratified bootstrap (episodes resampled within each trace family), as in
Agarwal et al., "Deep RL at the edge of the statistical precipice" (NeurIPS 2021). We implement
both here (a few lines of numpy) rather than depend on ``rliable``, which pulls in arch,
statsmodels, seaborn and absl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
import pandas as pd

from edgesplit.agents.factories import make_base_env
from edgesplit.traces import load_trace_list
from edgesplit.agents.policies import (CLASSICAL, REFERENCE, V1_CLASSICAL, ByEnvPolicy, LearnedPolicy, Policy,
                                       get_policy)
from edgesplit.envs.dynamic_v1 import DEFAULT_V1_ROUNDS
from edgesplit.traces import Trace, TraceFamily, default_families, load_families, split_families

V1_ID = "EdgeSplitDynamic-v1"
"""The env id of the honest dynamic env."""

BOOTSTRAP_REPS = 2000
"""Bootstrap resamples for the confidence intervals of :func:`summarize_v1`."""

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t_quantile_975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (table; ~1.96 for large)."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    return 1.959964 + 2.4 / dof  # within 0.002 of the exact value for dof > 30


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the two ends of its 95 % t confidence interval (NaN ends for one value)."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean()) if x.size else math.nan
    if x.size < 2 or not np.isfinite(x).all():
        return m, math.nan, math.nan
    half = t_quantile_975(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


@dataclass
class EpisodeResult:
    """One episode of one policy."""

    policy: str
    episode: int
    seed: int
    total_time_s: float
    rounds: int
    mean_round_time_s: float
    stalled: bool


def run_episode(env: gym.Env, policy: Policy, seed: int, episode: int = 0) -> EpisodeResult:
    """Play one episode of ``env`` (reset with ``seed``) with ``policy``; total = sum of round times
    (per-round envs) or of the steps' simulated seconds (``EdgeSplitDynamic-v1``: a step is a
    decision epoch, ``info["step_time_s"]``)."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    total = 0.0
    rounds = 0
    stalled = False
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if "step_time_s" in info:
            total += float(info["step_time_s"])
            rounds += int(bool(info.get("round_done", False)))
            if info.get("stalled", False):
                total = math.inf
        else:
            total += float(info["round_time_s"])
            rounds += 1
        stalled = stalled or bool(info.get("stalled", False))
        if terminated or truncated:
            break
    return EpisodeResult(policy.name, episode, seed, total, rounds, total / rounds if rounds else math.nan, stalled)


def evaluate_policies(policies: Iterable[Policy], env: gym.Env, episodes: int, seed: int,
                      progress: bool = False) -> pd.DataFrame:
    """Every policy on episodes ``seed, seed + 1, ..., seed + episodes - 1`` of ``env``.

    Returns one row per (policy, episode): ``policy, episode, seed, total_time_s, rounds,
    mean_round_time_s, stalled``.
    """
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {episodes}")
    policies = list(policies)
    rows = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes * len(policies), desc="evaluate", unit="episode", leave=False)
    for pol in policies:
        for k in range(episodes):
            rows.append(run_episode(env, pol, seed + k, k).__dict__)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return pd.DataFrame(rows)


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def summarize(df: pd.DataFrame, policy: str, alternating: str = "alternating",
              oracle: str = "oracle") -> dict[str, Any]:
    """The JSON summary of ``policy`` in ``df`` (from :func:`evaluate_policies`), with its ratios
    to ``alternating`` and ``oracle`` on the same episodes.

    ``ratio_to_*`` is the ratio of mean total times; ``gap_closed`` is
    ``(alternating - policy) / (alternating - oracle)`` of the mean totals (1 = as good as the
    oracle, 0 = no better than alternating).
    """
    def totals(name: str) -> np.ndarray:
        sel = df[df["policy"] == name].sort_values("episode")
        if sel.empty:
            raise ValueError(f"summarize: no episodes of policy {name!r}")
        return sel["total_time_s"].to_numpy()

    mine = totals(policy)
    sel = df[df["policy"] == policy]
    m, lo, hi = mean_ci95(mine)
    out: dict[str, Any] = {
        "policy": policy,
        "episodes": int(mine.size),
        "mean_total_time_s": _num(m),
        "mean_round_time_s": _num(float(sel["mean_round_time_s"].mean())),
        "ci95_total_time_s": [_num(lo), _num(hi)],
        "stalled_episodes": int(sel["stalled"].sum()),
    }
    alt = totals(alternating).mean() if alternating in set(df["policy"]) else math.nan
    orc = totals(oracle).mean() if oracle in set(df["policy"]) else math.nan
    out["alternating_mean_total_time_s"] = _num(alt)
    out["oracle_mean_total_time_s"] = _num(orc)
    out["ratio_to_alternating"] = _num(m / alt) if alt and math.isfinite(alt) else None
    out["ratio_to_oracle"] = _num(m / orc) if orc and math.isfinite(orc) else None
    gap = alt - orc
    out["gap_closed"] = _num((alt - m) / gap) if math.isfinite(gap) and gap > 0 else None
    return out


# ----------------------------------------------------------------------------- aggregation (IQM, bootstrap)


def iqm(values: Sequence[float] | np.ndarray, axis: int = -1) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50 % (``scipy.stats.trim_mean(x, 0.25)``)."""
    from scipy.stats import trim_mean

    x = np.asarray(values, dtype=np.float64)
    if x.shape[axis] == 0:
        return math.nan
    return trim_mean(x, 0.25, axis=axis)


def stratified_bootstrap_ci(strata: Sequence[Sequence[float]], statistic: Any = iqm, reps: int = BOOTSTRAP_REPS,
                            seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over the pooled values, resampling with replacement
    *within* each stratum (e.g. each trace family), so every resample keeps the strata's sizes.
    ``statistic(x, axis=-1)`` must reduce the last axis. NaN ends if there are no values or a
    non-finite value."""
    arrays = [np.asarray(s, dtype=np.float64) for s in strata if len(s)]
    if not arrays or not all(np.isfinite(a).all() for a in arrays):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = np.concatenate([a[rng.integers(0, a.size, size=(reps, a.size))] for a in arrays], axis=1)
    stats = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
    lo, hi = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _ratio(num: float, den: float) -> float | None:
    """``num / den`` as JSON (None where undefined: 0/0, inf, NaN)."""
    if not (math.isfinite(num) and math.isfinite(den)) or den == 0:
        return None
    return num / den


# ----------------------------------------------------------------------------- EdgeSplitDynamic-v1


def family_envs(families: Sequence[TraceFamily], n_devices: int, **env_kwargs: Any) -> dict[str, gym.Env]:
    """One ``EdgeSplitDynamic-v1`` env per family (the strata of an evaluation)."""
    from edgesplit.envs import namespaced

    return {f.name: gym.make(namespaced(V1_ID), n_devices=int(n_devices), traces=[f], **env_kwargs) for f in families}


def resolve_eval_families(traces: str | Sequence[str] | Sequence[TraceFamily] | None,
                          trace_split: str = "all") -> list[TraceFamily]:
    """Families of an evaluation: ``None`` (the built-in synthetic family), folder(s) (a folder is a
    family; Pensieve's holds two) or :class:`TraceFamily` objects; ``trace_split`` keeps that part of
    every family (:func:`edgesplit.traces.split_traces`)."""
    if traces is None:
        fams = list(default_families())
    elif isinstance(traces, (str,)) or hasattr(traces, "__fspath__"):
        fams = load_families(traces)
    else:
        items = list(traces)
        fams = items if items and all(isinstance(f, TraceFamily) for f in items) else load_families(items)
    if trace_split != "all":
        fams = split_families(fams, trace_split)  # each part scaled by its whole family's mean
    return fams


def backbone_of(policy: Policy, interval_s: float | None = None) -> Policy | None:
    """The classical rule a learned v1 tilt corrects (``pf`` with its backbone settings, named
    ``pf-backbone``: :meth:`~edgesplit.agents.learned_v1.LearnedV1Policy.backbone`), or ``None``
    for any other policy. ``interval_s``: the env's re-division period (``None``: the default 5 s)."""
    from edgesplit.agents.learned_v1 import LearnedV1Policy

    inner = policy.v1 if isinstance(policy, ByEnvPolicy) else policy
    if not isinstance(inner, LearnedV1Policy):
        return None
    return inner.backbone(5.0 if interval_s is None else float(interval_s))


def evaluate_v1(policy: str | Policy, families: Sequence[TraceFamily] | None = None, n_devices: int = 10,
                episodes: int = 10, seed: int = 0, compare: Sequence[str] = V1_CLASSICAL + REFERENCE,
                progress: bool = False, extra: Sequence[Policy] = (), **env_kwargs: Any) -> pd.DataFrame:
    """``policy``, the ``compare`` policies (default: every classical policy and the oracle) and the
    ``extra`` policy objects on episodes ``seed .. seed + episodes - 1`` of every family (one env per
    family). One row per (family, policy, episode), columns as :func:`evaluate_policies` plus
    ``family``."""
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {episodes}")
    fams = list(families) if families is not None else list(default_families())
    pol = policy if isinstance(policy, Policy) else get_policy(policy)
    todo: list[Policy] = [pol] + [get_policy(n) for n in compare if n != pol.name] + \
        [p for p in extra if p.name != pol.name]
    frames = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes * len(todo) * len(fams), desc="evaluate", unit="episode", leave=False)
    for fam, env in family_envs(fams, n_devices, **env_kwargs).items():
        rows = []
        for p in todo:
            for k in range(episodes):
                rows.append(run_episode(env, p, seed + k, k).__dict__)
                if bar is not None:
                    bar.update(1)
        df = pd.DataFrame(rows)
        df.insert(0, "family", fam)
        frames.append(df)
    if bar is not None:
        bar.close()
    return pd.concat(frames, ignore_index=True)


def _family_block(df: pd.DataFrame, policy: str, classical: Sequence[str]) -> dict[str, Any]:
    """Per-episode totals of ``policy``, alternating, oracle and the best classical policy of ``df``."""
    def tot(name: str) -> np.ndarray:
        return df[df["policy"] == name].sort_values("episode")["total_time_s"].to_numpy()

    present = [c for c in classical if c in set(df["policy"])]
    means = {c: float(tot(c).mean()) for c in present}
    best = min(means, key=lambda c: means[c]) if means else None
    return {"policy": tot(policy), "alternating": tot("alternating") if "alternating" in present else None,
            "oracle": tot("oracle") if "oracle" in set(df["policy"]) else None,
            "best": tot(best) if best else None, "best_name": best, "means": means}


def summarize_v1(df: pd.DataFrame, policy: str, classical: Sequence[str] = V1_CLASSICAL,
                 reps: int = BOOTSTRAP_REPS, seed: int = 0) -> dict[str, Any]:
    """The JSON summary of ``policy`` in ``df`` (from :func:`evaluate_v1`).

    ``mean_total_time_s`` and its stratified bootstrap ``ci95_total_time_s`` pool every episode of
    every family. ``ratio_to_X`` (X = alternating, best_classical, oracle) is the **IQM** over
    episodes of ``policy total / X total`` on the same episode, with ``ratio_to_X_ci95`` from a
    stratified bootstrap (strata = families); ``best_classical`` is the classical policy with the
    lowest mean total over all episodes (``per_family`` names each family's best). ``gap_closed``
    = ``(alternating - policy) / (alternating - oracle)`` of the mean totals and
    ``gap_closed_vs_best_classical`` likewise with the best classical policy; ``None`` where the
    gap is 0 (or a total is infinite). ``classical_ratio_to_oracle`` gives every classical
    policy's IQM ratio to the oracle, overall and per family.
    """
    fams = list(dict.fromkeys(df["family"]))
    blocks = {f: _family_block(df[df["family"] == f], policy, classical) for f in fams}
    allb = _family_block(df.assign(episode=df["family"].map({f: i for i, f in enumerate(fams)}) * 10**6 + df["episode"]),
                         policy, classical)
    mine = [blocks[f]["policy"] for f in fams]
    pooled = np.concatenate(mine)
    m = float(pooled.mean())
    lo, hi = stratified_bootstrap_ci(mine, lambda x, axis=-1: np.mean(x, axis=axis), reps, seed)
    out: dict[str, Any] = {
        "policy": policy,
        "episodes": int(mine[0].size),
        "episodes_total": int(pooled.size),
        "families": fams,
        "mean_total_time_s": _num(m),
        "ci95_total_time_s": [_num(lo), _num(hi)],
        "iqm_total_time_s": _num(float(iqm(pooled))),
        "stalled_episodes": int(df[df["policy"] == policy]["stalled"].sum()),
        "best_classical": allb["best_name"],
    }

    def ratios(key: str) -> tuple[float | None, list]:
        per = []
        for f in fams:
            ref = allb_ref(f, key)
            if ref is None:
                return None, [None, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                per.append(blocks[f]["policy"] / ref)
        pooled_r = np.concatenate(per)
        if not np.isfinite(pooled_r).all():
            return None, [None, None]
        a, b = stratified_bootstrap_ci(per, iqm, reps, seed)
        return _num(float(iqm(pooled_r))), [_num(a), _num(b)]

    def allb_ref(f: str, key: str) -> np.ndarray | None:
        if key == "best":  # the overall best classical policy, on this family's episodes
            name = allb["best_name"]
            if name is None:
                return None
            sel = df[(df["family"] == f) & (df["policy"] == name)].sort_values("episode")
            return sel["total_time_s"].to_numpy()
        return blocks[f][key]

    for key, label in (("alternating", "alternating"), ("best", "best_classical"), ("oracle", "oracle")):
        r, ci = ratios(key)
        out[f"ratio_to_{label}"] = r
        out[f"ratio_to_{label}_ci95"] = ci
    alt_m = float(allb["alternating"].mean()) if allb["alternating"] is not None else math.nan
    orc_m = float(allb["oracle"].mean()) if allb["oracle"] is not None else math.nan
    best_m = float(allb["best"].mean()) if allb["best"] is not None else math.nan
    out["alternating_mean_total_time_s"] = _num(alt_m)
    out["best_classical_mean_total_time_s"] = _num(best_m)
    out["oracle_mean_total_time_s"] = _num(orc_m)
    out["gap_closed"] = gap_closed(m, alt_m, orc_m)
    out["gap_closed_vs_best_classical"] = gap_closed(m, best_m, orc_m)
    per_family = {}
    for f in fams:
        b = blocks[f]
        fm = float(b["policy"].mean())
        fam_out: dict[str, Any] = {"episodes": int(b["policy"].size), "mean_total_time_s": _num(fm),
                                   "best_classical": b["best_name"]}
        for key, label in (("alternating", "alternating"), ("best", "best_classical"), ("oracle", "oracle")):
            ref = b[key]
            if ref is None:
                fam_out[f"ratio_to_{label}"] = None
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                rr = b["policy"] / ref
            fam_out[f"ratio_to_{label}"] = _num(float(iqm(rr))) if np.isfinite(rr).all() else None
        o = float(b["oracle"].mean()) if b["oracle"] is not None else math.nan
        fam_out["gap_closed"] = gap_closed(fm, float(b["alternating"].mean()) if b["alternating"] is not None else math.nan, o)
        fam_out["gap_closed_vs_best_classical"] = gap_closed(fm, float(b["best"].mean()) if b["best"] is not None else math.nan, o)
        per_family[f] = fam_out
    out["per_family"] = per_family
    cro: dict[str, Any] = {}
    for c in classical:
        if c not in set(df["policy"]) or allb["oracle"] is None:
            continue
        row: dict[str, Any] = {}
        for f in fams:
            sel = df[(df["family"] == f) & (df["policy"] == c)].sort_values("episode")["total_time_s"].to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                rr = sel / blocks[f]["oracle"]
            row[f] = _num(float(iqm(rr))) if np.isfinite(rr).all() else None
        cro[c] = row
    out["classical_ratio_to_oracle"] = cro
    return out


def gap_closed(policy_total: float, reference_total: float, oracle_total: float) -> float | None:
    """``(reference - policy) / (reference - oracle)``: 0 = no better than the reference, 1 = the
    oracle; ``None`` (shown as n/a) when the reference is no worse than the oracle (no gap to
    close) or a total is not finite. The one definition of the gap closed in the project."""
    gap = reference_total - oracle_total
    if not (math.isfinite(gap) and gap > 0 and math.isfinite(policy_total)):
        return None
    return (reference_total - policy_total) / gap


# ----------------------------------------------------------------------------- what `edgesplit evaluate` runs


def evaluate(policy: str | Policy, env_id: str | None = None, episodes: int = 10, seed: int = 0,
             traces: str | Sequence[str] | None = None, trace_split: str = "all", n_devices: int | None = None,
             trace_list: Sequence[Trace] | None = None, progress: bool = False,
             rounds: int | None = None, interval_s: float | None | str = "default",
             policy_options: dict[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate ``policy`` (a name, a path or a :class:`Policy`) against the references on the same
    episodes; return the JSON summary and the per-episode table.

    ``env_id=None``: a learned policy's own env, else ``EdgeSplitDynamic-v1``. In v1 the policy
    meets every classical policy and the oracle on ``episodes`` episodes of every trace family
    (:func:`evaluate_v1`, :func:`summarize_v1`); ``traces`` is a folder or a list of folders (None:
    the built-in synthetic family); ``rounds`` and ``interval_s`` go to the env. In the per-round
    envs (``EdgeSplit-v0``, ``EdgeSplitDynamic-v0``) it meets ``alternating`` and ``oracle`` (v0's
    summary: :func:`summarize`). A learned policy fixes N and the env's history; an
    ``n_devices`` that differs from it is refused.
    """
    from edgesplit.envs import canonical_id

    pol = policy if isinstance(policy, Policy) else get_policy(policy, **(policy_options or {}))
    if env_id is not None:
        env_id = canonical_id(env_id)  # edgesplit/ID or ID (H-rl)
    if env_id is None:
        env_id = str(pol.meta["env_id"]) if isinstance(pol, LearnedPolicy) else V1_ID
    history = None
    if isinstance(pol, LearnedPolicy):
        meta_n = int(pol.meta["n_devices"])
        if n_devices is not None and n_devices != meta_n:
            raise ValueError(f"policy {pol.path.name} was trained for {pol.meta['env_id']} with N={meta_n}; "
                             f"refusing to run it with N={n_devices} devices (--n-devices)")
        if env_id != pol.meta["env_id"]:
            raise ValueError(f"policy {pol.path.name} was trained for {pol.meta['env_id']} with N={meta_n}; "
                             f"refusing to run it on {env_id} (--env)")
        n_devices = meta_n
        history = int(pol.meta["history"])
    n = 10 if n_devices is None else int(n_devices)
    if env_id == V1_ID:
        fams = resolve_eval_families(traces, trace_split) if trace_list is None else \
            [TraceFamily("given", tuple(trace_list))]
        kw: dict[str, Any] = {}
        if rounds is not None:
            kw["rounds"] = int(rounds)
        if interval_s != "default":
            kw["interval_s"] = interval_s
        if history is not None:
            kw["history"] = history
        # a learned tilt also meets its own backbone (pf with the settings it was trained on, tuned
        # on its training families), so the classical side is at its strongest
        backbone = backbone_of(pol, None if interval_s in ("default", None) else float(interval_s))
        extra = [backbone] if backbone is not None else []
        df = evaluate_v1(pol, fams, n, episodes, seed, progress=progress, extra=extra, **kw)
        summary = summarize_v1(df, pol.name, classical=V1_CLASSICAL + tuple(p.name for p in extra))
        summary.update({"env": env_id, "n_devices": n, "seed": int(seed),
                        "traces": "synthetic (built-in)" if traces is None and trace_list is None else
                        (str(traces) if isinstance(traces, str) else [str(t) for t in (traces or [])]),
                        "trace_split": trace_split, "n_traces": int(sum(len(f) for f in fams)),
                        "rounds": int(rounds) if rounds is not None else DEFAULT_V1_ROUNDS})
        return summary, df
    if rounds is not None or interval_s != "default":
        raise ValueError(f"--rounds/--interval-s: apply to {V1_ID} only (the per-round envs use their defaults)")
    if isinstance(traces, (list, tuple)):
        if len(traces) != 1:
            raise ValueError(f"--traces: {env_id} takes one folder; several (families) are for {V1_ID}")
        traces = traces[0]
    return _evaluate_per_round(pol, env_id, episodes, seed, traces, trace_split, n, trace_list, progress,
                               3 if history is None else history)


def _evaluate_per_round(pol: Policy, env_id: str, episodes: int, seed: int, traces: str | None, trace_split: str,
                        n: int, trace_list: Sequence[Trace] | None, progress: bool,
                        history: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The per-round envs' evaluation: ``pol`` with ``alternating`` and ``oracle``."""
    tl = trace_list
    if tl is None and env_id == "EdgeSplitDynamic-v0":
        tl = load_trace_list(traces, trace_split)
    elif traces is not None and env_id != "EdgeSplitDynamic-v0":
        raise ValueError("--traces: EdgeSplit-v0 has fixed link rates; traces apply to the dynamic envs only")
    env = make_base_env(env_id, n, tl, history)
    names = [pol.name]
    todo: list[Policy] = [pol]
    for ref in ("alternating", "oracle"):
        if ref not in names:
            todo.append(get_policy(ref))
            names.append(ref)
    df = evaluate_policies(todo, env, episodes, seed, progress=progress)
    summary = summarize(df, pol.name)
    if env_id != "EdgeSplitDynamic-v0":
        label = "none (fixed rates)"
    elif trace_list is not None:
        label = f"{len(trace_list)} given traces"
    else:
        label = "synthetic (built-in)" if traces is None else str(traces)
    summary.update({"env": env_id, "n_devices": n, "seed": int(seed), "traces": label,
                    "trace_split": trace_split, "n_traces": len(tl) if tl is not None else 0})
    return summary, df
