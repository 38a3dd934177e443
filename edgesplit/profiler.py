"""Measure a model's per-cut-unit profile on this host (``edgesplit profile``).

For every cut unit ``l`` of a :class:`~edgesplit.zoo.SplitModel` the profiler records, per sample:

- ``fwd_s``: seconds of the unit's forward pass in training mode (autograd recording), on the
  unit's *real* input (the output of units ``1..l-1`` on a random batch);
- ``bwd_s``: seconds of ``autograd.backward`` through that unit alone, given a random upstream
  gradient of the output's shape. It computes the parameter gradients and, for ``l > 1``, the
  gradient of the unit's input (what the server sends back over a cut); unit 1 does not
  differentiate its input (raw data), as in real training;
- ``fwd_flops``: forward FLOPs from :class:`torch.utils.flop_counter.FlopCounterMode` (it counts
  matmuls, convolutions and attention; element-wise ops, norms and pooling count 0);
- ``activation_bytes``: bytes of the unit's output;
- ``param_bytes``: bytes of the unit's *parameters* (the trained, exchanged and averaged tensors).
  Buffers such as BatchNorm running statistics are left out: they have no gradient or optimiser
  state and are at most two floats per channel.

Each unit is timed in isolation. Timings use ``time.perf_counter`` around one call; after
``warmup`` untimed passes, ``repeats`` passes are taken round-robin over the units (so that a burst
of load from another process spreads over all units instead of hitting one) and the median is
kept, divided by the batch size. ``torch.set_num_threads`` is left at torch's default; the host
line records the thread count and the 1-minute load average when profiling started (a hint of how
contended the machine was: other processes slow a 2-thread run down far more than its spread shows).
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgesplit.engine import resolve_device
from edgesplit.errors import EdgeSplitError, ProfileError
from edgesplit.profiles import LayerProfile, load_builtin_profile
from edgesplit.zoo import SplitModel, build_model, dataset_shape


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # not available on every platform
        return "n/a"


def describe_host(device: torch.device | None = None) -> str:
    """One line naming the profiling host: OS, CPU model and count, torch version and threads
    (and the GPU when ``device`` is a CUDA device)."""
    line = (f"{platform.system()} {platform.release()} {platform.machine()}; {_cpu_model()}; "
            f"{os.cpu_count()} CPUs; torch {torch.__version__} with {torch.get_num_threads()} threads")
    if device is not None and torch.device(device).type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EdgeSplitError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _unit_output(out: object, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise EdgeSplitError(f"model.{name}: a cut unit must return one tensor, got {type(out).__name__}")
    return out


def profile_model(
    model: str | SplitModel,
    dataset: str = "cifar10",
    batch_size: int = 32,
    warmup: int = 2,
    repeats: int = 5,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device | None = "cpu",
) -> LayerProfile:
    """Profile ``model`` (a zoo name or a :class:`SplitModel`) on this host, per cut unit and sample.

    ``input_shape`` (C, H, W) overrides the dataset's input shape for a custom model;
    ``progress(done, total)`` is called after each round over the units (``total`` unit passes).
    ``device``: ``cpu``, ``cuda`` or ``auto`` (CUDA when available); on a GPU every timing mark
    synchronises the device, and the host line names the GPU.
    A passed model runs in training mode (its mode is restored afterwards, but BatchNorm running
    statistics move and gradients are cleared). See the module docstring for what is measured.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    warmup = _check_int("warmup", warmup, 0)
    repeats = _check_int("repeats", repeats, 1)
    torch.manual_seed(seed)
    if isinstance(model, str):
        net = build_model(model, dataset, seed=seed)
        model_name = model
    elif isinstance(model, SplitModel):
        net = model
        model_name = net.model_name
    else:
        raise EdgeSplitError(f"model: expected a zoo name or a SplitModel, got {type(model).__name__}")
    if input_shape is None:
        shape = dataset_shape(dataset)
        input_shape = (shape.channels, shape.size, shape.size)
    load_at_start = _load_average()
    dev = resolve_device(device)
    cuda = dev.type == "cuda"

    def now() -> float:
        if cuda:
            torch.cuda.synchronize(dev)
        return time.perf_counter()

    net.to(dev)
    was_training = net.training
    net.train()
    params = list(net.parameters())
    L = net.n_layers

    x = torch.randn(batch_size, *input_shape, device=dev)
    inputs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    act_bytes = np.zeros(L)
    flops = np.zeros(L)
    h = x
    for l, unit in enumerate(net.units):
        name = net.names[l]
        inputs.append(h.detach())
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = _unit_output(unit(h.clone()), name)
        flops[l] = counter.get_total_flops() / batch_size
        act_bytes[l] = _tensor_bytes(out) / batch_size
        grads.append(torch.randn_like(out))
        h = out
    param_bytes = np.array([sum(_tensor_bytes(p) for p in u.parameters()) for u in net.units], dtype=float)

    def one_pass(l: int) -> tuple[float, float]:
        unit = net.units[l]
        for p in params:
            p.grad = None
        leaf = inputs[l].requires_grad_(l > 0)  # unit 1 does not differentiate the raw data
        inp = leaf.clone()  # a fresh non-leaf, so in-place first ops and repeated passes are safe
        t0 = now()
        out = unit(inp)
        t1 = now()
        if out.requires_grad:
            out.backward(grads[l])
        t2 = now()
        if l > 0:
            leaf.grad = None
        return t1 - t0, t2 - t1

    fwd = np.zeros((repeats, L))
    bwd = np.zeros((repeats, L))
    total = (warmup + repeats) * L
    done = 0
    for r in range(warmup + repeats):
        for l in range(L):
            tf, tb = one_pass(l)
            if r >= warmup:
                fwd[r - warmup, l], bwd[r - warmup, l] = tf, tb
            done += 1
        if progress is not None:
            progress(done, total)
    for p in params:
        p.grad = None
    net.train(was_training)
    fwd_s = np.median(fwd, axis=0) / batch_size
    bwd_s = np.median(bwd, axis=0) / batch_size
    # relative spread of the repeats (interquartile range / median), kept for reporting noise
    with np.errstate(divide="ignore", invalid="ignore"):
        total_rep = (fwd + bwd).sum(axis=1)
        spread = float((np.percentile(total_rep, 75) - np.percentile(total_rep, 25)) / np.median(total_rep))
    return LayerProfile(
        names=tuple(net.names),
        fwd_s=fwd_s,
        bwd_s=bwd_s,
        activation_bytes=act_bytes,
        param_bytes=param_bytes,
        fwd_flops=flops,
        model=model_name,
        dataset=dataset,
        host=f"{describe_host(dev)}; load average {load_at_start} at start",
        batch_size=batch_size,
        meta={"repeats": repeats, "warmup": warmup, "seed": seed, "total_iqr_over_median": spread},
    )


# ----------------------------------------------------------------------------- profiles


def quick_profile(model: SplitModel, input_shape: Sequence[int], batch_size: int = 32, repeats: int = 3,
                  dataset: str = "") -> LayerProfile:
    """Measure a rough per-unit profile on this host (median of ``repeats`` after one warm-up):
    forward and backward seconds per sample, output activation bytes and parameter bytes.
    A fallback when neither a shipped profile nor :mod:`edgesplit.profiler` is available."""
    model = copy.deepcopy(model).train()
    h = torch.randn(batch_size, *input_shape)
    fwd, bwd, act, par = [], [], [], []
    for j, unit in enumerate(model.units):
        ft, bt = [], []
        out = None
        for r in range(repeats + 1):
            inp = h.detach().requires_grad_(j > 0)
            t0 = time.perf_counter()
            out = unit(inp)
            t1 = time.perf_counter()
            if out.requires_grad:
                out.backward(torch.ones_like(out))
            t2 = time.perf_counter()
            unit.zero_grad(set_to_none=True)
            if r > 0:
                ft.append(t1 - t0)
                bt.append(t2 - t1)
        assert out is not None
        fwd.append(statistics.median(ft) / batch_size)
        bwd.append(statistics.median(bt) / batch_size)
        act.append(float(out[0].numel() * out.element_size()))
        par.append(float(sum(p.numel() * p.element_size() for p in unit.parameters())))
        h = out.detach()
    return LayerProfile(names=tuple(model.names), fwd_s=np.array(fwd), bwd_s=np.array(bwd),
                        activation_bytes=np.array(act), param_bytes=np.array(par),
                        model=model.model_name, dataset=dataset,
                        host=f"{platform.node()} (quick fallback profile)", batch_size=batch_size)


def resolve_profile(model_name: str, dataset: str, model: SplitModel | None = None,
                    input_shape: Sequence[int] | None = None, batch_size: int = 32) -> tuple[LayerProfile, str]:
    """The layer profile for the simulated clock: the shipped profile of ``model_name`` on
    ``dataset`` (a zoo dataset key), else one measured now by :func:`edgesplit.profiler.profile_model`
    (or, failing that, :func:`quick_profile`, with a warning). Returns ``(profile, where it came from)``.

    The profile must have one row per unit of ``model``; otherwise it is not used. A profile
    measured here is kept for the rest of the process (keyed by model, dataset, shape, batch).
    """
    n_units = model.n_layers if model is not None else None
    try:
        prof = load_builtin_profile(model_name, dataset)
        if n_units is None or prof.n_layers == n_units:
            return prof, f"shipped profile {model_name}-{dataset}"
    except ProfileError:
        pass
    if model is None or input_shape is None:
        raise ProfileError(f"model: no shipped profile for {model_name!r} on {dataset!r}, and no model to profile")
    key = (model_name, dataset, tuple(input_shape), int(batch_size), n_units)
    if key in _MEASURED:  # measured once per process, so that runs in one process share a clock
        return _MEASURED[key]
    _MEASURED[key] = _measure_profile(model_name, dataset, model, input_shape, batch_size)
    return _MEASURED[key]


_MEASURED: dict[tuple, tuple[LayerProfile, str]] = {}


def _measure_profile(model_name: str, dataset: str, model: SplitModel, input_shape: Sequence[int],
                     batch_size: int) -> tuple[LayerProfile, str]:
    n_units = model.n_layers
    prof = profile_model(copy.deepcopy(model), dataset=dataset, batch_size=batch_size, warmup=1,
                         repeats=3, input_shape=tuple(input_shape))
    if prof.n_layers == n_units:
        return prof, "profiled now with edgesplit.profiler (no shipped profile)"
    warnings.warn(f"no shipped profile for {model_name}-{dataset}: using a quick profile measured on this host",
                  stacklevel=2)
    return quick_profile(model, input_shape, batch_size, dataset=dataset), "quick profile measured on this host"
