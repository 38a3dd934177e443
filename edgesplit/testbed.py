"""Import per-machine testbed profiles, and flag the rows that should not be trusted.

The input is a pair of CSV files as in ``../shared/data/profiles`` (converted from
jtirana98/SFL-workflow-optimization):

- times: ``layer,machine,fwd_ms,bwd_ms,update_ms``, milliseconds per training *batch*, one row per
  layer per machine;
- memory: ``layer,activation_kb,weight_kb``, activation KB per batch and weight KB, shared by all
  machines.

:func:`import_testbed_profiles` turns them into one :class:`LayerProfile` per machine (per sample:
``fwd_s = fwd_ms / 1000 / batch_size``, ``activation_bytes = activation_kb * 1024 / batch_size``,
``param_bytes = weight_kb * 1024``; ``update_ms`` has no place in the cost model and is kept in
``meta["update_s"]``). :func:`check_testbed_profile` lists suspicious data as :class:`Flag` objects:

=================  ========  =====================================================================
kind               severity  when
=================  ========  =====================================================================
``nan``            error     a time is missing or not a number
``not_finite``     error     a time is infinite
``implausible``    error     a time is above ``IMPLAUSIBLE_MS`` (10^7 ms, ~3 hours per batch and layer)
``negative``       error     a time is negative
``all_zero``       error     every time of the machine is 0
``zero_row``       error     forward and backward are both 0 on a layer *with weights*
                   warning   ... on a parameter-free layer (a small pool can round to 0 ms)
``mostly_zero``    error     more than half of the machine's layers are all-zero
``shifted_bwd``    error     the backward column follows the forward column of the previous or next
                             layer better than its own (Spearman rank correlation)
``ratio_outlier``  error     a layer that costs > 2% of the machine's slowest layer has a
                             bwd/fwd ratio more than 20x away from the machine's median ratio
``memory_shifted`` warning   the activation column looks like layer *inputs* rather than outputs
=================  ========  =====================================================================

A machine with an ``error`` flag is *flagged*. It is still returned, with its flags in
``meta["flags"]`` and ``meta["flagged"] = True`` (NaN, infinite, implausible and negative times are
replaced by 0 there so that the profile can be built); ``drop_flagged=True`` leaves flagged machines out. Flags of the
shared memory file have ``machine == "*"``; they are reported with every machine but never drop one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from edgesplit.errors import ProfileError
from edgesplit.profiles import LayerProfile

TIMES_COLUMNS = ["layer", "machine", "fwd_ms", "bwd_ms", "update_ms"]
MEMORY_COLUMNS = ["layer", "activation_kb", "weight_kb"]

# The testbed's VGG-19 (torchvision layout with batch norm): 16 conv units, 5 max-pools, the
# adaptive 7x7 average pool and three FC layers; 25 units.
VGG19_TESTBED_NAMES: tuple[str, ...] = (
    "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4", "pool3",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4", "pool4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4", "pool5",
    "avgpool", "fc1", "fc2", "fc3",
)
DATASET_ALIASES = {"cifar": "cifar10", "cifar10": "cifar10", "mnist": "mnist",
                   "fashion_mnist": "fashion_mnist", "fmnist": "fashion_mnist"}

IMPLAUSIBLE_MS = 1e7
"""Times above this (ms per batch, one layer) are flagged as implausible."""
TINY_MS = 1e-6
"""Times below this (ms per batch) count as 0 (below any timer's resolution)."""
PARAM_FREE_KB = 4.0  # weight_kb at or below this is serialisation overhead, not weights
SIGNIFICANT_FRACTION = 0.02
RATIO_OUTLIER_FACTOR = 20.0


@dataclass(frozen=True)
class Flag:
    """One suspicious finding: ``machine`` (``"*"`` for the memory file), ``layer`` (0-based as in
    the file, ``None`` for the whole machine), ``kind``, ``severity`` (``error``/``warning``), ``message``."""

    machine: str
    layer: int | None
    kind: str
    severity: str
    message: str

    def __str__(self) -> str:
        where = self.machine + ("" if self.layer is None else f" layer {self.layer}")
        return f"{self.severity}: {where}: {self.kind}: {self.message}"


def _read_csv(path: str | Path, columns: list[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{what}: file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for malformed files
        raise ProfileError(f"{what}: {path}: not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ProfileError(f"{what}: {path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise ProfileError(f"{what}: {path}: no data rows (only a header); nothing to import")
    for col in columns:
        if col == "machine":
            continue
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if df["layer"].isna().any():
        raise ProfileError(f"{what}: {path}: column 'layer' must hold integers")
    if not np.isfinite(df["layer"]).all() or (df["layer"] != df["layer"].round()).any() \
            or (df["layer"].abs() > 1e6).any():
        raise ProfileError(f"{what}: {path}: column 'layer' must hold integers (0..1e6)")
    df["layer"] = df["layer"].astype(int)
    return df


def _read_memory(memory_csv: str | Path) -> pd.DataFrame:
    mem = _read_csv(memory_csv, MEMORY_COLUMNS, "memory_csv").sort_values("layer").reset_index(drop=True)
    if mem["layer"].duplicated().any():
        raise ProfileError(f"memory_csv: {memory_csv}: duplicate layer {int(mem['layer'][mem['layer'].duplicated()].iloc[0])}")
    for col in ("activation_kb", "weight_kb"):
        vals = mem[col].to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(vals) | (vals < 0))
        if bad.size:
            raise ProfileError(f"memory_csv: layer {int(mem['layer'][bad[0]])}: {col} must be a finite "
                               f"number >= 0, got {vals[bad[0]]!r}")
    return mem


def _read_times(times_csv: str | Path, layers: np.ndarray) -> pd.DataFrame:
    times = _read_csv(times_csv, TIMES_COLUMNS, "times_csv")
    times["machine"] = times["machine"].astype(str)
    expected = set(int(x) for x in layers)
    for machine in times["machine"].unique():
        safe_machine_name(str(machine))  # a machine name becomes part of a file name: refuse '../x'
    for machine, g in times.groupby("machine", sort=False):
        got = list(g["layer"])
        if len(got) != len(set(got)):
            raise ProfileError(f"times_csv: machine {machine!r}: duplicate layer rows")
        if set(got) != expected:
            diff = sorted(expected.symmetric_difference(got))
            raise ProfileError(f"times_csv: machine {machine!r}: layers do not match the memory file "
                               f"(differ at {diff[:5]})")
    return times


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN when a side is constant)."""
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _usable_ms(v: np.ndarray) -> np.ndarray:
    """Times that can be used: finite, >= 0 and plausible; every other entry (flagged) becomes 0."""
    v = np.asarray(v, dtype=float)
    ok = np.isfinite(v) & (v >= TINY_MS) & (v <= IMPLAUSIBLE_MS)
    return np.where(ok, v, 0.0)


def _check_machine(machine: str, g: pd.DataFrame, param_free: np.ndarray) -> list[Flag]:
    """Flags of one machine's time rows (sorted by layer)."""
    flags: list[Flag] = []
    layers = g["layer"].to_numpy()
    raw = {c: g[c].to_numpy(dtype=float) for c in ("fwd_ms", "bwd_ms", "update_ms")}
    for col, vals in raw.items():
        for i in np.flatnonzero(np.isnan(vals)):
            flags.append(Flag(machine, int(layers[i]), "nan", "error", f"{col} is missing or not a number"))
        for i in np.flatnonzero(np.isinf(vals)):
            flags.append(Flag(machine, int(layers[i]), "not_finite", "error", f"{col} = {vals[i]} is not finite"))
        for i in np.flatnonzero(np.isfinite(vals) & (vals > IMPLAUSIBLE_MS)):
            flags.append(Flag(machine, int(layers[i]), "implausible", "error",
                              f"{col} = {vals[i]:g} ms is above {IMPLAUSIBLE_MS:g} ms for one layer and batch"))
        for i in np.flatnonzero(vals < 0):
            flags.append(Flag(machine, int(layers[i]), "negative", "error", f"{col} = {vals[i]:g} < 0"))
    f = _usable_ms(raw["fwd_ms"])
    b = _usable_ms(raw["bwd_ms"])
    n = len(f)
    zero = (f == 0) & (b == 0)
    if zero.all():
        flags.append(Flag(machine, None, "all_zero", "error", "every forward and backward time is 0"))
        return flags
    for i in np.flatnonzero(zero):
        if param_free[i]:
            flags.append(Flag(machine, int(layers[i]), "zero_row", "warning",
                              "forward and backward are 0 ms on a parameter-free layer"))
        else:
            flags.append(Flag(machine, int(layers[i]), "zero_row", "error",
                              "forward and backward are 0 ms on a layer with weights"))
    if zero.sum() > n / 2:
        flags.append(Flag(machine, None, "mostly_zero", "error",
                          f"{int(zero.sum())} of {n} layers have all-zero times"))
        return flags  # the remaining checks need real numbers
    if n >= 4:
        same = _rank_corr(f, b)
        prev = _rank_corr(f[:-1], b[1:])  # bwd[l] against fwd[l-1]
        nxt = _rank_corr(f[1:], b[:-1])  # bwd[l] against fwd[l+1]
        best = max((prev, "previous"), (nxt, "next"), key=lambda t: -math.inf if math.isnan(t[0]) else t[0])
        if not math.isnan(best[0]) and (math.isnan(same) or best[0] > same):
            flags.append(Flag(machine, None, "shifted_bwd", "error",
                              f"backward times follow the forward times of the {best[1]} layer "
                              f"(rank correlation {best[0]:.2f}) better than their own ({same:.2f})"))
    total = f + b
    significant = total > SIGNIFICANT_FRACTION * total.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log10(b / f)
    usable = significant & np.isfinite(log_ratio)
    if usable.sum() >= 3:
        median = float(np.median(log_ratio[usable]))
        dev = np.abs(log_ratio - median)  # inf where one side is 0
        for i in np.flatnonzero(significant & (dev > math.log10(RATIO_OUTLIER_FACTOR))):
            flags.append(Flag(machine, int(layers[i]), "ratio_outlier", "error",
                              f"bwd/fwd = {b[i]:g}/{f[i]:g} ms is more than {RATIO_OUTLIER_FACTOR:g}x "
                              f"away from the machine's median ratio {10 ** median:.2g}"))
    return flags


def _check_memory(mem: pd.DataFrame) -> list[Flag]:
    """Flags of the shared memory file."""
    act = mem["activation_kb"].to_numpy(dtype=float)
    free = mem["weight_kb"].to_numpy(dtype=float) <= PARAM_FREE_KB
    idx = [i for i in np.flatnonzero(free) if 0 < i < len(act) - 1]
    # With outputs, a pool shrinks its activation; with inputs recorded instead, the pool's entry
    # equals the layer before it and the shrink shows up one row later.
    looks_input = [i for i in idx if act[i] >= act[i - 1] and act[i + 1] < act[i]]
    if idx and len(looks_input) > len(idx) / 2:
        return [Flag("*", None, "memory_shifted", "warning",
                     f"activation_kb looks like layer inputs, not outputs: at {len(looks_input)} of "
                     f"{len(idx)} parameter-free layers the size drops one row late")]
    return []


def check_testbed_profile(times_csv: str | Path, memory_csv: str | Path) -> list[Flag]:
    """All flags of a testbed profile pair (see the module docstring for the checks)."""
    mem = _read_memory(memory_csv)
    times = _read_times(times_csv, mem["layer"].to_numpy())
    param_free = mem["weight_kb"].to_numpy(dtype=float) <= PARAM_FREE_KB
    flags = _check_memory(mem)
    for machine, g in times.groupby("machine", sort=False):
        flags += _check_machine(str(machine), g.sort_values("layer"), param_free)
    return flags


def flagged_machines(flags: list[Flag]) -> list[str]:
    """Machines with at least one ``error`` flag (the shared memory file's flags do not count)."""
    out: list[str] = []
    for fl in flags:
        if fl.severity == "error" and fl.machine != "*" and fl.machine not in out:
            out.append(fl.machine)
    return out


def _guess_model_dataset(times_csv: str | Path) -> tuple[str, str]:
    m = re.match(r"(?P<model>[A-Za-z0-9_]+)-(?P<ds>[A-Za-z0-9_]+)-times$", Path(times_csv).stem)
    if not m:
        return "testbed", ""
    return m["model"], DATASET_ALIASES.get(m["ds"], m["ds"])


def _default_names(model: str, mem: pd.DataFrame) -> tuple[str, ...]:
    n = len(mem)
    if model in ("vgg19", TESTBED_MODEL) and n == len(VGG19_TESTBED_NAMES):
        return VGG19_TESTBED_NAMES
    names, k = [], 0
    free = mem["weight_kb"].to_numpy(dtype=float) <= PARAM_FREE_KB
    act = mem["activation_kb"].to_numpy(dtype=float)
    for i in range(n):
        if free[i] and i > 0 and act[i] < act[i - 1]:
            k += 1
            names.append(f"pool{k}")
        else:
            names.append(f"layer{int(mem['layer'][i])}")
    return tuple(names)


def import_testbed_profiles(
    times_csv: str | Path,
    memory_csv: str | Path,
    batch_size: int = 128,
    drop_flagged: bool = False,
    model: str | None = None,
    dataset: str | None = None,
    names: list[str] | tuple[str, ...] | None = None,
) -> dict[str, LayerProfile]:
    """One per-sample :class:`LayerProfile` per machine of a testbed profile pair.

    ``batch_size`` is the batch the times and activations were measured with (128 for the shared
    data). ``model``/``dataset`` default to the file name (``vgg19-cifar-times.csv`` gives
    ``vgg19``/``cifar10``); ``names`` defaults to the VGG-19 unit names for the 25-layer testbed
    VGG-19, else ``layerN``/``poolK``. Each profile carries ``meta["flags"]`` (its own flags and the
    memory file's), ``meta["flagged"]`` and ``meta["update_s"]``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ProfileError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    mem = _read_memory(memory_csv)
    times = _read_times(times_csv, mem["layer"].to_numpy())
    guess_model, guess_ds = _guess_model_dataset(times_csv)
    model = model or guess_model
    dataset = dataset if dataset is not None else guess_ds
    if names is None:
        names = _default_names(model, mem)
    elif len(names) != len(mem):
        raise ProfileError(f"names: {len(names)} names for {len(mem)} layers")
    flags = check_testbed_profile(times_csv, memory_csv)
    shared = [f for f in flags if f.machine == "*"]
    bad = set(flagged_machines(flags))
    act = mem["activation_kb"].to_numpy(dtype=float) * 1024 / batch_size
    params = mem["weight_kb"].to_numpy(dtype=float) * 1024
    out: dict[str, LayerProfile] = {}
    for machine, g in times.groupby("machine", sort=False):
        machine = str(machine)
        if drop_flagged and machine in bad:
            continue
        g = g.set_index("layer").loc[mem["layer"]]

        def per_sample(col: str) -> np.ndarray:
            return _usable_ms(g[col].to_numpy(dtype=float)) / 1000.0 / batch_size

        out[machine] = LayerProfile(
            names=tuple(names),
            fwd_s=per_sample("fwd_ms"),
            bwd_s=per_sample("bwd_ms"),
            activation_bytes=act,
            param_bytes=params,
            model=model,
            dataset=dataset,
            host=f"testbed {machine} ({Path(times_csv).name})",
            batch_size=batch_size,
            meta={
                "machine": machine,
                "flags": [f for f in flags if f.machine == machine] + shared,
                "flagged": machine in bad,
                "update_s": per_sample("update_ms"),
                "source": str(times_csv),
            },
        )
    return out


TESTBED_MODEL = "vgg19_testbed"
"""Model name of the testbed's VGG-19 (25 units: it has the 7x7 average pool and the 25088-wide
first FC layer, unlike the zoo's CIFAR VGG-19), as shipped in ``edgesplit/data``."""
REFERENCE_MACHINE = "VM"
"""The testbed machine whose times are the testbed model's reference profile (its profiling host)."""


def export_testbed_classes(times_csv: str | Path, memory_csv: str | Path, out_dir: str | Path,
                           model_dir: str | Path | None = None, batch_size: int = 128,
                           include_flagged: bool = False) -> tuple[dict[str, Path], dict[str, list[Flag]]]:
    """Convert a testbed sheet pair into the catalogue's class profiles.

    Writes ``out_dir/<model>-<dataset>-<machine>.csv`` for every machine without an ``error`` flag
    (all machines with ``include_flagged``) and, when ``model_dir`` is given and the reference
    machine is trustworthy, the model's reference profile ``model_dir/<model>-<dataset>.csv`` (the
    :data:`REFERENCE_MACHINE`'s times). Returns ``(written paths by machine, flags of every
    machine left out)``.
    """
    _, ds = _guess_model_dataset(times_csv)
    profiles = import_testbed_profiles(times_csv, memory_csv, batch_size=batch_size, model=TESTBED_MODEL,
                                       dataset=ds)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    left_out: dict[str, list[Flag]] = {}
    for machine, prof in profiles.items():
        if prof.meta["flagged"] and not include_flagged:
            left_out[machine] = [f for f in prof.meta["flags"] if f.severity == "error"]
            continue
        written[machine] = prof.to_csv(out_dir / f"{TESTBED_MODEL}-{prof.dataset}-{safe_machine_name(machine)}.csv")
    ref = profiles.get(REFERENCE_MACHINE)
    if model_dir is not None and ref is not None and not ref.meta["flagged"]:
        ref.to_csv(Path(model_dir) / f"{TESTBED_MODEL}-{ref.dataset}.csv")
    return written, left_out


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def safe_machine_name(machine: str) -> str:
    """``machine`` if it is a safe file-name part (letters, digits, ``_ . -``, at most 64, no leading
    dot, no ``..``), else a :class:`ProfileError`: a machine name never chooses where a file goes."""
    if not _SAFE_NAME.match(machine) or ".." in machine:
        raise ProfileError(f"times_csv: machine {machine!r} is not a safe file name (allowed: letters, digits, "
                           "'_', '.', '-', at most 64 characters, not starting with '.' and without '..')")
    return machine
