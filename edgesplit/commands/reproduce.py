"""``edgesplit reproduce``: the paper's speed-ups on a seeded grid."""

from __future__ import annotations

import argparse
import time

from edgesplit.errors import EdgeSplitError
from edgesplit.reproduce import GridConfig, check_output_dir, decomposition_headline, headline, reproduce

NAME = "reproduce"
HELP = "reproduce EdgeSplit's speed-ups over the baselines (CSV, markdown table, plots)"
DESCRIPTION = (
    "Run EdgeSplit (the alternating algorithm) and every baseline on a seeded grid of models x "
    "N in {5, 10, 20} x heterogeneity levels, using the shipped layer profiles (offline, no data "
    "needed); decompose the gain over psl into bandwidth allocation and per-device cuts on equal and "
    "spread links; and run a study on the testbed's real per-machine profiles. Writes "
    "DIR/speedups.{csv,md}, DIR/decomposition.{csv,md,png}, DIR/testbed.{csv,md} and plots."
)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit reproduce``."""
    p.add_argument("--quick", action="store_true",
                   help="small grid: 2 models, 3 seeds, decomposition at N = 10 only (about 10 s)")
    p.add_argument("--out", default="results/reproduce", help="output folder (created; must not be a file)")
    p.add_argument("--models", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated shipped profiles (default: vgg19,resnet18 with --quick, all otherwise)")
    p.add_argument("--n-devices", type=_ints, default=None, help="comma-separated N values (default 5,10,20)")
    p.add_argument("--heterogeneity", type=_floats, default=None,
                   help="comma-separated fastest/slowest speed ratios")
    p.add_argument("--seeds", type=int, default=None, help="scenarios per grid cell")
    p.add_argument("--no-testbed", action="store_true", help="skip the study on the testbed's per-machine profiles")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the grid and print the headline."""
    check_output_dir(args.out)  # before the work: a bad --out is one line, not a late traceback
    cfg = GridConfig.quick() if args.quick else GridConfig.full()
    if args.no_testbed:
        cfg.testbed = False
    if args.models:
        cfg.models = args.models
    if args.n_devices:
        cfg.n_devices = args.n_devices
    if args.heterogeneity:
        cfg.heterogeneity = args.heterogeneity
    if args.seeds is not None:
        if args.seeds < 1:
            raise EdgeSplitError(f"--seeds: must be >= 1, got {args.seeds}")
        cfg.seeds = args.seeds
    t0 = time.perf_counter()
    summary = reproduce(cfg, args.out, progress=not args.no_progress)
    written = "speedups.{csv,md}, decomposition.{csv,md,png}" + (", testbed.{csv,md}" if cfg.testbed else "")
    print(f"wrote {args.out}/: {written}, speedup_vs_heterogeneity.png, speedup_vs_n.png "
          f"({time.perf_counter() - t0:.1f} s)")
    print("EdgeSplit speed-up " + headline(summary))
    print(decomposition_headline(args.out))
    return 0
