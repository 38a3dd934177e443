"""``edgesplit cluster``: run a schedule for real on 1 server + N device processes (torch.distributed,
gloo over TCP) and print the measured round times beside the cost model's prediction."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from edgesplit.errors import EdgeSplitError

NAME = "cluster"
HELP = "run a schedule on real processes (1 server + N devices) and compare with the cost model"
DESCRIPTION = (
    "Start one server rank and N device ranks on torch.distributed (gloo over TCP): on this machine "
    "by default, or one rank per host when RANK and WORLD_SIZE are set (with MASTER_ADDR, "
    "MASTER_PORT; see docs/distributed.md). Activations, cut gradients and client-side weights cross "
    "process boundaries; devices emulate their speed and their bandwidth share. Each round's measured "
    "time is printed beside the cost model's prediction for the same scenario, calibrated on this host."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgesplit cluster``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", metavar="FILE", help="scenario file (.json/.yaml); its profile is rescaled "
                     "to this host by the calibration")
    src.add_argument("--devices", type=int, metavar="N", help="generate N heterogeneous devices on this host's profile")
    p.add_argument("--scheduler", default="alternating", metavar="S", help="any scheduler of `edgesplit plan`")
    p.add_argument("--rounds", type=int, default=5, metavar="R", help="training rounds (in all, when resuming)")
    p.add_argument("--model", default="small_cnn", metavar="M", help="zoo model that really trains")
    p.add_argument("--dataset", default="synthetic_mnist", metavar="D",
                   help="dataset (synthetic_mnist and synthetic need no files)")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset's files are (each device reads its own)")
    p.add_argument("--non-iid", type=float, metavar="ALPHA", help="Dirichlet(alpha) split instead of IID")
    g = p.add_argument_group("generated scenario (--devices)")
    g.add_argument("--batch-size", type=int, default=16, help="mini-batch size on each device")
    g.add_argument("--samples-per-device", type=int, default=64, help="training samples on each device")
    g.add_argument("--heterogeneity", type=float, default=4.0, help="fastest / slowest device speed")
    g.add_argument("--fastest-speed", type=float, default=0.25, help="speed of the fastest device (x this host)")
    g.add_argument("--rate-range", type=float, nargs=2, default=[20e6, 100e6], metavar=("LO", "HI"),
                   help="link rates in bit/s (log-uniform)")
    g.add_argument("--server-speed", type=float, default=1.0, help="server speed (x this host; at most 1 is emulated)")
    g.add_argument("--sharing", choices=["dedicated", "shared"], default="dedicated", help="server compute: dedicated per device or shared by all")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenario, the weights and the data")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    e = p.add_argument_group("emulation, faults and checkpoints")
    e.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds the server waits for a device's next message before dropping it")
    e.add_argument("--run-timeout", type=float, metavar="S",
                   help="wall-clock limit of a local run (default: from the predicted round time)")
    e.add_argument("--emulation-clock", choices=["cpu", "wall", "profile"], default="profile",
                   help="a device of speed s stretches its compute to 1/s of: its CPU time (cpu), its wall "
                   "time (wall), or the calibrated profile's time (profile: load-independent, for a shared host)")
    e.add_argument("--burst-bytes", type=float, default=1500.0, help="token bucket depth (one MTU by default)")
    e.add_argument("--no-rate-limit", action="store_true",
                   help="do not emulate the link shares (real links, or links shaped with tc; see docs/distributed.md)")
    e.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                   help="where every rank computes: cpu; cuda (every rank needs a CUDA device); auto (CUDA if the "
                   "server and every device have one, else CPU). Messages always cross gloo, authenticated")
    e.add_argument("--host-profile", metavar="FILE.csv", help="use this profile of the model on this host "
                   "instead of calibrating now")
    e.add_argument("--checkpoint-dir", metavar="DIR", help="checkpoint the global model here every round")
    e.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir: give the same settings (model, devices or "
                   "scenario, scheduler, seed, lr, ...); only --rounds (the total), --timeout, --run-timeout, --data-dir, "
                   "--run-id, the fault injections, --json and --launch may change")
    e.add_argument("--kill-device", action="append", default=[], metavar="RANK:ROUND[:IT]",
                   help="fault injection: device RANK kills itself (SIGKILL) at iteration IT of round ROUND")
    e.add_argument("--hang-device", action="append", default=[], metavar="RANK:ROUND[:IT]",
                   help="fault injection: device RANK stops responding there")
    e.add_argument("--launch", choices=["auto", "local", "env"], default="auto",
                   help="local: spawn 1 + N processes here; env: run the one rank named by RANK/WORLD_SIZE "
                   "(auto: env when both are set)")
    e.add_argument("--run-id", metavar="ID", help="run id (default: random; $EDGESPLIT_RUN_ID in env mode); "
                   "not a secret")
    e.add_argument("--secret-file", metavar="FILE", help="env mode: a file holding the run's shared secret (default: "
                   "$EDGESPLIT_CLUSTER_SECRET_FILE, or the secret itself in $EDGESPLIT_CLUSTER_SECRET); every rank needs "
                   "the same one. Local runs draw their own")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _faults(args: argparse.Namespace) -> list:
    from edgesplit.distributed.config import Fault

    return [Fault.parse(t, "kill") for t in args.kill_device] + [Fault.parse(t, "hang") for t in args.hang_device]


def _check_args(args: argparse.Namespace) -> None:
    if args.rounds < 0:
        raise EdgeSplitError(f"--rounds: must be >= 0, got {args.rounds}")
    for key in ("timeout", "lr"):
        v = getattr(args, key)
        if not (v > 0 and math.isfinite(v)):
            raise EdgeSplitError(f"--{key}: must be a finite number > 0, got {v}")
    if args.run_timeout is not None and not args.run_timeout > 0:
        raise EdgeSplitError(f"--run-timeout: must be > 0, got {args.run_timeout}")
    if args.resume and not args.checkpoint_dir:
        raise EdgeSplitError("--resume: needs --checkpoint-dir")
    if args.devices is not None and args.devices < 1:
        raise EdgeSplitError(f"--devices: must be >= 1, got {args.devices}")


#: options that define a run: a resumed run must be given the same (``--resume`` refuses others)
SETTINGS = ("scenario", "devices", "scheduler", "model", "dataset", "non_iid", "batch_size", "samples_per_device",
            "heterogeneity", "fastest_speed", "rate_range", "server_speed", "sharing", "seed", "lr", "momentum",
            "emulation_clock", "burst_bytes", "no_rate_limit", "host_profile")
#: what a resumed run may change: the total --rounds, --timeout, --run-timeout, --data-dir, --run-id,
#: the fault injections, --json and --launch (documented in docs/distributed.md)


def _file_digest(path: str | None) -> str | None:
    import hashlib

    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :data:`SETTINGS` as given (files by path and content digest)."""
    out: dict[str, Any] = {}
    for key in SETTINGS:
        v = getattr(args, key, None)
        out[key] = list(v) if isinstance(v, tuple) else v
    out["scenario_digest"] = _file_digest(args.scenario)
    out["host_profile_digest"] = _file_digest(args.host_profile)
    return out


def settings_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``"--model vgg11 (checkpoint: small_cnn)"`` for every setting that differs."""
    if not isinstance(old, dict):
        return ["the checkpoint records no settings (made by an older edgesplit)"]
    out = []
    for key in SETTINGS:
        a, b = old.get(key), new.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            flag = "--" + key.replace("_", "-")
            out.append(f"{flag} {_show(b)} (checkpoint: {_show(a)})")
    for key, flag in (("scenario_digest", "--scenario"), ("host_profile_digest", "--host-profile")):
        if old.get(key) != new.get(key) and old.get(key[: -len("_digest")]) == new.get(key[: -len("_digest")]):
            out.append(f"{flag} {new.get(key[: -len('_digest')])}: the file's contents changed")
    return out


def _show(v: Any) -> str:
    if v is None:
        return "(not given)"
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, list):
        return " ".join(_show(x) for x in v)
    return str(v)


def build_config(args: argparse.Namespace, n_from_env: int | None = None) -> tuple[Any, list[str]]:
    """The :class:`RunConfig` of the command line (calibrating this host), and notes to print."""
    from edgesplit.distributed import planning
    from edgesplit.distributed.checkpoint import read_checkpoint
    from edgesplit.distributed.config import RunConfig
    from edgesplit.distributed.protocol import new_run_id, parse_run_id
    from edgesplit.profiles import read_profile_csv
    from edgesplit.scenario import load_scenario

    run_id = parse_run_id(args.run_id) if args.run_id else new_run_id()
    notes: list[str] = []
    faults = _faults(args)
    settings = run_settings(args)
    if args.resume:
        ck = read_checkpoint(args.checkpoint_dir)
        if ck is not None:
            cfg = RunConfig.from_dict(ck["config"])
            changed = settings_changed(cfg.meta.get("settings"), settings)
            if changed:
                raise EdgeSplitError(
                    f"--resume: the checkpoint in {args.checkpoint_dir} was made with other settings: "
                    f"{'; '.join(changed)}; rerun with the checkpoint's settings or use another --checkpoint-dir"
                )
            cfg.run_id, cfg.rounds, cfg.resume, cfg.faults = run_id, args.rounds, True, faults
            cfg.checkpoint_dir = str(args.checkpoint_dir)
            cfg.timeout_s = float(args.timeout)
            cfg.device = args.device
            if args.data_dir:
                cfg.data_dir = args.data_dir
            cfg.validate()
            if ck.get("note"):
                notes.append(ck["note"])
            notes.append(f"resuming the run checkpointed in {args.checkpoint_dir} after round {ck['round']} "
                         "(its scenario, plan and calibration)")
            cfg.meta["notes"] = list(cfg.meta.get("notes", [])) + notes
            return cfg, notes
        notes.append(f"--resume: no checkpoint in {args.checkpoint_dir} yet; starting at round 1")
    if args.host_profile:
        host = read_profile_csv(args.host_profile)
        calib = {"method": f"profile file {args.host_profile}", "host": host.host,
                 "F_L_s_per_sample": float(host.train_s.sum())}
    else:
        batch = args.batch_size
        if args.scenario:
            batch = load_scenario(args.scenario).batch_size
        host, calib = planning.calibrate_host(args.model, args.dataset, batch, seed=args.seed,
                                              clock=args.emulation_clock)
    if args.scenario:
        file_sc = load_scenario(args.scenario)
        h = planning.host_speed_factor(file_sc.profile, host)
        scenario, caps = planning.effective_scenario(file_sc, host, h)
        notes += caps
        calib["host_speed_factor"] = h
        notes.append(f"host speed factor {h:.3g}: this host runs the model {h:.3g}x as fast as the scenario's "
                     "profiling host; device speeds are divided by it")
    else:
        n = args.devices if args.devices is not None else n_from_env
        if n is None:
            raise EdgeSplitError("give --scenario FILE or --devices N")
        scenario = planning.generate_cluster_scenario(
            host, n, batch_size=args.batch_size, samples=args.samples_per_device, heterogeneity=args.heterogeneity,
            fastest_speed=args.fastest_speed, rate_range_bps=tuple(args.rate_range), server_speed=args.server_speed,
            sharing=args.sharing, seed=args.seed)
        scenario, caps = planning.effective_scenario(scenario, host, 1.0)
        notes += caps
    if n_from_env is not None and scenario.n_devices != n_from_env:
        raise EdgeSplitError(f"WORLD_SIZE: {n_from_env + 1} ranks, but the scenario has {scenario.n_devices} devices "
                             f"(WORLD_SIZE must be {scenario.n_devices + 1})")
    plan = planning.make_plan(scenario, args.scheduler, seed=args.seed)
    notes += planning.check_timeouts(scenario, plan, args.timeout)
    cfg = planning.build_run_config(
        scenario, plan, model=args.model, dataset=args.dataset, rounds=args.rounds, run_id=run_id,
        data_dir=args.data_dir, seed=args.seed, lr=args.lr, momentum=args.momentum, non_iid_alpha=args.non_iid,
        timeout_s=args.timeout, clock=args.emulation_clock, burst_bytes=args.burst_bytes,
        rate_limit=not args.no_rate_limit,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, faults=faults,
        meta={"calibration": calib, "notes": notes, "settings": settings})
    cfg.device = args.device
    cfg.validate()
    return cfg, notes


def summary(cfg: Any, result: dict) -> dict:
    """The JSON object printed by ``--json``: the server's result plus the schedule and calibration."""
    out = {
        "scheduler": cfg.scheduler,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "n_devices": len(cfg.devices),
        "batch_size": cfg.batch_size,
        "cuts": [d.cut for d in cfg.devices],
        "shares": [d.share for d in cfg.devices],
        "speeds": [d.speed for d in cfg.devices],
        "rates_bps": [d.rate_bps for d in cfg.devices],
        "server_speed": cfg.server_speed,
        "emulation_clock": cfg.clock,
        "rate_limit": cfg.rate_limit,
        "device": cfg.device,
        "calibration": cfg.meta.get("calibration"),
        "notes": cfg.meta.get("notes", []),
    }
    out.update(result)
    return out


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def print_table(cfg: Any, res: dict) -> None:
    """Readable output: the schedule, then each round's measurement beside the prediction."""
    cal = cfg.meta.get("calibration") or {}
    print(f"edgesplit cluster: {len(cfg.devices)} devices, {cfg.model} on {cfg.dataset}, scheduler {cfg.scheduler}, "
          f"batch {cfg.batch_size}, run {res.get('run_id')}")
    if cal:
        print(f"host calibration: F(L) = {cal.get('F_L_s_per_sample', float('nan')) * 1e3:.3f} ms/sample "
              f"({cal.get('method')}; emulation clock {cfg.clock})")
    for n in cfg.meta.get("notes", []):
        print(f"note: {n}")
    print(f"{'rank':>4} {'device':<10}{'cut':>4}{'share':>8}{'speed':>8}{'rate_Mbps':>10}{'samples':>8}")
    for d in cfg.devices:
        print(f"{d.rank:>4} {d.name[:9]:<10}{d.cut:>4}{d.share:>8.3f}{d.speed:>8.3f}"
              f"{d.rate_bps / 1e6:>10.1f}{d.samples:>8}")
    print()
    print(f"{'round':>5}{'measured_s':>12}{'predicted_s':>13}{'rel_err':>9}{'barrier_s':>11}{'rel_err':>9}"
          f"{'devices':>9}{'loss':>8}")
    for rec in res["records"]:
        re_ = rec.get("relative_error")
        rc = rec.get("corrected_relative_error")
        print(f"{rec['round']:>5}{_fmt(rec['measured_round_s']):>12}{_fmt(rec['predicted_round_s']):>13}"
              f"{_fmt(None if re_ is None else 100 * re_, '.1f') + '%':>9}{_fmt(rec.get('corrected_round_s')):>11}"
              f"{_fmt(None if rc is None else 100 * rc, '.1f') + '%':>9}"
              f"{str(rec['n_finished']) + '/' + str(rec['n_devices']):>9}{_fmt(rec.get('train_loss')):>8}")
        for dv in rec["devices"]:
            print(f"{'':>7}{dv['rank']:>3} {dv['name'][:9]:<10} {dv['status']:<8} device "
                  f"{_fmt(dv.get('measured_s'))} s (model {_fmt(dv.get('predicted_s'))} s)  link "
                  f"{dv.get('bytes_up', 0) + dv.get('bytes_down', 0):,} B (model {dv['predicted_bytes']:,.0f} B)")
    m = res.get("median_relative_error")
    mc = res.get("corrected_median_relative_error")
    if m is not None:
        print(f"median relative error: {100 * m:.1f}% (cost model of DESIGN.md); "
              f"{_fmt(None if mc is None else 100 * mc, '.1f')}% with the aggregation-barrier correction")
    for d in res.get("dropped", []):
        it = f" at iteration {d['iteration']}" if d.get("iteration") is not None else ""
        print(f"dropped: rank {d['rank']} ({d['name']}) in round {d['round']} ({d['phase']}{it}): {d['reason']}; "
              f"noticed {d['noticed_after_last_message_s']:.2f} s after its last message")
    if res.get("resumed_from_round") is not None:
        print(f"resumed after round {res['resumed_from_round']} from {res.get('checkpoint_dir')}")


def run(args: argparse.Namespace) -> int:
    """Run the cluster and print the comparison."""
    from edgesplit.distributed.launcher import launch_local, run_from_env

    _check_args(args)
    mode = args.launch
    if mode == "auto":
        mode = "env" if ("RANK" in os.environ and "WORLD_SIZE" in os.environ) else "local"
    if mode == "env":
        from edgesplit.distributed.transport import endpoint_from_env

        from edgesplit.distributed.auth import load_secret

        ep = endpoint_from_env()
        load_secret(secret_file=args.secret_file)  # no secret: one line before any work
        if ep.rank != 0:  # a device: everything it needs comes from the server
            run_from_env(None, args.data_dir, secret_file=args.secret_file)
            print(f"edgesplit cluster: device rank {ep.rank}: done", file=sys.stderr)
            _hard_exit(0)
        if args.run_id is None and os.environ.get("EDGESPLIT_RUN_ID"):
            args.run_id = os.environ["EDGESPLIT_RUN_ID"]
        cfg, _ = build_config(args, n_from_env=ep.world_size - 1)
        for n in cfg.meta.get("notes", []):
            print(f"edgesplit cluster: note: {n}", file=sys.stderr)
        result = run_from_env(cfg, args.data_dir, secret_file=args.secret_file)
        assert result is not None
    else:
        if not args.dataset.startswith("synthetic"):  # every device reads it here: fail before calibrating
            from edgesplit.datasets import load_dataset

            load_dataset(args.dataset, "train", args.data_dir, seed=args.seed)
        cfg, _ = build_config(args)
        for n in cfg.meta.get("notes", []):
            print(f"edgesplit cluster: note: {n}", file=sys.stderr)
        limit = args.run_timeout
        if limit is None:
            per_round = cfg.predicted_round_s([d.rank for d in cfg.devices])
            limit = 180.0 + cfg.rounds * (4.0 * per_round + 2.0 * cfg.timeout_s)
        result = launch_local(cfg, timeout_s=limit, data_dir=args.data_dir).result
    if args.json:
        print(json.dumps(_clean(summary(cfg, result)), default=_json_default))
    else:
        print_table(cfg, result)
    if mode == "env":
        _hard_exit(0)
    return 0


def _hard_exit(code: int) -> None:
    """End this process now (after flushing): a gloo wait abandoned on a silent peer must not be
    able to hold up the interpreter's shutdown (see edgesplit.distributed.transport)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _clean(x: Any) -> Any:
    """Non-finite floats become ``null`` (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _json_default(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
