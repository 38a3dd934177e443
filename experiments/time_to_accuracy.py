"""Time to accuracy on a real model: EdgeSplit's schedule against ``psl`` and ``fl``, with
measured round times and the cost model's prediction side by side.

VGG-11 (BatchNorm) on CIFAR-10 from ``../shared/data``, N = 10 heterogeneous devices, IID and
Dirichlet(0.3) non-IID splits. Per split the model is trained **once** (split learning computes
FedAvg whatever the cuts) with :func:`edgesplit.training.train_and_time`: every round is real
torch training, each unit's forward, backward and optimiser step timed on this host; each
scheduler's plan (made on the cost model) is then timed on those measured steps (device
seconds mapped to each device's hardware, bits from the real tensors, the scenario's links).
The simulated time for each schedule to reach the target test accuracy (50% by default) is
read off its clock; the cost model's prediction of the same clock and the distribution of the
per-device relative error are reported next to it.

    python -m edgesplit.experiments.time_to_accuracy --splits iid,0.3 [--out results/time_to_accuracy]

Each split writes ``<out>/<split>/`` (``edgesplit train``'s files: per-scheduler
``rounds.csv``, ``timing.csv``, ``checkpoint.pt``, appended round by round; ``--resume``
continues) and, after every split, the combined ``<out>/time_to_accuracy.md`` (table),
``time_to_accuracy.csv`` and ``time_to_accuracy.png`` (one panel per split) from every split
found in ``<out>``; ``--report`` only rebuilds those. Splits may run in parallel processes
sharing ``--out`` (one ``--splits`` value each), then ``--report`` combines them.

The reference profile behind the clock is measured at the start on this host with the run's
thread count (``--profile measure``, the default: device speeds are then relative to the host
that really trains), or the shipped one (``--profile shipped``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from edgesplit.datasets import DatasetError
from edgesplit.profiles import read_profile_csv
from edgesplit.training import (
    RunConfig,
    error_summary,
    parse_names,
    prepare,
    rounds_to_accuracy,
    time_to_accuracy,
    train_and_time,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def split_label(split: str) -> str:
    """``iid`` or ``dirichlet0.3`` (a folder name) from ``iid`` / an alpha."""
    return "iid" if split == "iid" else f"dirichlet{float(split):g}"


def _alpha(split: str) -> float | None:
    if split == "iid":
        return None
    a = float(split)
    if not (a > 0 and math.isfinite(a)):
        raise SystemExit(f"--splits: a Dirichlet alpha must be a finite number > 0, got {split!r}")
    return a


def run_split(args: argparse.Namespace, split: str, names: list[str]) -> None:
    """Train once on ``split`` and time every scheduler; files in ``<out>/<label>``."""
    label = split_label(split)
    out = Path(args.out) / label
    out.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, devices=args.devices,
                    rounds=args.max_rounds, samples_per_device=args.samples_per_device, batch_size=args.batch_size,
                    lr=args.lr, momentum=args.momentum, iterations=args.iterations, non_iid=_alpha(split),
                    seed=args.seed, test_samples=args.test_samples, heterogeneity=args.heterogeneity,
                    timing="measured", device=args.device)
    prof_path = out / "profile.csv"
    profile, source = None, "shipped"
    if args.resume and prof_path.is_file():
        profile, source = read_profile_csv(prof_path), f"{prof_path} (measured at the start of the run)"
    elif args.profile == "measure":
        from edgesplit.profiler import profile_model

        t0 = time.perf_counter()
        profile = profile_model(args.model, "cifar10", batch_size=args.batch_size, warmup=1, repeats=3,
                                device=args.device)
        profile.to_csv(prof_path)
        source = f"profiled on this host at the start ({time.perf_counter() - t0:.0f} s, {torch.get_num_threads()} threads)"
        print(f"[{label}] reference profile {source}", file=sys.stderr, flush=True)
    prep = prepare(cfg, profile=profile)
    if profile is None:
        prep.profile.to_csv(prof_path)
        source = prep.profile_source
    (out / "scenario.json").write_text(json.dumps(prep.scenario.to_dict(), indent=1))
    t_start = time.perf_counter()
    hit = {"round": None}

    def on_round(r: int, rows: dict) -> bool:
        acc = next(iter(rows.values()))["test_acc"]
        el = time.perf_counter() - t_start
        print(f"[{label}] round {r}: test acc {acc:.3f}, {el:.0f} s", file=sys.stderr, flush=True)
        if acc >= args.target and hit["round"] is None:
            hit["round"] = r
        if hit["round"] is not None and r >= hit["round"] + args.extra_rounds:
            return True
        return el > args.budget_min * 60

    train_and_time(prep, names, out, resume=args.resume, progress=False, on_round=on_round,
                   checkpoint_every=args.checkpoint_every)
    before = 0.0
    if args.resume and (out / "run.json").is_file():
        before = float(json.loads((out / "run.json").read_text()).get("wall_s", 0.0))
    meta = {"split": split, "label": label, "profile": source, "wall_s": before + time.perf_counter() - t_start,
            "config": cfg.identity(), "target": args.target, "threads": torch.get_num_threads()}
    (out / "run.json").write_text(json.dumps(meta, indent=1))


def report(out: Path, target: float, names: list[str]) -> str:
    """The combined table (markdown), CSV and figure over the splits found in ``out``."""
    rows, frames, errors = [], {}, {}
    for d in sorted(p for p in out.iterdir() if p.is_dir() and (p / "timing.csv").is_file()):
        label = d.name
        meta = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
        timing = pd.read_csv(d / "timing.csv")
        train_wall = math.nan
        frames[label] = {}
        for s in names:
            f = d / s / "rounds.csv"
            if not f.is_file():
                continue
            df = pd.read_csv(f)
            frames[label][s] = df
            train_wall = float(df["wall_s"].iloc[-1])
            t_meas = time_to_accuracy(df, target)
            t_pred = time_to_accuracy(df, target, "predicted_sim_time_s")
            r = rounds_to_accuracy(df, target)
            # round times from the simulated clocks (max over devices, or their sum for sequential sl)
            per_round = df["sim_time_s"].diff().dropna()
            pred_round = df["predicted_sim_time_s"].diff().dropna()
            rows.append({"split": label, "scheduler": s, "rounds_to_target": r,
                         "measured_round_s": float(per_round.mean()) if len(per_round) else math.nan,
                         "predicted_round_s": float(pred_round.mean()) if len(pred_round) else math.nan,
                         "time_to_target_s": t_meas, "predicted_time_to_target_s": t_pred,
                         "final_acc": float(df["test_acc"].iloc[-1]), "rounds": int(df["round"].iloc[-1]),
                         "median_abs_error": error_summary(timing[timing["scheduler"] == s]).get("median_abs", math.nan)})
        errors[label] = (error_summary(timing), {**meta, "train_wall_s": train_wall})
    table = pd.DataFrame(rows)
    if table.empty:
        return "no finished split in " + str(out)
    table.to_csv(out / "time_to_accuracy.csv", index=False)
    lines = [f"| split | scheduler | measured round (s) | predicted round (s) | rounds to {target:.0%} | "
             f"time to {target:.0%}, measured (s) | predicted (s) | EdgeSplit speed-up (measured) | "
             f"median abs. error of device times | final acc (rounds) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, g in table.groupby("split", sort=False):
        ref = g.loc[g["scheduler"] == "alternating", "time_to_target_s"]
        t_ref = float(ref.iloc[0]) if len(ref) else math.nan
        for _, r in g.iterrows():
            t = r["time_to_target_s"]
            sp = t / t_ref if math.isfinite(t) and math.isfinite(t_ref) and t_ref > 0 else math.nan
            lines.append(
                f"| {label} | {r['scheduler']} | {r['measured_round_s']:.1f} | {r['predicted_round_s']:.1f} | "
                f"{int(r['rounds_to_target']) if r['rounds_to_target'] is not None and not pd.isna(r['rounds_to_target']) else 'not reached'} | "
                f"{f'{t:.0f}' if math.isfinite(t) else 'not reached'} | "
                f"{f'{r.predicted_time_to_target_s:.0f}' if math.isfinite(r.predicted_time_to_target_s) else '-'} | "
                f"{f'{sp:.2f}x' if math.isfinite(sp) and r['scheduler'] != 'alternating' else '-'} | "
                f"{r['median_abs_error']:.1%} | {r['final_acc']:.3f} ({r['rounds']}) |")
    err_lines = ["", "Relative error of the predicted device time, (measured - predicted) / predicted, over all "
                 "device-rounds and schedulers:", "",
                 "| split | device-rounds | median | 5th pct | 95th pct | median abs. | host time: training + tests (s) |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
    for label, (e, meta) in errors.items():
        if e.get("count"):
            err_lines.append(f"| {label} | {e['count']} | {e['median']:+.1%} | {e['p5']:+.1%} | {e['p95']:+.1%} | "
                             f"{e['median_abs']:.1%} | {meta.get('train_wall_s', math.nan):.0f} |")
    md = "\n".join(lines + err_lines) + "\n"
    (out / "time_to_accuracy.md").write_text(md)
    _figure(frames, out / "time_to_accuracy.png", target)
    return md


def _figure(frames: dict[str, dict[str, pd.DataFrame]], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(frames), 1)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
    for ax, (label, fr) in zip(axes[0], frames.items()):
        for j, (s, df) in enumerate(fr.items()):
            color = f"C{j}"
            ax.plot(df["sim_time_s"] / 60, df["test_acc"], color=color, marker="o", markersize=2, label=f"{s} (measured)")
            ax.plot(df["predicted_sim_time_s"] / 60, df["test_acc"], color=color, linestyle=":", linewidth=1,
                    label=f"{s} (cost model)")
        ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_title(label)
        ax.set_xlabel("simulated training time (min)")
        ax.set_ylabel("test accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the splits (or only the report) and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/time_to_accuracy", help="output folder")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA / "cifar10"), help="where CIFAR-10 is")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "synthetic"],
                   help="synthetic: the offline stand-in (for a quick check, not a result)")
    p.add_argument("--model", default="vgg11", help="zoo model")
    p.add_argument("--splits", default="iid,0.3", help="comma-separated: iid and/or Dirichlet alphas")
    p.add_argument("--devices", type=int, default=10, help="number of devices N")
    p.add_argument("--samples-per-device", type=int, default=2000, help="training samples on each device")
    p.add_argument("--iterations", type=int, default=4, help="local iterations per device per round")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--heterogeneity", type=float, default=10.0, help="fastest/slowest device speed")
    p.add_argument("--test-samples", type=int, default=500, help="test images evaluated after each round")
    p.add_argument("--target", type=float, default=0.5, help="target test accuracy")
    p.add_argument("--extra-rounds", type=int, default=1, help="rounds to keep training after the target")
    p.add_argument("--max-rounds", type=int, default=300, help="stop after this many rounds")
    p.add_argument("--budget-min", type=float, default=25.0, help="stop a split after this many minutes")
    p.add_argument("--schedulers", default="alternating,psl,fl", help="schedulers timed on the same steps")
    p.add_argument("--profile", choices=["measure", "shipped"], default="measure",
                   help="reference profile: measured on this host at the start, or the shipped one")
    p.add_argument("--checkpoint-every", type=int, default=5, help="rounds between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--resume", action="store_true", help="continue the splits' checkpoints in --out")
    p.add_argument("--report", action="store_true", help="only rebuild the combined table and figure")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = parse_names(args.schedulers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            try:
                run_split(args, split, names)
            except DatasetError as exc:
                print(f"time_to_accuracy: {exc}", file=sys.stderr)
                return 2
            report(out, args.target, names)
    md = report(out, args.target, names)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
