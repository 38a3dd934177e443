"""``edgesplit benchmark``: solver and cost-model speed."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edgesplit.costmodel import CostModel
from edgesplit.devices import generate_scenario
from edgesplit.profiles import load_builtin_profile
from edgesplit.schedulers import get_scheduler

NAME = "benchmark"
HELP = "print solve times of exact and alternating and cost-model evaluations per second"
DESCRIPTION = (
    "Times the exact and alternating schedulers for several N on a shipped profile (median of "
    "repeats) and the cost model's round-time evaluation rate. Goal: N = 1000 solved in < 50 ms."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit benchmark``."""
    p.add_argument("--model", default="vgg19", help="shipped profile to use")
    p.add_argument("--n-devices", default="10,100,1000", help="comma-separated N values")
    p.add_argument("--repeats", type=int, default=7, help="repeats per measurement (median reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    profile = load_builtin_profile(args.model)
    try:
        ns = [int(x) for x in args.n_devices.split(",") if x]
    except ValueError:
        raise ValueError(f"--n-devices: expected comma-separated integers, got {args.n_devices!r}") from None
    if args.repeats < 1:
        raise ValueError(f"--repeats: must be >= 1, got {args.repeats}")
    rows = []
    for n in ns:
        sc = generate_scenario(profile, n, heterogeneity=10.0, seed=n)
        cm = CostModel.from_scenario(sc)
        row = {"n_devices": n, "n_layers": cm.n_layers}
        for name in ("exact", "alternating"):
            sched = get_scheduler(name)
            row[f"{name}_ms"] = 1e3 * _median_time(lambda: sched.plan(cm), args.repeats)
        plan = get_scheduler("alternating").plan(cm)
        k = max(1, 20000 // n)
        t = _median_time(lambda: [cm.round_time(plan.cuts, plan.shares) for _ in range(k)], 3)
        row["round_time_evals_per_s"] = k / t
        row["device_evals_per_s"] = k * n / t
        row["build_cost_model_ms"] = 1e3 * _median_time(lambda: CostModel.from_scenario(sc), args.repeats)
        rows.append(row)
    if args.json:
        print(json.dumps({"model": args.model, "results": rows}))
        return 0
    print(f"model {args.model} (L = {profile.n_layers}), median of {args.repeats} runs")
    print(f"{'N':>6}{'exact ms':>11}{'altern. ms':>12}{'build ms':>10}{'round-time evals/s':>20}{'device evals/s':>16}")
    for r in rows:
        print(f"{r['n_devices']:>6}{r['exact_ms']:>11.2f}{r['alternating_ms']:>12.2f}{r['build_cost_model_ms']:>10.2f}"
              f"{r['round_time_evals_per_s']:>20,.0f}{r['device_evals_per_s']:>16,.0f}")
    worst = [r for r in rows if r["n_devices"] == 1000]
    if worst:
        print(f"goal N = 1000 in < 50 ms: exact {worst[0]['exact_ms']:.1f} ms, alternating {worst[0]['alternating_ms']:.1f} ms")
    return 0
