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
from dataclasses import dataclass, field
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
        for key in _REQUIRED + (["fwd_flops"] if self.fwd_flops is not None else []):
            arr = np.asarray(getattr(self, key), dtype=np.float64)
            if arr.shape != (n,):
                raise ProfileError(f"model.layers.{key}: expected {n} values, got shape {arr.shape}")
            bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
            if bad.size:
                i = int(bad[0])
                raise ProfileError(
                    f"model.layers[{i}].{key}: must be a finite number >= 0, got {arr[i]!r}"
                )
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)

    @property
    def n_layers(self) -> int:
        """Number of cut units L."""
        return len(self.names)

    @property
    def train_s(self) -> np.ndarray:
        """Forward plus backward seconds per sample, per unit."""
        return self.fwd_s + self.bwd_s

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
    except (ValueError, TypeError) as exc:
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


def profile_from_layers(layers: list[dict], model: str = "custom") -> LayerProfile:
    """Build a profile from inline layer dicts (``fwd_s``, ``bwd_s``, ``activation_bytes``, ``param_bytes``)."""
    if not isinstance(layers, list) or not layers:
        raise ProfileError("model.layers: expected a non-empty list of layer objects")
    rows = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ProfileError(f"model.layers[{i}]: expected an object, got {type(layer).__name__}")
        row = {"name": layer.get("name", f"layer{i + 1}")}
        for key in _REQUIRED:
            if key not in layer:
                raise ProfileError(f"model.layers[{i}].{key}: missing")
            value = layer[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ProfileError(f"model.layers[{i}].{key}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ProfileError(f"model.layers[{i}].{key}: must be a finite number >= 0, got {value!r}")
            row[key] = float(value)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["model"] = model
    return profile_from_frame(df, source="model.layers")


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
