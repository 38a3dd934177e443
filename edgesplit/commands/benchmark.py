"""``edgesplit benchmark``: solver and cost-model speed."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edgesplit.costmodel import CostModel
from edgesplit.devices import TESTBED_CLASSES, generate_scenario
from edgesplit.profiles import LayerProfile, load_builtin_profile
from edgesplit.scenario import Scenario
from edgesplit.schedulers import get_scheduler

NAME = "benchmark"
HELP = "print solve times of exact and alternating and cost-model evaluations per second"
DESCRIPTION = (
    "Times the exact and alternating schedulers for several N (median of repeats) and the cost "
    "model's round-time evaluation rate, with devices given one speed each (--model) and with every "
    "device carrying its own per-layer profile (the testbed VGG-19, L = 25: a measured testbed class's "
    "profile with each layer scaled by its own random factor in [0.8, 1.25]). Goal: N = 1000 solved "
    "in < 50 ms."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit benchmark``."""
    p.add_argument("--model", default="vgg19", help="shipped profile to use")
    p.add_argument("--n-devices", default="10,100,1000", help="comma-separated N values")
    p.add_argument("--repeats", type=int, default=7, help="repeats per measurement (median reported)")
    p.add_argument("--devices", choices=("speeds", "profiles", "both"), default="both",
                   help="devices with one speed each (--model), with their own per-layer profiles, or both")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def own_profile_scenario(n: int, seed: int) -> Scenario:
    """N devices on the testbed VGG-19, each with its own per-layer profile: a measured testbed class's,
    every layer scaled by its own random factor in [0.8, 1.25] (so no two devices share a profile)."""
    from dataclasses import replace

    model = load_builtin_profile("vgg19_testbed")
    base = generate_scenario(model, n, device_classes=TESTBED_CLASSES, server_class="testbed-vm", seed=seed)
    rng = np.random.default_rng(seed)
    devices = []
    for d in base.devices:
        f = rng.uniform(0.8, 1.25, (2, model.n_layers))
        own = LayerProfile(model.names, d.profile.fwd_s * f[0], d.profile.bwd_s * f[1], model.activation_bytes,
                           model.param_bytes, model=model.model, dataset=model.dataset)
        devices.append(replace(d, profile=own))
    return replace(base, devices=tuple(devices))


def _measure(sc: Scenario, repeats: int) -> dict:
    cm = CostModel.from_scenario(sc)
    n = sc.n_devices
    row = {"n_devices": n, "n_layers": cm.n_layers}
    for name in ("exact", "alternating"):
        sched = get_scheduler(name)
        row[f"{name}_ms"] = 1e3 * _median_time(lambda: sched.plan(cm), repeats)
    plan = get_scheduler("alternating").plan(cm)
    k = max(1, 20000 // n)
    t = _median_time(lambda: [cm.round_time(plan.cuts, plan.shares) for _ in range(k)], 3)
    row["round_time_evals_per_s"] = k / t
    row["device_evals_per_s"] = k * n / t
    row["build_cost_model_ms"] = 1e3 * _median_time(lambda: CostModel.from_scenario(sc), repeats)
    return row


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    profile = load_builtin_profile(args.model)
    try:
        ns = [int(x) for x in args.n_devices.split(",") if x]
    except ValueError:
        raise ValueError(f"--n-devices: expected comma-separated integers, got {args.n_devices!r}") from None
    if not ns or min(ns) < 1:
        raise ValueError(f"--n-devices: expected integers >= 1, got {args.n_devices!r}")
    if args.repeats < 1:
        raise ValueError(f"--repeats: must be >= 1, got {args.repeats}")
    rows = []
    kinds = ("speeds", "profiles") if args.devices == "both" else (args.devices,)
    for kind in kinds:
        for n in ns:
            sc = (generate_scenario(profile, n, heterogeneity=10.0, seed=n) if kind == "speeds"
                  else own_profile_scenario(n, seed=n))
            rows.append({"devices": kind, "model": args.model if kind == "speeds" else "vgg19_testbed",
                         **_measure(sc, args.repeats)})
    if args.json:
        print(json.dumps({"model": args.model, "results": rows}))
        return 0
    print(f"median of {args.repeats} runs; speeds: {args.model} scaled by one speed per device; "
          f"profiles: vgg19_testbed, every device its own per-layer profile")
    print(f"{'devices':<9}{'N':>6}{'L':>4}{'exact ms':>11}{'altern. ms':>12}{'build ms':>10}"
          f"{'round-time evals/s':>20}{'device evals/s':>16}")
    for r in rows:
        print(f"{r['devices']:<9}{r['n_devices']:>6}{r['n_layers']:>4}{r['exact_ms']:>11.2f}{r['alternating_ms']:>12.2f}"
              f"{r['build_cost_model_ms']:>10.2f}{r['round_time_evals_per_s']:>20,.0f}{r['device_evals_per_s']:>16,.0f}")
    for r in rows:
        if r["n_devices"] == 1000:
            print(f"goal N = 1000 in < 50 ms ({r['devices']}, L = {r['n_layers']}): exact {r['exact_ms']:.1f} ms, "
                  f"alternating {r['alternating_ms']:.1f} ms")
    return 0
