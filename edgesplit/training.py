"""One training run, for everyone: the run configuration, data preparation, measured timing,
per-scheduler clocks, checkpoints and plots behind ``edgesplit train``, ``EdgeSplitTrain-v1`` and
the experiments.

**Measured timing.** Each round is trained for real (:class:`edgesplit.engine.SplitTrainer` with
``measure=True``): every unit's forward, backward and optimiser step are timed on this host and
the bytes of every unit's output and parameters are counted. For device ``i`` with cut ``c``:

- compute ``A_i = sum_{l<=c} u_il * r_il + sum_{l>c} u_il * s_il``, where ``u_il`` are the
  host seconds of unit ``l`` over the round, ``r_il`` maps this host to device ``i``'s hardware
  (``device profile_l / reference profile_l`` where the device has its own per-layer profile,
  ``1 / speed_i`` otherwise) and ``s_il`` does the same for the server (its share of it when
  ``sharing="shared"``);
- traffic ``V_i = 8 (2 sum_rounds out_bytes[c] + 2 W(c))`` from the real tensors exchanged (the
  cut activation and its gradient on every step, the client segment's weights up and down for
  aggregation), ``16 W(L)`` for ``c = L``;
- ``T_i = A_i + V_i / (beta_i rate_i)`` through :func:`edgesplit.costmodel.transfer_seconds`
  (fixed rates) or a trace (``EdgeSplitTrain-v1`` with ``traces=``).

The cost model's ``T_i`` on the reference profile is the **prediction**; both are reported.

**Train once, time every schedule.** Split learning computes FedAvg whatever the cuts
(``tests/test_engine.py``), and the per-unit measurements do not depend on where the cut lies,
so :func:`train_and_time` trains the model once (every device local, cut ``L``) and times every
scheduler's plan on the same measured steps. :func:`train_per_scheduler` keeps the older
retrain-per-scheduler mode (each scheduler trains with its own cuts).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from edgesplit.costmodel import (CostModel, aggregation_bits, cut_exchange_bits, round_time_of, server_share,
                                 transfer_seconds)
from edgesplit.datasets import DATASETS, ZOO_DATASET, ArrayDataset, DatasetError, get_dataset, split_dataset
from edgesplit.devices import generate_scenario
from edgesplit.engine import RoundStats, SplitTrainer, resolve_device
from edgesplit.errors import EdgeSplitError, InfeasibleError
from edgesplit.profiler import resolve_profile
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario
from edgesplit.schedulers import SCHEDULERS, Plan, get_scheduler
from edgesplit.zoo import build_model, dataset_shape

CSV_COLUMNS = ["round", "sim_time_s", "predicted_sim_time_s", "wall_s", "test_acc", "loss"]
"""Columns of every ``rounds.csv``: round 0 is the untrained model; times are cumulative;
``sim_time_s`` follows the run's timing (measured or model), ``predicted_sim_time_s`` the cost
model; ``loss`` is the test cross-entropy."""

TIMING_COLUMNS = ["scheduler", "round", "device", "cut", "measured_s", "predicted_s", "rel_error"]
"""Columns of ``timing.csv``: per round, scheduler and device, the measured and the predicted
(cost-model) device time ``T_i`` and ``(measured - predicted) / predicted``."""

TIMINGS = ("measured", "model")


class CheckpointError(EdgeSplitError):
    """A checkpoint is missing, truncated, unreadable or from other settings."""


# ----------------------------------------------------------------------------- configuration


@dataclass
class RunConfig:
    """Everything that defines a training run (schedulers aside)."""

    model: str = "small_cnn"
    dataset: str = "synthetic"
    data_dir: str | None = None
    devices: int = 4
    rounds: int = 5
    samples_per_device: int = 500
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    iterations: int | None = None
    non_iid: float | None = None
    seed: int = 0
    test_samples: int = 1000
    heterogeneity: float = 10.0
    rate_range_bps: tuple[float, float] = (5e6, 50e6)
    fastest_speed: float = 0.5
    server_speed: float = 10.0
    sharing: str = "dedicated"
    timing: str = "measured"
    device: str = "cpu"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for ``--resume`` (all but ``rounds``, ``data_dir``, ``device``)."""
        d = asdict(self)
        for k in ("rounds", "data_dir", "device"):
            d.pop(k)
        d["rate_range_bps"] = [float(x) for x in d["rate_range_bps"]]
        return d

    def check(self) -> None:
        """Raise :class:`EdgeSplitError` naming the first bad field."""
        if self.dataset not in ZOO_DATASET:
            raise DatasetError(f"dataset: unknown {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("devices", "rounds", "samples_per_device", "batch_size", "test_samples"):
            v = getattr(self, name)
            lo = 0 if name == "rounds" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise EdgeSplitError(f"{name.replace('_', '-')}: must be an integer >= {lo}, got {v!r}")
        if self.iterations is not None and (isinstance(self.iterations, bool) or not isinstance(self.iterations, int)
                                            or self.iterations < 1):
            raise EdgeSplitError(f"iterations: must be an integer >= 1, got {self.iterations!r}")
        if self.non_iid is not None and not (self.non_iid > 0 and math.isfinite(self.non_iid)):
            raise EdgeSplitError(f"non-iid: alpha must be a finite number > 0, got {self.non_iid}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise EdgeSplitError(f"lr: must be a finite number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise EdgeSplitError(f"momentum: must lie in [0, 1), got {self.momentum}")
        if self.timing not in TIMINGS:
            raise EdgeSplitError(f"timing: must be one of {', '.join(TIMINGS)}, got {self.timing!r}")
        resolve_device(self.device)


TrainConfig = RunConfig  # the name edgesplit.commands.train used


# ----------------------------------------------------------------------------- scenario consistency


def bind_scenario(scenario: Scenario, profile: LayerProfile, batch_size: int, rebind: bool = False,
                  where: str = "scenario") -> Scenario:
    """``scenario`` checked against the run's model ``profile`` and ``batch_size``.

    A scenario whose model (name or layer count) or batch size differs from the run's is refused
    with one :class:`EdgeSplitError` naming both, unless ``rebind`` is true: then its devices and
    server are kept and bound explicitly to the run's profile and batch size (never a mix of the
    two: the clock and the training always use the run's model and batch size).
    """
    diffs = []
    sp = scenario.profile
    if sp.n_layers != profile.n_layers or (sp.model and profile.model and sp.model != profile.model):
        diffs.append(f"model {sp.model or '?'} ({sp.n_layers} layers) vs the run's {profile.model} "
                     f"({profile.n_layers} layers)")
    if int(scenario.batch_size) != int(batch_size):
        diffs.append(f"batch_size {scenario.batch_size} vs the run's {batch_size}")
    if not diffs:
        return Scenario(profile, int(batch_size), scenario.devices, scenario.server) if sp is not profile else scenario
    if not rebind:
        raise EdgeSplitError(f"{where}: {'; '.join(diffs)}; pass a matching scenario, or rebind it explicitly "
                             f"(rebind_scenario=True) to train and time the run's model")
    return Scenario(profile, int(batch_size), scenario.devices, scenario.server)


# ----------------------------------------------------------------------------- preparation


@dataclass
class Prepared:
    """Data, profile and scenario shared by all schedulers of a run."""

    config: RunConfig
    parts: list[ArrayDataset]
    test: ArrayDataset
    profile: LayerProfile
    profile_source: str
    scenario: Scenario
    cost_model: CostModel
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)


def samples_per_round(counts: Sequence[int], iterations: int | None, batch_size: int) -> list[int]:
    """Samples each device trains per round: its data (one local epoch) or ``iterations * b``."""
    if iterations is None:
        return [int(c) for c in counts]
    return [int(iterations) * int(batch_size)] * len(counts)


def model_profile(model: str, dataset: str, batch_size: int, device: str = "cpu") -> tuple[LayerProfile, str]:
    """The reference profile of zoo ``model`` on ``dataset``'s inputs (see
    :func:`edgesplit.profiler.resolve_profile`)."""
    zoo_ds = ZOO_DATASET[dataset]
    net = build_model(model, zoo_ds, seed=0)
    shape = dataset_shape(zoo_ds)
    return resolve_profile(model, zoo_ds, net, (shape.channels, shape.size, shape.size), batch_size)


def prepare(cfg: RunConfig, profile: LayerProfile | None = None, scenario: Scenario | None = None,
            rebind_scenario: bool = False) -> Prepared:
    """Load the data, resolve the model's profile (or use ``profile``), generate the scenario (or
    check ``scenario`` with :func:`bind_scenario`) and split the data over its devices."""
    cfg.check()
    zoo_ds = ZOO_DATASET[cfg.dataset]
    counts = ([int(d.samples) for d in scenario.devices] if scenario is not None
              else [cfg.samples_per_device] * cfg.devices)
    synth = max(sum(counts), 2000) if cfg.dataset.startswith("synthetic") else None
    train = get_dataset(cfg.dataset, "train", cfg.data_dir, synth)  # the data first: fail before profiling
    if sum(counts) > len(train):
        raise DatasetError(f"samples: {len(counts)} devices need {sum(counts)} samples, "
                           f"{cfg.dataset} has {len(train)} training samples")
    test_size = max(cfg.test_samples, 500) if synth else None
    test = get_dataset(cfg.dataset, "test", cfg.data_dir, test_size).head(cfg.test_samples)
    parts = split_dataset(train, counts, cfg.non_iid, seed=cfg.seed)
    n_units = build_model(cfg.model, zoo_ds, seed=cfg.seed).n_layers
    if profile is None:
        profile, source = model_profile(cfg.model, cfg.dataset, cfg.batch_size, cfg.device)
    else:
        source = "given profile"
    if profile.n_layers != n_units:
        raise EdgeSplitError(f"profile: {profile.n_layers} layers, model {cfg.model} has {n_units} units")
    if scenario is None:
        scenario = generate_scenario(profile, cfg.devices, heterogeneity=cfg.heterogeneity,
                                     rate_range_bps=tuple(cfg.rate_range_bps), fastest_speed=cfg.fastest_speed,
                                     samples=cfg.samples_per_device, batch_size=cfg.batch_size,
                                     server_speed=cfg.server_speed, sharing=cfg.sharing, seed=cfg.seed)
    else:
        scenario = bind_scenario(scenario, profile, cfg.batch_size, rebind_scenario)
    cm = CostModel.from_scenario(scenario.with_samples(samples_per_round(counts, cfg.iterations, cfg.batch_size)))
    return Prepared(cfg, parts, test, profile, source, scenario, cm, train.mean, train.std)


def make_plan(prep: Prepared, scheduler: str, seed: int = 0) -> Plan:
    """The scheduler's plan on the run's cost model (``random`` is seeded); an infeasible plan
    raises :class:`InfeasibleError`."""
    opts = {"seed": seed} if scheduler == "random" else {}
    plan = get_scheduler(scheduler, **opts).plan(prep.cost_model)
    if not plan.feasible or not math.isfinite(plan.round_time_s):
        raise InfeasibleError(f"scheduler {scheduler}: its plan is infeasible on this scenario "
                              f"({plan.note or 'infinite round time'})")
    return plan


def make_trainer(prep: Prepared) -> SplitTrainer:
    """A fresh trainer: the same initial weights, data and batch order for every scheduler."""
    cfg = prep.config
    net = build_model(cfg.model, ZOO_DATASET[cfg.dataset], seed=cfg.seed)
    return SplitTrainer(net, prep.parts, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, seed=cfg.seed, mean=prep.mean, std=prep.std,
                        device=cfg.device)


def warm_up(trainer: SplitTrainer) -> float:
    """One untimed forward and backward of a copy of the model on a batch of device 0 (the
    allocator, kernels and caches warm up; the trainer's model, streams and RNG are untouched).
    Returns its seconds, which no schedule's wall time counts."""
    import copy

    t0 = time.perf_counter()
    state = torch.get_rng_state()
    net = copy.deepcopy(trainer.model).train()
    x, y = trainer.data[0]
    xb, yb = trainer.transform(x[: trainer.batch_size]), y[: trainer.batch_size].to(trainer.device)
    trainer.loss_fn(net(xb), yb).backward()
    torch.set_rng_state(state)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- measured timing


def hardware_ratios(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """``(r, s)``, both ``(N, L)``: the factor turning host seconds of unit ``l`` into device
    ``i``'s seconds (``r``) and into the server's seconds for device ``i``'s replica (``s``).

    Per layer, the device's per-sample time (``Scenario.device_layer_seconds``: its own profile,
    or the reference profile over its speed) over the reference profile's time; the server's
    likewise (``Scenario.server_layer_seconds``) divided by its share (``costmodel.server_share``).
    A layer the reference times at 0 gets the ratio of the totals."""
    ref_t = np.asarray(scenario.profile.train_s, dtype=np.float64)

    def ratio(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
        own = np.asarray(fwd, dtype=np.float64) + np.asarray(bwd, dtype=np.float64)
        total = own.sum() / ref_t.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ref_t > 0, own / np.where(ref_t > 0, ref_t, 1.0), total)

    r = np.stack([ratio(*scenario.device_layer_seconds(i)) for i in range(scenario.n_devices)])
    srv = ratio(*scenario.server_layer_seconds()) / server_share(scenario)
    return r, np.broadcast_to(srv, r.shape).copy()


@dataclass
class RoundMeasurement:
    """What one real round measured (host side), for any cuts: per device ``unit_s[i, l-1]``
    (seconds of unit ``l``), ``out_bytes[i, l-1]`` (bytes of its outputs over the round) and
    ``param_bytes[l-1]`` (its parameters)."""

    unit_s: np.ndarray
    out_bytes: np.ndarray
    param_bytes: np.ndarray

    @classmethod
    def from_stats(cls, st: RoundStats) -> "RoundMeasurement":
        """From a :class:`RoundStats` of ``run_round(..., measure=True)``."""
        if not st.unit_s:
            raise EdgeSplitError("measured timing: the round was run without measure=True")
        return cls(np.asarray(st.unit_s, float), np.asarray(st.unit_out_bytes, float), np.asarray(st.param_bytes, float))

    def compute_s(self, cuts: Sequence[int], ratios: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``A_i``: device ``i``'s units ``1..c_i`` at its speed plus the rest at the server's."""
        r, s = ratios
        N, L = self.unit_s.shape
        on_device = np.arange(1, L + 1)[None, :] <= np.asarray(cuts)[:, None]
        return np.where(on_device, self.unit_s * r, self.unit_s * s).sum(axis=1)

    def traffic_bits(self, cuts: Sequence[int]) -> np.ndarray:
        """``V_i`` from the real tensors: activation and gradient at the cut on every step, the
        client segment's weights up and down (``16 W(L)`` for local training)."""
        cuts = np.asarray(cuts, dtype=np.intp)
        rows = np.arange(len(cuts))
        W = np.cumsum(self.param_bytes)
        L = self.unit_s.shape[1]
        act = np.where(cuts < L, self.out_bytes[rows, cuts - 1], 0.0)
        return cut_exchange_bits(act) + aggregation_bits(W[cuts - 1])

    def device_times(self, cuts: Sequence[int], shares: Sequence[float], rate_bps: Sequence[float],
                     ratios: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Measured ``T_i = A_i + V_i / (beta_i rate_i)`` at fixed rates."""
        rate = np.asarray(shares, float) * np.asarray(rate_bps, float)
        return self.compute_s(cuts, ratios) + transfer_seconds(self.traffic_bits(cuts), rate)


def relative_error(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(measured - predicted) / predicted`` (NaN where the prediction is 0 or infinite)."""
    m, p = np.asarray(measured, float), np.asarray(predicted, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (m - p) / p
    out[~np.isfinite(out)] = np.nan
    return out


# ----------------------------------------------------------------------------- checkpoints


def _rng_meta() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def _set_rng_meta(meta: dict[str, Any], torch_state: torch.Tensor) -> None:
    torch.set_rng_state(torch_state)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(path: str | Path, meta: dict[str, Any], trainer: SplitTrainer) -> Path:
    """Write a checkpoint atomically (a temporary file, then ``os.replace``), keeping the
    previous one as ``<name>.prev`` for :func:`load_checkpoint`'s fallback.

    The file holds tensors and plain values only (``torch.load(weights_only=True)`` reads it) and
    the metadata as a JSON string: nothing in it is unpickled as an arbitrary object."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    blob = {"format": "edgesplit-train/2", "meta_json": json.dumps({**meta, "rng": _rng_meta()}),
            "trainer": trainer.state_dict(), "torch_rng": torch.get_rng_state()}
    torch.save(blob, tmp)
    if path.is_file():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
    return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta_json"])
        if blob.get("format") != "edgesplit-train/2" or not isinstance(meta, dict):
            raise ValueError("not an edgesplit train checkpoint")
        return {"meta": meta, "trainer": blob["trainer"], "torch_rng": blob["torch_rng"]}
    except Exception as exc:  # truncated zip, foreign pickle, missing keys: all one clear error
        raise CheckpointError(f"checkpoint {path}: unreadable ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'})") from None


def load_checkpoint(path: str | Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` (``weights_only=True``); if it is truncated
    or unreadable, fall back to the previous one (``<name>.prev``) and say so through ``warn``
    (default: a line on stderr). Raises :class:`CheckpointError` when neither can be read."""
    path = Path(path)
    prev = path.with_name(path.name + ".prev")
    try:
        return _read_checkpoint(path)
    except CheckpointError as exc:
        if not prev.is_file():
            raise
        ck = _read_checkpoint(prev)
        msg = f"{exc}; resuming from the previous good checkpoint {prev} (round {ck['meta'].get('round')})"
        (warn or (lambda m: print(f"edgesplit train: {m}", file=sys.stderr)))(msg)
        return ck


def restore(trainer: SplitTrainer, ck: dict[str, Any]) -> None:
    """Load a checkpoint's trainer state and RNG states."""
    trainer.load_state_dict(ck["trainer"])
    _set_rng_meta(ck["meta"]["rng"], ck["torch_rng"])


def check_identity(ck: dict[str, Any], cfg: RunConfig, extra: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint written with other settings (one line naming them)."""
    old = dict(ck["meta"].get("identity", {}))
    new = cfg.identity()
    diff = [k for k in new if old.get(k) != new[k]]
    diff += [k for k, v in extra.items() if ck["meta"].get(k) != v]
    if diff:
        raise CheckpointError(f"resume: {path} was written with other settings ({', '.join(diff)} differ); "
                              f"drop --resume or use another --out")


class RoundLog:
    """``rounds.csv`` written as the rounds come: the rows so far (those of the checkpoint when
    resuming) once, atomically, then one appended line per round."""

    def __init__(self, path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        pd.DataFrame(list(rows), columns=CSV_COLUMNS).to_csv(tmp, index=False)
        os.replace(tmp, self.path)

    def append(self, row: dict[str, Any]) -> None:
        """Append one round."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(",".join(str(int(row[c])) if c == "round" else repr(float(row[c])) for c in CSV_COLUMNS) + "\n")


# ----------------------------------------------------------------------------- running


@dataclass
class ScheduleResult:
    """One scheduler's run: its plan, rows (``CSV_COLUMNS``) and per-device timing records."""

    name: str
    plan: Plan
    rows: list[dict[str, Any]]
    timing: list[dict[str, Any]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame."""
        return pd.DataFrame(self.rows, columns=CSV_COLUMNS)


def _timing_rows(name: str, r: int, cuts: Sequence[int], measured: np.ndarray, predicted: np.ndarray) -> list[dict]:
    err = relative_error(measured, predicted)
    return [{"scheduler": name, "round": r, "device": i, "cut": int(c), "measured_s": float(m),
             "predicted_s": float(p), "rel_error": float(e)}
            for i, (c, m, p, e) in enumerate(zip(cuts, measured, predicted, err))]


def _trim_timing(path: Path, through: int) -> None:
    """Keep the ``timing.csv`` records of rounds ``<= through`` (those of the checkpoint resumed)."""
    if not path.is_file():
        return
    if through <= 0:
        path.unlink()
        return
    try:
        old = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        path.unlink()
        return
    tmp = path.with_name(path.name + ".tmp")
    old[old["round"] <= through].to_csv(tmp, index=False)
    os.replace(tmp, path)


def _append_timing(path: Path, rows: list[dict[str, Any]]) -> None:
    new = not path.is_file()
    pd.DataFrame(rows, columns=TIMING_COLUMNS).to_csv(path, mode="a", header=new, index=False)


def _bar(total: int, initial: int, desc: str, progress: bool | None):
    from tqdm import tqdm

    return tqdm(total=total, initial=min(initial, total), desc=desc, unit="round", file=sys.stderr,
                disable=(not progress) if progress is not None else None, leave=False)


def _first_rows(trainer: SplitTrainer, prep: Prepared) -> list[dict[str, Any]]:
    acc, loss = trainer.evaluate(prep.test)
    return [{"round": 0, "sim_time_s": 0.0, "predicted_sim_time_s": 0.0, "wall_s": 0.0, "test_acc": acc, "loss": loss}]


def _check_loss(stats: RoundStats, r: int, cfg: RunConfig) -> None:
    if not math.isfinite(stats.train_loss):
        raise EdgeSplitError(f"training diverged in round {r} (training loss {stats.train_loss}); "
                             f"lower --lr (now {cfg.lr}) or --momentum (now {cfg.momentum})")


def _record_round(res: ScheduleResult, r: int, cuts: Sequence[int], meas: np.ndarray, pred: np.ndarray,
                  timing: str, wall: float, acc: float, loss: float) -> tuple[dict[str, Any], list[dict]]:
    """Append round ``r`` to ``res``: its row (clocks advanced from the previous row by the measured
    round time, or the cost model's with ``timing="model"``) and its per-device timing records;
    returns (row, records)."""
    plan = res.plan
    t_round = round_time_of(meas, plan.sequential) if timing == "measured" else float(plan.round_time_s)
    prev = res.rows[-1]
    row = {"round": r, "sim_time_s": prev["sim_time_s"] + t_round,
           "predicted_sim_time_s": prev["predicted_sim_time_s"] + float(plan.round_time_s),
           "wall_s": prev["wall_s"] + wall, "test_acc": acc, "loss": loss}
    res.rows.append(row)
    recs = _timing_rows(res.name, r, cuts, meas, pred)
    res.timing.extend(recs)
    return row, recs


def train_and_time(prep: Prepared, schedulers: Sequence[str], out_dir: str | Path | None = None,
                   resume: bool = False, progress: bool | None = None,
                   on_round: Callable[[int, dict[str, dict]], bool | None] | None = None,
                   checkpoint_every: int = 1) -> dict[str, ScheduleResult]:
    """Train once (every device local: FedAvg, which split learning equals whatever the cuts)
    and time every scheduler's plan on the same measured steps.

    Per scheduler the rows advance ``sim_time_s`` by its measured round time (or the cost
    model's with ``timing="model"``) and ``predicted_sim_time_s`` by the cost model's; all share
    the test accuracy and the host wall time of the one training (warm-up excluded). With
    ``out_dir``: ``<scheduler>/rounds.csv`` (appended as rounds come), ``timing.csv``, and one
    ``checkpoint.pt`` after every ``checkpoint_every`` rounds (and the last); ``resume``
    continues from it (rows after it are trained again). ``on_round(r, rows)``
    (``rows``: this round's row per scheduler) may return True to stop after round ``r``.
    """
    cfg = prep.config
    plans = {s: make_plan(prep, s, cfg.seed) for s in schedulers}
    ratios = hardware_ratios(prep.scenario)
    rates = prep.cost_model.rate_bps
    trainer = make_trainer(prep)
    L = trainer.model.n_layers
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    results = {s: ScheduleResult(s, p, []) for s, p in plans.items()}
    extra = {"mode": "train-once", "schedulers": list(schedulers)}
    if resume and ckpt is not None and (ckpt.is_file() or ckpt.with_name(ckpt.name + ".prev").is_file()):
        ck = load_checkpoint(ckpt)
        check_identity(ck, cfg, extra, ckpt)
        restore(trainer, ck)
        for s in schedulers:
            results[s].rows = list(ck["meta"]["rows"][s])
    if not results[schedulers[0]].rows:
        first = _first_rows(trainer, prep)
        for res in results.values():
            res.rows = [dict(first[0])]
    start = trainer.round
    logs = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for s in schedulers:
            logs[s] = RoundLog(out / s / "rounds.csv", results[s].rows)
        _trim_timing(out / "timing.csv", start)
    warm_up(trainer)
    bar = _bar(cfg.rounds, start, "train", progress)
    try:
        for r in range(start + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            # measured in both timings: the prediction error is always reported
            stats = trainer.run_round([L] * trainer.n_devices, iterations=cfg.iterations, measure=True)
            _check_loss(stats, r, cfg)
            acc, loss = trainer.evaluate(prep.test)
            wall = time.perf_counter() - t0
            m = RoundMeasurement.from_stats(stats)
            timing_rows, now = [], {}
            for s, res in results.items():
                plan = res.plan
                cuts = [int(c) for c in plan.cuts]
                meas = m.device_times(cuts, plan.shares, rates, ratios)
                pred = np.asarray(plan.per_device_time_s, float)
                row, recs = _record_round(res, r, cuts, meas, pred, cfg.timing, wall, acc, loss)
                timing_rows.extend(recs)
                now[s] = row
            stop = on_round is not None and bool(on_round(r, now))
            if out is not None and ckpt is not None:
                if r % max(int(checkpoint_every), 1) == 0 or r == cfg.rounds or stop:
                    save_checkpoint(ckpt, {"identity": cfg.identity(), **extra, "round": r,
                                           "rows": {s: res.rows for s, res in results.items()}}, trainer)
                for s in schedulers:
                    logs[s].append(results[s].rows[-1])
                _append_timing(out / "timing.csv", timing_rows)
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.3f}", train_loss=f"{stats.train_loss:.3f}")
            if stop:
                break
    finally:
        bar.close()
    return results


def train_per_scheduler(prep: Prepared, scheduler: str, out_dir: str | Path | None = None, resume: bool = False,
                        progress: bool | None = None, on_round: Callable[[int, dict], None] | None = None
                        ) -> ScheduleResult:
    """Train ``prep.config.rounds`` rounds with ``scheduler``'s own cuts (the retrain-per-scheduler
    mode), timing each round as :func:`train_and_time` does. With ``out_dir``, ``rounds.csv``,
    ``timing.csv`` and ``checkpoint.pt`` are written there after every round; ``resume``
    continues from that checkpoint (its settings must match)."""
    cfg = prep.config
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "checkpoint.pt" if out is not None else None
    trainer = make_trainer(prep)
    plan = make_plan(prep, scheduler, cfg.seed)
    ratios = hardware_ratios(prep.scenario)
    rates = prep.cost_model.rate_bps
    res = ScheduleResult(scheduler, plan, [])
    extra = {"mode": "retrain", "scheduler": scheduler}
    if resume and ckpt is not None and (ckpt.is_file() or ckpt.with_name(ckpt.name + ".prev").is_file()):
        ck = load_checkpoint(ckpt)
        check_identity(ck, cfg, extra, ckpt)
        restore(trainer, ck)
        res.rows = list(ck["meta"]["rows"])
    if not res.rows:
        res.rows = _first_rows(trainer, prep)
    start = trainer.round
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = RoundLog(out / "rounds.csv", res.rows)
        _trim_timing(out / "timing.csv", start)
    warm_up(trainer)
    cuts = [int(c) for c in plan.cuts]
    pred = np.asarray(plan.per_device_time_s, float)
    bar = _bar(cfg.rounds, start, f"train {scheduler}", progress)
    try:
        for r in range(start + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            stats = trainer.run_round(cuts, iterations=cfg.iterations, measure=True)
            _check_loss(stats, r, cfg)
            acc, loss = trainer.evaluate(prep.test)
            wall = time.perf_counter() - t0
            meas = RoundMeasurement.from_stats(stats).device_times(cuts, plan.shares, rates, ratios)
            row, recs = _record_round(res, r, cuts, meas, pred, cfg.timing, wall, acc, loss)
            if out is not None and ckpt is not None and log is not None:
                save_checkpoint(ckpt, {"identity": cfg.identity(), **extra, "round": r, "rows": res.rows}, trainer)
                log.append(row)
                _append_timing(out / "timing.csv", recs)
            bar.update(1)
            bar.set_postfix(acc=f"{acc:.3f}", train_loss=f"{stats.train_loss:.3f}")
            if on_round is not None:
                on_round(r, row)
    finally:
        bar.close()
    return res


# ----------------------------------------------------------------------------- summaries and plots


def time_to_accuracy(df: pd.DataFrame, target: float, column: str = "sim_time_s") -> float:
    """Simulated seconds until the test accuracy first reaches ``target`` (inf if never)."""
    hit = df.loc[df["test_acc"] >= target, column]
    return float(hit.iloc[0]) if len(hit) else math.inf


def rounds_to_accuracy(df: pd.DataFrame, target: float) -> int | None:
    """The first round whose test accuracy reaches ``target`` (None if never)."""
    hit = df.loc[df["test_acc"] >= target, "round"]
    return int(hit.iloc[0]) if len(hit) else None


def error_summary(timing: pd.DataFrame) -> dict[str, float]:
    """Distribution of the relative error of the predicted device times: count, median, mean,
    5th/95th percentiles of the signed error and the median absolute error."""
    e = timing["rel_error"].to_numpy(dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"count": 0}
    return {"count": int(e.size), "median": float(np.median(e)), "mean": float(e.mean()),
            "p5": float(np.percentile(e, 5)), "p95": float(np.percentile(e, 95)),
            "median_abs": float(np.median(np.abs(e)))}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_time_to_accuracy(frames: dict[str, pd.DataFrame], path: str | Path, target: float | None = None,
                          title: str = "", column: str = "sim_time_s") -> Path:
    """Test accuracy against simulated time, one line per scheduler, on the same axes."""
    plt = _pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, df in frames.items():
        ax.plot(df[column], df["test_acc"], marker="o", markersize=3, label=name)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel("simulated training time (s)" + (" (cost model)" if column != "sim_time_s" else ""))
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "time to accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_error_distribution(timing: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Histogram of the relative error (measured - predicted) / predicted of device times."""
    plt = _pyplot()
    path = Path(path)
    e = timing["rel_error"].to_numpy(dtype=float)
    e = e[np.isfinite(e)]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.hist(e * 100, bins=40, color="tab:blue", alpha=0.8)
    if e.size:
        ax.axvline(np.median(e) * 100, color="k", linestyle="--", linewidth=1, label=f"median {np.median(e):+.1%}")
        ax.legend()
    ax.set_xlabel("relative error of the predicted device time (%)")
    ax.set_ylabel("device-rounds")
    ax.set_title(title or "measured vs predicted device time")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def config_fields() -> list[str]:
    """The names of :class:`RunConfig`'s fields."""
    return [f.name for f in fields(RunConfig)]


def parse_names(text: str | Iterable[str]) -> list[str]:
    """Scheduler names from ``"a,b,c"`` (or a list): known, at least one, none twice."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise EdgeSplitError("schedulers: give at least one scheduler name")
    for s in names:
        if s not in SCHEDULERS:
            raise EdgeSplitError(f"scheduler: unknown name {s!r}; choose one of {', '.join(SCHEDULERS)}")
    if len(set(names)) != len(names):
        raise EdgeSplitError(f"schedulers: {','.join(names)!r} names one twice")
    return names


def run_training(cfg: RunConfig, schedulers: Sequence[str], out_dir: str | Path, resume: bool = False,
                 retrain: bool = False, target_acc: float | None = None, progress: bool | None = None,
                 scenario: Scenario | None = None, rebind_scenario: bool = False) -> dict[str, Any]:
    """A whole ``edgesplit train`` run into ``out_dir``: train once and time every scheduler
    (or, with ``retrain``, train once per scheduler), then write ``time_to_accuracy.csv`` and
    ``.png``, ``timing.csv`` (measured vs predicted device times), ``timing_error.png``,
    ``profile.csv`` (the reference profile behind the clock) and ``summary.json``. Returns the
    summary. The output folder is created before any work (a bad path fails first)."""
    from edgesplit.profiles import read_profile_csv

    names = parse_names(schedulers)
    if target_acc is not None and not 0 < target_acc <= 1:
        raise EdgeSplitError(f"target-acc: must lie in (0, 1], got {target_acc}")
    cfg.check()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EdgeSplitError(f"out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    prof_path = out / "profile.csv"
    profile = read_profile_csv(prof_path) if resume and prof_path.is_file() else None
    prep = prepare(cfg, profile=profile, scenario=scenario, rebind_scenario=rebind_scenario)
    if profile is None:
        prep.profile.to_csv(prof_path)
    else:
        prep.profile_source = f"{prof_path} (from the interrupted run)"
    summary: dict[str, Any] = {"model": cfg.model, "dataset": cfg.dataset, "devices": prep.scenario.n_devices,
                               "rounds": cfg.rounds, "seed": cfg.seed, "timing": cfg.timing,
                               "mode": "retrain" if retrain else "train-once", "device": str(resolve_device(cfg.device)),
                               "profile": prep.profile_source, "target_acc": target_acc, "schedulers": {}}
    results: dict[str, ScheduleResult] = {}
    t0 = time.perf_counter()
    if retrain:
        for s in names:
            try:
                results[s] = train_per_scheduler(prep, s, out / s, resume=resume, progress=progress)
            except InfeasibleError as exc:
                if len(names) == 1:
                    raise
                print(f"edgesplit train: skipping {exc}", file=sys.stderr)
                summary["schedulers"][s] = {"error": str(exc)}
    else:
        feasible = []
        for s in names:
            try:
                make_plan(prep, s, cfg.seed)
                feasible.append(s)
            except InfeasibleError as exc:
                if len(names) == 1:
                    raise
                print(f"edgesplit train: skipping {exc}", file=sys.stderr)
                summary["schedulers"][s] = {"error": str(exc)}
        if feasible:
            results = train_and_time(prep, feasible, out, resume=resume, progress=progress)
    summary["train_wall_s"] = time.perf_counter() - t0
    frames = {s: r.frame() for s, r in results.items()}
    if retrain:  # each scheduler wrote its own timing.csv: gather them
        parts = [pd.read_csv(out / s / "timing.csv") for s in results if (out / s / "timing.csv").is_file()]
        timing = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TIMING_COLUMNS)
        timing.to_csv(out / "timing.csv", index=False)
    else:
        timing = pd.read_csv(out / "timing.csv") if (out / "timing.csv").is_file() else pd.DataFrame(
            [rec for r in results.values() for rec in r.timing], columns=TIMING_COLUMNS)
    for s, res in results.items():
        df = frames[s]
        entry = {"cuts": [int(c) for c in res.plan.cuts], "shares": [round(float(b), 6) for b in res.plan.shares],
                 "round_time_s": float(res.plan.round_time_s),
                 "measured_round_time_s": float(np.diff(df["sim_time_s"]).mean()) if len(df) > 1 else None,
                 "final_test_acc": float(df["test_acc"].iloc[-1]), "final_loss": float(df["loss"].iloc[-1]),
                 "sim_time_s": float(df["sim_time_s"].iloc[-1]),
                 "predicted_sim_time_s": float(df["predicted_sim_time_s"].iloc[-1]),
                 "wall_s": float(df["wall_s"].iloc[-1]), "csv": str(out / s / "rounds.csv"),
                 "timing_error": error_summary(timing[timing["scheduler"] == s])}
        if target_acc is not None:
            t = time_to_accuracy(df, target_acc)
            entry["time_to_target_s"] = t if math.isfinite(t) else None
            entry["rounds_to_target"] = rounds_to_accuracy(df, target_acc)
        summary["schedulers"][s] = entry
    summary["timing_error"] = error_summary(timing)
    if frames:
        combined = pd.concat([df.assign(scheduler=s) for s, df in frames.items()], ignore_index=True)
        combined[["scheduler"] + CSV_COLUMNS].to_csv(out / "time_to_accuracy.csv", index=False)
        summary["plot"] = str(plot_time_to_accuracy(frames, out / "time_to_accuracy.png", target_acc,
                                                    f"{cfg.model} on {cfg.dataset}, {prep.scenario.n_devices} devices "
                                                    f"({cfg.timing} timing)"))
        if len(timing):
            summary["error_plot"] = str(plot_error_distribution(timing, out / "timing_error.png"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=_json_default))
    return summary


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
