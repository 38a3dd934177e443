"""Transport: an authenticated rendezvous on a TCPStore, authenticated messages over gloo point-to-point.

Rendezvous (every step authenticated with the run's shared secret, :mod:`~edgesplit.distributed.auth`)
    Rank 0 (the server) hosts a :class:`torch.distributed.TCPStore` on a socket it binds itself:
    on ``127.0.0.1`` for a local run, on ``MASTER_ADDR`` (or ``EDGESPLIT_BIND_ADDR``) across hosts.
    It publishes under ``edgesplit/`` the protocol version, the world size, the run id and a fresh
    *server nonce*, with their MAC. A device checks that MAC (is this a server holding the
    secret?), then files a join request ``attempt/<rank>/<n>``: a fresh *device nonce* and the MAC
    of run id, rank and both nonces, or an authenticated rejection (another run id, version or
    world size). The server answers each request in ``verdict/<rank>/<n>``: admitted (with its own
    MAC, which the device checks) or refused. A request that fails authentication is refused with
    one line on both sides and does not disturb the run; a second request for a rank that already
    joined is refused; an authenticated rejection fails the run at once, naming the rank and why.
    The store holds nothing secret: run id, nonces and MACs are public.

    Then all ranks build a gloo process group (its own store prefix per run and server nonce) and
    every link gets its own HMAC key from the secret and both nonces (:func:`auth.link_key`).

Messages
    :mod:`edgesplit.distributed.protocol` frames each message as a header tensor and a body
    tensor, authenticated and numbered per link, sent and received on two tags. Gloo reports a
    peer that died (its sockets closed) at once ("Connection closed by peer") and the other links
    of the process group keep working, which is what lets the server finish a round without it.

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
import errno
import ipaddress
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

from edgesplit.distributed import auth
from edgesplit.distributed.auth import AuthError
from edgesplit.distributed.protocol import (
    HEADER_LEN,
    VERSION,
    LinkAuth,
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
    pg: Any
    links: dict[int, LinkAuth]
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
        with self._send_locks[peer]:
            header, body = encode(msg, self.run_id, self.rank, peer, self._link(peer))
            if pay is not None:
                pay(msg.nbytes)
            self._check_peer(peer)
            w1 = self.pg.send([header], peer, TAG_HEADER)
            w2 = self.pg.send([body], peer, TAG_BODY)
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
            w = self.pg.recv([header], peer, TAG_HEADER)
            self._wait(peer, [w], [header], timeout_s, "message", "recv")
            link = self._link(peer)
            try:
                h = decode_header(header, self.run_id, peer, self.rank, link)
            except ProtocolError as exc:
                self._dead[peer] = str(exc)
                raise
            body = torch.empty(h.body_len, dtype=torch.uint8)
            w = self.pg.recv([body], peer, TAG_BODY)
            # the body follows its header at once: a short grace even if the deadline is near
            rest = max(deadline - time.monotonic(), 5.0)
            self._wait(peer, [w], [body], rest, f"body of a {h.type.name} message", "recv")
            try:
                msg = decode_body(h, body, peer, link)
            except ProtocolError as exc:
                self._dead[peer] = str(exc)
                raise
        c = self.counters[peer]
        c.recv_bytes += msg.nbytes
        c.recv_msgs += 1
        return msg

    def _link(self, peer: int) -> LinkAuth:
        link = self.links.get(peer)
        if link is None:
            raise AuthError(f"rank {peer}: no authenticated link to it (it did not join through the rendezvous)")
        return link

    def mark_lost(self, peer: int, reason: str) -> None:
        """Record that ``peer`` is gone; later sends and receives to it raise at once."""
        self._dead.setdefault(peer, reason)

    def close(self) -> None:
        """Forget the process group (its sockets close when the process ends; peers may be gone)."""
        self.pg = None


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


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback (``127.x``, ``::1`` or ``localhost``)."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` only (``port`` 0: any free port). Raises one-line
    :class:`EdgeSplitError` for a port in use or an address that is not this host's."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise EdgeSplitError(f"MASTER_ADDR: cannot resolve {host!r} ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not SO_REUSEPORT: a live listener still wins
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise EdgeSplitError(f"MASTER_PORT: port {port} on {host} is already in use (another run or program); "
                                 "choose another MASTER_PORT") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise EdgeSplitError(f"MASTER_ADDR: {host} is not an address of this host; run the server (RANK=0) "
                                 "on that host, or set EDGESPLIT_BIND_ADDR to one of this host's addresses") from None
        raise EdgeSplitError(f"MASTER_PORT: cannot listen on {host}:{port} ({exc.strerror})") from None
    return sock


def _set_json(store: dist.Store, key: str, value: object) -> None:
    store.set(f"{_KEY}/{key}", json.dumps(value))


def _get_json(store: dist.Store, key: str) -> Any:
    return json.loads(store.get(f"{_KEY}/{key}").decode())


@dataclass
class Rendezvous:
    """The server's side of the rendezvous: its store, its port and this run's public nonce."""

    store: dist.TCPStore
    port: int
    run_id: int
    world_size: int
    server_nonce: str
    secret: bytes = field(repr=False)


def serve_rendezvous(ep: Endpoint, run_id: int, timeout_s: float, secret: bytes, port_file: str | None = None,
                     bind_addr: str | None = None) -> Rendezvous:
    """Rank 0: host the store on ``bind_addr`` (default ``ep.master_addr``; ``master_port = 0``
    picks a free port, written to ``port_file``) and publish the run with its MAC."""
    host = bind_addr or ep.master_addr or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    sock = listen_socket(host, ep.master_port)
    port = int(sock.getsockname()[1])
    try:
        store = dist.TCPStore(host, port, ep.world_size, True, timeout=_td(timeout_s), wait_for_workers=False,
                              master_listen_fd=sock.fileno())
    except (RuntimeError, ValueError) as exc:
        sock.close()
        raise EdgeSplitError(f"MASTER_PORT: cannot start the rendezvous store on {host}:{port} ({exc})") from None
    sock.detach()  # the store owns the listening socket now
    nonce = auth.new_nonce()
    _set_json(store, "version", VERSION)
    _set_json(store, "world_size", ep.world_size)
    _set_json(store, "run_id", f"{run_id:#x}")
    _set_json(store, "server_nonce", nonce)
    _set_json(store, "server_mac", auth.mac(secret, "announce", VERSION, f"{run_id:#x}", ep.world_size, nonce))
    if port_file:
        tmp = f"{port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, port_file)
    return Rendezvous(store, port, run_id, ep.world_size, nonce, secret)


def _printable(value: object, limit: int) -> str:
    """``value`` as one short line (what a peer claims about itself is not trusted)."""
    return "".join(c if c.isprintable() else "?" for c in str(value))[:limit]


def _log_stderr(msg: str) -> None:
    import sys

    print(f"[server] {msg}", file=sys.stderr, flush=True)


def await_joins(rdv: Rendezvous, timeout_s: float, log: Callable[[str], None] | None = None) -> dict[int, dict]:
    """Rank 0: answer join requests until every device rank is admitted; return ``{rank: request}``
    (each with its ``nonce``). A request that fails authentication is refused (one line in
    ``log``) and the wait goes on; an authenticated rejection raises :class:`RunMismatchError` at
    once; past ``timeout_s`` :class:`PeerLost` names the missing ranks and the refusals."""
    log = log or _log_stderr
    store, rid = rdv.store, f"{rdv.run_id:#x}"
    deadline = time.monotonic() + timeout_s
    joined: dict[int, dict] = {}
    seen = {r: 0 for r in range(1, rdv.world_size)}
    refused: list[str] = []
    while True:
        for r in range(1, rdv.world_size):
            try:
                n = int(store.add(f"{_KEY}/attempts/{r}", 0))
            except (RuntimeError, ValueError):
                raise EdgeSplitError(f"rendezvous: the store was tampered with ({_KEY}/attempts/{r} is no longer a "
                                     "counter): someone who can reach MASTER_PORT interfered; see the threat model in "
                                     "docs/distributed.md") from None
            while seen[r] < n:
                i = seen[r] + 1
                key = f"attempt/{r}/{i}"
                if not store.check([f"{_KEY}/{key}"]):
                    break  # counted but not written yet: look again on the next pass
                seen[r] = i
                try:
                    req = _get_json(store, key)
                    if not isinstance(req, dict):
                        raise ValueError
                except ValueError:
                    req = {}
                who = f"a peer claiming rank {r} (host {_printable(req.get('host'), 64)}, " \
                      f"pid {_printable(req.get('pid'), 16)})"
                reject = req.get("reject")
                if not auth.verify(rdv.secret, req.get("mac"), "join", rid, r, rdv.server_nonce,
                                   req.get("nonce"), reject or ""):
                    why = "authentication failed (its join request does not carry this run's HMAC: wrong or missing " \
                          "EDGESPLIT_CLUSTER_SECRET, or not an edgesplit device)"
                    log(f"rendezvous: refused {who}: {why}")
                    refused.append(f"rank {r}: {why}")
                    _set_json(store, f"verdict/{r}/{i}", {"ok": False, "reason": "the server refused this device: "
                                                          "authentication failed (wrong or missing secret)"})
                    continue
                if reject:
                    raise RunMismatchError(f"rendezvous: rank {r} was rejected: {_printable(reject, 300)}")
                if r in joined:
                    log(f"rendezvous: refused {who}: rank {r} has already joined")
                    _set_json(store, f"verdict/{r}/{i}", {"ok": False, "reason": f"rank {r} has already joined"})
                    continue
                joined[r] = req
                _set_json(store, f"verdict/{r}/{i}", {
                    "ok": True, "mac": auth.mac(rdv.secret, "accept", rid, r, rdv.server_nonce, req.get("nonce"))})
        if len(joined) == rdv.world_size - 1:
            return joined
        if time.monotonic() > deadline:
            missing = [r for r in range(1, rdv.world_size) if r not in joined]
            extra = f" (refused {len(refused)} unauthenticated request(s): {refused[-1]})" if refused else ""
            raise PeerLost(missing[0], f"rendezvous: ranks {missing} did not join within {timeout_s:g} s{extra}",
                           timed_out=True)
        time.sleep(0.02)


@dataclass
class Joined:
    """A device's side of the rendezvous: the store, the server's run id and both nonces."""

    store: dist.TCPStore
    run_id: int
    server_nonce: str
    device_nonce: str


def join_rendezvous(ep: Endpoint, run_id: int | None, timeout_s: float, secret: bytes,
                    port_file: str | None = None) -> Joined:
    """A device: connect to the store (waiting for ``port_file`` if given), authenticate the server's
    announcement, check the run id, protocol version and world size, and ask to join. Raises
    :class:`AuthError` when either side fails authentication, :class:`RunMismatchError` for a
    server of another run, version or size, :class:`PeerLost` when the server is unreachable."""
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
    where = f"{ep.master_addr}:{port}"
    try:
        store = dist.TCPStore(ep.master_addr, port, ep.world_size, False, timeout=_td(timeout_s))
    except (RuntimeError, TimeoutError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeerLost(0, f"rendezvous: cannot reach the server's store at {where} ({first[:200]})",
                       timed_out=True) from None
    try:
        version = _get_json(store, "version")
        world = _get_json(store, "world_size")
        rid_text = str(_get_json(store, "run_id"))
        server_run = int(rid_text, 16)
        nonce = str(_get_json(store, "server_nonce"))
        server_mac = _get_json(store, "server_mac")
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AuthError(f"rendezvous: the store at {where} does not hold an edgesplit run ({str(exc)[:120]})") from None
    server_ok = auth.verify(secret, server_mac, "announce", version, rid_text, world, nonce)
    reason = None
    if version != VERSION:
        reason = f"the server speaks protocol version {version}, this device version {VERSION}"
    elif world != ep.world_size:
        reason = f"the server expects WORLD_SIZE={world}, this device was started with {ep.world_size}"
    elif run_id is not None and run_id != server_run:
        reason = f"this device belongs to run {run_id:#x} but the server runs {server_run:#x}"
    mine = auth.new_nonce()
    request = {"nonce": mine, "host": socket.gethostname(), "pid": os.getpid(), "reject": reason,
               "mac": auth.mac(secret, "join", rid_text, ep.rank, nonce, mine, reason or "")}
    try:
        i = int(store.add(f"{_KEY}/attempts/{ep.rank}", 1))
    except (RuntimeError, ValueError):
        raise AuthError(f"rendezvous: the store at {where} was tampered with ({_KEY}/attempts/{ep.rank} is not a "
                        "counter); see the threat model in docs/distributed.md") from None
    _set_json(store, f"attempt/{ep.rank}/{i}", request)
    if not server_ok:
        raise AuthError(f"rendezvous refused: the server at {where} does not authenticate with this device's "
                        "secret (EDGESPLIT_CLUSTER_SECRET differs between the hosts, or it is not an edgesplit server)")
    if reason is not None:
        raise RunMismatchError(f"rendezvous rejected: {reason}")
    key = f"{_KEY}/verdict/{ep.rank}/{i}"
    while not store.check([key]):
        if time.monotonic() > deadline:
            raise PeerLost(0, f"rendezvous: the server at {where} did not answer the join request in {timeout_s:g} s",
                           timed_out=True)
        time.sleep(0.02)
    verdict = _get_json(store, f"verdict/{ep.rank}/{i}")
    if not isinstance(verdict, dict) or not verdict.get("ok"):
        why = verdict.get("reason") if isinstance(verdict, dict) else None
        raise AuthError(f"rendezvous refused: {_printable(why or 'the server refused this device', 300)}")
    if not auth.verify(secret, verdict.get("mac"), "accept", rid_text, ep.rank, nonce, mine):
        raise AuthError(f"rendezvous refused: the acceptance from {where} does not authenticate (tampered store?)")
    return Joined(store, server_run, nonce, mine)


def make_gloo_device(hostname: str | None = None, interface: str | None = None) -> Any:
    """The gloo device (the address gloo listens on): ``interface`` (``GLOO_SOCKET_IFNAME``), else
    ``hostname`` (``127.0.0.1`` keeps a local run on loopback), else gloo's default (this host's
    name)."""
    G = dist.ProcessGroupGloo
    if interface:
        return G.create_device(interface=interface)
    if hostname:
        return G.create_device(hostname=hostname)
    return G.create_default_device()


def init_group(store: dist.Store, ep: Endpoint, run_id: int, server_nonce: str, links: dict[int, LinkAuth],
               timeout_s: float, device: Any = None) -> Transport:
    """Build this rank's gloo process group on a store prefix of this run and return the transport
    with its authenticated ``links``. Gloo's own timeout is :data:`GLOO_TIMEOUT_S`; building the
    group is bounded by ``timeout_s`` here."""
    prefixed = dist.PrefixStore(f"{_KEY}/{run_id:x}/{server_nonce}/pg", store)
    box: list[Any] = []

    def build() -> None:
        try:
            opts = dist.ProcessGroupGloo._Options()
            opts._devices = [device if device is not None else make_gloo_device()]
            opts._timeout = _td(GLOO_TIMEOUT_S)
            box.append(dist.ProcessGroupGloo(prefixed, ep.rank, ep.world_size, opts))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)

    t = threading.Thread(target=build, name="gloo-init", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise PeerLost(0 if ep.rank else 1, f"rendezvous: the gloo process group was not complete within "
                       f"{timeout_s:g} s (a rank died while joining?)", timed_out=True)
    if isinstance(box[0], BaseException):
        raise PeerLost(0 if ep.rank else 1, f"rendezvous: building the gloo process group failed: {box[0]}")
    return Transport(rank=ep.rank, world_size=ep.world_size, run_id=run_id, pg=box[0], links=links, store=store)
