"""Transport: rendezvous through a ``torch.distributed`` TCPStore, messages over gloo point-to-point.

Rendezvous
    Rank 0 (the server) hosts a :class:`torch.distributed.TCPStore` on ``MASTER_ADDR:MASTER_PORT``
    and publishes the run id, the protocol version and the world size under ``edgesplit/``. A
    device reads them first: a different run id (when the device was given one), version or
    world size makes it write ``edgesplit/reject/<rank>`` with the reason and stop with
    :class:`RunMismatchError`; otherwise it writes ``edgesplit/join/<rank>``. The server waits
    for every join and fails at once, naming the rank and the reason, when it sees a rejection.
    Then all ranks build a gloo process group on a store prefixed by the run id, so two runs on
    one store can never mix.

Messages
    :mod:`edgesplit.distributed.protocol` frames each message as a header tensor and a body
    tensor, sent with ``isend`` and received with ``irecv`` on two tags. Gloo reports a peer that
    died (its sockets closed) at once ("Connection closed by peer") and the other links of the
    process group keep working, which is what lets the server finish a round without it.

    Gloo's own timeouts are *not* used: a send or receive that times out inside gloo closes every
    pair of the process ("Application timeout caused pair closure"), so one silent device would
    take the whole run down. Instead the process group's timeout is effectively infinite and each
    wait runs on a per-peer waiter thread while the caller waits on an event with its deadline.
    Past the deadline the peer is declared lost, its pending operation is abandoned (its buffers are
    kept alive) and it is never talked to again. Processes therefore end with ``os._exit`` once
    their result is written, so that an abandoned waiter cannot hold up the exit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from edgesplit.distributed.protocol import (
    HEADER_LEN,
    VERSION,
    Message,
    ProtocolError,
    RunMismatchError,
    decode_body,
    decode_header,
    encode,
)
from edgesplit.errors import EdgeSplitError

TAG_HEADER = 11
TAG_BODY = 12
_KEY = "edgesplit"
#: gloo's own timeout: long enough never to fire (a gloo timeout poisons every link; see above)
GLOO_TIMEOUT_S = 7 * 24 * 3600.0


class PeerLost(EdgeSplitError):
    """A peer died, closed its link or stayed silent past the timeout."""

    def __init__(self, rank: int, reason: str, timed_out: bool = False) -> None:
        super().__init__(f"rank {rank}: {reason}")
        self.rank = rank
        self.reason = reason
        self.timed_out = timed_out


@dataclass
class LinkCounters:
    """Bytes and messages over one peer link, seen from this process."""

    sent_bytes: int = 0
    recv_bytes: int = 0
    sent_msgs: int = 0
    recv_msgs: int = 0


def _td(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=max(0.001, float(seconds)))


class _Waiter:
    """A daemon thread that waits on gloo work items for one peer, one job at a time."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            works, box, done = self.jobs.get()
            try:
                for w in works:
                    w.wait()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box.append(exc)
            finally:
                done.set()

    def wait(self, works: list[Any], timeout_s: float) -> BaseException | None:
        """Wait for ``works``; return their error, or raise :class:`TimeoutError` past the deadline."""
        box: list[BaseException] = []
        done = threading.Event()
        self.jobs.put((works, box, done))
        if not done.wait(max(0.0, timeout_s)):
            raise TimeoutError
        return box[0] if box else None


@dataclass
class Transport:
    """Framed, checked messages between this rank and its peers over the default gloo group."""

    rank: int
    world_size: int
    run_id: int
    store: dist.Store | None = None
    counters: dict[int, LinkCounters] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._send_locks = {r: threading.Lock() for r in range(self.world_size)}
        self._recv_locks = {r: threading.Lock() for r in range(self.world_size)}
        self._send_waiters: dict[int, _Waiter] = {}
        self._recv_waiters: dict[int, _Waiter] = {}
        self._dead: dict[int, str] = {}
        self._abandoned: list[Any] = []  # buffers of operations left pending on lost peers
        self.counters = {r: LinkCounters() for r in range(self.world_size) if r != self.rank}

    @property
    def abandoned(self) -> int:
        """How many operations were left pending on silent peers (the process should ``os._exit``)."""
        return len(self._abandoned)

    def _check_peer(self, peer: int) -> None:
        if not (0 <= peer < self.world_size) or peer == self.rank:
            raise EdgeSplitError(f"peer: rank {peer} is not another rank of 0..{self.world_size - 1}")
        if peer in self._dead:
            raise PeerLost(peer, f"already lost ({self._dead[peer]})")

    def _waiter(self, table: dict[int, _Waiter], peer: int, kind: str) -> _Waiter:
        if peer not in table:
            table[peer] = _Waiter(f"gloo-{kind}-{peer}")
        return table[peer]

    def _wait(self, peer: int, works: list[Any], keep: list[torch.Tensor], timeout_s: float, what: str,
              kind: str) -> None:
        table = self._send_waiters if kind == "send" else self._recv_waiters
        try:
            err = self._waiter(table, peer, kind).wait(works, timeout_s)
        except TimeoutError:
            self._abandoned.append((works, keep))
            reason = f"no {what} within {timeout_s:g} s"
            self._dead[peer] = reason
            raise PeerLost(peer, reason, timed_out=True) from None
        if err is not None:
            text = str(err).strip()
            if "closed by peer" in text.lower() or "connection reset" in text.lower():
                detail = "connection closed by the peer (its process died or left)"
            else:
                detail = (text.splitlines()[0] if text else type(err).__name__)[:200]
            reason = f"{what} failed: {detail}"
            self._dead[peer] = reason
            raise PeerLost(peer, reason) from None

    def send(self, peer: int, msg: Message, timeout_s: float,
             pay: Callable[[int], float] | None = None) -> int:
        """Send ``msg`` to ``peer``; return the bytes on the wire. ``pay(nbytes)`` runs after
        framing and before sending (a rate limiter). The send completes when the peer has taken
        the message; raises :class:`PeerLost` if it died or did not take it within ``timeout_s``."""
        self._check_peer(peer)
        header, body = encode(msg, self.run_id, self.rank)
        if pay is not None:
            pay(msg.nbytes)
        with self._send_locks[peer]:
            self._check_peer(peer)
            w1 = dist.isend(header, dst=peer, tag=TAG_HEADER)
            w2 = dist.isend(body, dst=peer, tag=TAG_BODY)
            self._wait(peer, [w1, w2], [header, body], timeout_s, f"send of {msg.type.name}", "send")
        c = self.counters[peer]
        c.sent_bytes += msg.nbytes
        c.sent_msgs += 1
        return msg.nbytes

    def recv(self, peer: int, timeout_s: float) -> Message:
        """Receive the next message from ``peer`` within ``timeout_s`` seconds.

        Raises :class:`PeerLost` (dead or silent peer) or :class:`ProtocolError` (malformed
        message, peer of another run); after either the peer is not talked to again.
        """
        self._check_peer(peer)
        deadline = time.monotonic() + timeout_s
        with self._recv_locks[peer]:
            self._check_peer(peer)
            header = torch.zeros(HEADER_LEN, dtype=torch.int64)
            w = dist.irecv(header, src=peer, tag=TAG_HEADER)
            self._wait(peer, [w], [header], timeout_s, "message", "recv")
            try:
                h = decode_header(header, self.run_id, peer)
            except ProtocolError as exc:
                self._dead[peer] = str(exc)
                raise
            body = torch.empty(h.body_len, dtype=torch.uint8)
            w = dist.irecv(body, src=peer, tag=TAG_BODY)
            # the body follows its header at once: a short grace even if the deadline is near
            rest = max(deadline - time.monotonic(), 5.0)
            self._wait(peer, [w], [body], rest, f"body of a {h.type.name} message", "recv")
            try:
                msg = decode_body(h, body, peer)
            except ProtocolError as exc:
                self._dead[peer] = str(exc)
                raise
        c = self.counters[peer]
        c.recv_bytes += msg.nbytes
        c.recv_msgs += 1
        return msg

    def mark_lost(self, peer: int, reason: str) -> None:
        """Record that ``peer`` is gone; later sends and receives to it raise at once."""
        self._dead.setdefault(peer, reason)

    def close(self) -> None:
        """Leave the process group (best effort: peers may already be gone)."""
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
            pass


# ----------------------------------------------------------------------------- rendezvous


@dataclass
class Endpoint:
    """Where and who: the store address, this rank, the world size (MASTER_ADDR/PORT, RANK, WORLD_SIZE)."""

    master_addr: str
    master_port: int
    rank: int
    world_size: int


def endpoint_from_env(environ: dict[str, str] | None = None) -> Endpoint:
    """Read ``MASTER_ADDR`` (default 127.0.0.1), ``MASTER_PORT`` (default 29500), ``RANK`` and
    ``WORLD_SIZE`` (both required). Raises naming the variable that is missing or bad."""
    env = os.environ if environ is None else environ
    out = {}
    for key, default in (("MASTER_PORT", "29500"), ("RANK", None), ("WORLD_SIZE", None)):
        raw = env.get(key, default)
        if raw is None:
            raise EdgeSplitError(f"{key}: environment variable not set")
        try:
            out[key] = int(raw)
        except ValueError:
            raise EdgeSplitError(f"{key}: expected an integer, got {raw!r}") from None
    if not 0 < out["MASTER_PORT"] < 65536:
        raise EdgeSplitError(f"MASTER_PORT: must lie in 1..65535, got {out['MASTER_PORT']}")
    if out["WORLD_SIZE"] < 2:
        raise EdgeSplitError(f"WORLD_SIZE: need a server and at least one device (>= 2), got {out['WORLD_SIZE']}")
    if not 0 <= out["RANK"] < out["WORLD_SIZE"]:
        raise EdgeSplitError(f"RANK: must lie in 0..WORLD_SIZE-1 = {out['WORLD_SIZE'] - 1}, got {out['RANK']}")
    return Endpoint(env.get("MASTER_ADDR", "127.0.0.1"), out["MASTER_PORT"], out["RANK"], out["WORLD_SIZE"])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (prefer ``port=0`` with a port file where possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _set_json(store: dist.Store, key: str, value: object) -> None:
    store.set(f"{_KEY}/{key}", json.dumps(value))


def _get_json(store: dist.Store, key: str) -> object:
    return json.loads(store.get(f"{_KEY}/{key}").decode())


def serve_rendezvous(ep: Endpoint, run_id: int, timeout_s: float,
                     port_file: str | None = None) -> tuple[dist.TCPStore, int]:
    """Rank 0: host the store (``master_port = 0`` picks a free port, written to ``port_file``)
    and publish the run. Returns the store and its port."""
    store = dist.TCPStore(ep.master_addr if ep.master_addr not in ("", "localhost") else "127.0.0.1",
                          ep.master_port, ep.world_size, True, timeout=_td(timeout_s),
                          wait_for_workers=False)
    port = int(store.port)
    _set_json(store, "version", VERSION)
    _set_json(store, "world_size", ep.world_size)
    _set_json(store, "run_id", f"{run_id:#x}")
    if port_file:
        tmp = f"{port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, port_file)
    return store, port


def await_joins(store: dist.Store, world_size: int, timeout_s: float) -> dict[int, dict]:
    """Rank 0: wait until every device rank joined; raise on a rejection or at the timeout."""
    deadline = time.monotonic() + timeout_s
    joined: dict[int, dict] = {}
    while True:
        for r in range(1, world_size):
            if r not in joined and store.check([f"{_KEY}/join/{r}"]):
                joined[r] = dict(_get_json(store, f"join/{r}"))  # type: ignore[arg-type]
            if store.check([f"{_KEY}/reject/{r}"]):
                reason = _get_json(store, f"reject/{r}")
                raise RunMismatchError(f"rendezvous: rank {r} was rejected: {reason}")
        if len(joined) == world_size - 1:
            return joined
        if time.monotonic() > deadline:
            missing = [r for r in range(1, world_size) if r not in joined]
            raise PeerLost(missing[0], f"rendezvous: ranks {missing} did not join within {timeout_s:g} s",
                           timed_out=True)
        time.sleep(0.02)


def join_rendezvous(ep: Endpoint, run_id: int | None, timeout_s: float,
                    port_file: str | None = None) -> tuple[dist.TCPStore, int]:
    """A device: connect to the store (waiting for ``port_file`` if given), check the run id,
    protocol version and world size, and join. Returns the store and the server's run id."""
    port = ep.master_port
    deadline = time.monotonic() + timeout_s
    if port_file:
        while not os.path.exists(port_file):
            if time.monotonic() > deadline:
                raise PeerLost(0, f"rendezvous: the server did not publish its port in {timeout_s:g} s",
                               timed_out=True)
            time.sleep(0.02)
        with open(port_file) as fh:
            port = int(fh.read().strip())
    try:
        store = dist.TCPStore(ep.master_addr, port, ep.world_size, False, timeout=_td(timeout_s))
    except (RuntimeError, TimeoutError) as exc:
        raise PeerLost(0, f"rendezvous: cannot reach the server's store at {ep.master_addr}:{port} ({exc})",
                       timed_out=True) from None
    version = _get_json(store, "version")
    world = _get_json(store, "world_size")
    server_run = int(str(_get_json(store, "run_id")), 16)
    reason = None
    if version != VERSION:
        reason = f"the server speaks protocol version {version}, this device version {VERSION}"
    elif world != ep.world_size:
        reason = f"the server expects WORLD_SIZE={world}, this device was started with {ep.world_size}"
    elif run_id is not None and run_id != server_run:
        reason = f"this device belongs to run {run_id:#x} but the server runs {server_run:#x}"
    if reason is not None:
        _set_json(store, f"reject/{ep.rank}", reason)
        raise RunMismatchError(f"rendezvous rejected: {reason}")
    _set_json(store, f"join/{ep.rank}", {"pid": os.getpid(), "host": socket.gethostname()})
    return store, server_run


def init_group(store: dist.Store, ep: Endpoint, run_id: int, timeout_s: float) -> Transport:
    """Build the gloo process group on a run-prefixed store and return the transport. Gloo's
    own timeout is :data:`GLOO_TIMEOUT_S`; building the group is bounded by ``timeout_s`` here."""
    prefixed = dist.PrefixStore(f"{_KEY}/{run_id:x}/pg", store)
    box: list[BaseException] = []

    def build() -> None:
        try:
            dist.init_process_group("gloo", store=prefixed, rank=ep.rank, world_size=ep.world_size,
                                    timeout=_td(GLOO_TIMEOUT_S))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)

    t = threading.Thread(target=build, name="gloo-init", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise PeerLost(0 if ep.rank else 1, f"rendezvous: the gloo process group was not complete within "
                       f"{timeout_s:g} s (a rank died while joining?)", timed_out=True)
    if box:
        raise PeerLost(0 if ep.rank else 1, f"rendezvous: building the gloo process group failed: {box[0]}")
    return Transport(rank=ep.rank, world_size=ep.world_size, run_id=run_id, store=store)
