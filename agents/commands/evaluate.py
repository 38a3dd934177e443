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
    p.add_argument("--wrapper", default=None, choices=("flat", "hybrid", "shares", "forecast"),
                   help="play --policy as a plain stable-baselines3 .zip (no train-agent metadata) whose actions this "
                        "action wrapper maps")
    p.add_argument("--algo", default=None, help="algorithm of a plain .zip (default: read from the file)")
    p.add_argument("--normalize", default=None, metavar="FILE",
                   help="observation statistics of a plain .zip: a *.norm.json, or a VecNormalize .pkl (needs --trust)")
    p.add_argument("--trust", action="store_true",
                   help="allow unpickling (running code from) the policy files; only for files you made or trust")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print."""
    from edgesplit.agents.evaluation import evaluate

    if args.episodes < 1:
        raise ValueError(f"--episodes: must be >= 1, got {args.episodes}")
    policy = args.policy
    if args.wrapper is not None:  # H-rl: a plain SB3 zip
        from edgesplit.agents.plain import PlainSB3Policy

        policy = PlainSB3Policy(args.policy, args.wrapper, args.algo, args.normalize, args.trust)
    elif args.trust:
        from edgesplit.agents.policies import LearnedPolicy

        policy = LearnedPolicy(args.policy, trust=True)
    summary, df = evaluate(policy, env_id=args.env, episodes=args.episodes, seed=args.seed,
                           traces=args.traces, trace_split=args.trace_split, n_devices=args.n_devices,
                           progress=True)  # the bar goes to stderr, also with --json
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.json:
        print(json.dumps(summary))
        return 0
    def f(x: float | None) -> str:
        return "n/a" if x is None or x != x or x in (float("inf"), float("-inf")) else f"{x:.4g}"
    print(f"{summary['policy']} on {summary['env']} (N={summary['n_devices']}, {summary['episodes']} episodes, "
          f"seed {summary['seed']}, traces {summary['traces']} [{summary['trace_split']}])")
    lo, hi = summary["ci95_total_time_s"]
    print(f"  mean total time   {f(summary['mean_total_time_s'])} s  (95% CI {f(lo)} .. {f(hi)})")
    print(f"  mean round time   {f(summary['mean_round_time_s'])} s")
    print(f"  vs alternating    {f(summary['ratio_to_alternating'])}x  ({f(summary['alternating_mean_total_time_s'])} s)")
    print(f"  vs oracle         {f(summary['ratio_to_oracle'])}x  ({f(summary['oracle_mean_total_time_s'])} s)")
    print(f"  gap closed        {f(summary['gap_closed'])}  (alternating = 0, oracle = 1)")
    return 0
