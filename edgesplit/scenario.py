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

LIMITS: dict[str, tuple[float, float]] = {
    "speed": (1e-9, 1e9),
    "memory_bytes": (1.0, 1e18),
    "rate_bps": (1e-3, 1e15),
    "samples": (1, 1e12),
    "batch_size": (1, 1e9),
}
"""Plausible ranges of the scenario's numbers (``rate_bps`` may also be 0, ``memory_bytes`` inf when
built in code). Values outside are refused with a message naming the range: they would only
overflow or underflow the cost model's floats (a speed of 1e-18 or a rate of 5e-324)."""

DEVICE_KEYS = ("name", "class", "speed", "profile", "memory_bytes", "rate_bps", "samples")
SERVER_KEYS = ("class", "speed", "profile", "sharing")
MODEL_KEYS = ("name", "layers", "csv", "profile", "dataset")
SCENARIO_KEYS = ("model", "batch_size", "devices", "server", "name", "description")


@dataclass(frozen=True)
class Device:
    """One edge device.

    ``speed`` is its throughput relative to the profiling host (0.1 = ten times slower),
    ``rate_bps`` its link rate when it holds the whole band, ``samples`` its local data size.
    ``profile``, when given, holds the device's *own* per-layer times (DESIGN.md, per-device
    profiles): its compute is ``F_i(c)`` from that profile and ``speed`` is only informational
    (the loaders set it to ``F(L) / F_i(L)``, the whole-model throughput ratio). ``device_class``
    names the catalogue class it came from, if any.
    """

    name: str
    speed: float
    memory_bytes: float
    rate_bps: float
    samples: int
    profile: LayerProfile | None = None
    device_class: str = ""


@dataclass(frozen=True)
class Server:
    """The edge server: ``speed`` relative to the profiling host; ``sharing`` says whether each
    device's server-side work gets the whole server (``dedicated``) or a 1/N share (``shared``).
    ``profile``, when given, holds the server's own per-layer times (``F_S``); ``speed`` is then
    informational."""

    speed: float = 1.0
    sharing: str = "dedicated"
    profile: LayerProfile | None = None
    device_class: str = ""


def effective_speed(model: LayerProfile, own: LayerProfile) -> float:
    """``F(L) / F_own(L)``: how many times faster than the profiling host ``own`` runs the whole model."""
    total = float(own.prefix_train_s[-1])
    return float(model.prefix_train_s[-1]) / total if total > 0 else math.inf


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

    @property
    def has_device_profiles(self) -> bool:
        """Whether any device or the server carries its own per-layer profile."""
        return self.server.profile is not None or any(d.profile is not None for d in self.devices)

    def array(self, attr: str) -> np.ndarray:
        """A device attribute as a float array of length N."""
        return np.array([getattr(d, attr) for d in self.devices], dtype=np.float64)

    def device_layer_seconds(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``i``'s own per-sample ``(fwd_s, bwd_s)`` per layer: its profile's, or the model's
        divided by its speed (what the cost model's ``F_i`` sums)."""
        d = self.devices[i]
        if d.profile is not None:
            return d.profile.fwd_s, d.profile.bwd_s
        return self.profile.fwd_s / d.speed, self.profile.bwd_s / d.speed

    def server_layer_seconds(self) -> tuple[np.ndarray, np.ndarray]:
        """The server's per-sample ``(fwd_s, bwd_s)`` per layer with the whole server (before the
        ``shared`` split): its profile's, or the model's divided by ``server.speed``."""
        if self.server.profile is not None:
            return self.server.profile.fwd_s, self.server.profile.bwd_s
        return self.profile.fwd_s / self.server.speed, self.profile.bwd_s / self.server.speed

    def with_rates(self, rates_bps: np.ndarray) -> "Scenario":
        """A copy with new link rates (one per device)."""
        rates = np.asarray(rates_bps, dtype=np.float64)
        if rates.shape != (self.n_devices,):
            raise ScenarioError(f"rate_bps: expected {self.n_devices} rates, got shape {rates.shape}")
        return replace(
            self, devices=tuple(replace(d, rate_bps=float(r)) for d, r in zip(self.devices, rates))
        )

    def with_samples(self, samples: Any) -> "Scenario":
        """A copy whose devices' ``samples`` are ``samples`` (one int per device, each >= 1): the
        samples processed per round, so that the cost model's ``K_i = ceil(samples_i / b)`` matches
        the iterations really trained (an iteration budget instead of one local epoch)."""
        counts = [int(x) for x in np.asarray(samples).reshape(-1)]
        if len(counts) != self.n_devices:
            raise ScenarioError(f"samples: expected {self.n_devices} counts (one per device), got {len(counts)}")
        if min(counts) < 1:
            raise ScenarioError(f"samples: every count must be >= 1, got {counts}")
        return replace(self, devices=tuple(replace(d, samples=c) for d, c in zip(self.devices, counts)))

    def to_dict(self, inline_layers: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict that :func:`scenario_from_dict` reads back (own profiles inline)."""
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

        def own(prof: LayerProfile) -> dict[str, Any]:
            return {"layers": [{"name": n, "fwd_s": float(prof.fwd_s[i]), "bwd_s": float(prof.bwd_s[i])}
                               for i, n in enumerate(prof.names)]}

        devices = []
        for d in self.devices:
            row: dict[str, Any] = {"name": d.name}
            if d.device_class:
                row["class"] = d.device_class
            if d.profile is not None:
                row["profile"] = own(d.profile)
            else:
                row["speed"] = d.speed
            row.update(memory_bytes=d.memory_bytes, rate_bps=d.rate_bps, samples=d.samples)
            devices.append(row)
        server: dict[str, Any] = {"sharing": self.server.sharing}
        if self.server.profile is not None:
            server["profile"] = own(self.server.profile)
        else:
            server["speed"] = self.server.speed
        return {"model": model, "batch_size": self.batch_size, "devices": devices, "server": server}


def _show(value: Any) -> str:
    """``repr(value)``, but a huge integer as its size (its repr may be refused or megabytes long)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(int(value)) > 10 ** 30:
        return f"an integer of about {int(int(value).bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _range_text(key: str) -> str:
    lo, hi = LIMITS[key]
    return f"[{lo:g}, {hi:g}]"


def _number(value: Any, where: str, key: str, *, zero_ok: bool = False, allow_inf: bool = False) -> float:
    """A number within ``LIMITS[key]`` (or 0 with ``zero_ok``, inf with ``allow_inf``), else a
    :class:`ScenarioError` naming ``where`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ScenarioError(f"{where}: expected a number, got {_show(value)}")
    lo, hi = LIMITS[key]
    allowed = ("0 or " if zero_ok else "") + f"a number in {_range_text(key)}"
    try:
        v = float(value)
    except OverflowError:  # an integer beyond the float range
        raise ScenarioError(f"{where}: must be {allowed}, got {_show(value)}") from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ScenarioError(f"{where}: must be a finite number ({allowed}), got {_show(value)}")
    if v <= 0 and not (zero_ok and v == 0):
        raise ScenarioError(f"{where}: must be {'>= 0' if zero_ok else '> 0'} ({allowed}), got {_show(value)}")
    if (v < lo and not (zero_ok and v == 0)) or (v > hi and not (allow_inf and math.isinf(v))):
        raise ScenarioError(f"{where}: must be {allowed}, got {_show(value)}")
    return v


def _integer(value: Any, where: str, key: str) -> int:
    """An integer within ``LIMITS[key]`` (floats with an integer value are accepted)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    lo, hi = LIMITS[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ScenarioError(f"{where}: must be an integer >= {lo:g}, got {_show(value)}")
    if value > hi:
        raise ScenarioError(f"{where}: must be an integer in [{lo:g}, {hi:g}], got {_show(value)}")
    return int(value)


_SPEED_LO, _SPEED_HI = LIMITS["speed"]
_RATE_LO, _RATE_HI = LIMITS["rate_bps"]
_MEM_LO, _MEM_HI = LIMITS["memory_bytes"]
_SAMPLES_HI = LIMITS["samples"][1]


_NUMBER_TYPES = (float, int)


def _devices_look_valid(devices: tuple[Device, ...], names: tuple[str, ...]) -> bool:
    """True when every device field is a plain in-range number (checked in one pass)."""
    try:
        for d in devices:
            if type(d) is not Device:
                return False
            sp, sa, m, r = d.speed, d.samples, d.memory_bytes, d.rate_bps
            if not (_SPEED_LO <= sp <= _SPEED_HI and type(sa) is int and 1 <= sa <= _SAMPLES_HI
                    and _MEM_LO <= m and (m <= _MEM_HI or m == math.inf)
                    and (r == 0 or _RATE_LO <= r <= _RATE_HI)):
                return False
            if type(sp) not in _NUMBER_TYPES or type(m) not in _NUMBER_TYPES or type(r) not in _NUMBER_TYPES:
                return False
            p = d.profile
            if p is not None and not (type(p) is LayerProfile and p.names == names and p.prefix_train_s[-1] > 0):
                return False
    except (AttributeError, TypeError):
        return False
    return True


def _check_own_profile(model: LayerProfile, own: Any, where: str) -> None:
    if not isinstance(own, LayerProfile):
        raise ScenarioError(f"{where}: expected a LayerProfile, got {type(own).__name__}")
    try:
        model.check_same_layers(own, where)
    except ProfileError as exc:
        raise ScenarioError(str(exc)) from None
    if not own.prefix_train_s[-1] > 0:
        raise ScenarioError(f"{where}: every forward and backward time is 0 (a device cannot be infinitely fast)")


def validate_scenario(s: Scenario) -> None:
    """Raise :class:`ScenarioError` naming the first bad field of ``s``."""
    if not isinstance(s.profile, LayerProfile):
        raise ScenarioError("model: expected a LayerProfile")
    if isinstance(s.batch_size, bool) or not isinstance(s.batch_size, (int, np.integer)):
        raise ScenarioError(f"batch_size: must be an integer >= 1, got {s.batch_size!r}")
    _integer(s.batch_size, "batch_size", "batch_size")
    if len(s.devices) < 1:
        raise ScenarioError("devices: need at least one device")
    srv = s.server
    if (_devices_look_valid(s.devices, s.profile.names) and isinstance(srv, Server)
            and srv.sharing in SHARING_MODES and type(srv.speed) in (float, int)
            and _SPEED_LO <= srv.speed <= _SPEED_HI and srv.profile is None):
        return  # fast path (environments build a scenario every episode); the loop below names the culprit
    for i, d in enumerate(s.devices):
        where = f"devices[{i}]"
        if not isinstance(d, Device):
            raise ScenarioError(f"{where}: expected a Device")
        _number(d.speed, f"{where}.speed", "speed")
        _number(d.memory_bytes, f"{where}.memory_bytes", "memory_bytes", allow_inf=True)
        _number(d.rate_bps, f"{where}.rate_bps", "rate_bps", zero_ok=True)
        if isinstance(d.samples, bool) or not isinstance(d.samples, (int, np.integer)):
            raise ScenarioError(f"{where}.samples: must be an integer >= 1, got {d.samples!r}")
        _integer(d.samples, f"{where}.samples", "samples")
        if d.profile is not None:
            _check_own_profile(s.profile, d.profile, f"{where}.profile")
    if not isinstance(srv, Server):
        raise ScenarioError("server: expected a Server")
    _number(srv.speed, "server.speed", "speed")
    if srv.sharing not in SHARING_MODES:
        raise ScenarioError(
            f"server.sharing: must be one of {', '.join(SHARING_MODES)}, got {srv.sharing!r}"
        )
    if srv.profile is not None:
        _check_own_profile(s.profile, srv.profile, "server.profile")


def _resolve_path(path: Any, base_dir: Path | None, where: str) -> Path:
    if not isinstance(path, str) or not path:
        raise ScenarioError(f"{where}: expected a file path, got {_show(path)}")
    p = Path(path)
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    return p


def _load_model(spec: Any, base_dir: Path | None) -> LayerProfile:
    try:
        if isinstance(spec, str):
            return load_builtin_profile(spec)
        if isinstance(spec, LayerProfile):
            return spec
        if not isinstance(spec, dict):
            raise ScenarioError(f"model: expected a profile name or an object, got {_show(spec)}")
        unknown = [k for k in spec if k not in MODEL_KEYS]
        if unknown:
            raise ScenarioError(f"model.{unknown[0]}: unknown field (allowed: {', '.join(MODEL_KEYS)})")
        sources = [k for k in ("layers", "csv", "profile") if k in spec]
        if len(sources) > 1:
            raise ScenarioError(f"model: give one of 'layers', 'csv', 'profile', got {', '.join(sources)}")
        name = spec.get("name", "custom")
        if not isinstance(name, str):
            raise ScenarioError(f"model.name: expected a string, got {type(name).__name__}")
        dataset = spec.get("dataset")
        if dataset is not None and not isinstance(dataset, str):
            raise ScenarioError(f"model.dataset: expected a string, got {type(dataset).__name__}")
        if "layers" in spec:
            return profile_from_layers(spec["layers"], model=name)
        if "csv" in spec:
            return read_profile_csv(_resolve_path(spec["csv"], base_dir, "model.csv"))
        if "profile" in spec:
            if not isinstance(spec["profile"], str):
                raise ScenarioError(f"model.profile: expected a profile name, got {_show(spec['profile'])}")
            return load_builtin_profile(spec["profile"], dataset)
        raise ScenarioError("model: expected one of the keys 'layers', 'csv', 'profile'")
    except ProfileError as exc:
        raise ScenarioError(str(exc)) from None


def _own_profile(spec: Any, model: LayerProfile, base_dir: Path | None, where: str) -> LayerProfile:
    """A device's (or the server's) own profile from a catalogue class name, ``{"csv": path}`` (the
    format ``edgesplit profile`` writes) or ``{"layers": [{"name", "fwd_s", "bwd_s"}, ...]}``; its
    activation and parameter bytes are the model's."""
    try:
        if isinstance(spec, LayerProfile):
            prof = spec
        elif isinstance(spec, str):
            from edgesplit.devices import class_profile

            prof = class_profile(spec, model, where)
        elif isinstance(spec, dict):
            unknown = [k for k in spec if k not in ("csv", "layers")]
            if unknown:
                raise ScenarioError(f"{where}.{unknown[0]}: unknown field (allowed: csv, layers, or a catalogue "
                                    f"class name instead of an object)")
            if len(spec) != 1:
                raise ScenarioError(f"{where}: give exactly one of 'csv', 'layers'")
            if "csv" in spec:
                prof = read_profile_csv(_resolve_path(spec["csv"], base_dir, f"{where}.csv"))
            else:
                prof = profile_from_layers(spec["layers"], model=model.model, where=f"{where}.layers",
                                           required=("fwd_s", "bwd_s"))
        else:
            raise ScenarioError(f"{where}: expected a catalogue class name, {{\"csv\": path}} or "
                                f"{{\"layers\": [...]}}, got {_show(spec)}")
    except ProfileError as exc:
        raise ScenarioError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
    _check_own_profile(model, prof, where)
    if prof.activation_bytes is not model.activation_bytes:  # bytes are the model's (DESIGN.md)
        prof = LayerProfile(names=model.names, fwd_s=prof.fwd_s, bwd_s=prof.bwd_s,
                            activation_bytes=model.activation_bytes, param_bytes=model.param_bytes,
                            model=model.model, dataset=model.dataset, host=prof.host,
                            batch_size=prof.batch_size, meta=dict(prof.meta))
    return prof


def _class_defaults(d: dict, where: str, model: LayerProfile) -> tuple[dict, str]:
    """The fields a catalogue ``class`` supplies (explicit fields win); returns (fields, class name)."""
    if "class" not in d:
        return {}, ""
    from edgesplit.devices import get_device_class

    name = d["class"]
    if not isinstance(name, str):
        raise ScenarioError(f"{where}.class: expected a catalogue class name, got {_show(name)}")
    cls = get_device_class(name, f"{where}.class")
    out: dict[str, Any] = {"memory_bytes": cls.memory_bytes, "rate_bps": cls.rate_bps}
    if "speed" not in d and "profile" not in d:
        if cls.profile_for(model) is not None:
            out["profile"] = name
        else:
            out["speed"] = cls.speed
    return out, name


def _parse_device(d: Any, i: int, model: LayerProfile, base_dir: Path | None) -> Device:
    where = f"devices[{i}]"
    if not isinstance(d, dict):
        raise ScenarioError(f"{where}: expected an object, got {_show(d)}")
    unknown = [k for k in d if k not in DEVICE_KEYS]
    if unknown:
        raise ScenarioError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(DEVICE_KEYS)})")
    if "speed" in d and "profile" in d:
        raise ScenarioError(f"{where}.speed: give speed or profile, not both (with a profile the compute "
                            f"comes from its per-layer times)")
    defaults, cls_name = _class_defaults(d, where, model)
    d = {**defaults, **d}
    for key in ("memory_bytes", "rate_bps", "samples"):
        if key not in d:
            raise ScenarioError(f"{where}.{key}: missing")
    if "speed" not in d and "profile" not in d:
        raise ScenarioError(f"{where}.speed: missing (give speed, profile or a catalogue class)")
    samples = _integer(d["samples"], f"{where}.samples", "samples")
    name = d.get("name", f"device-{i}")
    if not isinstance(name, (str, int)) or isinstance(name, bool):
        raise ScenarioError(f"{where}.name: expected a string, got {type(name).__name__}")
    profile = None
    if "profile" in d:
        profile = _own_profile(d["profile"], model, base_dir, f"{where}.profile")
        speed = effective_speed(model, profile)
    else:
        speed = _number(d["speed"], f"{where}.speed", "speed")
    return Device(
        name=str(name),
        speed=speed,
        memory_bytes=_number(d["memory_bytes"], f"{where}.memory_bytes", "memory_bytes"),
        rate_bps=_number(d["rate_bps"], f"{where}.rate_bps", "rate_bps", zero_ok=True),
        samples=samples,
        profile=profile,
        device_class=cls_name,
    )


def _parse_server(srv: Any, model: LayerProfile, base_dir: Path | None) -> Server:
    if not isinstance(srv, dict):
        raise ScenarioError(f"server: expected an object, got {_show(srv)}")
    unknown = [k for k in srv if k not in SERVER_KEYS]
    if unknown:
        raise ScenarioError(f"server.{unknown[0]}: unknown field (allowed: {', '.join(SERVER_KEYS)})")
    if "speed" in srv and "profile" in srv:
        raise ScenarioError("server.speed: give speed or profile, not both")
    defaults, cls_name = _class_defaults(srv, "server", model)
    defaults.pop("memory_bytes", None)
    defaults.pop("rate_bps", None)
    srv = {**defaults, **srv}
    sharing = srv.get("sharing", "dedicated")
    if sharing not in SHARING_MODES:
        raise ScenarioError(f"server.sharing: must be one of {', '.join(SHARING_MODES)}, got {_show(sharing)}")
    if "profile" in srv:
        prof = _own_profile(srv["profile"], model, base_dir, "server.profile")
        return Server(speed=effective_speed(model, prof), sharing=sharing, profile=prof, device_class=cls_name)
    return Server(speed=_number(srv.get("speed", 1.0), "server.speed", "speed"), sharing=sharing,
                  device_class=cls_name)


def scenario_from_dict(data: Any, base_dir: Path | None = None) -> Scenario:
    """Build and validate a scenario from a parsed JSON/YAML object."""
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario: expected an object at the top level, got {type(data).__name__}")
    for key in ("model", "batch_size", "devices"):
        if key not in data:
            raise ScenarioError(f"{key}: missing")
    unknown = [k for k in data if k not in SCENARIO_KEYS]
    if unknown:
        raise ScenarioError(f"{unknown[0]}: unknown field (allowed: model, batch_size, devices, server)")
    profile = _load_model(data["model"], base_dir)
    bs = _integer(data["batch_size"], "batch_size", "batch_size")
    devs = data["devices"]
    if not isinstance(devs, list) or not devs:
        raise ScenarioError("devices: expected a non-empty list of device objects")
    devices = [_parse_device(d, i, profile, base_dir) for i, d in enumerate(devs)]
    server = _parse_server(data.get("server", {}), profile, base_dir)
    return Scenario(profile=profile, batch_size=bs, devices=tuple(devices), server=server)


MAX_SCENARIO_BYTES = 64 * 2**20
"""Largest scenario file read (64 MiB)."""


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``4e9`` and ``4.0e9`` as floats (YAML 1.1 needs a sign)
    and refuses aliases (``*name``): a scenario never needs them, and nested aliases expand
    exponentially (a "billion laughs" file takes minutes and gigabytes)."""
    import re

    import yaml
    from yaml.events import AliasEvent

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(AliasEvent):
                event = self.peek_event()
                raise ScenarioError(f"YAML alias *{event.anchor} at line {event.start_mark.line + 1}: "
                                    "aliases are not allowed in scenario files; write the value out")
            return super().compose_node(parent, index)

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
    if path.stat().st_size > MAX_SCENARIO_BYTES:
        raise ScenarioError(f"{path}: larger than {MAX_SCENARIO_BYTES // 2**20} MiB; not a scenario file")
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        data = _yaml_load(text) if is_yaml else json.loads(text)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply") from None
    except Exception as exc:
        raise ScenarioError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'} ({exc})") from None
    return scenario_from_dict(data, base_dir=path.parent)


def save_scenario(s: Scenario, path: str | Path) -> Path:
    """Write ``s`` as JSON (inline layers, so the file stands alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s.to_dict(), indent=2))
    return path
