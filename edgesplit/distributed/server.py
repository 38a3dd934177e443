"""The server side (rank 0) of a cluster run: the global model, a server replica per device, the
rounds, aggregation, fault handling and checkpoints.

The split-training pieces are the engine's (:mod:`edgesplit.engine`): the same server replicas,
:func:`~edgesplit.engine.server_step`, and the same layer-wise aggregation
(:func:`~edgesplit.engine.average_units` weighted by sample counts, then
:func:`~edgesplit.engine.load_units`). What this module adds is that the devices live in other
processes and talk through :class:`~edgesplit.distributed.transport.Transport`.

One round, as the server sees it::

    ROUND_START -> each device (all at once; one after another for a sequential plan)
    per device, in its own thread:  ACTIVATIONS -> server_step -> GRADIENT   (K_i times)
                                    (a device with cut L trains alone and sends PROGRESS)
                                    WEIGHTS_UP (its units 1..c_i)
    aggregate every unit over the devices that finished, weighted by their samples
    WEIGHTS_DOWN (units 1..c_i of the new global model) -> each device; ROUND_DONE <- each device
    checkpoint

The server measures the round from ROUND_START to the last ROUND_DONE; each device reports its
own busy time in ROUND_DONE (:mod:`~edgesplit.distributed.device`).

Faults: any :class:`PeerLost` (dead or silent past ``timeout_s``) or :class:`ProtocolError`
from a device drops it: the server logs who, when and why, finishes the round with the others
(their weights re-weighted among themselves) and never talks to it again.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from edgesplit.distributed.checkpoint import load_checkpoint, save_checkpoint
from edgesplit.distributed.common import (
    SETUP_ROUND,
    Log,
    UnitLayout,
    choose_compute,
    make_optimizer,
    model_units,
    stderr_log,
    trace,
    unit_layout,
    unit_tensors,
    units_from_tensors,
    zoo_dataset,
)
from edgesplit.distributed.config import DeviceSpec, RunConfig
from edgesplit.distributed.emulation import ComputeEmulator
from edgesplit.distributed.protocol import Message, MessageType, ProtocolError, expect
from edgesplit.distributed.transport import PeerLost, Transport
from edgesplit.engine import average_units, load_units, server_segment, server_step
from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import build_model


_DEVICE_REPORT_KEYS = ("upload_done_s", "barrier_wait_s", "download_s", "compute_cpu_s", "compute_target_s",
                       "compute_wall_s", "emulated_wait_s", "late_s", "link_wait_s", "link_bytes_paid")


@dataclass
class _Peer:
    spec: DeviceSpec
    emu: ComputeEmulator
    replica: Any = None
    opt: Any = None
    alive: bool = True
    last_msg: float = field(default_factory=time.perf_counter)
    info: dict = field(default_factory=dict)


@dataclass
class _RoundState:
    upload: dict[int, dict[str, torch.Tensor]] | None = None
    iterations: int = 0
    losses: list[float] = field(default_factory=list)
    report: dict | None = None
    sent0: int = 0
    recv0: int = 0
    t_upload: float = math.nan
    t_done: float = math.nan
    phase: str = "start"


class ClusterServer:
    """Rank 0: holds the global model and a server replica per device; runs the rounds."""

    def __init__(self, cfg: RunConfig, transport: Transport, log: Log | None = None) -> None:
        self.cfg = cfg
        self.tr = transport
        self.log = log or stderr_log("server")
        self.compute = torch.device("cpu")  # where the server computes (chosen at set-up, --device)
        self.peers = {d.rank: _Peer(d, ComputeEmulator(cfg.server_speed, cfg.clock, sync=self._sync))
                      for d in cfg.devices}
        self.dropped: list[dict] = []
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self.layout: UnitLayout = {}

    def _sync(self) -> None:
        """Wait for queued GPU work, so that a compute block's times are real (no-op on CPU)."""
        if self.compute.type == "cuda":
            torch.cuda.synchronize(self.compute)

    def _layout(self, cut: int) -> UnitLayout:
        """What a device with ``cut`` uploads: units 1..cut of the model."""
        return {u: self.layout[u] for u in range(1, cut + 1)}

    # -- helpers

    def _send(self, rank: int, msg: Message, timeout: float | None = None) -> int:
        return self.tr.send(rank, msg, self.cfg.timeout_s if timeout is None else timeout)

    def _recv(self, rank: int, timeout: float | None = None) -> Message:
        msg = self.tr.recv(rank, self.cfg.timeout_s if timeout is None else timeout)
        self.peers[rank].last_msg = time.perf_counter()
        return msg

    def _drop(self, rank: int, round_: int, phase: str, exc: BaseException, t_round0: float | None,
              iteration: int | None = None) -> None:
        peer = self.peers[rank]
        now = time.perf_counter()
        with self._lock:
            if not peer.alive:
                return
            peer.alive = False
            reason = exc.reason if isinstance(exc, PeerLost) else str(exc)
            entry = {
                "rank": rank,
                "name": peer.spec.name,
                "round": round_,
                "phase": phase,
                "iteration": iteration,
                "reason": reason,
                "timed_out": bool(getattr(exc, "timed_out", False)),
                "noticed_after_last_message_s": now - peer.last_msg,
                "at_round_s": (now - t_round0) if t_round0 is not None else None,
            }
            self.dropped.append(entry)
        self.tr.mark_lost(rank, reason)
        where = f"round {round_}" if round_ else "set-up"
        it = f" at iteration {iteration}" if iteration is not None else ""
        self.log(f"device rank {rank} ({peer.spec.name}) dropped in {where} ({phase}{it}): {reason}; "
                 f"noticed {entry['noticed_after_last_message_s']:.2f} s after its last message; "
                 f"continuing with {sum(p.alive for p in self.peers.values())} device(s)")

    def alive_ranks(self) -> list[int]:
        """Ranks of the devices still in the run."""
        return [r for r, p in self.peers.items() if p.alive]

    def _parallel(self, fn: Callable[[int], None], ranks: list[int], sequential: bool = False) -> None:
        errors: list[BaseException] = []

        def wrap(r: int) -> None:
            try:
                fn(r)
            except BaseException as exc:  # noqa: BLE001 - a bug: re-raised in the main thread
                errors.append(exc)

        if sequential:
            for r in ranks:
                wrap(r)
        else:
            threads = [threading.Thread(target=wrap, args=(r,), name=f"peer-{r}", daemon=True) for r in ranks]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]

    # -- set-up

    def _setup(self, model: torch.nn.Module, start_round: int) -> None:
        cfg = self.cfg
        counts = [d.samples for d in cfg.devices]

        def hello(rank: int) -> None:
            try:
                msg = expect(self._recv(rank, cfg.rendezvous_timeout_s), MessageType.HELLO)
                trace(f"server: HELLO from {rank}")
                self.peers[rank].info = dict(msg.info)
            except (PeerLost, ProtocolError) as exc:
                self._drop(rank, SETUP_ROUND, "set-up", exc, None)

        def configure(rank: int) -> None:
            peer = self.peers[rank]
            d = peer.spec
            try:
                faults = [f.__dict__ for f in cfg.faults if f.rank == rank]
                info = {
                    "device": d.__dict__, "model": cfg.model, "dataset": cfg.dataset, "data_dir": cfg.data_dir,
                    "seed": cfg.seed, "lr": cfg.lr, "momentum": cfg.momentum, "batch_size": cfg.batch_size,
                    "n_layers": cfg.n_layers, "counts": counts, "non_iid_alpha": cfg.non_iid_alpha,
                    "clock": cfg.clock, "burst_bytes": cfg.burst_bytes, "rate_limit": cfg.rate_limit,
                    "device_timeout_s": cfg.device_timeout_s, "compute": self.compute.type,
                    "timeout_s": cfg.timeout_s, "start_round": start_round, "faults": faults,
                    "profile_fwd_s": cfg.profile_fwd_s, "profile_bwd_s": cfg.profile_bwd_s,
                }
                weights = unit_tensors(model_units(model, range(1, d.cut + 1)))
                self._send(rank, Message(MessageType.CONFIG, SETUP_ROUND, 0, info, weights),
                           cfg.rendezvous_timeout_s)
                trace(f"server: CONFIG sent to {rank}")
            except (PeerLost, ProtocolError) as exc:
                self._drop(rank, SETUP_ROUND, "set-up", exc, None)

        def ready(rank: int) -> None:
            peer = self.peers[rank]
            try:
                msg = expect(self._recv(rank, cfg.rendezvous_timeout_s), MessageType.READY)
                trace(f"server: READY from {rank}")
                peer.info.update(msg.info)
                if "h" in msg.tensors:  # one untimed exchange of real-sized messages warms the link
                    self._send(rank, Message(MessageType.GRADIENT, SETUP_ROUND, 0, {},
                                             {"g": torch.zeros_like(msg.tensors["h"])}), cfg.rendezvous_timeout_s)
            except (PeerLost, ProtocolError) as exc:
                self._drop(rank, SETUP_ROUND, "set-up", exc, None)

        self._parallel(hello, sorted(self.peers))
        try:
            self.compute = choose_compute(cfg.device, torch.cuda.is_available(),
                                          {r: p.info for r, p in self.peers.items() if p.alive})
        except EdgeSplitError as exc:
            for rank in self.alive_ranks():  # tell the devices why, so each stops with one line
                try:
                    self._send(rank, Message(MessageType.ERROR, SETUP_ROUND, 0, {"error": str(exc)}), 5.0)
                except (PeerLost, ProtocolError):
                    pass
            raise
        if self.compute.type != "cpu":
            self.log(f"computing on {self.compute.type} on every rank (--device {cfg.device})")
        model.to(self.compute)
        self._parallel(configure, self.alive_ranks())
        # the server's replicas and their warm-up run while the devices load data and warm up
        trace("server: building replicas")
        self._build_replicas(model)
        trace("server: replicas built")
        self._parallel(ready, self.alive_ranks())

    def _build_replicas(self, model: torch.nn.Module) -> None:
        cfg = self.cfg
        warm_by_cut: dict[int, bool] = {}
        for peer in self.peers.values():
            c = peer.spec.cut
            if c >= cfg.n_layers:
                continue
            peer.replica = server_segment(model, c)
            peer.replica.train()
            peer.opt = make_optimizer(peer.replica, cfg.lr, cfg.momentum)
            if c not in warm_by_cut:  # one untimed pass per distinct cut: first-call costs are not a device's
                warm = copy.deepcopy(peer.replica)
                x = torch.randn(cfg.batch_size, *self._input_shape(), device=self.compute)
                with torch.no_grad():
                    h = model.forward_range(x, 0, c)
                for _ in range(2):
                    server_step(warm, h, torch.zeros(cfg.batch_size, dtype=torch.long, device=self.compute))
                warm_by_cut[c] = True

    def _input_shape(self) -> tuple[int, int, int]:
        from edgesplit.zoo import dataset_shape

        s = dataset_shape(zoo_dataset(self.cfg.dataset))
        return (s.channels, s.size, s.size)

    def _profile_s(self, start: int, end: int, batch: int) -> float | None:
        """Profiled seconds of units ``start+1..end`` (forward and backward) for ``batch`` samples."""
        cfg = self.cfg
        if not cfg.profile_fwd_s:
            return None
        return batch * float(sum(cfg.profile_fwd_s[start:end]) + sum(cfg.profile_bwd_s[start:end]))

    def _own_s(self, start: int, end: int, batch: int) -> float | None:
        """The server's own profile's seconds (per device) of units ``start+1..end``, if it has one."""
        cfg = self.cfg
        if cfg.server_fwd_s is None or cfg.server_bwd_s is None:
            return None
        return batch * float(sum(cfg.server_fwd_s[start:end]) + sum(cfg.server_bwd_s[start:end]))

    # -- one round

    def _serve_round(self, rank: int, r: int, st: _RoundState, t0: float) -> None:
        peer = self.peers[rank]
        d = peer.spec
        L = self.cfg.n_layers
        try:
            st.phase = "round start"
            self._send(rank, Message(MessageType.ROUND_START, r, 0))
            st.phase = "training"
            while True:
                msg = self._recv(rank)
                if msg.round != r:
                    raise ProtocolError(f"{msg.type.name} from rank {rank} for round {msg.round} during round {r}")
                if msg.type == MessageType.ACTIVATIONS:
                    if d.cut >= L:
                        raise ProtocolError(f"ACTIVATIONS from rank {rank}, whose cut {d.cut} = L keeps every layer")
                    h, y = msg.tensors.get("h"), msg.tensors.get("y")
                    if h is None or y is None or h.shape[0] != y.shape[0] or not h.is_floating_point():
                        raise ProtocolError(f"malformed ACTIVATIONS from rank {rank}: need float 'h' and labels 'y'")
                    if peer.opt is not None:
                        peer.opt.zero_grad(set_to_none=True)
                    h, y = h.to(self.compute), y.to(self.compute)
                    nb = int(h.shape[0])
                    with peer.emu.compute(self._profile_s(d.cut, self.cfg.n_layers, nb),
                                          self._own_s(d.cut, self.cfg.n_layers, nb)):
                        loss, _, grad = server_step(peer.replica, h, y.long())
                    if peer.opt is not None:
                        peer.opt.step()
                    st.losses.append(float(loss))
                    self._send(rank, Message(MessageType.GRADIENT, r, msg.seq, {"loss": float(loss)}, {"g": grad}))
                    st.iterations += 1
                elif msg.type == MessageType.PROGRESS:
                    st.iterations = msg.seq + 1
                    if "loss" in msg.info:
                        st.losses.append(float(msg.info["loss"]))
                elif msg.type == MessageType.WEIGHTS_UP:
                    st.upload = units_from_tensors(msg.tensors, self._layout(d.cut), f"rank {rank}")
                    st.t_upload = time.perf_counter()
                    return
                else:
                    expect(msg, MessageType.ACTIVATIONS, MessageType.PROGRESS, MessageType.WEIGHTS_UP)
        except (PeerLost, ProtocolError) as exc:
            self._drop(rank, r, st.phase, exc, t0, st.iterations)

    def _finish_round(self, rank: int, r: int, st: _RoundState, model: torch.nn.Module, t0: float) -> None:
        d = self.peers[rank].spec
        try:
            st.phase = "weights down"
            weights = unit_tensors(model_units(model, range(1, d.cut + 1)))
            self._send(rank, Message(MessageType.WEIGHTS_DOWN, r, 0, {}, weights))
            st.phase = "round done"
            done = expect(self._recv(rank), MessageType.ROUND_DONE, round=r)
            st.t_done = time.perf_counter()
            st.report = dict(done.info)
        except (PeerLost, ProtocolError) as exc:
            self._drop(rank, r, st.phase, exc, t0)

    def _aggregate(self, model: torch.nn.Module, states: dict[int, _RoundState]) -> None:
        L = self.cfg.n_layers
        copies: dict[int, list[tuple[dict[str, torch.Tensor], float]]] = {u: [] for u in range(1, L + 1)}
        for rank, st in sorted(states.items()):
            peer = self.peers[rank]
            w = float(peer.spec.samples)
            assert st.upload is not None
            for u, sd in st.upload.items():
                copies[u].append(({k: v.to(self.compute) for k, v in sd.items()}, w))
            if peer.replica is not None:
                for u, sd in peer.replica.unit_states().items():
                    copies[u].append((sd, w))
        with torch.no_grad():
            load_units(model, average_units(copies))
            for rank in states:  # replicas continue from the new global model
                peer = self.peers[rank]
                if peer.replica is not None:
                    for j, unit in enumerate(peer.replica.units):
                        unit.load_state_dict(model.units[peer.replica.start + j].state_dict())

    def _round(self, model: torch.nn.Module, r: int) -> dict:
        cfg = self.cfg
        ranks = self.alive_ranks()
        states = {rank: _RoundState() for rank in ranks}
        for rank, st in states.items():
            c = self.tr.counters[rank]
            st.sent0, st.recv0 = c.sent_bytes, c.recv_bytes
            self.peers[rank].emu.reset()
        t0 = time.perf_counter()
        self._parallel(lambda rank: self._serve_round(rank, r, states[rank], t0), ranks,
                       sequential=cfg.sequential)
        finished = {rank: st for rank, st in states.items() if st.upload is not None and self.peers[rank].alive}
        if not finished:
            raise EdgeSplitError(f"round {r}: every device dropped; nothing to aggregate")
        ta = time.perf_counter()
        self._aggregate(model, finished)
        agg_s = time.perf_counter() - ta
        self._parallel(lambda rank: self._finish_round(rank, r, finished[rank], model, t0), sorted(finished))
        done = [rank for rank in finished if finished[rank].report is not None]
        t_end = max((finished[rank].t_done for rank in done), default=time.perf_counter())
        measured = t_end - t0
        predicted = cfg.predicted_round_s(ranks)
        corrected = cfg.corrected_round_s(ranks)
        devices = []
        for rank in ranks:
            st = states[rank]
            peer = self.peers[rank]
            c = self.tr.counters[rank]
            rep = st.report or {}
            devices.append({
                "rank": rank,
                "name": peer.spec.name,
                "cut": peer.spec.cut,
                "share": peer.spec.share,
                "status": "ok" if rank in done else "dropped",
                "measured_s": rep.get("busy_s"),
                "predicted_s": peer.spec.predicted_s,
                "bytes_up": c.recv_bytes - st.recv0,
                "bytes_down": c.sent_bytes - st.sent0,
                "predicted_bytes": peer.spec.predicted_bytes,
                "iterations": st.iterations,
                "loss": statistics.fmean(st.losses) if st.losses else None,
                "server_compute_cpu_s": peer.emu.cpu_s,
                "server_compute_wall_s": peer.emu.wall_s,
                "server_late_s": peer.emu.late_s,
                "server_target_s": peer.emu.target_s,
                **{k: rep.get(k) for k in _DEVICE_REPORT_KEYS},
            })
        for dv in devices:
            if dv["measured_s"] is not None and dv["bytes_up"] is not None:
                dv["bytes_total"] = dv["bytes_up"] + dv["bytes_down"]
        losses = [x for rank in done for x in states[rank].losses]
        rel = abs(predicted - measured) / measured if measured > 0 and math.isfinite(predicted) else None
        rel_c = abs(corrected - measured) / measured if measured > 0 and math.isfinite(corrected) else None
        return {
            "round": r,
            "measured_round_s": measured,
            "predicted_round_s": predicted,
            "relative_error": rel,
            "corrected_round_s": corrected,
            "corrected_relative_error": rel_c,
            "aggregation_s": agg_s,
            "train_loss": statistics.fmean(losses) if losses else None,
            "devices": devices,
            "dropped": [e for e in self.dropped if e["round"] == r],
            "n_devices": len(ranks),
            "n_finished": len(done),
        }

    # -- the run

    def run(self) -> dict:
        """Set up the devices, run the rounds (resuming from a checkpoint if asked), shut down."""
        cfg = self.cfg
        torch.set_num_threads(1)
        model = build_model(cfg.model, zoo_dataset(cfg.dataset), seed=cfg.seed)
        if model.n_layers != cfg.n_layers:
            raise EdgeSplitError(f"model: {cfg.model} has {model.n_layers} units, the plan has {cfg.n_layers}")
        self.layout = unit_layout(model, range(1, cfg.n_layers + 1))
        start = 1
        resumed_from = None
        if cfg.resume and cfg.checkpoint_dir:
            ck = load_checkpoint(cfg.checkpoint_dir, cfg)
            if ck is not None:
                if ck.get("note"):
                    self.log(ck["note"])
                model.load_state_dict(ck["model"])
                self.records = list(ck["records"])
                self.dropped = list(ck.get("dropped", []))
                start = int(ck["round"]) + 1
                resumed_from = int(ck["round"])
                self.log(f"resuming after round {resumed_from} from {ck['path']}")
            else:
                self.log(f"no checkpoint in {cfg.checkpoint_dir}: starting at round 1")
        self._setup(model, start)
        if not self.alive_ranks():
            first = self.dropped[0] if self.dropped else {"rank": "?", "reason": "?"}
            raise EdgeSplitError(f"every device dropped during set-up (rank {first['rank']}: {first['reason']})")
        for r in range(start, cfg.rounds + 1):
            if not self.alive_ranks():
                raise EdgeSplitError(f"round {r}: no device left")
            rec = self._round(model, r)
            self.records.append(rec)
            self.log(f"round {r}: measured {rec['measured_round_s']:.3f} s, predicted "
                     f"{rec['predicted_round_s']:.3f} s, {rec['n_finished']}/{rec['n_devices']} devices")
            if cfg.checkpoint_dir:
                save_checkpoint(cfg.checkpoint_dir, {
                    "round": r, "model": model.state_dict(), "records": self.records,
                    "dropped": self.dropped, "config": cfg.to_dict(),
                })
        for rank in self.alive_ranks():
            try:
                self._send(rank, Message(MessageType.SHUTDOWN, cfg.rounds, 0), timeout=5.0)
            except (PeerLost, ProtocolError):
                pass
        return self.result(resumed_from)

    def result(self, resumed_from: int | None) -> dict:
        """The run's records as one JSON-ready object."""
        recs = self.records
        errs = [r["relative_error"] for r in recs if r.get("relative_error") is not None]
        errs_c = [r["corrected_relative_error"] for r in recs if r.get("corrected_relative_error") is not None]
        return {
            "run_id": f"{self.cfg.run_id:#x}",
            "rounds": [r["round"] for r in recs],
            "measured_round_s": [r["measured_round_s"] for r in recs],
            "predicted_round_s": [r["predicted_round_s"] for r in recs],
            "relative_error": [r["relative_error"] for r in recs],
            "median_relative_error": statistics.median(errs) if errs else None,
            "corrected_round_s": [r.get("corrected_round_s") for r in recs],
            "corrected_median_relative_error": statistics.median(errs_c) if errs_c else None,
            "records": recs,
            "dropped": self.dropped,
            "resumed_from_round": resumed_from,
            "checkpoint_dir": self.cfg.checkpoint_dir,
            "peers": {str(r): p.info for r, p in self.peers.items()},
        }
