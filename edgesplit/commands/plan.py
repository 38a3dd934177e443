"""``edgesplit plan``: solve one scenario with one scheduler."""

from __future__ import annotations

import argparse
import json
import math

from edgesplit.costmodel import CostModel
from edgesplit.scenario import load_scenario
from edgesplit.schedulers import SCHEDULERS, get_scheduler

NAME = "plan"
HELP = "choose a cut and a bandwidth share per device for a scenario file"
DESCRIPTION = (
    "Solve a scenario (JSON or YAML, see README) with one scheduler and print the plan: the cut "
    "(layers on each device, 1..L), the bandwidth shares, the per-device and round times."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit plan``."""
    p.add_argument("--scenario", required=True, help="scenario file (.json, .yaml or .yml)")
    p.add_argument("--scheduler", default="alternating", metavar="NAME",
                   help=f"one of: {', '.join(SCHEDULERS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the random scheduler")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    """Solve and print."""
    scheduler = get_scheduler(args.scheduler, seed=args.seed)
    scenario = load_scenario(args.scenario)
    plan = scheduler.plan(CostModel.from_scenario(scenario))
    if args.json:
        print(json.dumps(plan.to_dict(), allow_nan=False))  # strict JSON: infinite times are null
        return 0
    L = scenario.n_layers
    print(f"scheduler {plan.scheduler}: round time {plan.round_time_s:.4g} s "
          f"({scenario.n_devices} devices, {L} layers, solved in {plan.solve_time_s * 1e3:.2f} ms)")
    if plan.note:
        print(f"note: {plan.note}")
    print(f"{'device':<16}{'cut':>5}{'share':>9}{'time_s':>12}")
    for d, c, b, t in zip(scenario.devices, plan.cuts, plan.shares, plan.per_device_time_s):
        ts = f"{t:.4g}" if math.isfinite(t) else "inf"
        print(f"{d.name:<16}{int(c):>5}{b:>9.4f}{ts:>12}")
    return 0
