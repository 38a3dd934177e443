"""The run configuration that the server reads and hands, piece by piece, to its devices.

It is plain JSON (no pandas, no scenario objects) so that worker processes start fast and a
device on another host needs nothing but the server's address: the server sends each device its
:class:`DeviceSpec` in the ``CONFIG`` message. :mod:`edgesplit.distributed.planning` builds it
from a scenario, a scheduler and the host calibration.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesplit.errors import EdgeSplitError

FAULT_ACTIONS = ("kill", "hang", "exit")


@dataclass
class Fault:
    """Fault injection (tests, demos): device ``rank`` does ``action`` at ``iteration`` (0-based)
    of round ``round``. ``kill`` sends itself SIGKILL, ``hang`` stops talking (sleeps until
    killed), ``exit`` leaves without a word (``os._exit``)."""

    rank: int
    round: int
    iteration: int = 0
    action: str = "kill"

    def __post_init__(self) -> None:
        if self.action not in FAULT_ACTIONS:
            raise EdgeSplitError(f"fault action: must be one of {', '.join(FAULT_ACTIONS)}, got {self.action!r}")
        if self.rank < 1 or self.round < 1 or self.iteration < 0:
            raise EdgeSplitError(f"fault: need rank >= 1, round >= 1, iteration >= 0, got {self}")

    @classmethod
    def parse(cls, text: str, action: str = "kill") -> "Fault":
        """``RANK:ROUND[:ITERATION]`` (as on the command line)."""
        parts = text.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) not in (2, 3):
            raise EdgeSplitError(f"--{action}-device: expected RANK:ROUND[:ITERATION], got {text!r}")
        return cls(nums[0], nums[1], nums[2] if len(nums) == 3 else 0, action)


def _check_layers(where: str, fwd: list[float] | None, bwd: list[float] | None, n_layers: int) -> None:
    """An own per-layer profile: both lists or neither, ``n_layers`` finite values >= 0 each."""
    if fwd is None and bwd is None:
        return
    if fwd is None or bwd is None or len(fwd) != n_layers or len(bwd) != n_layers:
        raise EdgeSplitError(f"{where}: need {n_layers} forward and {n_layers} backward times, got "
                             f"{None if fwd is None else len(fwd)} and {None if bwd is None else len(bwd)}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in [*fwd, *bwd]):
        raise EdgeSplitError(f"{where}: per-layer times must be finite numbers >= 0")


@dataclass
class DeviceSpec:
    """One device rank: its schedule, its emulated speed and link, its data and the prediction."""

    rank: int
    name: str
    cut: int
    share: float
    rate_bps: float
    speed: float  # emulated speed relative to this host (what the device stretches its compute by)
    samples: int
    predicted_s: float  # cost model T_i for this device
    predicted_bytes: float  # cost model V_i / 8
    predicted_download_s: float = 0.0  # D_i: the averaged weights' download, 8 W(c_i) / (share rate)
    # the device's own per-layer profile (per-sample seconds on its hardware; DESIGN.md F_i): when
    # given, compute is emulated layer by layer from it and ``speed`` is only informational
    fwd_s: list[float] | None = None
    bwd_s: list[float] | None = None

    @property
    def link_bytes_per_s(self) -> float:
        """The device's link share in bytes per second."""
        return self.share * self.rate_bps / 8.0


@dataclass
class RunConfig:
    """Everything the server needs to run the rounds (JSON round-trips with to_dict/from_dict)."""

    run_id: int
    model: str
    dataset: str
    n_layers: int
    batch_size: int
    rounds: int
    devices: list[DeviceSpec]
    server_speed: float  # emulated server speed per device (speed_S, or speed_S / N if shared)
    scheduler: str = "alternating"
    sequential: bool = False
    data_dir: str | None = None
    seed: int = 0
    lr: float = 0.05
    momentum: float = 0.0
    non_iid_alpha: float | None = None
    timeout_s: float = 30.0
    device_timeout_s: float = 300.0
    rendezvous_timeout_s: float = 120.0
    clock: str = "cpu"
    burst_bytes: float = 1500.0
    rate_limit: bool = True  # False: links are not emulated (real network, or shaped with tc)
    device: str = "cpu"  # where ranks compute: cpu, cuda (every rank), auto (cuda if every rank has it)
    checkpoint_dir: str | None = None
    resume: bool = False
    faults: list[Fault] = field(default_factory=list)
    profile_fwd_s: list[float] = field(default_factory=list)  # per sample, per unit (the clock "profile")
    profile_bwd_s: list[float] = field(default_factory=list)
    # the server's own per-layer profile per device (after a shared server's split), if it has one
    server_fwd_s: list[float] | None = None
    server_bwd_s: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.devices = [d if isinstance(d, DeviceSpec) else DeviceSpec(**d) for d in self.devices]
        self.faults = [f if isinstance(f, Fault) else Fault(**f) for f in self.faults]
        self.validate()

    @property
    def world_size(self) -> int:
        """1 server + N devices."""
        return len(self.devices) + 1

    def validate(self) -> None:
        """Raise :class:`EdgeSplitError` naming the first bad field."""
        if not self.devices:
            raise EdgeSplitError("devices: need at least one device")
        if self.rounds < 0:
            raise EdgeSplitError(f"rounds: must be >= 0, got {self.rounds}")
        for i, d in enumerate(self.devices):
            where = f"devices[{i}]"
            if d.rank != i + 1:
                raise EdgeSplitError(f"{where}.rank: expected {i + 1}, got {d.rank}")
            if not 1 <= d.cut <= self.n_layers:
                raise EdgeSplitError(f"{where}.cut: must lie in 1..{self.n_layers}, got {d.cut}")
            if not (d.share * d.rate_bps > 0) or math.isinf(d.share * d.rate_bps):
                raise EdgeSplitError(
                    f"{where}.share: share x rate is {d.share * d.rate_bps!r} bit/s; a device with traffic "
                    "and no bandwidth never finishes its round"
                )
            if not (d.speed > 0 and math.isfinite(d.speed)):
                raise EdgeSplitError(f"{where}.speed: must be a finite number > 0, got {d.speed!r}")
            if d.samples < 1:
                raise EdgeSplitError(f"{where}.samples: must be >= 1, got {d.samples}")
            _check_layers(f"{where}.fwd_s/bwd_s", d.fwd_s, d.bwd_s, self.n_layers)
        _check_layers("server_fwd_s/server_bwd_s", self.server_fwd_s, self.server_bwd_s, self.n_layers)
        if not (self.server_speed > 0 and math.isfinite(self.server_speed)):
            raise EdgeSplitError(f"server_speed: must be a finite number > 0, got {self.server_speed!r}")
        for key in ("timeout_s", "device_timeout_s", "rendezvous_timeout_s"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise EdgeSplitError(f"{key}: must be a finite number > 0, got {v!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise EdgeSplitError(f"device: must be one of cpu, cuda, auto, got {self.device!r}")
        own = self.server_fwd_s is not None or any(d.fwd_s is not None for d in self.devices)
        if own and (len(self.profile_fwd_s) != self.n_layers or len(self.profile_bwd_s) != self.n_layers):
            raise EdgeSplitError(f"profile_fwd_s/profile_bwd_s: own per-layer profiles need the host profile "
                                 f"({self.n_layers} values each)")
        if self.clock == "profile" and (len(self.profile_fwd_s) != self.n_layers
                                        or len(self.profile_bwd_s) != self.n_layers):
            raise EdgeSplitError(f"profile_fwd_s/profile_bwd_s: the profile clock needs {self.n_layers} values each")
        for f in self.faults:
            if f.rank > len(self.devices):
                raise EdgeSplitError(f"fault: no device rank {f.rank} (ranks 1..{len(self.devices)})")

    def predicted_round_s(self, ranks: list[int]) -> float:
        """Cost-model round time of the devices ``ranks`` (max of T_i; the sum if sequential)."""
        times = [self.devices[r - 1].predicted_s for r in ranks]
        if not times:
            return math.nan
        return float(sum(times) if self.sequential else max(times))

    def corrected_round_s(self, ranks: list[int]) -> float:
        """Round time with the aggregation barrier: downloads start after the *last* upload, so
        ``max_i (T_i - D_i) + max_i D_i`` (the cost model's ``max_i T_i`` lets each device
        download right after its own upload). Sequential plans: the plain sum."""
        devs = [self.devices[r - 1] for r in ranks]
        if not devs:
            return math.nan
        if self.sequential:
            return float(sum(d.predicted_s for d in devs))
        return float(max(d.predicted_s - d.predicted_download_s for d in devs)
                     + max(d.predicted_download_s for d in devs))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["run_id"] = f"{self.run_id:#x}"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        rid = data.get("run_id")
        data["run_id"] = int(rid, 16) if isinstance(rid, str) else int(rid)
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        """Write as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a JSON file written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))
