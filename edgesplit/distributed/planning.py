"""From a scenario and a scheduler to a :class:`RunConfig`: host calibration, emulated speeds and
the cost model's prediction for exactly what will run.

Calibration
    :func:`calibrate_host` profiles the model that will really run, on this host, with one torch
    thread (as the workers run), using :func:`edgesplit.profiler.profile_model`. The profiler
    times with the wall clock; the workers' emulation (``clock="cpu"``) stretches *CPU* time, so
    the profile is scaled by the calibration's own CPU/wall ratio (1.0 on an idle host, lower when
    other processes compete for the cores). The result is the *host profile*.

Effective scenario
    The cost model runs on the host profile. A scenario generated here (``--devices N``) is built
    on it directly. A scenario file brings its own profile, measured on its own profiling host:
    the host speed factor ``h = F_file(L) / F_host(L)`` converts its speeds (relative to its
    profiling host) into speeds relative to this host, ``s / h``. A speed above 1 (faster than
    this host) cannot be emulated: it is capped at 1 and the cap is reported; the prediction uses
    the capped speeds, i.e. what really runs. A device (or server) with its own per-layer profile
    keeps its per-layer times (seconds on that hardware), each raised to at least this host's time
    for the layer where the hardware is faster than this host (reported likewise).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from edgesplit.costmodel import (
    CostModel,
    activation_bits_per_iteration,
    prefix_weights,
    round_time_of,
    server_share,
)
from edgesplit.distributed.config import DeviceSpec, Fault, RunConfig
from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario, Server
from edgesplit.schedulers import Plan, get_scheduler


def calibrate_host(model: str, dataset: str, batch_size: int, seed: int = 0, repeats: int = 5,
                   clock: str = "cpu") -> tuple[LayerProfile, dict[str, Any]]:
    """Profile ``model`` on this host with one thread; return ``(host profile, info)``.

    ``dataset`` is a dataset name (``synthetic_mnist``) or a zoo key (``mnist``). With
    ``clock="cpu"`` the wall-clock profile is scaled by the calibration's CPU/wall ratio.
    """
    import torch

    from edgesplit.distributed.common import zoo_dataset
    from edgesplit.profiler import profile_model

    zds = zoo_dataset(dataset) if dataset not in ("cifar10", "mnist", "fashion_mnist") else dataset
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w0, c0 = time.perf_counter(), time.thread_time()
        prof = profile_model(model, zds, batch_size=batch_size, warmup=2, repeats=repeats, seed=seed)
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
    finally:
        torch.set_num_threads(threads)
    ratio = min(1.0, cpu / wall) if wall > 0 else 1.0
    info = {
        "method": "edgesplit.profiler.profile_model, 1 thread",
        "host": prof.host,
        "batch_size": batch_size,
        "wall_F_L_s_per_sample": float(prof.train_s.sum()),
        "cpu_over_wall": ratio,
        "clock": clock,
    }
    if clock != "wall" and ratio < 0.999:
        prof = replace(prof.scaled(ratio), host=prof.host)
    info["F_L_s_per_sample"] = float(prof.train_s.sum())
    return prof, info


def host_speed_factor(scenario_profile: LayerProfile, host_profile: LayerProfile) -> float:
    """``h``: how many times faster this host runs the model than the scenario's profiling host."""
    a, b = float(scenario_profile.train_s.sum()), float(host_profile.train_s.sum())
    if not (a > 0 and b > 0):
        raise EdgeSplitError("calibration: a profile with zero total compute cannot be compared")
    return a / b


def _emulable_profile(own: LayerProfile, host_profile: LayerProfile, where: str,
                      notes: list[str]) -> LayerProfile:
    """``own``'s per-layer times on the host profile's units, each at least the host's time."""
    fwd = np.maximum(own.fwd_s, host_profile.fwd_s)
    bwd = np.maximum(own.bwd_s, host_profile.bwd_s)
    faster = int(((own.fwd_s < host_profile.fwd_s) | (own.bwd_s < host_profile.bwd_s)).sum())
    if faster:
        notes.append(f"{where}: {faster} of {own.n_layers} layers are faster than this host can emulate; "
                     "raised to this host's time (the prediction uses the raised times)")
    return LayerProfile(names=host_profile.names, fwd_s=fwd, bwd_s=bwd,
                        activation_bytes=host_profile.activation_bytes, param_bytes=host_profile.param_bytes,
                        model=host_profile.model, dataset=host_profile.dataset, host=own.host,
                        batch_size=own.batch_size)


def effective_scenario(scenario: Scenario, host_profile: LayerProfile,
                       speed_factor: float = 1.0) -> tuple[Scenario, list[str]]:
    """The scenario that really runs here: the host profile, speeds divided by ``speed_factor``
    and capped at 1 (this host's speed), own per-layer profiles kept but no faster than this host.
    Returns it and notes on every cap."""
    if scenario.n_layers != host_profile.n_layers:
        raise EdgeSplitError(
            f"model: the scenario's model has {scenario.n_layers} layers but {host_profile.model} has "
            f"{host_profile.n_layers} cut units; pass --model with a matching model"
        )
    notes: list[str] = []
    devs = []
    for i, d in enumerate(scenario.devices):
        if d.profile is not None:
            own = _emulable_profile(d.profile, host_profile, f"devices[{i}] ({d.name})", notes)
            speed = float(host_profile.prefix_train_s[-1] / own.prefix_train_s[-1])
            devs.append(replace(d, speed=speed, profile=own))
            continue
        s = d.speed / speed_factor
        if s > 1.0:
            notes.append(f"devices[{i}] ({d.name}): speed {s:.3g} x this host cannot be emulated; capped at 1")
            s = 1.0
        devs.append(replace(d, speed=float(s)))
    srv = scenario.server
    share = server_share(scenario)
    if srv.profile is not None:
        own = _emulable_profile(srv.profile, host_profile.scaled(share), "server", notes)
        server = Server(float(host_profile.prefix_train_s[-1] / own.prefix_train_s[-1]), srv.sharing, own,
                        srv.device_class)
    else:
        s_srv = srv.speed / speed_factor
        if s_srv * share > 1.0:
            notes.append(f"server: speed {s_srv * share:.3g} x this host per device cannot be emulated; capped "
                         "at 1 (the prediction uses the capped speed)")
            s_srv = 1.0 / share
        server = Server(float(s_srv), srv.sharing)
    return Scenario(host_profile, scenario.batch_size, tuple(devs), server), notes


def generate_cluster_scenario(host_profile: LayerProfile, n_devices: int, batch_size: int = 16,
                              samples: int = 64, heterogeneity: float = 4.0, fastest_speed: float = 0.25,
                              rate_range_bps: tuple[float, float] = (20e6, 100e6), server_speed: float = 1.0,
                              sharing: str = "dedicated", seed: int = 0) -> Scenario:
    """A seeded heterogeneous scenario on the host profile, sized for emulation on a small host:
    slow devices (so emulated waits dominate their real compute) and link shares whose transfer
    times are of the same order as the compute."""
    from edgesplit.devices import generate_scenario

    return generate_scenario(host_profile, n_devices, heterogeneity=heterogeneity, rate_range_bps=rate_range_bps,
                             memory_range_bytes=(1e9, 8e9), fastest_speed=fastest_speed, samples=samples,
                             batch_size=batch_size, server_speed=server_speed, sharing=sharing, seed=seed)


def predict(scenario: Scenario, plan: Plan) -> tuple[np.ndarray, np.ndarray, float]:
    """Cost-model per-device times ``T_i``, traffic bytes ``V_i / 8`` and round time of ``plan``."""
    cm = CostModel.from_scenario(scenario)
    cuts = np.asarray(plan.cuts, dtype=np.int64)
    per = cm.device_times(cuts, plan.shares)
    _, bits = cm.select(cuts)
    return per, bits / 8.0, round_time_of(per, plan.sequential)


def make_plan(scenario: Scenario, scheduler: str, seed: int = 0) -> Plan:
    """Solve ``scenario`` with ``scheduler``; raise if the plan is infeasible."""
    plan = get_scheduler(scheduler, seed=seed).plan(scenario)
    if not plan.feasible or not math.isfinite(plan.round_time_s):
        why = plan.note or "infinite round time"
        raise EdgeSplitError(f"scheduler {scheduler}: no feasible plan for this scenario ({why})")
    return plan


def check_timeouts(scenario: Scenario, plan: Plan, timeout_s: float) -> list[str]:
    """Warnings for devices whose longest silence (one iteration, or one weight transfer) could
    exceed ``timeout_s``: the server would wrongly drop them."""
    cm = CostModel.from_scenario(scenario)
    notes = []
    b = scenario.batch_size
    W = prefix_weights(scenario.profile.param_bytes)
    act_bits = activation_bits_per_iteration(scenario.profile, b)
    for i, (d, c, beta) in enumerate(zip(scenario.devices, plan.cuts, plan.shares)):
        k = math.ceil(d.samples / b)
        bw = beta * d.rate_bps
        per_iter = cm.compute_s[i, c - 1] / k + act_bits[c - 1] / bw
        weights = 8.0 * W[c - 1] / bw
        worst = max(per_iter, weights)
        if worst > 0.8 * timeout_s:
            notes.append(f"devices[{i}] ({d.name}): may stay silent for {worst:.3g} s (one iteration or one "
                         f"weight transfer), close to --timeout {timeout_s:g} s; raise --timeout")
    return notes


def build_run_config(scenario: Scenario, plan: Plan, *, model: str, dataset: str, rounds: int, run_id: int,
                     data_dir: str | None = None, seed: int = 0, lr: float = 0.05, momentum: float = 0.0,
                     non_iid_alpha: float | None = None, timeout_s: float = 30.0, clock: str = "cpu",
                     burst_bytes: float = 1500.0, rate_limit: bool = True,
                     checkpoint_dir: str | None = None, resume: bool = False,
                     faults: list[Fault] | None = None, meta: dict[str, Any] | None = None) -> RunConfig:
    """The run configuration of ``plan`` on the (effective) ``scenario``, with its predictions."""
    per, vbytes, round_s = predict(scenario, plan)
    W = prefix_weights(scenario.profile.param_bytes)
    down = [8.0 * W[int(c) - 1] / (float(b) * d.rate_bps) for c, b, d in zip(plan.cuts, plan.shares, scenario.devices)]
    srv = scenario.server.speed * server_share(scenario)  # per device; F(L)/F_S(L) with an own profile
    speeds = CostModel.from_scenario(scenario, check_feasible=False).effective_speed
    devices = [
        DeviceSpec(rank=i + 1, name=d.name, cut=int(plan.cuts[i]), share=float(plan.shares[i]),
                   rate_bps=float(d.rate_bps), speed=float(speeds[i]), samples=int(d.samples),
                   predicted_s=float(per[i]), predicted_bytes=float(vbytes[i]),
                   predicted_download_s=float(down[i]),
                   fwd_s=None if d.profile is None else [float(v) for v in d.profile.fwd_s],
                   bwd_s=None if d.profile is None else [float(v) for v in d.profile.bwd_s])
        for i, d in enumerate(scenario.devices)
    ]
    sp, share = scenario.server.profile, server_share(scenario)  # the runtime paces per device: / share_S
    device_timeout = max(60.0, 5.0 * round_s + 2.0 * timeout_s)
    meta = dict(meta or {})
    meta.setdefault("scenario", scenario.to_dict())
    meta.setdefault("plan", plan.to_dict())
    return RunConfig(
        run_id=run_id, model=model, dataset=dataset, n_layers=scenario.n_layers, batch_size=scenario.batch_size,
        rounds=rounds, devices=devices, server_speed=float(srv), scheduler=plan.scheduler,
        sequential=bool(plan.sequential), data_dir=data_dir, seed=seed, lr=lr, momentum=momentum,
        non_iid_alpha=non_iid_alpha, timeout_s=timeout_s, device_timeout_s=device_timeout,
        rendezvous_timeout_s=max(60.0, timeout_s), clock=clock, burst_bytes=burst_bytes, rate_limit=rate_limit,
        checkpoint_dir=checkpoint_dir, resume=resume, faults=list(faults or []),
        profile_fwd_s=[float(v) for v in scenario.profile.fwd_s],
        profile_bwd_s=[float(v) for v in scenario.profile.bwd_s], meta=meta,
        server_fwd_s=None if sp is None else [float(v) / share for v in sp.fwd_s],
        server_bwd_s=None if sp is None else [float(v) / share for v in sp.bwd_s],
    )
