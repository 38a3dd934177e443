"""Message framing of the distributed runtime.

Every message is two tensors sent back to back over one peer link:

* a **header**: ``HEADER_LEN`` int64 values ::

      [MAGIC, VERSION, run_id, type, sender, round, seq, meta_len, payload_len, body_crc32, 0, header_sum]

  ``header_sum`` is a checksum of the first eleven values, so a header that is not ours (or
  got mixed up with another stream) is caught before its lengths are trusted;
* a **body**: ``meta_len + payload_len`` bytes (``uint8``): a UTF-8 JSON object
  ``{"info": {...}, "tensors": [[name, dtype, shape, offset, nbytes], ...]}``, padded to a
  multiple of 8 bytes, then the raw tensor bytes, each tensor at an 8-byte aligned offset.

The receiver checks the magic number, the protocol version, the run id, the message type,
the lengths (against :data:`MAX_BODY_BYTES`), the CRC-32 of the body and every tensor entry.
Anything wrong raises :class:`ProtocolError` (or :class:`RunMismatchError` for a peer of
another run) whose message says what was wrong and which rank sent it.
"""

from __future__ import annotations

import enum
import json
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from edgesplit.errors import EdgeSplitError

MAGIC = 0x45445350_4C495431  # "EDSPLIT1"
VERSION = 1
HEADER_LEN = 12
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


def _header_sum(values: list[int]) -> int:
    acc = 0x9E3779B97F4A7C15
    for v in values:
        acc = ((acc ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return acc & _MASK63


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


def encode(msg: Message, run_id: int, sender: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``msg`` as ``(header int64[HEADER_LEN], body uint8[n])`` for run ``run_id``."""
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
    crc = zlib.crc32(body.numpy().data) & 0xFFFFFFFF
    values = [MAGIC & _MASK63, VERSION, int(run_id), int(msg.type), int(sender), int(msg.round),
              int(msg.seq), meta_len, offset, crc, 0]
    header = torch.tensor(values + [_header_sum(values)], dtype=torch.int64)
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
    meta_len: int
    payload_len: int
    crc32: int

    @property
    def body_len(self) -> int:
        """Bytes of the body (meta + payload)."""
        return self.meta_len + self.payload_len


def decode_header(header: torch.Tensor, run_id: int, src: int) -> Header:
    """Check a received header (from rank ``src``) and return its fields; raises if malformed."""
    if header.dtype != torch.int64 or header.numel() != HEADER_LEN:
        raise ProtocolError(f"malformed message from rank {src}: header must be {HEADER_LEN} int64 values")
    v = [int(x) for x in header.tolist()]
    if v[0] != MAGIC & _MASK63:
        raise ProtocolError(
            f"malformed message from rank {src}: bad magic number 0x{v[0] & 0xFFFFFFFFFFFFFFFF:016x} "
            "(not an edgesplit cluster peer?)"
        )
    if v[11] != _header_sum(v[:11]):
        raise ProtocolError(f"malformed message from rank {src}: header checksum mismatch")
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
    try:
        mtype = MessageType(v[3])
    except ValueError:
        raise ProtocolError(f"malformed message from rank {src}: unknown message type {v[3]}") from None
    if v[4] != src:
        raise ProtocolError(f"malformed message from rank {src}: header claims sender rank {v[4]}")
    meta_len, payload_len = v[7], v[8]
    if meta_len <= 0 or meta_len % _ALIGN or payload_len < 0 or payload_len % _ALIGN \
            or meta_len + payload_len > MAX_BODY_BYTES:
        raise ProtocolError(
            f"malformed message from rank {src}: bad body lengths (meta {meta_len}, payload {payload_len})"
        )
    if v[5] < 0 or v[6] < 0:
        raise ProtocolError(f"malformed message from rank {src}: negative round or sequence number")
    return Header(mtype, v[4], v[5], v[6], meta_len, payload_len, v[9])


def decode_body(h: Header, body: torch.Tensor, src: int) -> Message:
    """Check and unpack a body received after header ``h``; tensors are fresh copies."""
    where = f"malformed {h.type.name} message from rank {src}"
    if body.dtype != torch.uint8 or body.numel() != h.body_len:
        raise ProtocolError(f"{where}: body has {body.numel()} bytes, header says {h.body_len}")
    if zlib.crc32(body.numpy().data) & 0xFFFFFFFF != h.crc32:
        raise ProtocolError(f"{where}: body checksum (CRC-32) mismatch")
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
    return Message(type=h.type, round=h.round, seq=h.seq, info=meta["info"], tensors=tensors,
                   sender=src, nbytes=HEADER_LEN * 8 + h.body_len)


def decode(header: torch.Tensor, body: torch.Tensor, run_id: int, src: int) -> Message:
    """Check and unpack a whole message (header and body) received from rank ``src``."""
    return decode_body(decode_header(header, run_id, src), body, src)


def expect(msg: Message, *types: MessageType, round: int | None = None) -> Message:
    """Return ``msg`` if its type is one of ``types`` (and its round is ``round``); else raise."""
    if msg.type not in types:
        if msg.type == MessageType.ERROR:
            raise ProtocolError(f"rank {msg.sender} reported an error: {msg.info.get('error', '?')}")
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
