"""``edgesplit train``: real parallel split learning, timed per scheduler (a thin CLI over
:mod:`edgesplit.training`).

The model is trained once (split learning computes FedAvg whatever the cuts) and every
scheduler's plan is timed on the same measured steps: each device's seconds come from timing the
real torch steps on this host, mapped to the device's hardware through its profile (or speed),
the bits from the real tensors exchanged, the link through the scenario's rates
(``--timing model``: the cost model alone, as before). ``--retrain`` trains once per scheduler
with its own cuts instead.

Outputs in ``--out``: ``<scheduler>/rounds.csv`` (``round,sim_time_s,predicted_sim_time_s,wall_s,
test_acc,loss``; round 0 is the untrained model, times are cumulative, ``loss`` is the test
cross-entropy), ``checkpoint.pt`` (``<scheduler>/checkpoint.pt`` with ``--retrain``; written
atomically after every round, the previous one kept as ``checkpoint.pt.prev``),
``timing.csv`` (measured vs predicted device times), ``time_to_accuracy.csv``,
``time_to_accuracy.png``, ``timing_error.png``, ``profile.csv`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json

from edgesplit.errors import EdgeSplitError

# literals, so that `edgesplit train --help` imports neither torch nor pandas (checked against the
# library in tests/test_train_cli.py)
DATASET_NAMES = ("cifar10", "mnist", "fashion_mnist", "synthetic", "synthetic_mnist")
SCHEDULER_NAMES = ("alternating", "exact", "fl", "sl", "psl", "psl-fixed", "edgesplit-cuts-equal-bw",
                   "per-device-cuts-equal-bw", "uniform-cut-opt-bw", "random")
TIMING_NAMES = ("measured", "model")

NAME = "train"
HELP = "train a zoo model for real with split learning; time every scheduler on the measured steps"
DESCRIPTION = (
    "Train MODEL on DATASET over N heterogeneous devices with real parallel split learning (torch) "
    "once, and time one or several schedulers on the measured steps; write a per-round CSV per "
    "scheduler, measured-vs-predicted device times and a time-to-accuracy plot. Checkpoints every "
    "round; --resume continues an interrupted run."
)


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit train``."""
    p.add_argument("--model", default="small_cnn", help="zoo model (edgesplit.zoo)")
    p.add_argument("--dataset", default="synthetic", help=f"one of: {', '.join(DATASET_NAMES)} (synthetic needs no files)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar10 batches, "
                   "image tree or .tar.gz; MNIST IDX files)")
    p.add_argument("--devices", type=int, default=4, help="number of devices N")
    p.add_argument("--scheduler", default="alternating", help=f"one of: {', '.join(SCHEDULER_NAMES)}")
    p.add_argument("--schedulers", default=None, metavar="S1,S2,...",
                   help="several schedulers, all timed on the same training run and compared on one "
                        "time-to-accuracy plot (overrides --scheduler)")
    p.add_argument("--rounds", type=int, default=5, help="training rounds")
    p.add_argument("--samples-per-device", type=int, default=500, help="training samples on each device")
    p.add_argument("--batch-size", type=int, default=32, help="mini-batch size")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per device per round (default: one local epoch)")
    p.add_argument("--non-iid", type=_alpha, default=None, metavar="ALPHA",
                   help="Dirichlet(ALPHA) class skew over devices (default: IID)")
    p.add_argument("--heterogeneity", type=float, default=10.0, help="fastest/slowest device speed")
    p.add_argument("--test-samples", type=int, default=1000, help="test images evaluated after each round")
    p.add_argument("--target-acc", type=float, default=None, help="accuracy line on the plot; time to reach it in the summary")
    p.add_argument("--seed", type=int, default=0, help="seed of the devices, data split, weights and batch order")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--timing", choices=TIMING_NAMES, default="measured",
                   help="measured: device times from the real torch steps mapped to each device; "
                        "model: the cost model alone (reproducible to the bit)")
    p.add_argument("--retrain", action="store_true",
                   help="train once per scheduler with its own cuts (default: train once, time every schedule)")
    p.add_argument("--device", default="cpu", help="torch device for training: cpu, cuda or auto (CUDA when available)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of a table")


def run(args: argparse.Namespace) -> int:
    """Train, time every scheduler, write the outputs and print a table (or JSON)."""
    import torch

    from edgesplit.training import RunConfig, run_training

    if args.threads is not None:
        if args.threads < 1:
            raise EdgeSplitError(f"threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, devices=args.devices,
                    rounds=args.rounds, samples_per_device=args.samples_per_device, batch_size=args.batch_size,
                    lr=args.lr, momentum=args.momentum, iterations=args.iterations, non_iid=args.non_iid,
                    seed=args.seed, test_samples=args.test_samples, heterogeneity=args.heterogeneity,
                    timing=args.timing, device=args.device)
    summary = run_training(cfg, args.schedulers or args.scheduler, args.out, resume=args.resume,
                           retrain=args.retrain, target_acc=args.target_acc)
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0
    err = summary["timing_error"]
    print(f"{cfg.model} on {cfg.dataset}: {summary['devices']} devices, {cfg.rounds} rounds, {summary['mode']}, "
          f"{cfg.timing} timing; reference profile: {summary['profile']}")
    print(f"{'scheduler':<26}{'pred_round_s':>13}{'sim_time_s':>12}{'pred_sim_s':>12}{'wall_s':>9}{'test_acc':>10}"
          + (f"{'t_target_s':>12}" if args.target_acc is not None else ""))
    for s, e in summary["schedulers"].items():
        if "error" in e:
            print(f"{s:<26}{e['error']}")
            continue
        line = (f"{s:<26}{e['round_time_s']:>13.4g}{e['sim_time_s']:>12.4g}{e['predicted_sim_time_s']:>12.4g}"
                f"{e['wall_s']:>9.1f}{e['final_test_acc']:>10.4f}")
        if args.target_acc is not None:
            t = e["time_to_target_s"]
            line += f"{(f'{t:.4g}' if t is not None else 'not reached'):>12}"
        print(line)
    if err.get("count"):
        print(f"measured vs predicted device time over {err['count']} device-rounds: median error "
              f"{err['median']:+.1%}, 5-95% [{err['p5']:+.1%}, {err['p95']:+.1%}], median |error| {err['median_abs']:.1%}")
    print(f"wrote {args.out}/time_to_accuracy.csv, time_to_accuracy.png, timing.csv, per-scheduler rounds.csv, "
          f"checkpoints and summary.json")
    return 0
