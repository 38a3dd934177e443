"""Message framing of the distributed runtime: every message authenticated, none replayable.

Every message is two tensors sent back to back over one peer link:

* a **header**: ``HEADER_LEN`` int64 values ::

      [MAGIC, VERSION, run_id, type, sender, receiver, round, seq, counter, meta_len, payload_len,
       body_mac (4 words), header_mac (4 words)]

* a **body**: ``meta_len + payload_len`` bytes (``uint8``): a UTF-8 JSON object
  ``{"info": {...}, "tensors": [[name, dtype, shape, offset, nbytes], ...]}``, padded to a
  multiple of 8 bytes, then the raw tensor bytes, each tensor at an 8-byte aligned offset.

Authentication (:class:`LinkAuth`): each link (this rank and one peer) has its own key, derived
from the run's shared secret at the rendezvous (:mod:`edgesplit.distributed.auth`).
``body_mac = HMAC-SHA256(key, "body" | fields | body)`` and ``header_mac = HMAC-SHA256(key,
"header" | fields | body_mac)``, where ``fields`` are the first eleven header values. The header's
MAC is checked before its lengths are trusted (no allocation on a forged length), the body's
before its JSON is parsed. ``counter`` numbers the messages of each direction of a link from 0:
the receiver accepts only the next one, so a recorded message cannot be replayed, dropped or
reordered unnoticed. Sender and receiver ranks are in the MAC, so a message cannot be reflected
back or redirected to another rank.

The receiver checks the magic number, the protocol version, the run id, the header MAC, the
sender and receiver, the counter, the message type, the lengths (against
:data:`MAX_BODY_BYTES`), the body MAC and every tensor entry. Anything wrong raises
:class:`ProtocolError` (:class:`RunMismatchError` for a peer of another run or version) whose
message says what was wrong and which rank sent it. Messages are authenticated, not encrypted:
see the threat model in ``docs/distributed.md``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from edgesplit.errors import EdgeSplitError

MAGIC = 0x45445350_4C495431  # "EDSPLIT1"
VERSION = 2
N_FIELDS = 11  # header values before the two MACs
MAC_BYTES = 32  # HMAC-SHA256
HEADER_LEN = N_FIELDS + 2 * MAC_BYTES // 8
MAX_BODY_BYTES = 1 << 31  # 2 GiB: far above any activation or model this testbed moves
_ALIGN = 8
_MASK63 = (1 << 63) - 1

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


class ProtocolError(EdgeSplitError):
    """A malformed message, or one that breaks the protocol's order."""


class RunMismatchError(ProtocolError):
    """A peer (or one of its messages) belongs to another run or speaks another protocol version."""


class PeerReportedError(ProtocolError):
    """The peer sent an ``ERROR`` message: it stops, and says why."""


class MessageType(enum.IntEnum):
    """Kinds of messages. Device -> server: HELLO, READY, ACTIVATIONS, PROGRESS, WEIGHTS_UP,
    ROUND_DONE, ERROR. Server -> device: CONFIG, ROUND_START, GRADIENT, WEIGHTS_DOWN, SHUTDOWN, ERROR."""

    HELLO = 1
    CONFIG = 2
    READY = 3
    ROUND_START = 4
    ACTIVATIONS = 5
    GRADIENT = 6
    PROGRESS = 7
    WEIGHTS_UP = 8
    WEIGHTS_DOWN = 9
    ROUND_DONE = 10
    SHUTDOWN = 11
    ERROR = 12


@dataclass
class Message:
    """One protocol message: a type, the round and a sequence number, JSON ``info`` and named tensors."""

    type: MessageType
    round: int = 0
    seq: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sender: int = -1
    nbytes: int = 0  # header + body bytes on the wire (set by encode/decode)


def new_run_id() -> int:
    """A random 63-bit run id (non-zero)."""
    return secrets.randbits(63) or 1


def parse_run_id(value: str | int) -> int:
    """A run id from an int or its decimal/hex string form; raises :class:`ProtocolError` if bad."""
    if isinstance(value, int) and not isinstance(value, bool):
        rid = value
    else:
        text = str(value).strip().lower()
        try:
            rid = int(text, 16) if text.startswith("0x") else int(text)
        except ValueError:
            raise ProtocolError(f"run id: expected an integer (decimal or 0x-hex), got {value!r}") from None
    if not 0 < rid <= _MASK63:
        raise ProtocolError(f"run id: must lie in 1..2^63-1, got {rid}")
    return rid


def _pad(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _tensor_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8)


@dataclass
class LinkAuth:
    """The authentication state of one link (this rank and one peer): its HMAC key and the number
    of messages sent and received so far (each direction counts from 0)."""

    key: bytes
    sent: int = 0
    received: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.key, (bytes, bytearray)) or len(self.key) < 16:
            raise ProtocolError("link key: need at least 16 bytes")
        self.key = bytes(self.key)


def _fields_bytes(values: list[int]) -> bytes:
    return np.asarray(values, dtype="<i8").tobytes()


def _body_mac(key: bytes, fields: bytes, body: torch.Tensor) -> bytes:
    m = hmac.new(key, b"edgesplit/body|", hashlib.sha256)
    m.update(fields)
    m.update(body.numpy().data)
    return m.digest()


def _header_mac(key: bytes, fields: bytes, body_mac: bytes) -> bytes:
    return hmac.new(key, b"edgesplit/header|" + fields + body_mac, hashlib.sha256).digest()


def _words(mac: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(mac, dtype="<i8")]


def _mac_bytes(words: list[int]) -> bytes:
    return np.asarray(words, dtype="<i8").tobytes()


def encode(msg: Message, run_id: int, sender: int, receiver: int, link: LinkAuth) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``msg`` from ``sender`` to ``receiver`` for run ``run_id`` as ``(header int64[HEADER_LEN],
    body uint8[n])``, authenticated with ``link``'s key and numbered with its next counter."""
    entries = []
    chunks: list[torch.Tensor] = []
    offset = 0
    for name, t in msg.tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ProtocolError(f"message {msg.type.name}: tensor {name!r} is a {type(t).__name__}")
        if t.dtype not in _DTYPE_NAMES:
            raise ProtocolError(f"message {msg.type.name}: tensor {name!r} has unsupported dtype {t.dtype}")
        raw = _tensor_bytes(t)
        n = int(raw.numel())
        entries.append([str(name), _DTYPE_NAMES[t.dtype], list(t.shape), offset, n])
        chunks.append(raw)
        pad = _pad(n) - n
        if pad:
            chunks.append(torch.zeros(pad, dtype=torch.uint8))
        offset += n + pad
    meta = json.dumps({"info": msg.info, "tensors": entries}, separators=(",", ":")).encode()
    meta_len = _pad(len(meta))
    meta_t = torch.zeros(meta_len, dtype=torch.uint8)
    meta_t[: len(meta)] = torch.frombuffer(bytearray(meta), dtype=torch.uint8)
    body = torch.cat([meta_t] + chunks) if chunks else meta_t
    if body.numel() > MAX_BODY_BYTES:
        raise ProtocolError(f"message {msg.type.name}: body of {body.numel()} bytes exceeds {MAX_BODY_BYTES}")
    values = [MAGIC & _MASK63, VERSION, int(run_id), int(msg.type), int(sender), int(receiver), int(msg.round),
              int(msg.seq), link.sent, meta_len, offset]
    fields = _fields_bytes(values)
    bmac = _body_mac(link.key, fields, body)
    hmac_ = _header_mac(link.key, fields, bmac)
    header = torch.tensor(values + _words(bmac) + _words(hmac_), dtype=torch.int64)
    link.sent += 1
    msg.nbytes = HEADER_LEN * 8 + int(body.numel())
    msg.sender = sender
    return header, body


@dataclass(frozen=True)
class Header:
    """A checked header: what the body that follows must hold."""

    type: MessageType
    sender: int
    round: int
    seq: int
    counter: int
    meta_len: int
    payload_len: int
    fields: bytes
    body_mac: bytes

    @property
    def body_len(self) -> int:
        """Bytes of the body (meta + payload)."""
        return self.meta_len + self.payload_len


def decode_header(header: torch.Tensor, run_id: int, src: int, me: int, link: LinkAuth) -> Header:
    """Check a header received by rank ``me`` from rank ``src`` on ``link`` and return its fields;
    raises :class:`ProtocolError` if it is malformed, forged, replayed or out of order."""
    if header.dtype != torch.int64 or header.numel() != HEADER_LEN:
        raise ProtocolError(f"malformed message from rank {src}: header must be {HEADER_LEN} int64 values")
    v = [int(x) for x in header.tolist()]
    if v[0] != MAGIC & _MASK63:
        raise ProtocolError(
            f"malformed message from rank {src}: bad magic number 0x{v[0] & 0xFFFFFFFFFFFFFFFF:016x} "
            "(not an edgesplit cluster peer?)"
        )
    if v[1] != VERSION:
        raise RunMismatchError(
            f"rank {src} speaks protocol version {v[1]}, this process version {VERSION}: "
            "run the same edgesplit version on every host"
        )
    if v[2] != run_id:
        raise RunMismatchError(
            f"message from rank {src} belongs to run {v[2]:#x}, this is run {run_id:#x} "
            "(a peer from another run?)"
        )
    fields = _fields_bytes(v[:N_FIELDS])
    bmac = _mac_bytes(v[N_FIELDS:N_FIELDS + 4])
    if not hmac.compare_digest(_mac_bytes(v[N_FIELDS + 4:]), _header_mac(link.key, fields, bmac)):
        raise ProtocolError(
            f"message from rank {src} fails authentication (bad header HMAC): a peer without this run's "
            "secret, or the message was altered on the way"
        )
    if v[4] != src:
        raise ProtocolError(f"malformed message from rank {src}: header claims sender rank {v[4]}")
    if v[5] != me:
        raise ProtocolError(f"message from rank {src} is addressed to rank {v[5]}, not this rank {me} (reflected?)")
    if v[8] != link.received:
        raise ProtocolError(
            f"message from rank {src} is out of sequence (counter {v[8]}, expected {link.received}): "
            "a replayed, lost or reordered message"
        )
    try:
        mtype = MessageType(v[3])
    except ValueError:
        raise ProtocolError(f"malformed message from rank {src}: unknown message type {v[3]}") from None
    meta_len, payload_len = v[9], v[10]
    if meta_len <= 0 or meta_len % _ALIGN or payload_len < 0 or payload_len % _ALIGN \
            or meta_len + payload_len > MAX_BODY_BYTES:
        raise ProtocolError(
            f"malformed message from rank {src}: bad body lengths (meta {meta_len}, payload {payload_len})"
        )
    if v[6] < 0 or v[7] < 0:
        raise ProtocolError(f"malformed message from rank {src}: negative round or sequence number")
    return Header(mtype, v[4], v[6], v[7], v[8], meta_len, payload_len, fields, bmac)


def decode_body(h: Header, body: torch.Tensor, src: int, link: LinkAuth) -> Message:
    """Check and unpack a body received after header ``h``; tensors are fresh copies. Counts the
    message on ``link`` once it passed every check."""
    where = f"malformed {h.type.name} message from rank {src}"
    if body.dtype != torch.uint8 or body.numel() != h.body_len:
        raise ProtocolError(f"{where}: body has {body.numel()} bytes, header says {h.body_len}")
    if not hmac.compare_digest(_body_mac(link.key, h.fields, body), h.body_mac):
        raise ProtocolError(f"{h.type.name} message from rank {src} fails authentication (bad body HMAC): "
                            "the body was altered on the way")
    raw_meta = bytes(body[: h.meta_len].numpy().tobytes()).rstrip(b"\x00")
    try:
        meta = json.loads(raw_meta.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{where}: metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("info"), dict) \
            or not isinstance(meta.get("tensors"), list):
        raise ProtocolError(f"{where}: metadata must be an object with 'info' and 'tensors'")
    payload = body[h.meta_len:]
    tensors: dict[str, torch.Tensor] = {}
    for k, entry in enumerate(meta["tensors"]):
        try:
            name, dtype_name, shape, offset, n = entry
            dtype = _DTYPES[dtype_name]
            shape = [int(s) for s in shape]
            offset, n = int(offset), int(n)
        except (TypeError, ValueError, KeyError):
            raise ProtocolError(f"{where}: bad tensor entry #{k}: {entry!r}") from None
        numel = 1
        for s in shape:
            if s < 0:
                raise ProtocolError(f"{where}: tensor {name!r} has a negative dimension")
            numel *= s
        itemsize = torch.empty((), dtype=dtype).element_size()
        if n != numel * itemsize or offset < 0 or offset % _ALIGN or offset + n > h.payload_len:
            raise ProtocolError(f"{where}: tensor {name!r} does not fit the payload "
                                f"(offset {offset}, {n} bytes, shape {shape}, {dtype_name})")
        chunk = payload[offset: offset + n].clone()
        if dtype == torch.bool:
            t = chunk.to(torch.bool)
        else:
            t = chunk.view(dtype) if n else torch.empty(0, dtype=dtype)
        tensors[str(name)] = t.reshape(shape)
    link.received += 1
    return Message(type=h.type, round=h.round, seq=h.seq, info=meta["info"], tensors=tensors,
                   sender=src, nbytes=HEADER_LEN * 8 + h.body_len)


def decode(header: torch.Tensor, body: torch.Tensor, run_id: int, src: int, me: int, link: LinkAuth) -> Message:
    """Check and unpack a whole message (header and body) received by rank ``me`` from rank ``src``."""
    return decode_body(decode_header(header, run_id, src, me, link), body, src, link)


def expect(msg: Message, *types: MessageType, round: int | None = None) -> Message:
    """Return ``msg`` if its type is one of ``types`` (and its round is ``round``); else raise."""
    if msg.type not in types:
        if msg.type == MessageType.ERROR:
            raise PeerReportedError(f"rank {msg.sender} reported an error: {str(msg.info.get('error', '?'))[:500]}")
        raise ProtocolError(
            f"unexpected {msg.type.name} message from rank {msg.sender} "
            f"(expected {' or '.join(t.name for t in types)})"
        )
    if round is not None and msg.round != round:
        raise ProtocolError(
            f"{msg.type.name} message from rank {msg.sender} is for round {msg.round}, expected round {round}"
        )
    return msg


def pack_state(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Name the tensors of a state dict ``prefix/key`` for a message."""
    return {f"{prefix}/{k}": v for k, v in state.items()}


def unpack_states(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Inverse of :func:`pack_state` over several prefixes: ``{prefix: {key: tensor}}``."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        prefix, sep, key = name.partition("/")
        if not sep:
            raise ProtocolError(f"malformed weights message: tensor name {name!r} lacks a unit prefix")
        out.setdefault(prefix, {})[key] = t
    return out
