"""Start a cluster run: 1 server + N devices on this machine, or one rank per host.

On one machine (:func:`launch_local`)
    The launcher starts one *zygote* process (``python -m edgesplit.distributed.launcher zygote``)
    in a new session. The zygote imports torch and the runtime once, then forks the server
    (rank 0) and the N devices (ranks 1..N): one torch import instead of N + 1, which matters on a
    2-core host where each import takes seconds. The server binds a free port (``port 0``) and
    writes it to a port file that the devices wait for, so there is no port race. The zygote
    reaps its children; when the server has finished it kills the devices the server reported as
    dropped (a hung device never exits by itself) and, after a grace period, any other straggler.
    The launcher enforces an overall timeout by killing the zygote's process group, and every
    process asks the kernel to kill it if its parent dies (``PR_SET_PDEATHSIG``), so nothing
    outlives a run.

Across hosts (:func:`run_from_env`)
    Each host runs ``edgesplit cluster`` with the usual variables: ``MASTER_ADDR`` (the server's
    address), ``MASTER_PORT`` (its store port, default 29500), ``RANK`` (0 = server, 1..N = the
    devices) and ``WORLD_SIZE`` (N + 1), plus ``EDGESPLIT_RUN_ID`` (optional: a device with a run id
    that differs from the server's is refused). See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.distributed.config import RunConfig
from edgesplit.errors import EdgeSplitError

RUN_ID_ENV = "EDGESPLIT_RUN_ID"
BIND_ENV = "EDGESPLIT_BIND_ADDR"
_LOCAL_SECRET_ENV = "EDGESPLIT_LOCAL_RUN_SECRET"  # launcher -> its zygote only (hex)
EXIT_BAD_INPUT = 2
EXIT_BUG = 1


class ClusterError(EdgeSplitError):
    """A cluster run failed (the message says which rank and why)."""


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (best effort, no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------- one rank


def run_rank(rank: int, world_size: int, master_addr: str, master_port: int, cfg: RunConfig | None,
             run_id: int | None, secret: bytes, port_file: str | None = None, data_dir: str | None = None,
             local: bool = False, bind_addr: str | None = None, gloo_interface: str | None = None) -> dict | None:
    """Run rank ``rank`` to completion: the server (rank 0, needs ``cfg``; returns the result)
    or a device (returns ``None``). ``secret`` authenticates every peer and message; ``local``
    keeps every socket on loopback. Raises :class:`EdgeSplitError` subclasses on bad input,
    a lost peer, a peer that fails authentication or a peer of another run."""
    import torch

    from edgesplit.distributed.common import trace
    from edgesplit.distributed.device import ClusterDevice
    from edgesplit.distributed.server import ClusterServer
    from edgesplit.distributed.auth import link_key
    from edgesplit.distributed.protocol import LinkAuth
    from edgesplit.distributed.transport import (
        Endpoint,
        await_joins,
        init_group,
        is_loopback,
        join_rendezvous,
        make_gloo_device,
        serve_rendezvous,
    )

    torch.set_num_threads(1)
    trace(f"rank {rank}: started")
    ep = Endpoint(master_addr, master_port, rank, world_size)
    loop = local or is_loopback(master_addr)
    device = make_gloo_device("127.0.0.1" if loop and not gloo_interface else None, gloo_interface)
    if rank == 0:
        if cfg is None:
            raise EdgeSplitError("the server (RANK=0) needs the run configuration")
        if world_size != cfg.world_size:
            raise EdgeSplitError(f"WORLD_SIZE: is {world_size}, but the plan has {len(cfg.devices)} devices "
                                 f"(WORLD_SIZE must be {cfg.world_size})")
        rdv = serve_rendezvous(ep, cfg.run_id, cfg.rendezvous_timeout_s, secret, port_file,
                               bind_addr="127.0.0.1" if local else bind_addr)
        trace("server: store up")
        joined = await_joins(rdv, cfg.rendezvous_timeout_s)
        trace("server: all joined")
        links = {r: LinkAuth(link_key(secret, cfg.run_id, rdv.server_nonce, r, str(req["nonce"])))
                 for r, req in joined.items()}
        tr = init_group(rdv.store, ep, cfg.run_id, rdv.server_nonce, links, cfg.rendezvous_timeout_s, device)
        trace("server: process group up")
        try:
            return ClusterServer(cfg, tr).run()
        finally:
            tr.close()
    timeout = 120.0 if cfg is None else cfg.rendezvous_timeout_s
    j = join_rendezvous(ep, run_id, timeout, secret, port_file)
    links = {0: LinkAuth(link_key(secret, j.run_id, j.server_nonce, rank, j.device_nonce))}
    tr = init_group(j.store, ep, j.run_id, j.server_nonce, links, timeout, device)
    try:
        ClusterDevice(tr, data_dir).run()
    finally:
        tr.close()
    return None


def run_from_env(cfg: RunConfig | None, data_dir: str | None = None,
                 environ: dict[str, str] | None = None, secret_file: str | None = None) -> dict | None:
    """Multi-host mode: run the rank named by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``
    (and ``EDGESPLIT_RUN_ID``) in this process, authenticated with the shared secret
    (``EDGESPLIT_CLUSTER_SECRET``, ``EDGESPLIT_CLUSTER_SECRET_FILE`` or ``secret_file``). The
    server listens on ``MASTER_ADDR`` (``EDGESPLIT_BIND_ADDR`` overrides it). The server returns
    the result; devices ``None``."""
    from edgesplit.distributed.auth import load_secret
    from edgesplit.distributed.protocol import parse_run_id
    from edgesplit.distributed.transport import endpoint_from_env

    env = os.environ if environ is None else environ
    ep = endpoint_from_env(dict(env))
    secret = load_secret(dict(env), secret_file)
    rid_text = env.get(RUN_ID_ENV)
    run_id = parse_run_id(rid_text) if rid_text else None
    if ep.rank == 0 and cfg is not None and run_id is not None:
        cfg.run_id = run_id
    return run_rank(ep.rank, ep.world_size, ep.master_addr, ep.master_port, cfg, run_id, secret, None, data_dir,
                    bind_addr=env.get(BIND_ENV) or None, gloo_interface=env.get("GLOO_SOCKET_IFNAME") or None)


# ----------------------------------------------------------------------------- the zygote


def _child(rank: int, world_size: int, cfg: RunConfig, run_dir: Path, run_id: int,
           data_dir: str | None, secret: bytes) -> int:
    """Body of a forked worker; returns its exit code (never raises)."""
    _die_with_parent()
    from edgesplit.distributed.common import stderr_log

    log = stderr_log("server" if rank == 0 else f"device {rank}")
    try:
        result = run_rank(rank, world_size, "127.0.0.1", 0, cfg if rank == 0 else None, run_id, secret,
                          str(run_dir / "port"), data_dir, local=True)
        if rank == 0:
            tmp = run_dir / "result.json.tmp"
            tmp.write_text(json.dumps(result))
            os.replace(tmp, run_dir / "result.json")
        return 0
    except EdgeSplitError as exc:
        log(f"error: {exc}")
        (run_dir / f"error-{rank}.txt").write_text(str(exc))
        return EXIT_BAD_INPUT
    except BaseException as exc:  # noqa: BLE001 - a bug: keep the traceback for the report
        traceback.print_exc()
        (run_dir / f"error-{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")
        return EXIT_BUG


def _zygote(cfg_path: Path, run_dir: Path, grace_s: float, data_dir: str | None,
            run_ids: dict[int, int], secret: bytes, secrets_by_rank: dict[int, bytes] | None = None) -> int:
    """Fork the server and the devices, reap them, kill dropped or straggling devices."""
    _die_with_parent()
    import torch  # noqa: F401 - imported once here, shared by every forked worker

    import edgesplit.distributed.device  # noqa: F401
    import edgesplit.distributed.server  # noqa: F401
    from edgesplit.distributed.common import prewarm, trace

    trace("zygote: imports done")
    cfg = RunConfig.load(cfg_path)
    prewarm(cfg, data_dir)
    trace("zygote: prewarmed")
    world = cfg.world_size
    children: dict[int, int] = {}
    for rank in range(world):
        pid = os.fork()
        if pid == 0:  # the child
            code = EXIT_BUG
            try:
                code = _child(rank, world, cfg, run_dir, run_ids.get(rank, cfg.run_id), data_dir,
                              (secrets_by_rank or {}).get(rank, secret))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = rank
    (run_dir / "pids.json").write_text(json.dumps({str(r): p for p, r in children.items()}))
    codes: dict[int, int] = {}
    server_done_at = None
    while children:
        if server_done_at is None:
            pid, status = os.waitpid(-1, 0)
        else:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if time.monotonic() > server_done_at + grace_s:
                    for p in children:
                        os.kill(p, signal.SIGKILL)
                    server_done_at = -1e18  # kill once; then reap
                time.sleep(0.02)
                continue
        rank = children.pop(pid)
        codes[rank] = os.waitstatus_to_exitcode(status)
        if rank == 0:
            server_done_at = time.monotonic()
            dropped = set()
            try:
                res = json.loads((run_dir / "result.json").read_text())
                dropped = {int(d["rank"]) for d in res.get("dropped", [])}
            except (OSError, ValueError):
                pass
            for p, r in children.items():
                if r in dropped:  # a dropped device may hang forever: it is not waited for
                    os.kill(p, signal.SIGKILL)
    (run_dir / "exit_codes.json").write_text(json.dumps({str(r): c for r, c in codes.items()}))
    return 0


# ----------------------------------------------------------------------------- the launcher


@dataclass
class LaunchResult:
    """What a local launch produced: the server's result, each rank's exit code and pid."""

    result: dict[str, Any]
    exit_codes: dict[int, int]
    pids: dict[int, int]
    wall_s: float
    zygote_pid: int = 0


def launch_local(cfg: RunConfig, timeout_s: float = 600.0, grace_s: float = 3.0,
                 data_dir: str | None = None, run_dir: str | Path | None = None,
                 device_run_ids: dict[int, int] | None = None,
                 python: str | None = None, start: str = "spawn",
                 device_secrets: dict[int, bytes] | None = None) -> LaunchResult:
    """Run 1 server + N devices on this machine (loopback) and return the server's result.

    ``timeout_s`` bounds the whole run (the process group is killed past it); ``grace_s`` is how
    long devices may linger after the server finished. ``device_run_ids`` gives some ranks another
    run id (to test that peers of another run are refused), ``device_secrets`` another secret (to test
    that peers without the run's secret are refused). Every socket of the run is on loopback and
    every peer and message is authenticated with a fresh random secret. ``start="spawn"`` (default) runs the
    zygote in a fresh interpreter; ``start="fork"`` forks it from this process, which skips its
    imports (seconds on a small host). It spawns instead when other Python threads run here (a
    fork copies none of them but could copy a lock one of them holds); the native pools of torch
    (OpenMP) and numpy (OpenBLAS) are fork-aware, and the workers compute with one thread.

    Raises :class:`ClusterError` when the server fails, naming the reason; no process of the run
    survives this call.
    """
    if start not in ("spawn", "fork"):
        raise EdgeSplitError(f"start: must be 'spawn' or 'fork', got {start!r}")
    if start == "fork" and threading.active_count() != 1:
        start = "spawn"
    own_dir = run_dir is None
    rdir = Path(tempfile.mkdtemp(prefix="edgesplit-cluster-")) if own_dir else Path(run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    for stale in ("port", "result.json", "pids.json", "exit_codes.json"):
        (rdir / stale).unlink(missing_ok=True)
    cfg_path = cfg.save(rdir / "config.json")
    ids = ",".join(f"{r}={v:#x}" for r, v in (device_run_ids or {}).items())
    cmd = [python or sys.executable, "-m", "edgesplit.distributed.launcher", "zygote",
           "--config", str(cfg_path), "--run-dir", str(rdir), "--grace", str(grace_s)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    if ids:
        cmd += ["--run-ids", ids]
    from edgesplit.distributed.auth import new_secret

    secret = new_secret()
    env = dict(os.environ)
    env[RUN_ID_ENV] = f"{cfg.run_id:#x}"
    env[_LOCAL_SECRET_ENV] = secret.hex()  # the environment of a process is readable by its owner only
    if device_secrets:
        cmd += ["--secrets", ",".join(f"{r}={v.hex()}" for r, v in device_secrets.items())]
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    if start == "fork":
        proc: Any = _ForkedZygote(cfg_path, rdir, grace_s, data_dir, device_run_ids or {}, secret, device_secrets)
    else:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # after a normal end this only catches stragglers of a zygote that died early
        _kill_group(proc)
    wall = time.perf_counter() - t0
    try:
        pids = {int(k): int(v) for k, v in _read_json(rdir / "pids.json", {}).items()}
        codes = {int(k): int(v) for k, v in _read_json(rdir / "exit_codes.json", {}).items()}
        if timed_out:
            raise ClusterError(f"cluster run timed out after {timeout_s:g} s; all its processes were killed")
        result = _read_json(rdir / "result.json", None)
        if result is None:
            raise ClusterError(_failure_reason(rdir, codes, proc.returncode))
        return LaunchResult(result, codes, pids, wall, proc.pid)
    finally:
        if own_dir:
            shutil.rmtree(rdir, ignore_errors=True)


class _ForkedZygote:
    """The zygote forked from this process, with the bits of the ``Popen`` interface used here."""

    def __init__(self, cfg_path: Path, rdir: Path, grace_s: float, data_dir: str | None,
                 run_ids: dict[int, int], secret: bytes, secrets_by_rank: dict[int, bytes] | None) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = EXIT_BUG
            try:
                os.setsid()  # its own process group, like start_new_session
                code = _zygote(cfg_path, rdir, grace_s, data_dir, run_ids, secret, secrets_by_rank)
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
            finally:
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code if the zygote has ended (reaping it), else ``None``."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the zygote; raise :class:`subprocess.TimeoutExpired` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("zygote", timeout or 0.0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]


def _kill_group(proc: Any) -> None:
    """SIGKILL the zygote's process group (the zygote and every worker), then reap the zygote."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        pass


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _failure_reason(rdir: Path, codes: dict[int, int], zygote_code: int | None) -> str:
    for rank in [0] + sorted(r for r in codes if r):
        p = rdir / f"error-{rank}.txt"
        if p.is_file():
            who = "server" if rank == 0 else f"device rank {rank}"
            return f"{who} failed: {p.read_text().strip()}"
    if 0 in codes:
        return f"the server exited with code {codes[0]} without a result"
    return f"the launcher's worker process exited with code {zygote_code} before the server finished"


def _parse_run_ids(text: str | None) -> dict[int, int]:
    from edgesplit.distributed.protocol import parse_run_id

    out: dict[int, int] = {}
    for item in (text or "").split(","):
        if item.strip():
            r, _, v = item.partition("=")
            out[int(r)] = parse_run_id(v)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m edgesplit.distributed.launcher zygote ...`` (used by :func:`launch_local`)."""
    p = argparse.ArgumentParser(prog="python -m edgesplit.distributed.launcher")
    p.add_argument("role", choices=["zygote"])
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--grace", type=float, default=3.0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--run-ids", default=None)
    p.add_argument("--secrets", default=None, help="tests: RANK=HEX,... gives those devices another secret")
    a = p.parse_args(argv)
    secret_hex = os.environ.pop(_LOCAL_SECRET_ENV, "")
    if not secret_hex:
        print("launcher: no run secret in the environment (start runs with launch_local)", file=sys.stderr)
        return EXIT_BAD_INPUT
    others = {int(r): bytes.fromhex(v) for r, _, v in (x.partition("=") for x in (a.secrets or "").split(",") if x)}
    return _zygote(Path(a.config), Path(a.run_dir), a.grace, a.data_dir, _parse_run_ids(a.run_ids),
                   bytes.fromhex(secret_hex), others)


if __name__ == "__main__":
    sys.exit(main())
