"""Scenarios: a model profile, a batch size, N edge devices and an edge server.

A scenario file is JSON or YAML::

    {"model": "vgg19" | {"profile": "vgg19", "dataset": "cifar10"} | {"csv": "prof.csv"}
              | {"layers": [{"name": "conv1", "fwd_s": 2e-4, "bwd_s": 4e-4,
                             "activation_bytes": 262144, "param_bytes": 7168}, ...]},
     "batch_size": 32,
     "devices": [{"name": "pi-0", "speed": 0.05, "memory_bytes": 4e9, "rate_bps": 2e7,
                  "samples": 1000}, ...],
     "server": {"speed": 8.0, "sharing": "dedicated"}}

Every field is validated; a bad one raises :class:`ScenarioError` whose message names it
(``devices[2].speed: must be > 0, got -1``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.errors import ProfileError, ScenarioError
from edgesplit.profiles import (
    LayerProfile,
    load_builtin_profile,
    profile_from_layers,
    read_profile_csv,
)

SHARING_MODES = ("dedicated", "shared")


@dataclass(frozen=True)
class Device:
    """One edge device.

    ``speed`` is its throughput relative to the profiling host (0.1 = ten times slower),
    ``rate_bps`` its link rate when it holds the whole band, ``samples`` its local data size.
    """

    name: str
    speed: float
    memory_bytes: float
    rate_bps: float
    samples: int


@dataclass(frozen=True)
class Server:
    """The edge server: ``speed`` relative to the profiling host; ``sharing`` says whether each
    device's server-side work gets the whole server (``dedicated``) or a 1/N share (``shared``)."""

    speed: float = 1.0
    sharing: str = "dedicated"


@dataclass(frozen=True, eq=False)
class Scenario:
    """A complete problem instance for the cost model."""

    profile: LayerProfile
    batch_size: int
    devices: tuple[Device, ...]
    server: Server = field(default_factory=Server)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        validate_scenario(self)

    @property
    def n_devices(self) -> int:
        """Number of devices N."""
        return len(self.devices)

    @property
    def n_layers(self) -> int:
        """Number of cut units L."""
        return self.profile.n_layers

    def array(self, attr: str) -> np.ndarray:
        """A device attribute as a float array of length N."""
        return np.array([getattr(d, attr) for d in self.devices], dtype=np.float64)

    def with_rates(self, rates_bps: np.ndarray) -> "Scenario":
        """A copy with new link rates (one per device)."""
        rates = np.asarray(rates_bps, dtype=np.float64)
        if rates.shape != (self.n_devices,):
            raise ScenarioError(f"rate_bps: expected {self.n_devices} rates, got shape {rates.shape}")
        return replace(
            self, devices=tuple(replace(d, rate_bps=float(r)) for d, r in zip(self.devices, rates))
        )

    def to_dict(self, inline_layers: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict that :func:`scenario_from_dict` reads back."""
        p = self.profile
        if inline_layers:
            model: Any = {
                "name": p.model,
                "layers": [
                    {
                        "name": n,
                        "fwd_s": float(p.fwd_s[i]),
                        "bwd_s": float(p.bwd_s[i]),
                        "activation_bytes": float(p.activation_bytes[i]),
                        "param_bytes": float(p.param_bytes[i]),
                    }
                    for i, n in enumerate(p.names)
                ],
            }
        else:
            model = {"profile": p.model, "dataset": p.dataset}
        return {
            "model": model,
            "batch_size": self.batch_size,
            "devices": [
                {
                    "name": d.name,
                    "speed": d.speed,
                    "memory_bytes": d.memory_bytes,
                    "rate_bps": d.rate_bps,
                    "samples": d.samples,
                }
                for d in self.devices
            ],
            "server": {"speed": self.server.speed, "sharing": self.server.sharing},
        }


def _number(value: Any, where: str, *, minimum: float = 0.0, strict: bool = False,
            allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ScenarioError(f"{where}: expected a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ScenarioError(f"{where}: must be a finite number, got {value!r}")
    if strict and not v > minimum:
        raise ScenarioError(f"{where}: must be > {minimum:g}, got {value!r}")
    if not strict and v < minimum:
        raise ScenarioError(f"{where}: must be >= {minimum:g}, got {value!r}")
    return v


def _is_positive_number(x: Any) -> bool:
    return type(x) in (float, int) and 0 < x < math.inf


def _devices_look_valid(devices: tuple[Device, ...]) -> bool:
    """True when every device field is a plain in-range number (checked in one pass)."""
    try:
        for d in devices:
            if not (type(d) is Device and _is_positive_number(d.speed) and type(d.samples) is int
                    and d.samples >= 1 and type(d.memory_bytes) in (float, int) and d.memory_bytes > 0
                    and type(d.rate_bps) in (float, int) and 0 <= d.rate_bps < math.inf):
                return False
    except AttributeError:
        return False
    return True


def validate_scenario(s: Scenario) -> None:
    """Raise :class:`ScenarioError` naming the first bad field of ``s``."""
    if not isinstance(s.profile, LayerProfile):
        raise ScenarioError("model: expected a LayerProfile")
    if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, (int, np.integer)) or s.batch_size < 1:
        raise ScenarioError(f"batch_size: must be an integer >= 1, got {s.batch_size!r}")
    if len(s.devices) < 1:
        raise ScenarioError("devices: need at least one device")
    if _devices_look_valid(s.devices) and s.server.sharing in SHARING_MODES and _is_positive_number(s.server.speed):
        return  # fast path (environments build a scenario every episode); the loop below names the culprit
    for i, d in enumerate(s.devices):
        where = f"devices[{i}]"
        if not isinstance(d, Device):
            raise ScenarioError(f"{where}: expected a Device")
        _number(d.speed, f"{where}.speed", strict=True)
        _number(d.memory_bytes, f"{where}.memory_bytes", strict=True, allow_inf=True)
        _number(d.rate_bps, f"{where}.rate_bps")
        if isinstance(d.samples, bool) or not isinstance(d.samples, (int, np.integer)) or d.samples < 1:
            raise ScenarioError(f"{where}.samples: must be an integer >= 1, got {d.samples!r}")
    _number(s.server.speed, "server.speed", strict=True)
    if s.server.sharing not in SHARING_MODES:
        raise ScenarioError(
            f"server.sharing: must be one of {', '.join(SHARING_MODES)}, got {s.server.sharing!r}"
        )


def _load_model(spec: Any, base_dir: Path | None) -> LayerProfile:
    try:
        if isinstance(spec, str):
            return load_builtin_profile(spec)
        if isinstance(spec, LayerProfile):
            return spec
        if not isinstance(spec, dict):
            raise ScenarioError(f"model: expected a profile name or an object, got {spec!r}")
        if "layers" in spec:
            return profile_from_layers(spec["layers"], model=str(spec.get("name", "custom")))
        if "csv" in spec:
            path = Path(spec["csv"])
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            return read_profile_csv(path)
        if "profile" in spec:
            return load_builtin_profile(str(spec["profile"]), spec.get("dataset"))
        raise ScenarioError("model: expected one of the keys 'layers', 'csv', 'profile'")
    except ProfileError as exc:
        raise ScenarioError(str(exc)) from None


def scenario_from_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    """Build and validate a scenario from a parsed JSON/YAML object."""
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario: expected an object at the top level, got {type(data).__name__}")
    for key in ("model", "batch_size", "devices"):
        if key not in data:
            raise ScenarioError(f"{key}: missing")
    unknown = set(data) - {"model", "batch_size", "devices", "server", "name", "description"}
    if unknown:
        raise ScenarioError(f"{sorted(unknown)[0]}: unknown field (allowed: model, batch_size, devices, server)")
    profile = _load_model(data["model"], base_dir)
    bs = data["batch_size"]
    if isinstance(bs, float) and bs.is_integer():
        bs = int(bs)
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ScenarioError(f"batch_size: must be an integer >= 1, got {bs!r}")
    devs = data["devices"]
    if not isinstance(devs, list) or not devs:
        raise ScenarioError("devices: expected a non-empty list of device objects")
    devices = []
    for i, d in enumerate(devs):
        where = f"devices[{i}]"
        if not isinstance(d, dict):
            raise ScenarioError(f"{where}: expected an object, got {d!r}")
        for key in ("speed", "memory_bytes", "rate_bps", "samples"):
            if key not in d:
                raise ScenarioError(f"{where}.{key}: missing")
        extra = set(d) - {"name", "speed", "memory_bytes", "rate_bps", "samples", "class"}
        if extra:
            raise ScenarioError(f"{where}.{sorted(extra)[0]}: unknown field")
        samples = d["samples"]
        if isinstance(samples, float) and samples.is_integer():
            samples = int(samples)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ScenarioError(f"{where}.samples: must be an integer >= 1, got {samples!r}")
        devices.append(
            Device(
                name=str(d.get("name", f"device-{i}")),
                speed=_number(d["speed"], f"{where}.speed", strict=True),
                memory_bytes=_number(d["memory_bytes"], f"{where}.memory_bytes", strict=True),
                rate_bps=_number(d["rate_bps"], f"{where}.rate_bps"),
                samples=samples,
            )
        )
    srv = data.get("server", {})
    if not isinstance(srv, dict):
        raise ScenarioError(f"server: expected an object, got {srv!r}")
    extra = set(srv) - {"speed", "sharing"}
    if extra:
        raise ScenarioError(f"server.{sorted(extra)[0]}: unknown field (allowed: speed, sharing)")
    server = Server(
        speed=_number(srv.get("speed", 1.0), "server.speed", strict=True),
        sharing=str(srv.get("sharing", "dedicated")),
    )
    return Scenario(profile=profile, batch_size=bs, devices=tuple(devices), server=server)


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``4e9`` and ``4.0e9`` as floats (YAML 1.1 needs a sign)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$"),
        list("-+0123456789"),
    )
    return yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass


def load_scenario(path: str | Path) -> Scenario:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) scenario file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = _yaml_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ScenarioError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} ({exc})") from None
    return scenario_from_dict(data, base_dir=path.parent)


def save_scenario(s: Scenario, path: str | Path) -> Path:
    """Write ``s`` as JSON (inline layers, so the file stands alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s.to_dict(), indent=2))
    return path
