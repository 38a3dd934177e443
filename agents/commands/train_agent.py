"""``edgesplit train-agent``: train a stable-baselines3 / sb3-contrib scheduler on an EdgeSplit environment.

Imports nothing heavy at module level (``edgesplit train-agent --help`` stays fast); the choices
below are checked against the library's in ``tests/test_cli_rl.py``.
"""

from __future__ import annotations

import argparse
import shlex
import sys

NAME = "train-agent"
HELP = "train a learned scheduler (stable-baselines3 / sb3-contrib, RL Zoo style)"
DESCRIPTION = (
    "Train a stable-baselines3 or sb3-contrib agent on a simulated EdgeSplit environment. The run goes to "
    "OUT/<env>__<algo>__<seed>__<unixtime>/ with hyperparams.json, model.zip, model.json (the "
    "metadata that `edgesplit evaluate --policy PATH` needs), model.norm.json and vecnormalize.pkl, "
    "progress.csv, monitor/, checkpoints/, and with --eval-every evaluations.csv and best_model.{zip,json}. "
    "Wrappers: flat (Box of cuts and shares), hybrid (MultiDiscrete cuts, optimal shares; the one "
    "ppo_mask needs), shares (shares, alternating cuts), forecast (a rate forecast per device, exact plan)."
)

ALGO_CHOICES = ("ppo", "a2c", "sac", "td3", "ppo_mask", "ppo_lstm", "tqc", "trpo")
WRAPPER_CHOICES = ("flat", "hybrid", "shares", "forecast")
REWARD_CHOICES = ("env", "counterfactual")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit train-agent``."""
    p.add_argument("--env", default="EdgeSplitDynamic-v0",
                   help="environment id (edgesplit/EdgeSplit-v0, edgesplit/EdgeSplitDynamic-v0; the namespace is optional)")
    p.add_argument("--algo", default="ppo", choices=ALGO_CHOICES,
                   help="algorithm: ppo, a2c, sac, td3 (stable-baselines3); ppo_mask = MaskablePPO, ppo_lstm = "
                        "RecurrentPPO, tqc, trpo (sb3-contrib)")
    p.add_argument("--wrapper", default=None, choices=WRAPPER_CHOICES,
                   help="action wrapper (default: forecast; hybrid for ppo_mask; or the --config file's env_wrapper)")
    p.add_argument("--timesteps", type=int, default=None,
                   help="env steps in all, also with --resume (default: the --config file's n_timesteps, else 100000)")
    p.add_argument("--config", default=None, metavar="FILE.yml",
                   help="RL Zoo style hyper-parameter file (a section per env id), e.g. agents/hyperparams/ppo.yml")
    p.add_argument("--seed", type=int, default=0, help="seed of everything")
    p.add_argument("--out", default="runs", help="folder that receives the run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest run of this env/algo/seed in --out from its newest readable checkpoint "
                        "(logs appended) up to --timesteps in all")
    p.add_argument("--traces", default=None, help="trace folder or glob (dynamic env; default: built-in synthetic)")
    p.add_argument("--trace-split", default="all", choices=("train", "test", "all"),
                   help="use this part of the traces (a fixed 70/30 split per trace family, >= 2 traces a side; "
                        "a family of < 4 stays whole on both sides)")
    p.add_argument("--n-devices", type=int, default=10, help="N, the number of devices")
    p.add_argument("--history", type=int, default=3, help="measured-rate rounds in the observation")
    p.add_argument("--reward", default=None, choices=REWARD_CHOICES,
                   help="training reward: env = the env's -T/T_ref; counterfactual = (T_static - T)/T_ref with the "
                        "static plan's time on the same trace window (less noise; evaluation is unchanged). Default: env")
    p.add_argument("--net", default=None, choices=("auto", "device", "mlp"),
                   help="policy network: device = one network shared by all devices (PPO/A2C), mlp = SB3's "
                        "MlpPolicy (MlpLstmPolicy for ppo_lstm); auto = device for ppo/a2c, mlp otherwise")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs in the vectorised env (default 8)")
    p.add_argument("--vec", default="dummy", choices=("dummy", "subproc"), help="vectorised env class")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="checkpoint every K env steps")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate on validation episodes every K env steps and keep the best model (0 = never)")
    p.add_argument("--eval-episodes", type=int, default=5, help="validation episodes per evaluation")
    p.add_argument("--eval-baselines", default="alternating,exact,static,oracle", metavar="NAMES",
                   help="classical policies to compare with (comma-separated; must include oracle)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter (JSON value), e.g. --hp learning_rate=1e-4; repeatable; "
                        "checked against the algorithm")
    tb = p.add_mutually_exclusive_group()
    tb.add_argument("--tensorboard", action="store_const", const=True, default=None,
                    help="require TensorBoard logs (default: written whenever tensorboard is installed)")
    tb.add_argument("--no-tensorboard", dest="tensorboard", action="store_const", const=False,
                    help="no TensorBoard logs even if tensorboard is installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-every", type=float, default=30.0, help="seconds between printed speed lines")


def run(args: argparse.Namespace) -> int:
    """Train and print where the run went."""
    from edgesplit.agents.training import TrainConfig, offline_traces, parse_hyperparam, train

    overrides = dict(parse_hyperparam(h) for h in args.hp)
    optional = {"wrapper": args.wrapper, "timesteps": args.timesteps, "reward": args.reward, "net": args.net,
                "n_envs": args.n_envs}
    explicit = tuple(k for k, v in optional.items() if v is not None)
    given = {k: v for k, v in optional.items() if v is not None}
    if args.algo == "ppo_mask" and "wrapper" not in given and not args.config:
        given["wrapper"] = "hybrid"
    cfg = TrainConfig(env_id=args.env, algo=args.algo, seed=args.seed, out=args.out, n_devices=args.n_devices,
                      traces=offline_traces(args.traces), trace_split=args.trace_split, history=args.history, vec=args.vec,
                      checkpoint_every=args.checkpoint_every, resume=args.resume, progress_bar=not args.no_progress,
                      tensorboard=args.tensorboard, threads=args.threads, print_every_s=args.print_every,
                      hyperparams=overrides, config=args.config, eval_every=args.eval_every,
                      eval_episodes=args.eval_episodes,
                      eval_baselines=tuple(x.strip() for x in args.eval_baselines.split(",") if x.strip()),
                      explicit=explicit, command="edgesplit " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                      **given)
    res = train(cfg)
    print(f"run: {res.run_dir}")
    print(f"model: {res.model_path}")
    if res.evaluations:
        best = min(res.evaluations, key=lambda r: r["mean_total_time_s"])
        print(f"best: {res.run_dir / 'best_model.zip'} at {best['timesteps']} steps "
              f"(mean total time {best['mean_total_time_s']:.1f} s on {best['episodes']} validation episodes)")
    print(f"steps/s: {res.steps_per_s:.0f} overall, {res.env_steps_per_s:.0f} env steps/s inside {args.algo}")
    return 0
