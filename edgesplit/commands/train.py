"""``edgesplit train``: real parallel split learning, timed by the cost model, per scheduler.

For each scheduler the same model (same initial weights), the same device data and the same
batch order are trained with that scheduler's cuts; the simulated clock advances by the plan's
round time (the cost model on the model's profile), the host's wall time is measured. Because
split learning computes what FedAvg computes whatever the cuts (tests/test_engine.py), the
schedulers' accuracy-per-round curves coincide and only their time axes differ: the plot of
accuracy against simulated time is a time-to-accuracy comparison.

Outputs in ``--out``: ``<scheduler>/rounds.csv`` (``round,sim_time_s,wall_s,test_acc,loss``;
round 0 is the untrained model, times are cumulative, ``loss`` is the test cross-entropy),
``<scheduler>/checkpoint.pt`` (written after every round: model, momentum buffers, batch
streams, RNG states, plan, the rows so far), ``time_to_accuracy.csv`` (all schedulers),
``time_to_accuracy.png``, ``profile.csv`` (the profile behind the clock) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from edgesplit.costmodel import CostModel
from edgesplit.datasets import DATASETS, ZOO_DATASET, ArrayDataset, DatasetError, load_dataset, split_dataset
from edgesplit.devices import generate_scenario
from edgesplit.engine import SplitTrainer, resolve_profile, scenario_for_rounds
from edgesplit.errors import EdgeSplitError, InfeasibleError
from edgesplit.profiles import LayerProfile, read_profile_csv
from edgesplit.scenario import Scenario
from edgesplit.schedulers import SCHEDULERS, Plan, get_scheduler
from edgesplit.zoo import build_model, dataset_shape

NAME = "train"
HELP = "train a zoo model for real with split learning; time it with the cost model per scheduler"
DESCRIPTION = (
    "Train MODEL on DATASET over N heterogeneous devices with real parallel split learning (torch), "
    "using the cuts of one or several schedulers; write a per-round CSV (round,sim_time_s,wall_s,"
    "test_acc,loss) per scheduler and a time-to-accuracy plot. Checkpoints every round; --resume "
    "continues an interrupted run."
)
CSV_COLUMNS = ["round", "sim_time_s", "wall_s", "test_acc", "loss"]


@dataclass
class TrainConfig:
    """Everything that defines a training run (schedulers aside)."""

    model: str = "small_cnn"
    dataset: str = "synthetic"
    data_dir: str | None = None
    devices: int = 4
    rounds: int = 5
    samples_per_device: int = 500
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    iterations: int | None = None
    non_iid: float | None = None
    seed: int = 0
    test_samples: int = 1000
    heterogeneity: float = 10.0
    rate_range_bps: tuple[float, float] = (5e6, 50e6)
    fastest_speed: float = 0.5
    server_speed: float = 10.0
    sharing: str = "dedicated"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for ``--resume`` (all but ``rounds`` and ``data_dir``)."""
        d = asdict(self)
        d.pop("rounds")
        d.pop("data_dir")
        d["rate_range_bps"] = list(d["rate_range_bps"])
        return d

    def check(self) -> None:
        """Raise :class:`EdgeSplitError` naming the first bad field."""
        if self.dataset not in ZOO_DATASET:
            raise DatasetError(f"dataset: unknown {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("devices", "rounds", "samples_per_device", "batch_size", "test_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "rounds" else 1):
                raise EdgeSplitError(f"{name.replace('_', '-')}: must be an integer >= "
                                     f"{0 if name == 'rounds' else 1}, got {v!r}")
        if self.iterations is not None and self.iterations < 1:
            raise EdgeSplitError(f"iterations: must be >= 1, got {self.iterations}")
        if self.non_iid is not None and not (self.non_iid > 0 and math.isfinite(self.non_iid)):
            raise EdgeSplitError(f"non-iid: alpha must be a finite number > 0, got {self.non_iid}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EdgeSplitError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise EdgeSplitError(f"momentum: must lie in [0, 1), got {self.momentum}")


@dataclass
class Prepared:
    """Data, profile and scenario shared by all schedulers of a run."""

    config: TrainConfig
    parts: list[ArrayDataset]
    test: ArrayDataset
    profile: LayerProfile
    profile_source: str
    scenario: Scenario
    cost_model: CostModel
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)


def prepare(cfg: TrainConfig, profile: LayerProfile | None = None, scenario: Scenario | None = None) -> Prepared:
    """Load the data, resolve the model's profile (or use ``profile``), generate the scenario (or
    use ``scenario``'s devices and server) and split the data over its devices."""
    cfg.check()
    zoo_ds = ZOO_DATASET[cfg.dataset]
    counts = ([int(d.samples) for d in scenario.devices] if scenario is not None
              else [cfg.samples_per_device] * cfg.devices)
    # the data first: a missing dataset fails before any profiling
    synth = max(sum(counts), 2000) if cfg.dataset.startswith("synthetic") else None
    train = load_dataset(cfg.dataset, "train", cfg.data_dir, seed=0, synthetic_size=synth)
    test_size = max(cfg.test_samples, 500) if synth else None
    test = load_dataset(cfg.dataset, "test", cfg.data_dir, seed=0, synthetic_size=test_size).head(cfg.test_samples)
    parts = split_dataset(train, counts, cfg.non_iid, seed=cfg.seed)
    net = build_model(cfg.model, zoo_ds, seed=cfg.seed)
    if profile is None:
        shape = dataset_shape(zoo_ds)
        profile, source = resolve_profile(cfg.model, zoo_ds, net, (shape.channels, shape.size, shape.size),
                                          cfg.batch_size)
    else:
        source = "given profile"
        if profile.n_layers != net.n_layers:
            raise EdgeSplitError(f"profile: {profile.n_layers} layers, model {cfg.model} has {net.n_layers} units")
    if scenario is None:
        scenario = generate_scenario(profile, cfg.devices, heterogeneity=cfg.heterogeneity,
                                     rate_range_bps=tuple(cfg.rate_range_bps), fastest_speed=cfg.fastest_speed,
                                     samples=cfg.samples_per_device, batch_size=cfg.batch_size,
                                     server_speed=cfg.server_speed, sharing=cfg.sharing, seed=cfg.seed)
    else:
        scenario = Scenario(profile, cfg.batch_size, scenario.devices, scenario.server)
    per_round = counts if cfg.iterations is None else [cfg.iterations * cfg.batch_size] * len(counts)
    cm = CostModel.from_scenario(scenario_for_rounds(scenario, per_round))
    return Prepared(cfg, parts, test, profile, source, scenario, cm, train.mean, train.std)


def make_plan(prep: Prepared, scheduler: str, seed: int = 0) -> Plan:
    """The scheduler's plan on the run's cost model (``random`` is seeded)."""
    opts = {"seed": seed} if scheduler == "random" else {}
    return get_scheduler(scheduler, **opts).plan(prep.cost_model)


def make_trainer(prep: Prepared) -> SplitTrainer:
    """A fresh trainer: the same initial weights, data and batch order for every scheduler."""
    cfg = prep.config
    net = build_model(cfg.model, ZOO_DATASET[cfg.dataset], seed=cfg.seed)
    return SplitTrainer(net, prep.parts, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, seed=cfg.seed, mean=prep.mean, std=prep.std)


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_states(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return df


def run_scheduler(prep: Prepared, scheduler: str, out_dir: str | Path | None = None, resume: bool = False,
                  progress: bool | None = None, on_round: Callable[[int, dict], None] | None = None
                  ) -> tuple[pd.DataFrame, Plan]:
    """Train ``prep.config.rounds`` rounds with ``scheduler``'s cuts; return the per-round frame
    (``round, sim_time_s, wall_s, test_acc, loss``) and the plan.

    With ``out_dir``, ``rounds.csv`` and ``checkpoint.pt`` are written there after every round;
    ``resume`` continues from that checkpoint (its configuration must match).
    """
    from tqdm import tqdm

    cfg = prep.config
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    trainer = make_trainer(prep)
    plan = make_plan(prep, scheduler, cfg.seed)
    if not plan.feasible or not math.isfinite(plan.round_time_s):
        raise InfeasibleError(f"scheduler {scheduler}: its plan is infeasible on this scenario "
                              f"({plan.note or 'infinite round time'})")
    rows: list[dict[str, Any]] = []
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck.get("identity") != cfg.identity() or ck.get("scheduler") != scheduler:
            old = ck.get("identity", {})
            diff = [k for k in cfg.identity() if old.get(k) != cfg.identity()[k]]
            raise EdgeSplitError(f"resume: {ckpt_path} was written with other settings "
                                 f"({', '.join(diff) or 'scheduler'} differ); drop --resume or use another --out")
        trainer.load_state_dict(ck["trainer"])
        _set_rng_states(ck["rng"])
        rows = list(ck["rows"])
        plan.round_time_s = float(ck["round_time_s"])  # the clock of the original run
    if not rows:
        acc, loss = trainer.evaluate(prep.test)
        rows = [{"round": 0, "sim_time_s": 0.0, "wall_s": 0.0, "test_acc": acc, "loss": loss}]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cuts = [int(c) for c in plan.cuts]
    start = trainer.round
    bar = tqdm(total=cfg.rounds, initial=min(start, cfg.rounds), desc=f"train {scheduler}", unit="round",
               file=sys.stderr, disable=(not progress) if progress is not None else None, leave=False)
    try:
        for r in range(start + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            stats = trainer.run_round(cuts, iterations=cfg.iterations)
            if not math.isfinite(stats.train_loss):
                raise EdgeSplitError(f"training diverged in round {r} (training loss {stats.train_loss}); "
                                     f"lower --lr (now {cfg.lr}) or --momentum (now {cfg.momentum})")
            acc, loss = trainer.evaluate(prep.test)
            wall = time.perf_counter() - t0
            row = {"round": r, "sim_time_s": rows[-1]["sim_time_s"] + plan.round_time_s,
                   "wall_s": rows[-1]["wall_s"] + wall, "test_acc": acc, "loss": loss}
            rows.append(row)
            if out is not None and ckpt_path is not None:
                _atomic_save({"identity": cfg.identity(), "scheduler": scheduler, "trainer": trainer.state_dict(),
                              "rng": _rng_states(), "rows": rows, "round_time_s": plan.round_time_s,
                              "cuts": cuts, "shares": [float(s) for s in plan.shares]}, ckpt_path)
                _write_csv(rows, out / "rounds.csv")
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.3f}", train_loss=f"{stats.train_loss:.3f}")
            if on_round is not None:
                on_round(r, row)
    finally:
        bar.close()
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    if out is not None:
        _write_csv(rows, out / "rounds.csv")
    return df, plan


def time_to_accuracy(df: pd.DataFrame, target: float) -> float:
    """Simulated seconds until the test accuracy first reaches ``target`` (inf if never)."""
    hit = df.loc[df["test_acc"] >= target, "sim_time_s"]
    return float(hit.iloc[0]) if len(hit) else math.inf


def rounds_to_accuracy(df: pd.DataFrame, target: float) -> int | None:
    """The first round whose test accuracy reaches ``target`` (None if never)."""
    hit = df.loc[df["test_acc"] >= target, "round"]
    return int(hit.iloc[0]) if len(hit) else None


def plot_time_to_accuracy(frames: dict[str, pd.DataFrame], path: str | Path, target: float | None = None,
                          title: str = "") -> Path:
    """Test accuracy against simulated time, one line per scheduler, on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, df in frames.items():
        ax.plot(df["sim_time_s"], df["test_acc"], marker="o", markersize=3, label=name)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel("simulated training time (s)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "time to accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- CLI


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit train``."""
    p.add_argument("--model", default="small_cnn", help="zoo model (edgesplit.zoo)")
    p.add_argument("--dataset", default="synthetic", help=f"one of: {', '.join(DATASETS)} (synthetic needs no files)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files (cifar10 batches, "
                   "image tree or .tar.gz; MNIST IDX files)")
    p.add_argument("--devices", type=int, default=4, help="number of devices N")
    p.add_argument("--scheduler", default="alternating", help=f"one of: {', '.join(SCHEDULERS)}")
    p.add_argument("--schedulers", default=None, metavar="S1,S2,...",
                   help="several schedulers, compared on one time-to-accuracy plot (overrides --scheduler)")
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
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of a table")


def run(args: argparse.Namespace) -> int:
    """Train with each scheduler, write CSVs, checkpoints, the plot and the summary."""
    names = [s.strip() for s in (args.schedulers.split(",") if args.schedulers else [args.scheduler]) if s.strip()]
    if not names:
        raise EdgeSplitError("schedulers: give at least one scheduler name")
    for s in names:
        if s not in SCHEDULERS:
            raise EdgeSplitError(f"scheduler: unknown name {s!r}; choose one of {', '.join(SCHEDULERS)}")
    if len(set(names)) != len(names):
        raise EdgeSplitError(f"schedulers: {args.schedulers!r} names one twice")
    if args.threads is not None:
        if args.threads < 1:
            raise EdgeSplitError(f"threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        raise EdgeSplitError(f"target-acc: must lie in (0, 1], got {args.target_acc}")
    cfg = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, devices=args.devices,
                      rounds=args.rounds, samples_per_device=args.samples_per_device, batch_size=args.batch_size,
                      lr=args.lr, momentum=args.momentum, iterations=args.iterations, non_iid=args.non_iid,
                      seed=args.seed, test_samples=args.test_samples, heterogeneity=args.heterogeneity)
    cfg.check()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prof_path = out / "profile.csv"
    profile = read_profile_csv(prof_path) if args.resume and prof_path.is_file() else None
    prep = prepare(cfg, profile=profile)
    if profile is None:
        prep.profile.to_csv(prof_path)
    else:
        prep.profile_source = f"{prof_path} (from the interrupted run)"
    frames: dict[str, pd.DataFrame] = {}
    summary: dict[str, Any] = {"model": cfg.model, "dataset": cfg.dataset, "devices": cfg.devices,
                               "rounds": cfg.rounds, "seed": cfg.seed, "profile": prep.profile_source,
                               "target_acc": args.target_acc, "schedulers": {}}
    for s in names:
        try:
            df, plan = run_scheduler(prep, s, out / s, resume=args.resume)
        except InfeasibleError as exc:
            if len(names) == 1:
                raise
            print(f"edgesplit train: skipping {exc}", file=sys.stderr)
            summary["schedulers"][s] = {"error": str(exc)}
            continue
        frames[s] = df
        entry = {"cuts": [int(c) for c in plan.cuts], "shares": [round(float(b), 6) for b in plan.shares],
                 "round_time_s": plan.round_time_s, "final_test_acc": float(df["test_acc"].iloc[-1]),
                 "final_loss": float(df["loss"].iloc[-1]), "sim_time_s": float(df["sim_time_s"].iloc[-1]),
                 "wall_s": float(df["wall_s"].iloc[-1]), "csv": str(out / s / "rounds.csv")}
        if args.target_acc is not None:
            t = time_to_accuracy(df, args.target_acc)
            entry["time_to_target_s"] = t if math.isfinite(t) else None
            entry["rounds_to_target"] = rounds_to_accuracy(df, args.target_acc)
        summary["schedulers"][s] = entry
    combined = pd.concat([df.assign(scheduler=s) for s, df in frames.items()], ignore_index=True)
    combined[["scheduler"] + CSV_COLUMNS].to_csv(out / "time_to_accuracy.csv", index=False)
    plot = plot_time_to_accuracy(frames, out / "time_to_accuracy.png", args.target_acc,
                                 f"{cfg.model} on {cfg.dataset}, {cfg.devices} devices")
    summary["plot"] = str(plot)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{cfg.model} on {cfg.dataset}: {cfg.devices} devices, {cfg.rounds} rounds; clock from {prep.profile_source}")
    print(f"{'scheduler':<26}{'round_s':>10}{'sim_time_s':>12}{'wall_s':>9}{'test_acc':>10}"
          + (f"{'t_target_s':>12}" if args.target_acc is not None else ""))
    for s, e in summary["schedulers"].items():
        if "error" in e:
            print(f"{s:<26}{e['error']}")
            continue
        line = f"{s:<26}{e['round_time_s']:>10.4g}{e['sim_time_s']:>12.4g}{e['wall_s']:>9.1f}{e['final_test_acc']:>10.4f}"
        if args.target_acc is not None:
            t = e["time_to_target_s"]
            line += f"{(f'{t:.4g}' if t is not None else 'not reached'):>12}"
        print(line)
    print(f"wrote {out / 'time_to_accuracy.csv'}, {plot}, per-scheduler rounds.csv and checkpoints")
    return 0
