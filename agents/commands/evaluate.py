"""``edgesplit evaluate``: a policy against the classical policies and the oracle on the same episodes."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

NAME = "evaluate"
HELP = "evaluate a scheduler (classical, learned or saved) on seeded episodes"
DESCRIPTION = (
    "Play K episodes (seeds S, S+1, ...) with the policy and, on the same episodes (same devices, "
    "traces and offsets), with the references. EdgeSplitDynamic-v1 (the default): every classical "
    "policy and the oracle, on K episodes of each trace family (a --traces folder is a family; "
    "Pensieve's holds fcc and hsdpa); ratios are interquartile means of per-episode ratios with "
    "stratified bootstrap 95%% CIs. EdgeSplitDynamic-v0/EdgeSplit-v0: alternating and oracle. "
    "Policies: see --list-policies; learned (the shipped policy), or the path of a policy saved by "
    "train-agent (its .zip, its .json or its run folder). Progress goes to stderr."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit evaluate``."""
    p.add_argument("--env", default=None,
                   help="environment id (default: a learned policy's own env, else EdgeSplitDynamic-v1)")
    p.add_argument("--policy", default=None, metavar="NAME|PATH|learned", help="the policy to evaluate")
    p.add_argument("--list-policies", action="store_true",
                   help="list the policies for --env (name and kind: classical, learned, reference) and exit")
    p.add_argument("--episodes", type=int, default=10, help="episodes per trace family (K)")
    p.add_argument("--traces", action="append", default=None, metavar="DIR",
                   help="trace folder (a family; repeat for several; default: built-in synthetic)")
    p.add_argument("--trace-split", default="all", choices=("train", "test", "all"),
                   help="use this part of every family's traces (the within-family split train-agent uses: >= 2 traces a side, a family of < 4 whole on both; scaled by the whole family's mean)")
    p.add_argument("--n-devices", type=int, default=None, help="N (default: the learned policy's, else 10)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per episode (v1 only; default 20)")
    p.add_argument("--interval-s", type=float, default=None,
                   help="v1: seconds between share epochs (default 5); 0 = one decision per round")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--json", action="store_true", help="print one JSON object (progress still goes to stderr)")
    p.add_argument("--csv", default=None, help="also write the per-episode table to this CSV file")
    p.add_argument("--wrapper", default=None, choices=("flat", "hybrid", "shares", "forecast"),
                   help="play --policy as a plain stable-baselines3 .zip (no train-agent metadata) whose actions this "
                        "action wrapper maps")
    p.add_argument("--algo", default=None, help="algorithm of a plain .zip (default: read from the file)")
    p.add_argument("--normalize", default=None, metavar="FILE",
                   help="observation statistics of a plain .zip: a *.norm.json, or a VecNormalize .pkl (needs --trust)")
    p.add_argument("--trust", action="store_true",
                   help="allow unpickling (running code from) the policy files; only for files you made or trust")


def _fmt(x: float | None) -> str:
    """A number for the text report; ``n/a`` for an undefined value (0/0, inf, NaN)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    from edgesplit.agents.policies import policy_kinds

    env_id = args.env
    if args.list_policies:
        kinds = policy_kinds(env_id or "EdgeSplitDynamic-v1")
        if args.json:
            print(json.dumps(kinds))
        else:
            for k in kinds:
                print(f"{k['name']:14s} {k['kind']}")
        return 0
    if args.policy is None:
        raise ValueError("--policy: required (or --list-policies)")
    if args.episodes < 1:
        raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
    if args.csv:  # fail now, not after the episodes
        out = Path(args.csv)
        if out.is_dir():
            raise ValueError(f"--csv: {out} is a folder; give a file name")
        if not out.parent.is_dir():
            raise ValueError(f"--csv: folder {out.parent} does not exist")
    interval: float | None | str = "default"
    if args.interval_s is not None:
        if not (args.interval_s >= 0 and math.isfinite(args.interval_s)):
            raise ValueError(f"--interval-s: must be a number >= 0 (0 = one decision per round), got {args.interval_s}")
        interval = None if args.interval_s == 0 else float(args.interval_s)
    from edgesplit.agents.evaluation import evaluate

    policy = args.policy
    if args.wrapper is not None:  # H-rl: a plain SB3 zip
        from edgesplit.agents.plain import PlainSB3Policy

        policy = PlainSB3Policy(args.policy, args.wrapper, args.algo, args.normalize, args.trust)
    elif args.trust:
        from edgesplit.agents.policies import LearnedPolicy

        policy = LearnedPolicy(args.policy, trust=True)
    from edgesplit.agents.training import offline_traces  # H-rl: README commands run without ../shared

    traces = offline_traces(args.traces)
    summary, df = evaluate(policy, env_id=env_id, episodes=args.episodes, seed=args.seed,
                           traces=traces, trace_split=args.trace_split, n_devices=args.n_devices,
                           progress=True, rounds=args.rounds, interval_s=interval)
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(summary))
        return 0
    f = _fmt
    print(f"{summary['policy']} on {summary['env']} (N={summary['n_devices']}, {summary['episodes']} episodes"
          f"{' per family' if 'families' in summary else ''}, seed {summary['seed']}, traces {summary['traces']} "
          f"[{summary['trace_split']}])")
    lo, hi = summary["ci95_total_time_s"]
    print(f"  mean total time   {f(summary['mean_total_time_s'])} s  (95% CI {f(lo)} .. {f(hi)})")
    if "families" in summary:
        for label, key in (("alternating", "alternating"), ("best classical", "best_classical"), ("oracle", "oracle")):
            clo, chi = summary[f"ratio_to_{key}_ci95"]
            extra = f" [{summary['best_classical']}]" if key == "best_classical" else ""
            print(f"  vs {label:15s}{f(summary[f'ratio_to_{key}'])}x IQM  (95% CI {f(clo)} .. {f(chi)}){extra}")
        print(f"  gap closed        {f(summary['gap_closed'])} of alternating -> oracle, "
              f"{f(summary['gap_closed_vs_best_classical'])} of best classical -> oracle")
        for fam, d in summary["per_family"].items():
            print(f"  {fam:28s} {f(d['mean_total_time_s'])} s  x{f(d['ratio_to_alternating'])} alt  "
                  f"x{f(d['ratio_to_best_classical'])} best ({d['best_classical']})  x{f(d['ratio_to_oracle'])} oracle")
        return 0
    print(f"  mean round time   {f(summary['mean_round_time_s'])} s")
    print(f"  vs alternating    {f(summary['ratio_to_alternating'])}x  ({f(summary['alternating_mean_total_time_s'])} s)")
    print(f"  vs oracle         {f(summary['ratio_to_oracle'])}x  ({f(summary['oracle_mean_total_time_s'])} s)")
    print(f"  gap closed        {f(summary['gap_closed'])}  (alternating = 0, oracle = 1)")
    return 0
