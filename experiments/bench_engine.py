"""Benchmark: training throughput of the split engine against plain unsplit training.

Both train the same model on the same batches in the same process, alternating repeat by
repeat so that load from other processes hits both alike:

- **split**: :meth:`edgesplit.engine.SplitTrainer.run_round` with mixed cuts (client segments,
  server replicas, cut activations and gradients, layer-wise aggregation included);
- **plain**: one copy of the model and one SGD optimiser looping over all those batches.

It prints samples per second of each, their ratio (goal: at least 0.9), the overhead of measured
timing (``run_round(..., measure=True)``: every unit's forward, backward and optimiser step timed,
as ``EdgeSplitTrain-v1`` and ``edgesplit train`` do) as a share of the round's wall time (goal:
under 5%), and the peak resident
memory of each mode, measured in a fresh child process per mode (the peak-RSS mark is reset
after loading the model and batches, so the figure is that process's resident memory at its peak
during one round; the increase over the level after setup is printed too).

    python -m experiments.bench_engine [--model small_cnn] [--devices 4] [--iterations 10]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from edgesplit.datasets import ZOO_DATASET, get_dataset, normalize, split_dataset
from edgesplit.engine import SplitTrainer, resolve_device
from edgesplit.zoo import build_model


def _setup(args: argparse.Namespace):
    """The model, the device data and each device's batches (already normalised floats)."""
    torch.manual_seed(0)
    model = build_model(args.model, ZOO_DATASET[args.dataset], seed=0)
    n = args.devices * args.iterations * args.batch_size
    data = get_dataset(args.dataset, "train", synthetic_size=max(n, 100))
    parts = split_dataset(data, [args.iterations * args.batch_size] * args.devices, seed=0)
    batches = []
    for p in parts:
        x, y = p.tensors()
        xs = normalize(x, data.mean, data.std)
        batches.append([(xs[k:k + args.batch_size], y[k:k + args.batch_size])
                        for k in range(0, len(y), args.batch_size)])
    L = model.n_layers
    cuts = args.cuts or [1 + (i * (L - 1)) // max(args.devices - 1, 1) for i in range(args.devices)]
    if len(cuts) != args.devices:
        raise SystemExit(f"--cuts: need {args.devices} cuts, got {len(cuts)}")
    return model, parts, batches, cuts, data


def _time_split(model, parts, batches, cuts, args, measure: bool = False) -> float:
    trainer = SplitTrainer(copy.deepcopy(model), parts, batch_size=args.batch_size, lr=0.01,
                           momentum=args.momentum, device=args.device)
    t0 = time.perf_counter()
    trainer.run_round(cuts, batches=batches, measure=measure)
    return time.perf_counter() - t0


def _time_plain(model, batches, args) -> float:
    dev = resolve_device(args.device)
    m = copy.deepcopy(model).to(dev).train()
    batches = [[(x.to(dev), y.to(dev)) for x, y in b] for b in batches]
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=args.momentum)
    t0 = time.perf_counter()
    for device_batches in batches:
        for x, y in device_batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()
    return time.perf_counter() - t0


def timer_cost_us(units: int = 8, steps: int = 200, repeats: int = 5) -> float:
    """Microseconds the per-unit timer adds per unit and training step, measured on a model of
    tiny linear units (where the bookkeeping, not the arithmetic, dominates): the median over
    ``repeats`` of (measured - unmeasured round seconds) / (units x steps)."""
    from edgesplit.zoo import SplitModel

    torch.manual_seed(0)
    net = SplitModel([torch.nn.Linear(4, 4) for _ in range(units)], name="tiny")
    x, y = torch.randn(steps * 2, 4), torch.randint(0, 4, (steps * 2,))
    batches = [[(x[k:k + 2], y[k:k + 2]) for k in range(0, steps * 2, 2)]]
    diffs = []
    for _ in range(repeats + 1):
        t = []
        for measure in (False, True):
            tr = SplitTrainer(copy.deepcopy(net), [(x, y)], batch_size=2, lr=0.01)
            t0 = time.perf_counter()
            tr.run_round([units // 2], batches=batches, measure=measure)
            t.append(time.perf_counter() - t0)
        diffs.append((t[1] - t[0]) / (units * steps))
    return statistics.median(diffs[1:]) * 1e6


def _maxrss_mib() -> float:
    """Peak resident memory of this process (MiB): ``VmHWM`` on Linux, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _child(args: argparse.Namespace) -> None:
    """Run one mode once in this (fresh) process and print its peak memory as JSON."""
    model, parts, batches, cuts, _ = _setup(args)
    _reset_peak()
    base = _maxrss_mib()
    if args.only == "split":
        _time_split(model, parts, batches, cuts, args)
    else:
        _time_plain(model, batches, args)
    print(json.dumps({"mode": args.only, "baseline_mib": base, "peak_mib": _maxrss_mib()}))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--dataset", default="synthetic", help="input shape and data (synthetic: offline)")
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--iterations", type=int, default=10, help="batches per device per round")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--cuts", type=lambda s: [int(c) for c in s.split(",")], default=None,
                   help="cuts per device, e.g. 1,2,4,5 (default: spread over 1..L)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or auto (CUDA when available)")
    p.add_argument("--only", choices=["split", "plain"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        _child(args)
        return 0
    model, parts, batches, cuts, _ = _setup(args)
    samples = sum(len(y) for b in batches for _, y in b)
    # warm-up (one of each), then alternate
    _time_split(model, parts, batches, cuts, args)
    _time_plain(model, batches, args)
    ts, tp, tm = [], [], []
    for _ in range(args.repeats):
        ts.append(_time_split(model, parts, batches, cuts, args))
        tp.append(_time_plain(model, batches, args))
        tm.append(_time_split(model, parts, batches, cuts, args, measure=True))
    split_sps, plain_sps = samples / statistics.median(ts), samples / statistics.median(tp)
    ratios = [b / a for a, b in zip(ts, tp)]
    print(f"model {args.model} ({model.n_layers} units) on {args.dataset}; {args.devices} devices, cuts {cuts}, "
          f"{args.iterations} x {args.batch_size} samples each; torch threads {torch.get_num_threads()}; "
          f"device {resolve_device(args.device)}")
    print(f"split engine : {split_sps:9.1f} samples/s  (median of {args.repeats} rounds, aggregation included)")
    print(f"plain unsplit: {plain_sps:9.1f} samples/s  (same batches, one model, one optimiser)")
    print(f"ratio split/plain: {split_sps / plain_sps:.3f}  (per-repeat ratios: min {min(ratios):.3f}, "
          f"median {statistics.median(ratios):.3f}, max {max(ratios):.3f}; goal >= 0.9)")
    over = [(m - a) / a for a, m in zip(ts, tm)]
    cost = timer_cost_us()
    steps = args.devices * args.iterations
    per_round = cost * 1e-6 * steps * model.n_layers
    print(f"measured timing bookkeeping: {cost:.1f} us per unit and step (tiny-unit model), i.e. "
          f"{per_round * 1e3:.2f} ms per round here = {per_round / statistics.median(ts):.2%} of the round's wall time")
    print(f"measured timing: {samples / statistics.median(tm):9.1f} samples/s; overhead per round "
          f"{statistics.median(over):+.1%} of the round's wall time (median of {args.repeats}; per-repeat "
          f"min {min(over):+.1%}, max {max(over):+.1%}; goal < 5%)")
    cmd = [sys.executable, "-m", "edgesplit.experiments.bench_engine", "--model", args.model, "--dataset", args.dataset,
           "--devices", str(args.devices), "--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
           "--momentum", str(args.momentum), "--cuts", ",".join(map(str, cuts)), "--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    for mode in ("plain", "split"):
        out = subprocess.run(cmd + ["--only", mode], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"peak memory {mode:5s}: {r['peak_mib']:7.1f} MiB RSS during one round "
              f"(+{r['peak_mib'] - r['baseline_mib']:.1f} MiB over the {r['baseline_mib']:.1f} MiB after setup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
