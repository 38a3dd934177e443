"""Per-layer profiles of a splittable model: the numbers the cost model runs on.

A profile lists the model's *cut units* (the blocks a cut may fall between) in execution order,
with, per unit and per sample, the forward and backward time measured on a profiling host, the
output activation size and the parameter size. Profiles are stored as CSV, one row per unit::

    index,name,fwd_s,bwd_s,fwd_flops,activation_bytes,param_bytes,model,dataset,host,batch_size

``index`` runs 1..L. The last four columns repeat the profile's metadata on every row so that the
file stays plain CSV. The reference profiles of the model zoo ship in ``edgesplit/data/profiles``.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from edgesplit.errors import ProfileError

PROFILE_COLUMNS = [
    "index",
    "name",
    "fwd_s",
    "bwd_s",
    "fwd_flops",
    "activation_bytes",
    "param_bytes",
    "model",
    "dataset",
    "host",
    "batch_size",
]
_REQUIRED = ["fwd_s", "bwd_s", "activation_bytes", "param_bytes"]

MAX_LAYER_SECONDS = 1e6
"""Largest plausible per-sample time of one unit (seconds); larger values are refused."""
MIN_LAYER_SECONDS = 1e-15
"""Smallest non-zero per-sample time of one unit (seconds); smaller non-zero values are refused."""
MAX_LAYER_BYTES = 1e15
"""Largest plausible activation or parameter size of one unit (bytes); larger values are refused."""
MIN_LAYER_BYTES = 1e-6
"""Smallest non-zero size (bytes): tinier sizes would only underflow the cost model's floats."""
MAX_LAYERS = 100_000
"""Most cut units a profile may have."""
_LIMIT = {"fwd_s": MAX_LAYER_SECONDS, "bwd_s": MAX_LAYER_SECONDS, "activation_bytes": MAX_LAYER_BYTES,
          "param_bytes": MAX_LAYER_BYTES, "fwd_flops": math.inf}
_FLOOR = {"fwd_s": MIN_LAYER_SECONDS, "bwd_s": MIN_LAYER_SECONDS, "activation_bytes": MIN_LAYER_BYTES,
          "param_bytes": MIN_LAYER_BYTES, "fwd_flops": 0.0}


@dataclass(frozen=True, eq=False)
class LayerProfile:
    """Per-sample costs of the L cut units of one model on one profiling host.

    Arrays have length L and are indexed by unit ``l - 1`` for unit ``l = 1..L``.
    """

    names: tuple[str, ...]
    fwd_s: np.ndarray
    bwd_s: np.ndarray
    activation_bytes: np.ndarray
    param_bytes: np.ndarray
    fwd_flops: np.ndarray | None = None
    model: str = "custom"
    dataset: str = ""
    host: str = ""
    batch_size: int = 0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.names)
        if n < 1:
            raise ProfileError("model.layers: a profile needs at least one layer")
        if n > MAX_LAYERS:
            raise ProfileError(f"model.layers: at most {MAX_LAYERS} layers, got {n}")
        for key in _REQUIRED + (["fwd_flops"] if self.fwd_flops is not None else []):
            arr = np.asarray(getattr(self, key), dtype=np.float64)
            if arr.shape != (n,):
                raise ProfileError(f"model.layers.{key}: expected {n} values, got shape {arr.shape}")
            bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0) | (arr > _LIMIT[key])
                                 | ((arr > 0) & (arr < _FLOOR[key])))
            if bad.size:
                i = int(bad[0])
                raise ProfileError(
                    f"model.layers[{i}].{key}: must be 0 or a finite number in [{_FLOOR[key]:g}, "
                    f"{_LIMIT[key]:g}], got {arr[i]!r}"
                )
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)

    def __repr__(self) -> str:
        return (f"LayerProfile({self.model}-{self.dataset}, {self.n_layers} layers, "
                f"F(L)={float(self.prefix_train_s[-1]):.4g} s/sample, host={self.host!r})")

    @property
    def n_layers(self) -> int:
        """Number of cut units L."""
        return len(self.names)

    @cached_property
    def train_s(self) -> np.ndarray:
        """Forward plus backward seconds per sample, per unit (cached; read-only)."""
        out = self.fwd_s + self.bwd_s
        out.setflags(write=False)
        return out

    @cached_property
    def prefix_train_s(self) -> np.ndarray:
        """``F(c) = sum_{l<=c} (fwd_s + bwd_s)`` for ``c = 1..L`` (cached; read-only)."""
        out = np.cumsum(self.train_s)
        out.setflags(write=False)
        return out

    @cached_property
    def prefix_param_bytes(self) -> np.ndarray:
        """``W(c) = sum_{l<=c} param_bytes`` for ``c = 1..L`` (cached; read-only)."""
        out = np.cumsum(self.param_bytes)
        out.setflags(write=False)
        return out

    @cached_property
    def prefix_activation_bytes(self) -> np.ndarray:
        """``sum_{l<=c} activation_bytes`` for ``c = 1..L`` (cached; read-only)."""
        out = np.cumsum(self.activation_bytes)
        out.setflags(write=False)
        return out

    def check_same_layers(self, other: "LayerProfile", where: str) -> None:
        """Raise :class:`ProfileError` naming ``where`` unless ``other`` has this profile's units
        (same count, same names in the same order)."""
        if other.n_layers != self.n_layers:
            raise ProfileError(f"{where}: has {other.n_layers} layers, the model {self.model!r} has "
                               f"{self.n_layers}")
        for i, (a, b) in enumerate(zip(self.names, other.names)):
            if a != b:
                raise ProfileError(f"{where}: layer {i + 1} is named {b!r}, the model's is {a!r}")

    def to_frame(self) -> pd.DataFrame:
        """The profile as a DataFrame with the CSV columns."""
        n = self.n_layers
        flops = self.fwd_flops if self.fwd_flops is not None else np.full(n, np.nan)
        return pd.DataFrame(
            {
                "index": np.arange(1, n + 1),
                "name": list(self.names),
                "fwd_s": self.fwd_s,
                "bwd_s": self.bwd_s,
                "fwd_flops": flops,
                "activation_bytes": self.activation_bytes,
                "param_bytes": self.param_bytes,
                "model": self.model,
                "dataset": self.dataset,
                "host": self.host,
                "batch_size": self.batch_size,
            }
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write the profile as CSV and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_frame().to_csv(path, index=False)
        return path

    def scaled(self, time_factor: float) -> "LayerProfile":
        """A copy whose times are multiplied by ``time_factor`` (e.g. another host)."""
        return LayerProfile(
            names=self.names,
            fwd_s=self.fwd_s * time_factor,
            bwd_s=self.bwd_s * time_factor,
            activation_bytes=self.activation_bytes,
            param_bytes=self.param_bytes,
            fwd_flops=self.fwd_flops,
            model=self.model,
            dataset=self.dataset,
            host=f"{self.host} x{time_factor:g}",
            batch_size=self.batch_size,
            meta=dict(self.meta),
        )


def profile_from_frame(df: pd.DataFrame, source: str = "profile") -> LayerProfile:
    """Build a profile from a DataFrame with the CSV columns (extra columns are ignored)."""
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ProfileError(f"{source}: missing column(s) {', '.join(missing)}")
    if "index" in df.columns:
        df = df.sort_values("index")
    names = (
        tuple(str(x) for x in df["name"])
        if "name" in df.columns
        else tuple(f"layer{i}" for i in range(1, len(df) + 1))
    )

    def first(col: str, default):
        if col not in df.columns or df[col].isna().all():
            return default
        return df[col].dropna().iloc[0]

    flops = None
    if "fwd_flops" in df.columns and not df["fwd_flops"].isna().any():
        flops = df["fwd_flops"].to_numpy(dtype=np.float64)
    try:
        return LayerProfile(
            names=names,
            fwd_s=df["fwd_s"].to_numpy(dtype=np.float64),
            bwd_s=df["bwd_s"].to_numpy(dtype=np.float64),
            activation_bytes=df["activation_bytes"].to_numpy(dtype=np.float64),
            param_bytes=df["param_bytes"].to_numpy(dtype=np.float64),
            fwd_flops=flops,
            model=str(first("model", "custom")),
            dataset=str(first("dataset", "")),
            host=str(first("host", "")),
            batch_size=int(first("batch_size", 0)),
        )
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, ProfileError):
            raise ProfileError(f"{source}: {exc}") from None
        raise ProfileError(f"{source}: non-numeric value in a profile column ({exc})") from None


def read_profile_csv(path: str | Path) -> LayerProfile:
    """Read a profile CSV written by :meth:`LayerProfile.to_csv` or ``edgesplit profile``."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for malformed files
        raise ProfileError(f"{path}: not a readable CSV ({exc})") from None
    return profile_from_frame(df, source=str(path))


LAYER_KEYS = ("name", "fwd_s", "bwd_s", "activation_bytes", "param_bytes", "fwd_flops")
"""The keys an inline layer object may have."""


def _layer_number(value: object, where: str, limit: float) -> float:
    """A finite number in ``[0, limit]`` or a :class:`ProfileError` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{where}: expected a number, got {reprlib.repr(value)}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond the float range
        raise ProfileError(f"{where}: must be 0 or a finite number in [{_FLOOR.get(where.rsplit('.', 1)[-1], 0.0):g}, "
                           f"{limit:g}], got an integer of about {int(int(value).bit_length() * 0.30103) + 1} digits") from None
    key = where.rsplit(".", 1)[-1]
    floor = _FLOOR.get(key, 0.0)
    if not math.isfinite(v) or not 0 <= v <= limit or 0 < v < floor:
        raise ProfileError(f"{where}: must be 0 or a finite number in [{floor:g}, {limit:g}], got {value!r}")
    return v


def profile_from_layers(layers: list[dict], model: str = "custom", where: str = "model.layers",
                        required: tuple[str, ...] = tuple(_REQUIRED)) -> LayerProfile:
    """Build a profile from inline layer dicts (``name``, ``fwd_s``, ``bwd_s``, ``activation_bytes``,
    ``param_bytes``, optional ``fwd_flops``). Unknown keys are refused; ``where`` prefixes messages.
    Keys of :data:`_REQUIRED` missing from ``required`` default to 0 (a device's own profile needs
    only its times)."""
    if not isinstance(layers, list) or not layers:
        raise ProfileError(f"{where}: expected a non-empty list of layer objects")
    if len(layers) > MAX_LAYERS:
        raise ProfileError(f"{where}: at most {MAX_LAYERS} layers, got {len(layers)}")
    rows = []
    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        if not isinstance(layer, dict):
            raise ProfileError(f"{at}: expected an object, got {type(layer).__name__}")
        unknown = [k for k in layer if k not in LAYER_KEYS]
        if unknown:
            raise ProfileError(f"{at}.{unknown[0]}: unknown field (allowed: {', '.join(LAYER_KEYS)})")
        name = layer.get("name", f"layer{i + 1}")
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise ProfileError(f"{at}.name: expected a string, got {type(name).__name__}")
        row: dict = {"name": str(name)}
        for key in _REQUIRED:
            if key not in layer:
                if key in required:
                    raise ProfileError(f"{at}.{key}: missing")
                row[key] = 0.0
                continue
            row[key] = _layer_number(layer[key], f"{at}.{key}", _LIMIT[key])
        if "fwd_flops" in layer:
            row["fwd_flops"] = _layer_number(layer["fwd_flops"], f"{at}.fwd_flops", 1e30)
        rows.append(row)
    df = pd.DataFrame(rows)
    if "fwd_flops" in df.columns and df["fwd_flops"].isna().any():
        df = df.drop(columns="fwd_flops")
    df["model"] = model
    return profile_from_frame(df, source=where)


def builtin_profile_dir() -> Path:
    """Folder of the reference profiles shipped with the package."""
    return Path(str(resources.files("edgesplit") / "data" / "profiles"))


def list_builtin_profiles() -> list[str]:
    """Names (``<model>-<dataset>``) of the shipped reference profiles."""
    d = builtin_profile_dir()
    return sorted(p.stem for p in d.glob("*.csv")) if d.is_dir() else []


DEFAULT_DATASET = {
    "small_cnn": "mnist",
}


def load_builtin_profile(name: str, dataset: str | None = None) -> LayerProfile:
    """Load a shipped profile by model name (``vgg19``) or full name (``vgg19-cifar10``).

    Without ``dataset``, the model's default dataset is used (``cifar10`` for most models).
    """
    available = list_builtin_profiles()
    candidates = [name] if name in available else []
    if not candidates:
        ds = dataset or DEFAULT_DATASET.get(name, "cifar10")
        candidates = [f"{name}-{ds}"] if f"{name}-{ds}" in available else []
    if not candidates:
        raise ProfileError(
            f"model: unknown profile {name!r}"
            + (f" for dataset {dataset!r}" if dataset else "")
            + f"; shipped profiles: {', '.join(available) or '(none)'}"
        )
    return read_profile_csv(builtin_profile_dir() / f"{candidates[0]}.csv")
