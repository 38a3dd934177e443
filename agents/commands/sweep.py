"""``edgesplit sweep``: a study of algorithms x hyper-parameter sets x seeds, each a Ray Tune trial."""

from __future__ import annotations

import argparse

NAME = "sweep"
HELP = "train and evaluate algorithms x hyper-parameter sets x seeds as Ray Tune trials (local or a cluster)"
DESCRIPTION = (
    "Every (algorithm, hyper-parameter set, seed) trains with train-agent on the train split of the traces "
    "and is evaluated on held-out episodes (the test split), as a Ray Tune trial: on this machine with "
    "--workers parallel trials, or on a running Ray cluster with --address. Writes DIR/trials.csv, "
    "DIR/summary.md (interquartile means with stratified bootstrap intervals), DIR/sweep.png, and one "
    "DIR/trials/<trial>.json per finished trial (a rerun skips them). Needs the sweep extra: "
    "pip install -e '.[sweep]'."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit sweep``."""
    p.add_argument("--env", default="edgesplit/EdgeSplitDynamic-v0", help="environment id")
    p.add_argument("--algo", default="ppo", metavar="A[,B...]",
                   help="comma-separated algorithms (ppo, a2c, sac, td3, ppo_mask, ppo_lstm, tqc, trpo)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per (algorithm, hyper-parameter set): K")
    p.add_argument("--first-seed", type=int, default=0, help="the seeds are FIRST .. FIRST + K - 1")
    p.add_argument("--timesteps", type=int, default=50_000, help="env steps per trial: N")
    p.add_argument("--config", action="append", default=[], metavar="FILE.yml",
                   help="RL Zoo style hyper-parameter file; repeat for several hyper-parameter sets "
                        "(default: the built-in defaults)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter in every trial (JSON value); repeatable")
    p.add_argument("--workers", type=int, default=2, help="parallel trials (CPUs Ray may use on this machine)")
    p.add_argument("--address", default=None, metavar="RAY_ADDRESS",
                   help="an existing Ray cluster (ray://HEAD:10001, or auto inside one) instead of local Ray")
    p.add_argument("--episodes", type=int, default=10, help="held-out evaluation episodes per trial")
    p.add_argument("--eval-seed", type=int, default=100_000, help="seed of the first evaluation episode")
    p.add_argument("--n-devices", type=int, default=10, help="N, the number of devices")
    p.add_argument("--n-envs", type=int, default=4, help="parallel envs per trial")
    p.add_argument("--traces", default=None, help="trace folder or glob (default: built-in synthetic)")
    p.add_argument("--wrapper", default=None, choices=("flat", "hybrid", "shares", "forecast"),
                   help="action wrapper (default: train-agent's)")
    p.add_argument("--reward", default=None, choices=("env", "counterfactual"), help="training reward (default: env)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print the summary."""
    from edgesplit.agents.sweep import SweepConfig, run_sweep
    from edgesplit.agents.training import parse_hyperparam

    cfg = SweepConfig(env_id=args.env, algos=[a.strip() for a in args.algo.split(",") if a.strip()], seeds=args.seeds,
                      first_seed=args.first_seed, timesteps=args.timesteps, out=args.out, configs=args.config,
                      workers=args.workers, address=args.address, episodes=args.episodes, eval_seed=args.eval_seed,
                      n_devices=args.n_devices, n_envs=args.n_envs, traces=args.traces, wrapper=args.wrapper,
                      reward=args.reward, hyperparams=dict(parse_hyperparam(h) for h in args.hp))
    run_sweep(cfg)
    from pathlib import Path

    print((Path(args.out) / "summary.md").read_text())
    return 0
