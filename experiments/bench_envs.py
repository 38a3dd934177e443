"""Benchmark of the simulated environments: env steps per second and the overhead over a bare
cost-model call.

    python -m experiments.bench_envs [--steps 20000] [--repeats 5] [--csv FILE]

For N = 10 and N = 100 it times

- ``costmodel``: one bare :meth:`edgesplit.costmodel.CostModel.device_times` call plus the max
  (what one round costs without any environment),
- ``EdgeSplit-v0`` and ``EdgeSplitDynamic-v0`` made with ``gym.make`` (so with the registered
  ``TimeLimit``/``OrderEnforcing``/``PassiveEnvChecker`` wrappers), stepping pre-drawn random
  native actions, resets included (one every 100 rounds, the default),
- the dynamic env with ``alternating_info=False`` (no per-round alternating solve),
- the bare ``step`` of the unwrapped env without resets, to separate the two costs,
- ``EdgeSplitDynamic-v1`` per **interval decision** (a step = a decision epoch, ``interval_s = 5``)
  and per **round** (``interval_s=None``), with ``gym.make`` and resets (every 20 rounds, the
  default) and as bare steps of one endless episode.

The overhead ratio is (seconds per env step) / (seconds per bare cost-model call). Times are
**CPU seconds of this process** (``time.process_time``), so that other jobs on a shared machine
inflate them less than wall-clock time; the wall-clock rate is printed too. Each figure is the
median over ``--repeats`` runs (the best run is printed as well).
Goals (issue 3): >= 20,000 steps/s for ``EdgeSplit-v0`` with N = 10 on one core, >= 5,000 for the
dynamic env; issue 9: >= 10,000 interval steps/s for ``EdgeSplitDynamic-v1`` with N = 10. Nothing
here asserts a timing; it prints figures.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edgesplit import envs  # noqa: E402,F401  (registers the ids)
from edgesplit.costmodel import CostModel  # noqa: E402
from edgesplit.devices import generate_scenario  # noqa: E402
from edgesplit.envs.base import resolve_profile  # noqa: E402


def _random_actions(n: int, n_layers: int, count: int = 256, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"cuts": rng.integers(0, n_layers, n), "shares": rng.uniform(0.05, 1.0, n).astype(np.float32)}
            for _ in range(count)]


def time_env(env: gym.Env, steps: int, n: int, with_resets: bool = True) -> tuple[float, float]:
    """(CPU, wall) seconds per step over ``steps`` steps of pre-drawn random actions (resets included if asked)."""
    base = env.unwrapped
    acts = _random_actions(n, base.n_layers)
    m = len(acts) - 1
    env.reset(seed=0)
    step = env.step if with_resets else base.step
    reset = env.reset
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        _, _, terminated, truncated, _ = step(acts[i & m])
        if terminated or truncated:
            if with_resets:
                reset()
            else:
                base._round, base._needs_reset = 0, False  # keep stepping the same episode: step cost alone
    return (time.process_time() - c0) / steps, (time.perf_counter() - t0) / steps


def time_costmodel(n: int, model: str, calls: int) -> tuple[float, float]:
    """(CPU, wall) seconds per bare cost-model evaluation (device times and their max) for N devices."""
    cm = CostModel.from_scenario(generate_scenario(resolve_profile(model), n, seed=0))
    acts = _random_actions(n, cm.n_layers)
    deepest = cm.deepest_feasible_cut()
    cuts = [np.minimum(a["cuts"] + 1, deepest) for a in acts]
    shares = [a["shares"] / a["shares"].sum() for a in acts]
    m = len(acts) - 1
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(calls):
        cm.device_times(cuts[i & m], shares[i & m]).max()
    return (time.process_time() - c0) / calls, (time.perf_counter() - t0) / calls


def _median_best(fn: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float, float]:
    """(median CPU, best CPU, median wall) seconds per step over ``repeats`` runs."""
    runs = [fn() for _ in range(repeats)]
    cpu = [r[0] for r in runs]
    return statistics.median(cpu), min(cpu), statistics.median(r[1] for r in runs)


def run(steps: int = 20000, repeats: int = 5, model: str = "vgg19", sizes: tuple[int, ...] = (10, 100),
        progress: bool = True) -> pd.DataFrame:
    """Time every case; return a DataFrame with seconds per step, steps/s and the overhead ratio."""
    rows = []
    for n in sizes:
        bare_med, bare_best, bare_wall = _median_best(lambda: time_costmodel(n, model, steps), repeats)
        rows.append(dict(n_devices=n, case="costmodel (device_times + max)", s_per_step=bare_med,
                         best_s_per_step=bare_best, wall_s_per_step=bare_wall))
        cases = [
            ("EdgeSplit-v0 (gym.make, resets incl.)", "EdgeSplit-v0", {}, steps, True),
            ("EdgeSplit-v0 (bare step, no resets)", "EdgeSplit-v0", {}, steps, False),
            ("EdgeSplitDynamic-v0 (gym.make, resets incl.)", "EdgeSplitDynamic-v0", {}, max(steps // 10, 500), True),
            ("EdgeSplitDynamic-v0 alternating_info=False", "EdgeSplitDynamic-v0",
             {"alternating_info": False}, steps, True),
            ("EdgeSplitDynamic-v0 alternating_info=False (bare step)", "EdgeSplitDynamic-v0",
             {"alternating_info": False}, steps, False),
            ("EdgeSplitDynamic-v1 per interval (gym.make, resets incl.)", "EdgeSplitDynamic-v1", {}, steps, True),
            ("EdgeSplitDynamic-v1 per interval (bare step)", "EdgeSplitDynamic-v1", {"rounds": 10**9}, steps, False),
            ("EdgeSplitDynamic-v1 per round (gym.make, resets incl.)", "EdgeSplitDynamic-v1",
             {"interval_s": None}, max(steps // 10, 500), True),
            ("EdgeSplitDynamic-v1 per round (bare step)", "EdgeSplitDynamic-v1",
             {"interval_s": None, "rounds": 10**9}, max(steps // 10, 500), False),
        ]
        for label, env_id, kw, k, resets in cases:
            env = gym.make(envs.namespaced(env_id), n_devices=n, model=model, **kw)
            med, best, wall = _median_best(lambda: time_env(env, k, n, resets), repeats)
            rows.append(dict(n_devices=n, case=label, s_per_step=med, best_s_per_step=best, wall_s_per_step=wall))
            if progress:
                print(f"  N={n:4d} {label:56s} {1 / med:10,.0f} steps/s", file=sys.stderr, flush=True)
        for r in rows:
            if r["n_devices"] == n:
                r["overhead_vs_costmodel"] = r["s_per_step"] / bare_med
    df = pd.DataFrame(rows)
    df["steps_per_s"] = 1.0 / df["s_per_step"]
    df["best_steps_per_s"] = 1.0 / df["best_s_per_step"]
    df["wall_steps_per_s"] = 1.0 / df["wall_s_per_step"]
    df["us_per_step"] = df["s_per_step"] * 1e6
    return df[["n_devices", "case", "us_per_step", "steps_per_s", "best_steps_per_s", "wall_steps_per_s",
               "overhead_vs_costmodel"]]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_envs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20000, help="steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure (median reported)")
    ap.add_argument("--model", default="vgg19", help="shipped profile name")
    ap.add_argument("--sizes", default="10,100", help="comma-separated N values")
    ap.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = ap.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    df = run(args.steps, args.repeats, args.model, sizes)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.to_string(index=False, formatters={
            "us_per_step": "{:.1f}".format, "steps_per_s": "{:,.0f}".format,
            "best_steps_per_s": "{:,.0f}".format, "wall_steps_per_s": "{:,.0f}".format,
            "overhead_vs_costmodel": "{:.2f}x".format}))
    print("(us_per_step, steps_per_s: median CPU time per step; best_steps_per_s: best run; "
          "wall_steps_per_s: median wall clock)")
    for n in sizes:
        static = df[(df.n_devices == n) & (df.case.str.startswith("EdgeSplit-v0 (gym.make"))].steps_per_s.iloc[0]
        dyn = df[(df.n_devices == n) & (df.case == "EdgeSplitDynamic-v0 (gym.make, resets incl.)")].steps_per_s.iloc[0]
        dyn_fast = df[(df.n_devices == n) & (df.case == "EdgeSplitDynamic-v0 alternating_info=False")].steps_per_s.iloc[0]
        v1 = df[(df.n_devices == n) & (df.case == "EdgeSplitDynamic-v1 per interval (gym.make, resets incl.)")].steps_per_s.iloc[0]
        v1r = df[(df.n_devices == n) & (df.case == "EdgeSplitDynamic-v1 per round (gym.make, resets incl.)")].steps_per_s.iloc[0]
        print(f"N={n}: EdgeSplitDynamic-v1 {v1:,.0f} interval steps/s, {v1r:,.0f} round steps/s"
              + (f" (goal 10,000 interval steps/s at N=10: {'met' if v1 >= 10000 else 'NOT met'})" if n == 10 else ""))
        if n == 10:
            print(f"goal N=10 (CPU-time rates): EdgeSplit-v0 {static:,.0f} steps/s (goal 20,000: {'met' if static >= 20000 else 'NOT met'}); "
                  f"EdgeSplitDynamic-v0 {dyn:,.0f} steps/s with the per-round alternating reference, "
                  f"{dyn_fast:,.0f} without (goal 5,000: {'met' if dyn >= 5000 else ('met without the reference' if dyn_fast >= 5000 else 'NOT met')})")
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
