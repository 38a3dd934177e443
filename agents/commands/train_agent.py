"""``edgesplit train-agent``: train a stable-baselines3 scheduler on an EdgeSplit environment."""

from __future__ import annotations

import argparse
import shlex
import sys

NAME = "train-agent"
HELP = "train a learned scheduler (stable-baselines3 PPO/A2C/SAC/TD3)"
DESCRIPTION = (
    "Train a stable-baselines3 agent on a simulated EdgeSplit environment. The run goes to "
    "OUT/<env>__<algo>__<seed>__<unixtime>/ with hyperparams.json, model.zip, model.json (the "
    "metadata that `edgesplit evaluate --policy PATH` needs), vecnormalize.pkl, progress.csv and "
    "checkpoints/. Wrappers: flat (Box of cuts and shares), hybrid (MultiDiscrete cuts, optimal "
    "shares), shares (shares, alternating cuts), forecast (a rate forecast per device, exact plan)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit train-agent``."""
    from edgesplit.agents.environment import WRAPPER_NAMES
    from edgesplit.agents.policies import ALGOS

    p.add_argument("--env", default="EdgeSplitDynamic-v0", help="environment id (EdgeSplit-v0 or EdgeSplitDynamic-v0)")
    p.add_argument("--algo", default="ppo", choices=ALGOS, help="stable-baselines3 algorithm")
    p.add_argument("--wrapper", default="forecast", choices=WRAPPER_NAMES, help="action wrapper")
    p.add_argument("--timesteps", type=int, default=100_000, help="env steps in all (with --resume: in all, too)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything")
    p.add_argument("--out", default="runs", help="folder that receives the run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest run of this env/algo/seed in --out from its latest checkpoint")
    p.add_argument("--traces", default=None, help="trace folder or glob (dynamic env; default: built-in synthetic)")
    p.add_argument("--trace-split", default="all", choices=("train", "test", "all"),
                   help="use this part of the traces (a fixed 70/30 split per trace family)")
    p.add_argument("--n-devices", type=int, default=10, help="N")
    p.add_argument("--history", type=int, default=3, help="measured-rate rounds in the observation")
    p.add_argument("--reward", default="env", choices=("env", "counterfactual"),
                   help="training reward: the env's -T/T_ref, or (T_static - T)/T_ref with the static plan's "
                        "time on the same trace window (less noise; evaluation is unchanged)")
    p.add_argument("--net", default="auto", choices=("auto", "device", "mlp"),
                   help="policy network: device = one network shared by all devices (PPO/A2C), mlp = SB3's "
                        "MlpPolicy; auto = device for ppo/a2c, mlp for sac/td3")
    p.add_argument("--n-envs", type=int, default=8, help="parallel envs in the vectorised env")
    p.add_argument("--vec", default="dummy", choices=("dummy", "subproc"), help="vectorised env class")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="checkpoint every K env steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter (JSON value), e.g. --hp learning_rate=1e-4; repeatable")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs (needs tensorboard)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-every", type=float, default=30.0, help="seconds between printed speed lines")


def run(args: argparse.Namespace) -> int:
    """Train and print where the run went."""
    from edgesplit.agents.training import TrainConfig, parse_hyperparam, train

    overrides = dict(parse_hyperparam(h) for h in args.hp)
    cfg = TrainConfig(env_id=args.env, algo=args.algo, wrapper=args.wrapper, timesteps=args.timesteps,
                      seed=args.seed, out=args.out, n_devices=args.n_devices, traces=args.traces,
                      trace_split=args.trace_split, history=args.history, reward=args.reward, net=args.net, n_envs=args.n_envs, vec=args.vec,
                      checkpoint_every=args.checkpoint_every, resume=args.resume,
                      progress_bar=not args.no_progress, tensorboard=args.tensorboard, threads=args.threads,
                      print_every_s=args.print_every, hyperparams=overrides,
                      command="edgesplit " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    res = train(cfg)
    print(f"run: {res.run_dir}")
    print(f"model: {res.model_path}")
    print(f"steps/s: {res.steps_per_s:.0f} overall, {res.env_steps_per_s:.0f} env steps/s inside {args.algo}")
    return 0
