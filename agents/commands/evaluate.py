"""``edgesplit evaluate``: a policy against ``alternating`` and ``oracle`` on the same episodes."""

from __future__ import annotations

import argparse
import json

NAME = "evaluate"
HELP = "evaluate a scheduler (classical, learned or saved) on seeded episodes"
DESCRIPTION = (
    "Play K episodes (seeds S, S+1, ...) with the policy, and with alternating and oracle on the "
    "same episodes (same devices, traces and offsets); print total times and the ratios. Policies: "
    "alternating, exact, static, oracle, psl, random, learned (the shipped policy), or the path of "
    "a policy saved by train-agent (its .zip, its .json or its run folder)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit evaluate``."""
    p.add_argument("--env", default="EdgeSplitDynamic-v0", help="environment id")
    p.add_argument("--policy", required=True, metavar="NAME|PATH|learned", help="the policy to evaluate")
    p.add_argument("--episodes", type=int, default=10, help="episodes (K)")
    p.add_argument("--traces", default=None, help="trace folder or glob (default: built-in synthetic)")
    p.add_argument("--trace-split", default="all", choices=("train", "test", "all"),
                   help="use this part of the traces (the split train-agent uses)")
    p.add_argument("--n-devices", type=int, default=None, help="N (default: the learned policy's, else 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--csv", default=None, help="also write the per-episode table to this CSV file")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    from edgesplit.agents.evaluation import evaluate

    if args.episodes < 1:
        raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
    summary, df = evaluate(args.policy, env_id=args.env, episodes=args.episodes, seed=args.seed,
                           traces=args.traces, trace_split=args.trace_split, n_devices=args.n_devices,
                           progress=not args.json)
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(summary))
        return 0
    def f(x: float | None) -> str:
        return "inf" if x is None else f"{x:.4g}"
    print(f"{summary['policy']} on {summary['env']} (N={summary['n_devices']}, {summary['episodes']} episodes, "
          f"seed {summary['seed']}, traces {summary['traces']} [{summary['trace_split']}])")
    lo, hi = summary["ci95_total_time_s"]
    print(f"  mean total time   {f(summary['mean_total_time_s'])} s  (95% CI {f(lo)} .. {f(hi)})")
    print(f"  mean round time   {f(summary['mean_round_time_s'])} s")
    print(f"  vs alternating    {f(summary['ratio_to_alternating'])}x  ({f(summary['alternating_mean_total_time_s'])} s)")
    print(f"  vs oracle         {f(summary['ratio_to_oracle'])}x  ({f(summary['oracle_mean_total_time_s'])} s)")
    print(f"  gap closed        {f(summary['gap_closed'])}  (alternating = 0, oracle = 1)")
    return 0
