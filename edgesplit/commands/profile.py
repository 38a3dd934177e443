"""``edgesplit profile``: measure a zoo model's per-unit profile, or import testbed profiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import LayerProfile

# Named here so that `edgesplit profile --help` does not import torch (edgesplit.zoo); a test checks
# they are edgesplit.zoo's MODEL_BUILDERS and DATASET_SHAPES (H-rl, issue 13 item 4).
ZOO_MODELS = ("vgg11", "vgg16", "vgg19", "resnet18", "mobilenet_v2", "small_cnn", "vit_tiny")
ZOO_DATASETS = ("cifar10", "mnist", "fashion_mnist")

NAME = "profile"
HELP = "measure a model's per-layer profile on this host, or import testbed profiles"
DESCRIPTION = (
    "Measure, per cut unit and per sample, the forward and backward seconds (warm-up, then the "
    "median of the repeats), forward FLOPs, output activation bytes and parameter bytes of a zoo "
    "model on this host and write them as a profile CSV. With --import-testbed TIMES MEMORY, "
    "convert per-machine testbed profiles instead (one CSV per machine in --out-dir), print the "
    "rows that look wrong and leave out the machines with error flags (say which and why)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit profile``."""
    p.add_argument("--model", metavar="M", help=f"zoo model: one of {', '.join(ZOO_MODELS)}")
    p.add_argument("--dataset", default="cifar10", help=f"input shape: one of {', '.join(ZOO_DATASETS)}")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the timed passes")
    p.add_argument("--out", metavar="FILE.csv", help="where to write the profile")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per unit (the median is kept)")
    p.add_argument("--warmup", type=int, default=2, help="untimed passes per unit before timing")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the input batch")
    p.add_argument("--device", default="cpu", help="torch device to profile on: cpu, cuda or auto (CUDA when available)")
    p.add_argument("--import-testbed", nargs=2, metavar=("TIMES.csv", "MEMORY.csv"),
                   help="import per-machine testbed profiles instead of measuring")
    p.add_argument("--out-dir", metavar="DIR", help="with --import-testbed: folder for one CSV per machine")
    p.add_argument("--testbed-batch-size", type=int, default=128,
                   help="with --import-testbed: the batch size the testbed measured with")
    p.add_argument("--include-flagged", action="store_true",
                   help="with --import-testbed: write machines with error flags too (left out by default)")
    p.add_argument("--drop-flagged", action="store_true",
                   help="with --import-testbed: leave out machines with error flags (the default; kept for old scripts)")


def _print_table(prof: LayerProfile) -> None:
    print(f"{'#':>3} {'unit':<20}{'fwd_ms':>10}{'bwd_ms':>10}{'MFLOPs':>10}{'act_KB':>10}{'param_KB':>11}")
    flops = prof.fwd_flops
    for i, name in enumerate(prof.names):
        fl = f"{flops[i] / 1e6:10.2f}" if flops is not None else f"{'-':>10}"
        print(f"{i + 1:>3} {name[:19]:<20}{prof.fwd_s[i] * 1e3:10.4f}{prof.bwd_s[i] * 1e3:10.4f}{fl}"
              f"{prof.activation_bytes[i] / 1024:10.1f}{prof.param_bytes[i] / 1024:11.1f}")
    print(f"total fwd+bwd {prof.train_s.sum() * 1e3:.4f} ms per sample; "
          f"{prof.param_bytes.sum() / 2**20:.2f} MiB of parameters")


def _check_out_dir(out_dir: str) -> Path:
    """The output folder, or one error before any work if it cannot be one."""
    path = Path(out_dir)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise EdgeSplitError(f"--out-dir: {p} exists and is not a folder")
    return path


def _check_out_file(out: str) -> Path:
    """The output CSV path, or one error before any work if it cannot be written there."""
    path = Path(out)
    if path.is_dir():
        raise EdgeSplitError(f"--out: {path} is a folder; give a file such as {path / 'profile.csv'}")
    for p in path.parents:
        if p.exists() and not p.is_dir():
            raise EdgeSplitError(f"--out: {p} exists and is not a folder")
    return path


def _run_import(args: argparse.Namespace) -> int:
    from edgesplit.testbed import check_testbed_profile, flagged_machines, import_testbed_profiles, safe_machine_name

    if not args.out_dir:
        raise EdgeSplitError("--out-dir: required with --import-testbed")
    if args.include_flagged and args.drop_flagged:
        raise EdgeSplitError("--include-flagged: cannot be combined with --drop-flagged")
    out_dir = _check_out_dir(args.out_dir)
    if args.testbed_batch_size < 1:
        raise EdgeSplitError(f"--testbed-batch-size: must be >= 1, got {args.testbed_batch_size}")
    times_csv, memory_csv = args.import_testbed
    profiles = import_testbed_profiles(times_csv, memory_csv, batch_size=args.testbed_batch_size)
    flags = check_testbed_profile(times_csv, memory_csv)
    bad = flagged_machines(flags)
    left_out = [m for m in profiles if m in bad and not args.include_flagged]
    written = 0
    for machine, prof in profiles.items():
        status = "FLAGGED" if machine in bad else "ok"
        if machine in left_out:
            where = "(left out: error flags; --include-flagged writes it)"
        else:
            path = out_dir / f"{prof.model}-{prof.dataset}-{safe_machine_name(machine)}.csv"
            where = f"-> {prof.to_csv(path)}"
            written += 1
        print(f"{machine:<14}{status:<9}fwd+bwd {prof.train_s.sum() * 1e3:9.3f} ms/sample {where}")
    for f in flags:
        print(f"  {f}")
    for machine in left_out:
        why = sorted({f.kind for f in flags if f.machine == machine and f.severity == "error"})
        print(f"left out {machine}: {', '.join(why)}")
    print(f"{len(bad)} of {len(profiles)} machines flagged" + (f": {', '.join(bad)}" if bad else "")
          + f"; wrote {written} profile(s) to {out_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Profile a model (or import testbed profiles) and print a short table."""
    if args.import_testbed:
        return _run_import(args)
    if not args.model:
        raise EdgeSplitError("--model: required (or use --import-testbed TIMES.csv MEMORY.csv)")
    if not args.out:
        raise EdgeSplitError("--out: required (the profile CSV to write)")
    _check_out_file(args.out)  # before the (long) measurement
    from edgesplit.profiler import profile_model
    from edgesplit.zoo import MODEL_BUILDERS, dataset_shape

    if args.model not in MODEL_BUILDERS:
        raise EdgeSplitError(f"--model: unknown {args.model!r}; choose one of {', '.join(MODEL_BUILDERS)}")
    dataset_shape(args.dataset)
    for opt, value, low in (("--batch-size", args.batch_size, 1), ("--repeats", args.repeats, 1),
                            ("--warmup", args.warmup, 0)):
        if value < low:
            raise EdgeSplitError(f"{opt}: must be >= {low}, got {value}")
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=1, desc=f"profiling {args.model}", unit="pass", file=sys.stderr, leave=False)
    except ImportError:  # tqdm is a dependency, but the progress bar is optional
        pass

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        prof = profile_model(args.model, args.dataset, batch_size=args.batch_size, warmup=args.warmup,
                             repeats=args.repeats, seed=args.seed, progress=progress, device=args.device)
    finally:
        if bar is not None:
            bar.close()
    path = prof.to_csv(args.out)
    print(f"{prof.model} on {prof.dataset}, batch {prof.batch_size}, median of {args.repeats} "
          f"(spread of the total: {prof.meta['total_iqr_over_median']:.0%} IQR/median)")
    print(f"host: {prof.host}")
    _print_table(prof)
    print(f"wrote {path}")
    return 0
