"""Evaluate policies on the same episodes: same seeds, same traces, same devices.

Episode ``k`` of an evaluation with seed ``S`` is ``env.reset(seed=S + k)``: the scenario (devices),
each device's trace and start offset are drawn from that seed, so every policy meets exactly the
same episodes (common random numbers). Policies are deterministic given the seed, so the same
seed gives the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import gymnasium as gym
import numpy as np
import pandas as pd

from edgesplit.agents.environment import load_trace_list, make_base_env
from edgesplit.agents.policies import LearnedPolicy, Policy, get_policy
from edgesplit.traces import Trace

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
    """Play one episode of ``env`` (reset with ``seed``) with ``policy``; total = sum of round times."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    total = 0.0
    rounds = 0
    stalled = False
    while True:
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
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


def evaluate(policy: str | Policy, env_id: str = "EdgeSplitDynamic-v0", episodes: int = 10, seed: int = 0,
             traces: str | None = None, trace_split: str = "all", n_devices: int | None = None,
             trace_list: Sequence[Trace] | None = None, progress: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """Evaluate ``policy`` (a name, a path or a :class:`Policy`) with ``alternating`` and ``oracle``
    on the same episodes; return the JSON summary and the per-episode table.

    A learned policy fixes N and the env's history; ``n_devices`` that differs from it is refused.
    ``trace_list`` (already loaded traces) takes precedence over ``traces``/``trace_split``.
    """
    from edgesplit.envs import canonical_id

    env_id = canonical_id(env_id)  # edgesplit/ID or ID (H-rl)
    pol = policy if isinstance(policy, Policy) else get_policy(policy)
    history = 3
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
    tl = trace_list
    if tl is None and env_id == "EdgeSplitDynamic-v0":
        tl = load_trace_list(traces, trace_split)
    elif traces is not None and env_id != "EdgeSplitDynamic-v0":
        raise ValueError("--traces: EdgeSplit-v0 has fixed link rates; traces apply to EdgeSplitDynamic-v0 only")
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
