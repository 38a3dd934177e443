"""The device side (ranks 1..N) of a cluster run: a device trains its client segment on its own data
shard and talks only to the server (rank 0).

A device needs nothing but the server's address: its cut, share, rate, speed, data split and the
initial weights of its units come in ``CONFIG``. Per iteration it runs its units, sends the cut
activations, receives the cut gradient and steps (a device with cut ``L`` trains alone and sends
``PROGRESS``); at the end of the round it uploads its units and loads the averaged ones.

It pays its link (a token bucket of ``share * rate_bps``) for every byte it sends or receives and
stretches its compute to ``1/speed`` (:mod:`edgesplit.distributed.emulation`), and reports its
own busy time (round start to the end of its upload, plus its download; the wait at the
aggregation barrier is not its own work) in ``ROUND_DONE``.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import socket
import statistics
import time

import torch
import torch.nn.functional as F

from edgesplit.distributed.common import (
    SETUP_ROUND,
    Log,
    load_train_data,
    make_optimizer,
    stderr_log,
    trace,
    unit_layout,
    unit_tensors,
    units_from_tensors,
    zoo_dataset,
)
from edgesplit.distributed.config import DeviceSpec, Fault
from edgesplit.distributed.emulation import ComputeEmulator
from edgesplit.distributed.protocol import Message, MessageType, PeerReportedError, ProtocolError, expect
from edgesplit.distributed.ratelimit import TokenBucket
from edgesplit.distributed.transport import PeerLost, Transport
from edgesplit.engine import DeviceStream, client_segment, load_units
from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import build_model


class ClusterDevice:
    """A device rank: trains its client segment on its shard, talks only to the server (rank 0)."""

    def __init__(self, transport: Transport, data_dir: str | None = None, log: Log | None = None) -> None:
        self.tr = transport
        self.rank = transport.rank
        self.data_dir_override = data_dir
        self.log = log or stderr_log(f"device {transport.rank}")
        self.timeout = 120.0
        self.compute = torch.device("cpu")  # set by CONFIG (--device)

    # -- link

    def _send(self, msg: Message) -> None:
        """Pay the link for the message, then send it."""
        self.tr.send(0, msg, self.timeout, pay=self.bucket.consume)

    def _recv(self) -> Message:
        msg = self.tr.recv(0, self.timeout)
        self.bucket.consume(msg.nbytes)
        return msg

    # -- set-up

    def _load_data(self, info: dict) -> None:
        from edgesplit.datasets import normalize, split_indices

        counts = [int(c) for c in info["counts"]]
        data_dir = self.data_dir_override or info.get("data_dir")
        train = load_train_data(info["dataset"], data_dir, int(info["seed"]), sum(counts))
        idx = split_indices(train.y, counts, info.get("non_iid_alpha"), seed=int(info["seed"]))[self.rank - 1]
        shard = train.subset(idx)
        x, y = shard.tensors()
        x = normalize(x, shard.mean, shard.std) if x.dtype == torch.uint8 else x.float()
        self.x = x.to(self.compute)
        self.y = y.long().to(self.compute)
        self.stream = DeviceStream(len(self.y), [int(info["seed"]), self.rank - 1])
        # a resumed run continues each device's data order where the completed rounds left it
        k = math.ceil(len(self.y) / self.batch_size)
        for _ in range((int(info.get("start_round", 1)) - 1) * k):
            self.stream.next_indices(self.batch_size)

    def _setup(self) -> None:
        self.bucket = TokenBucket(float("inf"))  # set-up messages are not timed
        trace("device: connected")
        cuda = torch.cuda.is_available()
        self._send(Message(MessageType.HELLO, SETUP_ROUND, 0, {
            "cuda": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "pid": os.getpid(), "host": socket.gethostname(), "torch": torch.__version__}))
        cfg = expect(self._recv(), MessageType.CONFIG)
        trace("device: CONFIG received")
        info = cfg.info
        d = DeviceSpec(**info["device"])
        if d.rank != self.rank:
            raise ProtocolError(f"CONFIG for rank {d.rank} reached rank {self.rank}")
        self.spec = d
        self.info = info
        self.timeout = float(info["device_timeout_s"])
        self.batch_size = int(info["batch_size"])
        self.L = int(info["n_layers"])
        self.faults = [Fault(**f) for f in info.get("faults", [])]
        model = build_model(info["model"], zoo_dataset(info["dataset"]), seed=int(info["seed"]))
        if model.n_layers != self.L:
            raise EdgeSplitError(f"model: {info['model']} has {model.n_layers} units here, the server says {self.L}")
        trace("device: build_model done")
        states = units_from_tensors(cfg.tensors, unit_layout(model, range(1, d.cut + 1)), "the server")
        load_units(model, states)
        trace("device: weights loaded")
        self._layout = unit_layout(model, range(1, d.cut + 1))
        self.compute = torch.device(str(info.get("compute", "cpu")))
        self.client = client_segment(model, d.cut).to(self.compute)
        self.client.train()
        self.opt = make_optimizer(self.client, float(info["lr"]), float(info["momentum"]))
        trace("device: model built")
        self._load_data(info)
        trace("device: data loaded")
        self._warm_up()
        trace("device: warmed up")
        self.emu = ComputeEmulator(d.speed, str(info["clock"]), sync=self._sync)
        fwd = [float(v) for v in info.get("profile_fwd_s") or []]
        bwd = [float(v) for v in info.get("profile_bwd_s") or []]
        c = d.cut
        self._fwd_per_sample = sum(fwd[:c]) if fwd else None
        self._bwd_per_sample = sum(bwd[:c]) if bwd else None
        # the device's own per-layer profile, if it has one: emulated layer by layer (not by speed)
        self._own_fwd = sum(d.fwd_s[:c]) if d.fwd_s is not None else None
        self._own_bwd = sum(d.bwd_s[:c]) if d.bwd_s is not None else None
        rate = d.link_bytes_per_s if info.get("rate_limit", True) else float("inf")
        self.bucket = TokenBucket(rate, float(info["burst_bytes"]))
        ready = Message(MessageType.READY, SETUP_ROUND, 0, {"samples": len(self.y)})
        if d.cut < self.L:  # one untimed exchange of real-sized messages warms the link
            ready.tensors["h"] = torch.zeros(self._act_shape)
        self.tr.send(0, ready, self.timeout)
        if d.cut < self.L:
            expect(self.tr.recv(0, self.timeout), MessageType.GRADIENT)

    def _sync(self) -> None:
        """Wait for queued GPU work, so that a compute block's times are real (no-op on CPU)."""
        if self.compute.type == "cuda":
            torch.cuda.synchronize(self.compute)

    def _warm_up(self) -> None:
        """Untimed passes on a copy: first-call costs (allocations, kernel selection) are not the device's speed."""
        warm = copy.deepcopy(self.client)
        x = self.x[: self.batch_size]
        y = self.y[: self.batch_size]
        for _ in range(2):
            out = warm(x)
            self._act_shape = tuple(out.shape)
            if self.spec.cut >= self.L:
                F.cross_entropy(out, y).backward()
            elif out.requires_grad:
                out.backward(torch.ones_like(out))

    # -- faults

    def _maybe_fault(self, r: int, k: int) -> None:
        for f in self.faults:
            if f.round == r and f.iteration == k:
                self.log(f"fault injection: {f.action} at round {r}, iteration {k}")
                if f.action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif f.action == "exit":
                    os._exit(17)
                else:  # hang: stay alive, say nothing
                    while True:
                        time.sleep(3600)

    # -- one round

    def _round(self, start: Message) -> None:
        r = start.round
        t0 = time.perf_counter()
        self.emu.reset()
        paid0, waited0 = self.bucket.bytes_paid, self.bucket.waited_s
        losses: list[float] = []
        n = len(self.y)
        k_iters = math.ceil(n / self.batch_size)
        for k in range(k_iters):
            self._maybe_fault(r, k)
            idx = torch.from_numpy(self.stream.next_indices(self.batch_size))
            x, y = self.x[idx], self.y[idx]
            if self.opt is not None:
                self.opt.zero_grad(set_to_none=True)
            nb = int(y.shape[0])
            fwd_s = None if self._fwd_per_sample is None else nb * self._fwd_per_sample
            bwd_s = None if self._bwd_per_sample is None else nb * self._bwd_per_sample
            own_f = None if self._own_fwd is None else nb * self._own_fwd
            own_b = None if self._own_bwd is None else nb * self._own_bwd
            if self.spec.cut >= self.L:
                with self.emu.compute(None if fwd_s is None else fwd_s + bwd_s,
                                      None if own_f is None else own_f + own_b):
                    loss = F.cross_entropy(self.client(x), y)
                    loss.backward()
                if self.opt is not None:
                    self.opt.step()
                lv = float(loss.detach())
                losses.append(lv)
                self._send(Message(MessageType.PROGRESS, r, k, {"loss": lv}))
                continue
            with self.emu.compute(fwd_s, own_f):
                h = self.client(x)
            self._send(Message(MessageType.ACTIVATIONS, r, k, {}, {"h": h.detach(), "y": y}))
            g = expect(self._recv(), MessageType.GRADIENT, round=r)
            if g.seq != k or "g" not in g.tensors or g.tensors["g"].shape != h.shape:
                raise ProtocolError(f"malformed GRADIENT for iteration {k} (seq {g.seq}) from the server")
            losses.append(float(g.info.get("loss", math.nan)))
            if h.requires_grad:
                with self.emu.compute(bwd_s, own_b):
                    h.backward(g.tensors["g"].to(self.compute))
            if self.opt is not None:
                self.opt.step()
        states = self.client.unit_states()
        self._send(Message(MessageType.WEIGHTS_UP, r, k_iters, {"samples": n}, unit_tensors(states)))
        t_up = time.perf_counter()
        msg = self.tr.recv(0, self.timeout)
        t_arrived = time.perf_counter()
        expect(msg, MessageType.WEIGHTS_DOWN, round=r)
        self.bucket.consume(msg.nbytes)
        new = units_from_tensors(msg.tensors, self._layout, "the server")
        with torch.no_grad():
            for j, unit in enumerate(self.client.units):
                unit.load_state_dict(new[j + 1])
        t_done = time.perf_counter()
        report = {
            "busy_s": (t_up - t0) + (t_done - t_arrived),
            "upload_done_s": t_up - t0,
            "barrier_wait_s": t_arrived - t_up,
            "download_s": t_done - t_arrived,
            "compute_cpu_s": self.emu.cpu_s,
            "compute_target_s": self.emu.target_s,
            "compute_wall_s": self.emu.wall_s,
            "emulated_wait_s": self.emu.waited_s,
            "late_s": self.emu.late_s,
            "link_wait_s": self.bucket.waited_s - waited0,
            "link_bytes_paid": self.bucket.bytes_paid - paid0,
            "loss": statistics.fmean(losses) if losses else None,
            "iterations": k_iters,
        }
        self._send(Message(MessageType.ROUND_DONE, r, 0, report))

    def run(self) -> int:
        """Set up, then serve rounds until SHUTDOWN. Returns the process exit code."""
        torch.set_num_threads(1)
        try:
            self._setup()
        except EdgeSplitError as exc:
            # tell the server why (a missing dataset, say), then stop; not when the server is the one stopping
            if not isinstance(exc, (PeerLost, PeerReportedError)):
                try:
                    self.tr.send(0, Message(MessageType.ERROR, SETUP_ROUND, 0, {"error": str(exc)}), 10.0)
                except EdgeSplitError:
                    pass
            raise
        while True:
            msg = self._recv()
            if msg.type == MessageType.SHUTDOWN:
                return 0
            expect(msg, MessageType.ROUND_START, MessageType.SHUTDOWN)
            self._round(msg)
