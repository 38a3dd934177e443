"""Named device classes and seeded generators of heterogeneous device populations.

Speeds are relative to the *profiling host* (the machine the shipped profiles were measured on:
a 2-vCPU x86-64 cloud VM running PyTorch on the CPU). They are ratios of sustained FP32
throughput for CNN training, estimated from the sources listed with each class; treat them as
order-of-magnitude figures, and re-profile on a real device where precision matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesplit.errors import ScenarioError
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Device, Scenario, Server

GB = 1e9


@dataclass(frozen=True)
class DeviceClass:
    """A kind of edge device: speed relative to the profiling host, memory, typical link."""

    name: str
    speed: float
    memory_bytes: float
    rate_bps: float
    source: str


# The profiling host sustains roughly 50-80 GFLOP/s FP32 in PyTorch convolutions (2 AVX2/AVX-512
# vCPUs). The testbed profiles in ../shared/data/profiles (jtirana98/SFL-workflow-optimization)
# give measured ratios between real machines for VGG-19 training: summed fwd+bwd per batch,
# laptop 3.2 s, VM 2.9 s, small device d1 10.4 s, Jetson GPU 0.5 s (see tests/test_devices.py
# for the computation), which anchors the ratios below.
CATALOGUE: dict[str, DeviceClass] = {
    c.name: c
    for c in [
        DeviceClass("raspberry-pi-4", 0.08, 4 * GB, 20e6,
                    "4x Cortex-A72 @1.5 GHz, 48 GFLOP/s peak FP32 (NEON); ~5 GFLOP/s sustained in "
                    "PyTorch CNN training; Wi-Fi 5 at ~20 Mbit/s effective"),
        DeviceClass("phone", 0.3, 6 * GB, 50e6,
                    "Snapdragon 865-class CPU, ~20 GFLOP/s sustained FP32 on CPU training; LTE/Wi-Fi ~50 Mbit/s"),
        DeviceClass("jetson-nano", 0.5, 4 * GB, 50e6,
                    "128-core Maxwell GPU, 236 GFLOP/s peak FP32, ~30 GFLOP/s sustained in training "
                    "(memory bound, shared 4 GB LPDDR4)"),
        DeviceClass("edge-device-d1", 0.3, 2 * GB, 20e6,
                    "testbed device d1: VGG-19 batch takes 3.3x the laptop's time (shared profiles)"),
        DeviceClass("laptop", 1.0, 16 * GB, 100e6,
                    "testbed laptop: about the profiling host's speed (shared profiles: 3.2 s vs "
                    "VM 2.9 s per VGG-19 batch)"),
        DeviceClass("jetson-xavier-nx", 3.0, 8 * GB, 100e6,
                    "384-core Volta GPU, 1.7 TFLOP/s peak FP16 / ~0.85 FP32; testbed Jetson GPU runs "
                    "a VGG-19 batch 6x faster than the laptop, Xavier NX assumed half of that in training"),
        DeviceClass("edge-server", 20.0, 64 * GB, 1e9,
                    "one data-centre GPU (e.g. T4/A10-class, 8-30 TFLOP/s FP32) behind the access point"),
    ]
}


def device_from_class(cls_name: str, name: str, samples: int, rate_bps: float | None = None) -> Device:
    """A :class:`Device` of catalogue class ``cls_name``."""
    if cls_name not in CATALOGUE:
        raise ScenarioError(f"class: unknown device class {cls_name!r}; choose one of {', '.join(CATALOGUE)}")
    c = CATALOGUE[cls_name]
    return Device(name, c.speed, c.memory_bytes, c.rate_bps if rate_bps is None else rate_bps, samples)


def _log_uniform_with_ends(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n values log-uniform in [lo, hi]; with n >= 2 the two ends are included (then shuffled)."""
    if n == 1 or lo == hi:
        return np.full(n, hi) if n == 1 else np.full(n, lo)
    u = rng.uniform(0.0, 1.0, n)
    u[0], u[1] = 0.0, 1.0
    vals = lo * (hi / lo) ** u
    rng.shuffle(vals)
    return vals


def generate_devices(
    n_devices: int,
    heterogeneity: float = 10.0,
    rate_range_bps: tuple[float, float] = (5e6, 50e6),
    memory_range_bytes: tuple[float, float] = (1 * GB, 8 * GB),
    fastest_speed: float = 0.5,
    samples: int = 500,
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
) -> list[Device]:
    """N devices with speeds log-uniform in ``[fastest/H, fastest]`` (H = ``heterogeneity``, the
    ratio of the fastest to the slowest, attained exactly when N >= 2), link rates log-uniform in
    ``rate_range_bps`` and memory log-uniform in ``memory_range_bytes``. Seeded."""
    if not isinstance(n_devices, (int, np.integer)) or n_devices < 1:
        raise ScenarioError(f"n_devices: must be an integer >= 1, got {n_devices!r}")
    if not heterogeneity >= 1:
        raise ScenarioError(f"heterogeneity: must be >= 1 (fastest/slowest speed), got {heterogeneity!r}")
    lo, hi = rate_range_bps
    if not (0 < lo <= hi):
        raise ScenarioError(f"rate_range_bps: need 0 < low <= high, got {rate_range_bps!r}")
    mlo, mhi = memory_range_bytes
    if not (0 < mlo <= mhi):
        raise ScenarioError(f"memory_range_bytes: need 0 < low <= high, got {memory_range_bytes!r}")
    if not fastest_speed > 0:
        raise ScenarioError(f"fastest_speed: must be > 0, got {fastest_speed!r}")
    rng = rng if rng is not None else np.random.default_rng(seed)
    speeds = _log_uniform_with_ends(rng, n_devices, fastest_speed / heterogeneity, fastest_speed)
    rates = _log_uniform_with_ends(rng, n_devices, lo, hi)
    mem = mlo * (mhi / mlo) ** rng.uniform(0.0, 1.0, n_devices)
    return [
        Device(f"dev-{i}", float(speeds[i]), float(mem[i]), float(rates[i]), int(samples))
        for i in range(n_devices)
    ]


def generate_scenario(
    profile: LayerProfile,
    n_devices: int,
    heterogeneity: float = 10.0,
    rate_range_bps: tuple[float, float] = (5e6, 50e6),
    memory_range_bytes: tuple[float, float] = (1 * GB, 8 * GB),
    fastest_speed: float = 0.5,
    samples: int = 500,
    batch_size: int = 32,
    server_speed: float = 10.0,
    sharing: str = "dedicated",
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
) -> Scenario:
    """A seeded heterogeneous scenario over ``profile`` (see :func:`generate_devices`)."""
    devices = generate_devices(n_devices, heterogeneity, rate_range_bps, memory_range_bytes,
                               fastest_speed, samples, seed, rng)
    return Scenario(profile, batch_size, tuple(devices), Server(server_speed, sharing))
