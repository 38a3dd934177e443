"""Named device classes and seeded generators of heterogeneous device populations.

Speeds are relative to the *profiling host* (the machine the shipped profiles were measured on:
a 2-vCPU x86-64 cloud VM running PyTorch on the CPU). Classes marked "measured" carry real
per-layer profiles (the trustworthy machines of the VGG-19 testbed sheets, and the profiling host
itself for the zoo models); the others are estimates of sustained FP32 throughput for CNN training
from the sources listed with each class: treat those as order-of-magnitude figures.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.errors import ScenarioError
from edgesplit.profiles import LayerProfile, list_builtin_profiles, load_builtin_profile, read_profile_csv
from edgesplit.scenario import SHARING_MODES, Device, Scenario, Server, effective_speed

GB = 1e9

TESTBED_SOURCE = ("jtirana98/SFL-workflow-optimization (MIT licence), VGG-19 per-layer training times "
                  "per machine, converted by `edgesplit profile --import-testbed` (see "
                  "edgesplit/data/testbed/SOURCE.md)")


@dataclass(frozen=True)
class DeviceClass:
    """A kind of edge device: speed relative to the profiling host, memory, typical link.

    ``profiles`` lists the models (``<model>-<dataset>`` keys) for which the class has a measured
    per-layer profile; a device of the class on one of those models gets its own per-layer times
    (DESIGN.md, per-device profiles), elsewhere it gets ``speed`` times the model's profile.
    ``role`` is ``device`` or ``server`` (a server class may still be used as a device).
    """

    name: str
    speed: float
    memory_bytes: float
    rate_bps: float
    source: str
    profiles: tuple[str, ...] = ()
    role: str = "device"

    def profile_for(self, model: LayerProfile) -> LayerProfile | None:
        """The class's own per-layer profile for ``model`` (same units), or ``None`` if not measured."""
        key = f"{model.model}-{model.dataset}"
        if key not in self.profiles:
            return None
        return _class_profile_file(self.name, key)


# The profiling host (a 2-vCPU x86-64 cloud VM running PyTorch on the CPU) is the machine the
# shipped zoo profiles were measured on: speed 1 by definition. The testbed classes' speeds are the
# measured ratio of the profiling host's VGG-19 convolution and pooling time (units 1..21, which both
# VGG-19s share) to the machine's, from their per-layer profiles (laptop 2.70, VM 3.95, d1 0.141);
# their per-layer profiles are used instead wherever the model is the testbed's VGG-19. Classes
# without a measured profile carry a speed estimated from the sources given.
CATALOGUE: dict[str, DeviceClass] = {
    c.name: c
    for c in [
        DeviceClass("raspberry-pi-4", 0.08, 4 * GB, 20e6,
                    "estimate: 4x Cortex-A72 @1.5 GHz, 48 GFLOP/s peak FP32 (NEON); ~5 GFLOP/s sustained in "
                    "PyTorch CNN training; Wi-Fi 5 at ~20 Mbit/s effective"),
        DeviceClass("phone", 0.3, 6 * GB, 50e6,
                    "estimate: Snapdragon 865-class CPU, ~20 GFLOP/s sustained FP32 on CPU training; "
                    "LTE/Wi-Fi ~50 Mbit/s"),
        DeviceClass("jetson-nano", 0.5, 4 * GB, 50e6,
                    "estimate: 128-core Maxwell GPU, 236 GFLOP/s peak FP32, ~30 GFLOP/s sustained in "
                    "training (memory bound, shared 4 GB LPDDR4)"),
        DeviceClass("edge-device-d1", 0.141, 2 * GB, 20e6,
                    "measured: testbed device d1 (per-layer VGG-19 profile, CIFAR-10); " + TESTBED_SOURCE
                    + "; memory and link assumed (not in the source)",
                    profiles=("vgg19_testbed-cifar10",)),
        DeviceClass("laptop", 2.70, 16 * GB, 100e6,
                    "measured: testbed laptop (per-layer VGG-19 profiles, CIFAR-10 and MNIST); " + TESTBED_SOURCE
                    + "; memory and link assumed",
                    profiles=("vgg19_testbed-cifar10", "vgg19_testbed-mnist")),
        DeviceClass("testbed-vm", 3.95, 32 * GB, 1e9,
                    "measured: testbed VM (per-layer VGG-19 profiles, CIFAR-10 and MNIST), the testbed's "
                    "reference machine and server; " + TESTBED_SOURCE + "; memory and link assumed",
                    profiles=("vgg19_testbed-cifar10", "vgg19_testbed-mnist"), role="server"),
        DeviceClass("profiling-host", 1.0, 8 * GB, 100e6,
                    "measured: the 2-vCPU x86-64 cloud VM the shipped zoo profiles were measured on "
                    "(edgesplit/data/profiles); its per-layer profile of a zoo model is that model's profile",
                    profiles=("*zoo",)),
        DeviceClass("jetson-xavier-nx", 3.0, 8 * GB, 100e6,
                    "estimate: 384-core Volta GPU, 1.7 TFLOP/s peak FP16 / ~0.85 FP32"),
        DeviceClass("edge-server", 20.0, 64 * GB, 1e9,
                    "estimate: one data-centre GPU (e.g. T4/A10-class, 8-30 TFLOP/s FP32) behind the access point",
                    role="server"),
    ]
}
"""The device classes. ``edgesplit profile --import-testbed`` decided which testbed machines are
trustworthy: d2 (mostly zero times) and the Jetson CPU/GPU (backward column shifted by a layer)
are left out; so is d1 on MNIST (bwd/fwd ratio outliers)."""

TESTBED_CLASSES: tuple[str, ...] = ("edge-device-d1", "laptop", "testbed-vm")
"""Classes with measured testbed profiles (of the model ``vgg19_testbed``)."""

_TESTBED_MACHINE = {"edge-device-d1": "d1", "laptop": "laptop", "testbed-vm": "VM"}


def testbed_data_dir() -> Path:
    """Folder of the converted testbed class profiles shipped with the package."""
    return Path(str(resources.files("edgesplit") / "data" / "testbed"))


@lru_cache(maxsize=64)
def _class_profile_file(cls_name: str, key: str) -> LayerProfile:
    if cls_name == "profiling-host":
        return load_builtin_profile(key)
    return read_profile_csv(testbed_data_dir() / f"{key}-{_TESTBED_MACHINE[cls_name]}.csv")


def _zoo_keys() -> tuple[str, ...]:
    return tuple(k for k in list_builtin_profiles() if "_testbed" not in k)


def _class_keys(cls: DeviceClass) -> tuple[str, ...]:
    return _zoo_keys() if cls.profiles == ("*zoo",) else cls.profiles


def get_device_class(name: str, where: str = "class") -> DeviceClass:
    """The catalogue class ``name``, or a :class:`ScenarioError` naming ``where`` and the choices."""
    if name not in CATALOGUE:
        raise ScenarioError(f"{where}: unknown device class {name!r}; choose one of {', '.join(CATALOGUE)}")
    cls = CATALOGUE[name]
    if cls.profiles == ("*zoo",):
        cls = DeviceClass(cls.name, cls.speed, cls.memory_bytes, cls.rate_bps, cls.source, _zoo_keys(), cls.role)
    return cls


def class_profile(name: str, model: LayerProfile, where: str = "profile") -> LayerProfile:
    """Catalogue class ``name``'s own per-layer profile for ``model``, or a :class:`ScenarioError`
    naming ``where`` when the class has none for that model."""
    cls = get_device_class(name, where)
    prof = cls.profile_for(model)
    if prof is None:
        raise ScenarioError(f"{where}: class {name!r} has no per-layer profile for model "
                            f"{model.model}-{model.dataset}; it has {', '.join(_class_keys(cls)) or 'none'} "
                            f"(use speed, or class without profile, for other models)")
    return prof


def class_spread(model: LayerProfile, classes: tuple[str, ...] | None = None) -> dict[str, float]:
    """Whole-model speeds ``F(L) / F_i(L)`` of the classes with a per-layer profile for ``model``."""
    names = classes if classes is not None else tuple(CATALOGUE)
    out = {}
    for n in names:
        prof = get_device_class(n).profile_for(model)
        if prof is not None:
            out[n] = effective_speed(model, prof)
    return out


def device_from_class(cls_name: str, name: str, samples: int, rate_bps: float | None = None,
                      model: LayerProfile | None = None) -> Device:
    """A :class:`Device` of catalogue class ``cls_name`` (with its own profile when ``model`` is given
    and the class has one for it)."""
    c = get_device_class(cls_name)
    rate = c.rate_bps if rate_bps is None else rate_bps
    prof = c.profile_for(model) if model is not None else None
    if prof is not None:
        return Device(name, effective_speed(model, prof), c.memory_bytes, rate, samples, prof, c.name)
    return Device(name, c.speed, c.memory_bytes, rate, samples, None, c.name)


@dataclass(frozen=True)
class GeneratorConfig:
    """How :func:`generate_scenario` draws a population of devices (one frozen object instead of
    eight keyword arguments repeated across callers).

    Without ``device_classes``: speeds log-uniform in ``[fastest_speed / heterogeneity,
    fastest_speed]`` (the ends attained when N >= 2) and memory log-uniform in
    ``memory_range_bytes``. With ``device_classes`` (catalogue names): each device's class is drawn
    uniformly from them; a class with a per-layer profile for the model gives the device its own
    per-layer times, otherwise its ``speed``; memory is the class's; ``heterogeneity``,
    ``fastest_speed`` and ``memory_range_bytes`` are then unused. Link rates are always log-uniform
    in ``rate_range_bps``. ``server_class`` (a catalogue name) replaces ``server_speed`` with that
    class (its profile where it has one for the model).
    """

    heterogeneity: float = 10.0
    rate_range_bps: tuple[float, float] = (5e6, 50e6)
    memory_range_bytes: tuple[float, float] = (1 * GB, 8 * GB)
    fastest_speed: float = 0.5
    samples: int = 500
    batch_size: int = 32
    server_speed: float = 10.0
    sharing: str = "dedicated"
    device_classes: tuple[str, ...] = ()
    server_class: str = ""

    def __post_init__(self) -> None:
        for key in ("rate_range_bps", "memory_range_bytes", "device_classes"):
            value = getattr(self, key)
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise ScenarioError(f"{key}: expected a sequence, got {value!r}")
            object.__setattr__(self, key, tuple(value))
        h = self.heterogeneity
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not 1 <= h <= 1e9:
            raise ScenarioError(f"heterogeneity: must be >= 1 and <= 1e9 (fastest/slowest speed), got {h!r}")
        for key in ("rate_range_bps", "memory_range_bytes"):
            rng = getattr(self, key)
            if len(rng) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in rng) \
                    or not (0 < rng[0] <= rng[1] < math.inf):
                raise ScenarioError(f"{key}: need (low, high) with 0 < low <= high < inf, got {rng!r}")
        for key in ("fastest_speed", "server_speed"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ScenarioError(f"{key}: must be a finite number > 0, got {v!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 1:
            raise ScenarioError(f"samples: must be an integer >= 1, got {self.samples!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise ScenarioError(f"batch_size: must be an integer >= 1, got {self.batch_size!r}")
        if self.sharing not in SHARING_MODES:
            raise ScenarioError(f"sharing: must be one of {', '.join(SHARING_MODES)}, got {self.sharing!r}")
        for i, c in enumerate(self.device_classes):
            get_device_class(c, f"device_classes[{i}]")
        if self.server_class:
            get_device_class(self.server_class, "server_class")

    def replace(self, **changes: Any) -> "GeneratorConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


GENERATOR_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GeneratorConfig))
DEFAULT_GENERATOR = GeneratorConfig()


def generator_config(generator: GeneratorConfig | dict | None = None, **overrides: Any) -> GeneratorConfig:
    """A :class:`GeneratorConfig` from a config, a dict of its fields or ``None`` (the defaults),
    with ``overrides`` (its field names; anything else is a ``ScenarioError`` naming the key)."""
    if isinstance(generator, dict):
        overrides = {**generator, **overrides}
        generator = None
    if generator is not None and not isinstance(generator, GeneratorConfig):
        raise ScenarioError(f"generator: expected a GeneratorConfig or a dict, got {type(generator).__name__}")
    unknown = [k for k in overrides if k not in GENERATOR_FIELDS]
    if unknown:
        raise ScenarioError(f"{unknown[0]}: unknown generator option (allowed: {', '.join(GENERATOR_FIELDS)})")
    base = generator if generator is not None else DEFAULT_GENERATOR
    return dataclasses.replace(base, **overrides) if overrides else base


def _log_uniform_with_ends(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """n values log-uniform in [lo, hi]; with n >= 2 the two ends are included (then shuffled)."""
    if n == 1 or lo == hi:
        return np.full(n, hi) if n == 1 else np.full(n, lo)
    u = rng.uniform(0.0, 1.0, n)
    u[0], u[1] = 0.0, 1.0
    vals = lo * (hi / lo) ** u
    rng.shuffle(vals)
    return vals


def _check_n(n_devices: Any) -> None:
    if isinstance(n_devices, bool) or not isinstance(n_devices, (int, np.integer)) or n_devices < 1:
        raise ScenarioError(f"n_devices: must be an integer >= 1, got {n_devices!r}")


def generate_devices(
    n_devices: int,
    config: GeneratorConfig | dict | None = None,
    *,
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
    model: LayerProfile | None = None,
    **overrides: Any,
) -> list[Device]:
    """N devices drawn as :class:`GeneratorConfig` says (``overrides`` are its fields, e.g.
    ``heterogeneity=20``). ``model`` is needed to give devices of a profiled class their own
    per-layer times. Seeded by ``seed`` or drawn from ``rng``."""
    _check_n(n_devices)
    cfg = generator_config(config, **overrides)
    rng = rng if rng is not None else np.random.default_rng(seed)
    if cfg.device_classes:
        return _devices_from_classes(int(n_devices), cfg, rng, model)
    speeds = _log_uniform_with_ends(rng, n_devices, cfg.fastest_speed / cfg.heterogeneity, cfg.fastest_speed)
    lo, hi = cfg.rate_range_bps
    rates = _log_uniform_with_ends(rng, n_devices, lo, hi)
    mlo, mhi = cfg.memory_range_bytes
    mem = mlo * (mhi / mlo) ** rng.uniform(0.0, 1.0, n_devices)
    samples = int(cfg.samples)
    return [
        Device(f"dev-{i}", float(speeds[i]), float(mem[i]), float(rates[i]), samples)
        for i in range(n_devices)
    ]


def _devices_from_classes(n: int, cfg: GeneratorConfig, rng: np.random.Generator,
                          model: LayerProfile | None) -> list[Device]:
    classes = [get_device_class(c) for c in cfg.device_classes]
    templates = []
    for c in classes:
        prof = c.profile_for(model) if model is not None else None
        speed = effective_speed(model, prof) if prof is not None else c.speed
        templates.append((c.name, speed, float(c.memory_bytes), prof))
    pick = rng.integers(0, len(classes), size=n)
    lo, hi = cfg.rate_range_bps
    rates = _log_uniform_with_ends(rng, n, lo, hi)
    samples = int(cfg.samples)
    out = []
    for i in range(n):
        name, speed, mem, prof = templates[int(pick[i])]
        out.append(Device(f"dev-{i}", float(speed), mem, float(rates[i]), samples, prof, name))
    return out


def generate_server(model: LayerProfile, config: GeneratorConfig) -> Server:
    """The server of a generated scenario: ``server_class`` (its profile where it has one for
    ``model``) or ``server_speed``."""
    if config.server_class:
        c = get_device_class(config.server_class, "server_class")
        prof = c.profile_for(model)
        if prof is not None:
            return Server(effective_speed(model, prof), config.sharing, prof, c.name)
        return Server(float(c.speed), config.sharing, None, c.name)
    return Server(float(config.server_speed), config.sharing)


def generate_scenario(
    profile: LayerProfile,
    n_devices: int,
    config: GeneratorConfig | dict | None = None,
    *,
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
    **overrides: Any,
) -> Scenario:
    """A seeded heterogeneous scenario over ``profile`` (see :class:`GeneratorConfig`;
    ``overrides`` are its fields, e.g. ``heterogeneity=20, device_classes=("laptop", "edge-device-d1")``)."""
    cfg = generator_config(config, **overrides)
    devices = generate_devices(n_devices, cfg, seed=seed, rng=rng, model=profile)
    return Scenario(profile, int(cfg.batch_size), tuple(devices), generate_server(profile, cfg))
