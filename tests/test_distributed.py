"""Unit tests of the distributed runtime's pieces: framing, token bucket, emulation, config,
rendezvous checks, checkpoints, planning. No worker processes here (see test_distributed_cluster.py)."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesplit.distributed import planning
from edgesplit.distributed.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from edgesplit.distributed.config import DeviceSpec, Fault, RunConfig
from edgesplit.distributed.emulation import ComputeEmulator
from edgesplit.distributed.protocol import (
    HEADER_LEN,
    VERSION,
    LinkAuth,
    Message,
    MessageType,
    ProtocolError,
    RunMismatchError,
    decode,
    encode,
    expect,
    pack_state,
    parse_run_id,
    unpack_states,
)
from edgesplit.distributed.ratelimit import TokenBucket
from edgesplit.distributed.transport import (
    Endpoint,
    PeerLost,
    await_joins,
    endpoint_from_env,
    join_rendezvous,
    serve_rendezvous,
)
from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Device, Scenario, Server

RUN = 0x1234_5678_9ABC


# ----------------------------------------------------------------------------- protocol


KEY = bytes(range(32))


def _pair() -> tuple[LinkAuth, LinkAuth]:
    """The two ends of one link (the same key, their own counters)."""
    return LinkAuth(KEY), LinkAuth(KEY)


def _roundtrip(msg: Message, run_id: int = RUN, sender: int = 3, receiver: int = 0) -> Message:
    tx, rx = _pair()
    h, b = encode(msg, run_id, sender, receiver, tx)
    return decode(h.clone(), b.clone(), run_id, sender, receiver, rx)


def _reseal(values: list[int], body: torch.Tensor, key: bytes = KEY) -> torch.Tensor:
    """A header with ``values`` (the first N_FIELDS) and valid MACs under ``key``: what a peer
    holding the key (a buggy one) could send."""
    from edgesplit.distributed import protocol

    fields = protocol._fields_bytes(values[: protocol.N_FIELDS])
    bmac = protocol._body_mac(key, fields, body)
    hmac_ = protocol._header_mac(key, fields, bmac)
    return torch.tensor(values[: protocol.N_FIELDS] + protocol._words(bmac) + protocol._words(hmac_))


def test_roundtrip_keeps_types_shapes_and_values() -> None:
    tensors = {
        "h": torch.randn(4, 3, 5),
        "y": torch.arange(4),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(3).to(torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 7),
        "odd": torch.arange(3, dtype=torch.int8),  # 3 bytes: next tensor must still be aligned
        "after": torch.randn(2, 2, dtype=torch.float64),
        "noncontig": torch.randn(4, 6).t(),
    }
    msg = Message(MessageType.ACTIVATIONS, round=7, seq=11, info={"loss": 1.5, "note": "ü"}, tensors=tensors)
    out = _roundtrip(msg)
    assert out.type == MessageType.ACTIVATIONS and out.round == 7 and out.seq == 11 and out.sender == 3
    assert out.info == {"loss": 1.5, "note": "ü"}
    assert out.nbytes == msg.nbytes > HEADER_LEN * 8
    for k, t in tensors.items():
        assert out.tensors[k].dtype == t.dtype and out.tensors[k].shape == t.shape, k
        assert torch.equal(out.tensors[k], t), k


def test_decoded_tensors_do_not_alias_the_receive_buffer() -> None:
    tx, rx = _pair()
    h, b = encode(Message(MessageType.GRADIENT, tensors={"g": torch.ones(8)}), RUN, 0, 1, tx)
    out = decode(h, b, RUN, 0, 1, rx)
    b.zero_()
    assert torch.equal(out.tensors["g"], torch.ones(8))


def test_peer_from_another_run_is_rejected() -> None:
    tx, rx = _pair()
    h, b = encode(Message(MessageType.HELLO), RUN, 1, 0, tx)
    with pytest.raises(RunMismatchError, match="another run"):
        decode(h, b, RUN + 1, 1, 0, rx)


def test_other_protocol_version_is_rejected() -> None:
    tx, rx = _pair()
    h, b = encode(Message(MessageType.HELLO), RUN, 1, 0, tx)
    vals = h.tolist()
    vals[1] = VERSION + 1
    with pytest.raises(RunMismatchError, match="protocol version"):
        decode(_reseal(vals, b), b, RUN, 1, 0, rx)


@pytest.mark.parametrize("index,value,match", [
    (0, 12345, "bad magic"),
    (3, 999, "fails authentication"),  # any field changed without the key to re-sign it
    (9, 3, "fails authentication"),
    (8, 5, "fails authentication"),
    (13, 7, "fails authentication"),  # the body MAC
])
def test_altered_headers_are_rejected(index: int, value: int, match: str) -> None:
    tx, rx = _pair()
    h, b = encode(Message(MessageType.HELLO), RUN, 1, 0, tx)
    h[index] = value
    with pytest.raises(ProtocolError, match=match):
        decode(h, b, RUN, 1, 0, rx)


def test_a_peer_without_the_key_cannot_forge_a_message() -> None:
    """Issue 10: anyone who could reach the cluster could send weights; now every message carries
    an HMAC under the link's key."""
    forger = LinkAuth(b"not the run's key, 32 bytes long")
    h, b = encode(Message(MessageType.WEIGHTS_UP, tensors={"u1/w": torch.zeros(3)}), RUN, 1, 0, forger)
    with pytest.raises(ProtocolError, match="fails authentication"):
        decode(h, b, RUN, 1, 0, LinkAuth(KEY))


def test_replayed_reordered_or_reflected_messages_are_rejected() -> None:
    tx, rx = _pair()
    first = encode(Message(MessageType.GRADIENT, seq=0), RUN, 0, 2, tx)
    second = encode(Message(MessageType.GRADIENT, seq=1), RUN, 0, 2, tx)
    third = encode(Message(MessageType.GRADIENT, seq=2), RUN, 0, 2, tx)
    decode(*first, RUN, 0, 2, rx)
    with pytest.raises(ProtocolError, match=r"out of sequence \(counter 0, expected 1\)"):
        decode(*first, RUN, 0, 2, rx)  # replay
    with pytest.raises(ProtocolError, match="out of sequence"):
        decode(*third, RUN, 0, 2, rx)  # the second one was dropped
    assert decode(*second, RUN, 0, 2, rx).seq == 1
    # a message of rank 0 to rank 2 sent back to rank 0 as if from rank 2, or to rank 3
    with pytest.raises(ProtocolError, match="claims sender rank 0"):
        decode(*third, RUN, 2, 0, LinkAuth(KEY, received=2))
    with pytest.raises(ProtocolError, match="addressed to rank 2"):
        decode(*third, RUN, 0, 3, LinkAuth(KEY, received=2))
    with pytest.raises(ProtocolError, match="16 bytes"):
        LinkAuth(b"short")


def test_unknown_type_and_bad_lengths_are_rejected_even_when_signed() -> None:
    def forged(body: torch.Tensor, **changes: int) -> torch.Tensor:
        h, _ = encode(Message(MessageType.HELLO), RUN, 1, 0, LinkAuth(KEY))
        vals = h.tolist()
        for i, v in changes.items():
            vals[int(i[1:])] = v
        return _reseal(vals, body)

    _, body = encode(Message(MessageType.HELLO), RUN, 1, 0, LinkAuth(KEY))
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(forged(body, i3=77), body, RUN, 1, 0, LinkAuth(KEY))
    with pytest.raises(ProtocolError, match="body lengths"):
        decode(forged(body, i10=-8), body, RUN, 1, 0, LinkAuth(KEY))
    with pytest.raises(ProtocolError, match="header must be"):
        decode(torch.zeros(3, dtype=torch.int64), body, RUN, 1, 0, LinkAuth(KEY))


def test_altered_or_truncated_body_is_rejected() -> None:
    tx = LinkAuth(KEY)
    h, b = encode(Message(MessageType.ACTIVATIONS, tensors={"h": torch.randn(16)}), RUN, 2, 0, tx)
    bad = b.clone()
    bad[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="bad body HMAC"):
        decode(h, bad, RUN, 2, 0, LinkAuth(KEY))
    with pytest.raises(ProtocolError, match="body has"):
        decode(h, b[:-8].clone(), RUN, 2, 0, LinkAuth(KEY))


def test_tensor_entries_that_do_not_fit_are_rejected() -> None:
    h, b = encode(Message(MessageType.ACTIVATIONS, tensors={"h": torch.randn(4)}), RUN, 2, 0, LinkAuth(KEY))
    meta_len = int(h[9])
    meta = json.loads(bytes(b[:meta_len].numpy().tobytes()).rstrip(b"\x00"))
    meta["tensors"][0][2] = [400]  # claims more elements than the payload holds
    raw = json.dumps(meta).encode()
    new_meta = raw + b"\x00" * (-len(raw) % 8)
    body = torch.cat([torch.frombuffer(bytearray(new_meta), dtype=torch.uint8), b[meta_len:]])
    vals = h.tolist()
    vals[9] = len(new_meta)
    with pytest.raises(ProtocolError, match="does not fit"):
        decode(_reseal(vals, body), body, RUN, 2, 0, LinkAuth(KEY))


def test_expect_and_state_packing() -> None:
    msg = Message(MessageType.ERROR, info={"error": "disk full"}, sender=4)
    with pytest.raises(ProtocolError, match="disk full"):
        expect(msg, MessageType.READY)
    with pytest.raises(ProtocolError, match="round 2"):
        expect(Message(MessageType.GRADIENT, round=1, sender=0), MessageType.GRADIENT, round=2)
    sd = {"weight": torch.ones(2, 2), "bias": torch.zeros(2)}
    packed = {**pack_state("u1", sd), **pack_state("u3", sd)}
    states = unpack_states(packed)
    assert set(states) == {"u1", "u3"} and torch.equal(states["u3"]["weight"], sd["weight"])
    with pytest.raises(ProtocolError, match="unit prefix"):
        unpack_states({"noprefix": torch.ones(1)})


def test_parse_run_id() -> None:
    assert parse_run_id("0x10") == 16 and parse_run_id("42") == 42 and parse_run_id(7) == 7
    for bad in ("abc", "0", -1, 1 << 63):
        with pytest.raises(ProtocolError, match="run id"):
            parse_run_id(bad)


# ----------------------------------------------------------------------------- token bucket


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def test_token_bucket_charges_bytes_at_its_rate() -> None:
    clk = FakeClock()
    tb = TokenBucket(1000.0, burst_bytes=0.0, clock=clk, sleep=clk.sleep)
    assert tb.consume(500) == pytest.approx(0.5)
    assert tb.consume(250) == pytest.approx(0.25)
    assert clk.t == pytest.approx(0.75)
    clk.t += 10.0  # idle: with no burst, nothing is saved up
    assert tb.consume(1000) == pytest.approx(1.0)
    assert tb.bytes_paid == 1750 and tb.waited_s == pytest.approx(1.75)


def test_token_bucket_burst_and_debt() -> None:
    clk = FakeClock()
    tb = TokenBucket(100.0, burst_bytes=50.0, clock=clk, sleep=clk.sleep)
    assert tb.consume(50) == 0.0  # the full bucket covers it
    assert tb.reserve(100) == pytest.approx(1.0)  # in debt: 100 bytes at 100 B/s
    assert tb.reserve(100) == pytest.approx(2.0)  # queued behind the first (nobody slept)
    clk.t += 2.0  # the debt is paid off, nothing saved yet
    assert tb.consume(10) == pytest.approx(0.1)
    clk.t += 60.0  # a long idle link saves at most the burst
    assert tb.consume(50) == 0.0 and tb.consume(50) == pytest.approx(0.5)


def test_token_bucket_rejects_bad_arguments() -> None:
    for rate in (0.0, -1.0, float("nan")):
        with pytest.raises(EdgeSplitError, match="rate"):
            TokenBucket(rate)
    with pytest.raises(EdgeSplitError, match="burst"):
        TokenBucket(1.0, burst_bytes=-1)
    with pytest.raises(EdgeSplitError, match="nbytes"):
        TokenBucket(1.0).reserve(-5)
    assert TokenBucket(float("inf")).consume(10**9) == 0.0


def test_token_bucket_really_sleeps() -> None:
    tb = TokenBucket(1e6, burst_bytes=0.0)
    t0 = time.perf_counter()
    tb.consume(30_000)  # 30 ms at 1 MB/s
    assert time.perf_counter() - t0 >= 0.03 - 1e-3


# ----------------------------------------------------------------------------- emulation


def test_profile_clock_stretches_to_profile_over_speed() -> None:
    emu = ComputeEmulator(0.5, "profile")
    t0 = time.perf_counter()
    with emu.compute(profile_s=0.02):
        pass
    # no timed bounds: the target is exact, the block ends no earlier than it (pause_until), and the
    # wait (or the overrun, on a busy host) is exactly what the real compute left of it
    assert emu.target_s == pytest.approx(0.04) and emu.measured_s == pytest.approx(0.02)
    assert time.perf_counter() - t0 >= emu.target_s
    assert emu.waited_s - emu.late_s == pytest.approx(emu.target_s - emu.wall_s, abs=1e-9)
    with pytest.raises(EdgeSplitError, match="profile clock"):
        with emu.compute():
            pass


def test_cpu_clock_stretches_measured_cpu_time() -> None:
    emu = ComputeEmulator(0.25, "cpu")
    t0 = time.perf_counter()
    with emu.compute():
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass
    elapsed = time.perf_counter() - t0
    assert emu.measured_s >= 0.01
    assert elapsed >= emu.measured_s / 0.25 - 1e-3
    with pytest.raises(EdgeSplitError, match="speed"):
        ComputeEmulator(0.0)
    with pytest.raises(EdgeSplitError, match="clock"):
        ComputeEmulator(1.0, "sundial")


# ----------------------------------------------------------------------------- config, env, checkpoints


def _cfg(**kw) -> RunConfig:
    devices = [DeviceSpec(1, "a", 2, 0.5, 1e8, 0.5, 16, 2.0, 1e6, 0.1),
               DeviceSpec(2, "b", 5, 0.5, 1e8, 1.0, 24, 3.0, 2e6, 0.5)]
    base = dict(run_id=RUN, model="small_cnn", dataset="synthetic_mnist", n_layers=5, batch_size=8, rounds=2,
                devices=devices, server_speed=1.0, clock="wall")
    base.update(kw)
    return RunConfig(**base)


def test_run_config_roundtrip_and_predictions(tmp_path) -> None:
    cfg = _cfg(faults=[Fault(2, 1, 3, "hang")])
    back = RunConfig.load(cfg.save(tmp_path / "c.json"))
    assert back.to_dict() == cfg.to_dict() and back.run_id == RUN
    assert cfg.predicted_round_s([1, 2]) == 3.0 and cfg.predicted_round_s([1]) == 2.0
    # barrier: max(T - D) + max(D) = max(1.9, 2.5) + 0.5
    assert cfg.corrected_round_s([1, 2]) == pytest.approx(3.0)
    assert cfg.corrected_round_s([1]) == pytest.approx(2.0)
    seq = _cfg(sequential=True)
    assert seq.predicted_round_s([1, 2]) == 5.0


def test_run_config_validation_names_the_field() -> None:
    with pytest.raises(EdgeSplitError, match=r"devices\[0\].share"):
        _cfg(devices=[DeviceSpec(1, "a", 2, 0.0, 1e8, 0.5, 16, 1.0, 1.0)])
    with pytest.raises(EdgeSplitError, match=r"devices\[0\].cut"):
        _cfg(devices=[DeviceSpec(1, "a", 9, 0.5, 1e8, 0.5, 16, 1.0, 1.0)])
    with pytest.raises(EdgeSplitError, match="profile clock"):
        _cfg(clock="profile")
    with pytest.raises(EdgeSplitError, match="no device rank 5"):
        _cfg(faults=[Fault(5, 1)])
    assert Fault.parse("2:3", "hang") == Fault(2, 3, 0, "hang")
    assert Fault.parse("2:3:4") == Fault(2, 3, 4, "kill")
    with pytest.raises(EdgeSplitError, match="RANK:ROUND"):
        Fault.parse("two:3")


def test_endpoint_from_env() -> None:
    ep = endpoint_from_env({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29600", "RANK": "2", "WORLD_SIZE": "5"})
    assert ep == Endpoint("10.0.0.1", 29600, 2, 5)
    assert endpoint_from_env({"RANK": "0", "WORLD_SIZE": "2"}).master_port == 29500
    with pytest.raises(EdgeSplitError, match="RANK: environment variable not set"):
        endpoint_from_env({"WORLD_SIZE": "3"})
    with pytest.raises(EdgeSplitError, match="RANK: must lie"):
        endpoint_from_env({"RANK": "3", "WORLD_SIZE": "3"})
    with pytest.raises(EdgeSplitError, match="WORLD_SIZE"):
        endpoint_from_env({"RANK": "0", "WORLD_SIZE": "1"})
    with pytest.raises(EdgeSplitError, match="MASTER_PORT"):
        endpoint_from_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "http"})


def test_checkpoint_roundtrip_and_mismatch(tmp_path) -> None:
    cfg = _cfg()
    assert load_checkpoint(tmp_path, cfg) is None
    save_checkpoint(tmp_path, {"round": 1, "model": {"w": torch.ones(2)}, "records": [], "dropped": [],
                               "config": cfg.to_dict()})
    ck = load_checkpoint(tmp_path, cfg)
    assert ck is not None and ck["round"] == 1 and torch.equal(ck["model"]["w"], torch.ones(2))
    assert ck["note"] is None
    other = _cfg(devices=[DeviceSpec(1, "a", 3, 0.5, 1e8, 0.5, 16, 2.0, 1e6),
                          DeviceSpec(2, "b", 5, 0.5, 1e8, 1.0, 24, 3.0, 2e6)], lr=0.1)
    with pytest.raises(EdgeSplitError, match=r"cuts: \[2, 5\] in the checkpoint, \[3, 5\] now; lr: 0.05"):
        load_checkpoint(tmp_path, other)


def _payload(cfg: RunConfig, r: int) -> dict:
    return {"round": r, "model": {"w": torch.full((2,), float(r))}, "records": [{"round": r}], "dropped": [],
            "config": cfg.to_dict()}


class _RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint could do with any code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


def test_checkpoint_does_not_unpickle_objects(tmp_path) -> None:
    """Issue 10: checkpoints were read with weights_only=False, so a crafted file ran code."""
    marker = tmp_path / "pwned"
    torch.save({"format": "edgesplit-cluster-checkpoint", "version": 3, "model": {}, "meta": "{}",
                "x": _RunsCode(str(marker))}, tmp_path / "cluster-checkpoint.pt")
    with pytest.raises(EdgeSplitError, match="unreadable"):
        read_checkpoint(tmp_path)
    assert not marker.exists()


def test_checkpoint_writes_atomically_and_keeps_the_previous(tmp_path, monkeypatch) -> None:
    cfg = _cfg()
    save_checkpoint(tmp_path, _payload(cfg, 1))
    save_checkpoint(tmp_path, _payload(cfg, 2))
    assert read_checkpoint(tmp_path)["round"] == 2
    assert torch.load(tmp_path / "cluster-checkpoint.prev.pt", weights_only=True)["model"]["w"][0] == 1.0

    def crash(*a, **k):  # a crash while writing round 3 (disk full, killed)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _payload(cfg, 3))
    monkeypatch.undo()
    assert read_checkpoint(tmp_path)["round"] == 2  # the latest good one is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster-checkpoint.prev.pt", "cluster-checkpoint.pt"]


def test_truncated_checkpoint_falls_back_to_the_previous_or_fails_in_one_line(tmp_path) -> None:
    cfg = _cfg()
    save_checkpoint(tmp_path, _payload(cfg, 1))
    save_checkpoint(tmp_path, _payload(cfg, 2))
    latest = tmp_path / "cluster-checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:200])  # truncated
    ck = read_checkpoint(tmp_path)
    assert ck["round"] == 1 and "falling back to the previous checkpoint" in ck["note"]
    assert "unreadable (truncated" in ck["note"] and torch.equal(ck["model"]["w"], torch.ones(2))
    (tmp_path / "cluster-checkpoint.prev.pt").unlink()
    with pytest.raises(EdgeSplitError, match="unreadable") as err:
        read_checkpoint(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "cluster-checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgeSplitError, match="unreadable"):
        load_checkpoint(tmp_path, cfg)


# ----------------------------------------------------------------------------- rendezvous (in-process)


SECRET = b"a shared secret of the test run, 40+ chars"
OTHER = b"another secret, not the run's, 40+ chars"


class _Server:
    """serve_rendezvous + await_joins in a thread; its log lines and outcome are kept."""

    def __init__(self, tmp_path, world: int = 2, secret: bytes = SECRET, timeout: float = 10.0) -> None:
        self.port_file = str(tmp_path / "port")
        self.lines: list[str] = []
        self.outcome: object = None
        self.rdv = serve_rendezvous(Endpoint("127.0.0.1", 0, 0, world), RUN, timeout, secret, self.port_file)
        self.thread = threading.Thread(target=self._run, args=(timeout,), daemon=True)
        self.thread.start()

    def _run(self, timeout: float) -> None:
        try:
            self.outcome = await_joins(self.rdv, timeout, self.lines.append)
        except BaseException as exc:  # noqa: BLE001
            self.outcome = exc

    def join(self) -> object:
        self.thread.join(15)
        assert not self.thread.is_alive()
        return self.outcome


def test_rendezvous_rejects_a_device_of_another_run(tmp_path) -> None:
    srv = _Server(tmp_path)
    with pytest.raises(RunMismatchError, match="belongs to run 0x1 but the server runs"):
        join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), 0x1, 10.0, SECRET, srv.port_file)
    out = srv.join()
    assert isinstance(out, RunMismatchError) and "rank 1 was rejected" in str(out)


def test_rendezvous_times_out_without_devices(tmp_path) -> None:
    rdv = serve_rendezvous(Endpoint("127.0.0.1", 0, 0, 3), RUN, 5.0, SECRET, str(tmp_path / "port"))
    assert rdv.port > 0
    with pytest.raises(PeerLost, match=r"ranks \[1, 2\] did not join"):
        await_joins(rdv, 0.3)


def test_rendezvous_refuses_peers_without_the_secret_on_both_sides(tmp_path) -> None:
    """Issue 10: the run id was the only check. A device without the secret is refused with one line
    on each side and cannot disturb the run: the real device still joins afterwards; a fake
    rejection is ignored; a device does not trust a server without the secret."""
    from edgesplit.distributed.auth import AuthError

    srv = _Server(tmp_path)
    with pytest.raises(AuthError, match="does not authenticate with this device's secret") as err:
        join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), None, 10.0, OTHER, srv.port_file)
    assert "\n" not in str(err.value)
    # an attacker writes a fake rejection for rank 1 straight into the store: ignored
    n = srv.rdv.store.add("edgesplit/attempts/1", 1)
    srv.rdv.store.set(f"edgesplit/attempt/1/{n}", json.dumps({"nonce": "00", "reject": "abort!", "mac": "ff"}))
    j = join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), None, 10.0, SECRET, srv.port_file)
    out = srv.join()
    assert isinstance(out, dict) and out[1]["nonce"] == j.device_nonce and j.run_id == RUN
    assert len(srv.lines) == 2 and all("refused a peer claiming rank 1" in x for x in srv.lines)
    assert "authentication failed" in srv.lines[0]
    # a device with the secret does not trust a store whose server lacks it
    fake = _Server(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, secret=OTHER, timeout=1.0)
    with pytest.raises(AuthError, match="does not authenticate"):
        join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), None, 10.0, SECRET, fake.port_file)
    fake.join()


def _listening_addresses_of_this_process() -> set[str]:
    """Local addresses of the TCP sockets this process listens on (via /proc)."""
    import os

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                found.add(cols[1].split(":")[0])
    return found


def test_local_transport_listens_on_loopback_only_and_the_store_holds_no_secret(tmp_path) -> None:
    """Issue 10: the store listened on every interface. A whole rendezvous, gloo group and an
    authenticated exchange, in-process (two ranks on threads): every listening socket is on
    127.0.0.1, and nothing in the store reveals the secret or a link key."""
    from edgesplit.distributed.auth import link_key
    from edgesplit.distributed.transport import init_group, make_gloo_device

    srv = _Server(tmp_path)
    j = join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), None, 10.0, SECRET, srv.port_file)
    joined = srv.join()
    assert isinstance(joined, dict)
    key = link_key(SECRET, RUN, srv.rdv.server_nonce, 1, j.device_nonce)
    assert key == link_key(SECRET, RUN, j.server_nonce, 1, joined[1]["nonce"])
    box: dict = {}

    def build(rank: int, store) -> None:
        box[rank] = init_group(store, Endpoint("127.0.0.1", srv.rdv.port, rank, 2), RUN, srv.rdv.server_nonce,
                               {1 - rank: LinkAuth(key)}, 20.0, make_gloo_device("127.0.0.1"))

    threads = [threading.Thread(target=build, args=(0, srv.rdv.store)), threading.Thread(target=build, args=(1, j.store))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    server, device = box[0], box[1]
    got: dict = {}
    t = threading.Thread(target=lambda: got.update(hello=server.recv(1, 10.0)))
    t.start()
    device.send(0, Message(MessageType.HELLO, info={"x": 1}), 10.0)  # completes once the peer took it
    t.join(10)
    assert got["hello"].info == {"x": 1}
    t = threading.Thread(target=lambda: got.update(g=device.recv(0, 10.0)))
    t.start()
    server.send(1, Message(MessageType.GRADIENT, tensors={"g": torch.ones(3)}), 10.0)
    t.join(10)
    assert torch.equal(got["g"].tensors["g"], torch.ones(3))
    addrs = _listening_addresses_of_this_process()
    assert addrs and addrs <= {"0100007F", "00000000000000000000000001000000"}, addrs  # 127.0.0.1 / ::1
    blob = b"".join(srv.rdv.store.get(k) for k in srv.rdv.store.list_keys())
    for secret in (SECRET, SECRET.hex().encode(), key, key.hex().encode()):
        assert secret not in blob


def test_a_port_in_use_is_one_clear_error(tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(EdgeSplitError, match=f"MASTER_PORT: port {port} on 127.0.0.1 is already in use"):
            serve_rendezvous(Endpoint("127.0.0.1", port, 0, 2), RUN, 5.0, SECRET)


# ----------------------------------------------------------------------------- planning


def _profile() -> LayerProfile:
    return LayerProfile(names=("a", "b", "c"), fwd_s=np.array([1e-4, 2e-4, 1e-4]),
                        bwd_s=np.array([2e-4, 4e-4, 2e-4]), activation_bytes=np.array([4e4, 1e4, 40.0]),
                        param_bytes=np.array([1e3, 1e5, 5e3]))


def test_effective_scenario_scales_and_caps_speeds() -> None:
    prof = _profile()
    sc = Scenario(prof, 8, (Device("slow", 0.2, 1e9, 1e7, 16), Device("fast", 4.0, 1e9, 1e7, 16)), Server(8.0))
    host = prof.scaled(0.5)  # this host is twice as fast as the scenario's profiling host
    h = planning.host_speed_factor(prof, host)
    assert h == pytest.approx(2.0)
    eff, notes = planning.effective_scenario(sc, host, h)
    assert [d.speed for d in eff.devices] == [pytest.approx(0.1), 1.0]
    assert eff.server.speed == 1.0 and len(notes) == 2 and "capped" in notes[0]
    assert eff.profile is host
    with pytest.raises(EdgeSplitError, match="cut units"):
        planning.effective_scenario(sc, LayerProfile(("x",), np.ones(1), np.ones(1), np.ones(1), np.ones(1)))


def test_run_config_predictions_match_the_cost_model() -> None:
    prof = _profile()
    sc = Scenario(prof, 8, (Device("a", 0.2, 1e9, 1e7, 16), Device("b", 0.5, 1e9, 5e6, 24)), Server(1.0))
    plan = planning.make_plan(sc, "exact")
    cfg = planning.build_run_config(sc, plan, model="m", dataset="synthetic_mnist", rounds=1, run_id=RUN,
                                    clock="profile")
    assert cfg.predicted_round_s([1, 2]) == pytest.approx(plan.round_time_s, rel=1e-9)
    assert [d.cut for d in cfg.devices] == [int(c) for c in plan.cuts]
    assert cfg.profile_fwd_s == pytest.approx(list(prof.fwd_s))
    assert cfg.corrected_round_s([1, 2]) >= cfg.predicted_round_s([1, 2]) - 1e-12
    assert planning.check_timeouts(sc, plan, 1e-3)  # a silly timeout is flagged
    assert not planning.check_timeouts(sc, plan, 1e3)
    assert math.isfinite(cfg.device_timeout_s)


# ----------------------------------------------------------------------------- CLI input errors


def test_cli_bad_input_exits_2_with_one_line(capsys) -> None:
    from edgesplit.cli import main

    assert main(["cluster", "--devices", "2", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint-dir" in err[0]
    assert main(["cluster", "--devices", "2", "--kill-device", "x"]) == 2
    assert "RANK:ROUND" in capsys.readouterr().err
    assert main(["cluster", "--devices", "0"]) == 2
    assert "--devices" in capsys.readouterr().err


# ----------------------------------------------------------------------------- weights messages


def test_weights_of_units_without_state_roundtrip_and_are_checked() -> None:
    """Pooling units have no state: they send nothing and the receiver fills them in from its own
    model; a missing unit, an extra key or a wrong shape is a ProtocolError naming the sender."""
    from edgesplit.distributed.common import model_units, unit_layout, unit_tensors, units_from_tensors
    from edgesplit.zoo import build_model

    m = build_model("vgg11", "mnist", seed=0)
    layout = unit_layout(m, range(1, 5))  # conv, pool, conv, pool
    assert [bool(layout[u]) for u in range(1, 5)] == [True, False, True, False]
    wire = unit_tensors(model_units(m, range(1, 5)))
    back = units_from_tensors(wire, layout, "rank 1")
    assert sorted(back) == [1, 2, 3, 4] and back[2] == {} and back[4] == {}
    assert torch.equal(back[3]["0.weight"], m.units[2][0].weight)
    missing = {k: v for k, v in wire.items() if not k.startswith("u3/")}
    with pytest.raises(ProtocolError, match=r"rank 1: units \[1\], expected \[1, 3\]"):
        units_from_tensors(missing, layout, "rank 1")
    bad = dict(wire)
    bad["u1/0.weight"] = torch.zeros(2, 2)
    with pytest.raises(ProtocolError, match="unit 1 0.weight is"):
        units_from_tensors(bad, layout, "rank 1")
    extra = dict(wire)
    extra["u1/evil"] = torch.zeros(1)
    with pytest.raises(ProtocolError, match="unit 1 has keys"):
        units_from_tensors(extra, layout, "rank 1")


def _cluster_args(*extra: str):
    from edgesplit.cli import build_parser

    parser, _ = build_parser(only="cluster")
    return parser.parse_args(["cluster", *extra])


def test_cli_resume_refuses_changed_settings(tmp_path, capsys, monkeypatch) -> None:
    """Issue 10: ``cluster --resume`` silently continued with the checkpoint's model, device count,
    scheduler, seed and lr when given others; it refuses with one line naming each."""
    from edgesplit.cli import main
    from edgesplit.commands.cluster import run_settings

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ck = tmp_path / "ck"
    first = ["--devices", "2", "--scheduler", "alternating", "--seed", "0", "--checkpoint-dir", str(ck)]
    cfg = _cfg(meta={"settings": run_settings(_cluster_args(*first))})
    save_checkpoint(ck, _payload(cfg, 1))
    changed = ["--devices", "3", "--scheduler", "exact", "--seed", "4", "--lr", "0.1", "--model", "vgg11"]
    code = main(["cluster", *changed, "--rounds", "3", "--checkpoint-dir", str(ck), "--resume", "--run-timeout", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    for part in ("--devices 3 (checkpoint: 2)", "--scheduler exact (checkpoint: alternating)",
                 "--seed 4 (checkpoint: 0)", "--lr 0.1 (checkpoint: 0.05)", "--model vgg11 (checkpoint: small_cnn)"):
        assert part in err[0]
    # what may change (the total rounds, the timeout) is not a difference
    from edgesplit.commands.cluster import settings_changed

    same = run_settings(_cluster_args(*first, "--rounds", "9", "--timeout", "5"))
    assert settings_changed(cfg.meta["settings"], same) == []


def test_cli_resume_from_a_truncated_checkpoint_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    from edgesplit.cli import main

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    (tmp_path / "cluster-checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    code = main(["cluster", "--devices", "2", "--checkpoint-dir", str(tmp_path), "--resume", "--run-timeout", "30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "unreadable (truncated" in err[0], err


def _env_mode(monkeypatch, rank: int, world: int, port: int, secret: str | None) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("EDGESPLIT_CLUSTER_SECRET_FILE", raising=False)
    if secret is None:
        monkeypatch.delenv("EDGESPLIT_CLUSTER_SECRET", raising=False)
    else:
        monkeypatch.setenv("EDGESPLIT_CLUSTER_SECRET", secret)


def test_cli_multi_host_needs_a_secret(tmp_path, capsys, monkeypatch) -> None:
    from edgesplit.cli import main

    for rank in (0, 1):
        _env_mode(monkeypatch, rank, 2, 29999, None)
        assert main(["cluster", "--devices", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "EDGESPLIT_CLUSTER_SECRET: not set" in err[0], err
    _env_mode(monkeypatch, 1, 2, 29999, "short")
    assert main(["cluster"]) == 2
    assert "the secret has 5 characters" in capsys.readouterr().err
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    from edgesplit.distributed.auth import load_secret

    assert load_secret({}, str(secret)) == b"s" * 40
    assert load_secret({"EDGESPLIT_CLUSTER_SECRET_FILE": str(secret)}) == b"s" * 40
    with pytest.raises(EdgeSplitError, match="--secret-file: cannot read"):
        load_secret({}, str(tmp_path / "missing"))


def test_cli_port_in_use_is_one_line_exit_2(tmp_path, capsys, monkeypatch) -> None:
    """Issue 10: a MASTER_PORT already in use gave a traceback."""
    import socket

    from edgesplit.cli import main

    profile = tmp_path / "host.csv"
    prof = _profile()
    LayerProfile(("conv1", "conv2_pool", "conv3_pool", "fc1", "fc2"), np.full(5, 1e-4), np.full(5, 2e-4),
                 np.full(5, 4e3), np.full(5, 1e4), model="small_cnn", dataset="mnist").to_csv(profile)
    del prof
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _env_mode(monkeypatch, 0, 2, port, "s" * 32)
        code = main(["cluster", "--devices", "1", "--rounds", "1", "--host-profile", str(profile)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and f"MASTER_PORT: port {port} on 127.0.0.1 is already in use" in err[0], err


def test_choose_compute_device() -> None:
    """--device: cpu; cuda needs every rank to have CUDA (one error naming the first without);
    auto uses CUDA only when the server and every device have it."""
    from edgesplit.distributed.common import choose_compute

    all_gpu = {1: {"cuda": True}, 2: {"cuda": True}}
    one_cpu = {1: {"cuda": True}, 2: {"cuda": False, "host": "pi"}}
    assert choose_compute("cpu", True, all_gpu).type == "cpu"
    assert choose_compute("auto", True, all_gpu).type == "cuda"
    assert choose_compute("auto", True, one_cpu).type == "cpu"
    assert choose_compute("auto", False, all_gpu).type == "cpu"
    assert choose_compute("cuda", True, all_gpu).type == "cuda"
    with pytest.raises(EdgeSplitError, match=r"--device cuda: device rank 2 \(host pi\) has no CUDA device"):
        choose_compute("cuda", True, one_cpu)
    with pytest.raises(EdgeSplitError, match="the server"):
        choose_compute("cuda", False, all_gpu)
    with pytest.raises(EdgeSplitError, match="--device: must be one of"):
        choose_compute("tpu", True, all_gpu)
    with pytest.raises(EdgeSplitError, match="device: must be one of"):
        _cfg(device="gpu")


def test_emulator_waits_for_the_accelerator_before_timing() -> None:
    calls: list[float] = []
    emu = ComputeEmulator(1.0, "wall", sync=lambda: calls.append(time.perf_counter()))
    with emu.compute():
        pass
    assert len(calls) == 1 and emu.blocks == 1


def test_own_per_layer_profile_replaces_the_speed() -> None:
    """Issue 12: a device with its own per-layer profile is emulated from it, layer by layer."""
    emu = ComputeEmulator(0.5, "profile")
    with emu.compute(0.001, own_s=0.004):  # the host takes 1 ms, this hardware 4 ms for these layers
        pass
    assert emu.target_s == pytest.approx(0.004) and emu.measured_s == pytest.approx(0.001)  # not 0.001 / 0.5
    assert emu.waited_s - emu.late_s == pytest.approx(emu.target_s - emu.wall_s, abs=1e-9)
    wall = ComputeEmulator(0.5, "wall")
    with wall.compute(0.002, own_s=0.006):  # x3 of whatever it really took
        time.sleep(0.003)
    assert wall.target_s == pytest.approx(3 * wall.wall_s, rel=1e-6)
    with pytest.raises(EdgeSplitError, match="needs the host profile"):
        with wall.compute(None, own_s=0.1):
            pass
    with pytest.raises(EdgeSplitError, match=r"devices\[0\].fwd_s/bwd_s: need 5"):
        _cfg(devices=[DeviceSpec(1, "a", 2, 0.5, 1e8, 0.5, 16, 2.0, 1e6, fwd_s=[1.0], bwd_s=[1.0])])
    with pytest.raises(EdgeSplitError, match="need the host profile"):
        _cfg(server_fwd_s=[1e-3] * 5, server_bwd_s=[1e-3] * 5)


def test_run_config_carries_own_profiles_that_match_the_cost_model() -> None:
    """Issue 12: a scenario whose devices and server have their own per-layer profiles gives a run
    configuration whose emulated compute (per-layer times of the units each side runs) is exactly
    the cost model's compute A_i(c) for the plan's cuts."""
    from edgesplit.costmodel import CostModel, iterations_per_round

    prof = _profile()
    own_a = LayerProfile(prof.names, np.array([9e-4, 1e-4, 3e-4]), np.array([2e-3, 1e-4, 5e-4]),
                         prof.activation_bytes, prof.param_bytes)
    own_s = LayerProfile(prof.names, np.array([1e-5, 4e-5, 2e-5]), np.array([2e-5, 9e-5, 3e-5]),
                         prof.activation_bytes, prof.param_bytes)
    sc = Scenario(prof, 8, (Device("a", 1.0, 1e9, 1e7, 16, profile=own_a), Device("b", 0.5, 1e9, 5e6, 24)),
                  Server(1.0, "shared", profile=own_s))
    plan = planning.make_plan(sc, "exact")
    cfg = planning.build_run_config(sc, plan, model="m", dataset="synthetic_mnist", rounds=1, run_id=RUN,
                                    clock="profile")
    assert cfg.devices[0].fwd_s == pytest.approx(list(own_a.fwd_s)) and cfg.devices[1].fwd_s is None
    assert cfg.server_fwd_s == pytest.approx(list(own_s.fwd_s * 2))  # shared by 2 devices: half the server each
    cm = CostModel.from_scenario(sc)
    k = iterations_per_round(sc)
    for i, d in enumerate(cfg.devices):
        c = d.cut
        dev = (d.fwd_s[:c] + d.bwd_s[:c]) if d.fwd_s is not None else \
            [v / d.speed for v in cfg.profile_fwd_s[:c] + cfg.profile_bwd_s[:c]]
        srv = cfg.server_fwd_s[c:] + cfg.server_bwd_s[c:]
        assert k[i] * sc.batch_size * (sum(dev) + sum(srv)) == pytest.approx(cm.compute_s[i, c - 1], rel=1e-9)


# ----------------------------------------------------------------------------- fuzz


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(word=st.integers(0, HEADER_LEN - 1), value=st.integers(-(1 << 63), (1 << 63) - 1),
       flip=st.integers(0, 10_000), garbage=st.binary(min_size=0, max_size=64))
def test_fuzzed_messages_are_a_clear_error_never_a_crash_or_a_success(word: int, value: int, flip: int,
                                                                      garbage: bytes) -> None:
    """Issue 10 item 7 for the wire: any altered header word, any flipped body byte, any garbage
    header is a ProtocolError (one clear line), never another exception and never accepted."""
    msg = Message(MessageType.WEIGHTS_UP, round=3, seq=1, info={"samples": 16},
                  tensors={"u1/w": torch.arange(12.0).reshape(3, 4), "u1/b": torch.ones(3)})
    h, b = encode(msg, RUN, 1, 0, LinkAuth(KEY))
    bad = h.clone()
    if int(bad[word]) == value:
        value ^= 1
    bad[word] = value
    with pytest.raises(ProtocolError) as err:
        decode(bad, b, RUN, 1, 0, LinkAuth(KEY))
    assert "\n" not in str(err.value)
    body = b.clone()
    body[flip % body.numel()] ^= 1 + flip % 255
    with pytest.raises(ProtocolError, match="HMAC"):
        decode(h, body, RUN, 1, 0, LinkAuth(KEY))
    raw = (garbage + bytes(HEADER_LEN * 8))[: HEADER_LEN * 8]
    with pytest.raises(ProtocolError):
        decode(torch.frombuffer(bytearray(raw), dtype=torch.int64).clone(), b, RUN, 1, 0, LinkAuth(KEY))


def test_what_a_peer_claims_about_itself_is_logged_on_one_line(tmp_path) -> None:
    srv = _Server(tmp_path, timeout=0.5)
    n = srv.rdv.store.add("edgesplit/attempts/1", 1)
    srv.rdv.store.set(f"edgesplit/attempt/1/{n}", json.dumps({"nonce": "0", "host": "evil\nFORGED LINE", "mac": "0"}))
    assert isinstance(srv.join(), PeerLost)
    assert len(srv.lines) == 1 and "\n" not in srv.lines[0] and "evil?FORGED LINE" in srv.lines[0]


def test_a_tampered_store_is_one_clear_error_not_a_traceback(tmp_path) -> None:
    """Availability is not protected (threat model), but tampering ends in one line, not a crash."""
    from edgesplit.distributed.auth import AuthError

    srv = _Server(tmp_path, timeout=5.0)
    srv.rdv.store.set("edgesplit/attempts/1", "not a counter")
    with pytest.raises(AuthError, match="tampered with"):
        join_rendezvous(Endpoint("127.0.0.1", 0, 1, 2), None, 5.0, SECRET, srv.port_file)
    out = srv.join()
    assert isinstance(out, EdgeSplitError) and "tampered with" in str(out) and "\n" not in str(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 1 << 20), min_size=1, max_size=3), flip=st.integers(1, 255),
       truncate=st.booleans())
def test_fuzzed_checkpoints_load_exactly_or_fail_in_one_line(tmp_path, cuts: list[int], flip: int,
                                                             truncate: bool) -> None:
    """Issue 10 item 7 for checkpoint files: a truncated or bit-flipped checkpoint is one clear error
    (and resume falls back to the previous one), or it loads with exactly what was saved (a flip in
    bytes that carry nothing); never a crash, never silently altered weights or records."""
    cfg = _cfg()
    payload = _payload(cfg, 2)
    payload["model"] = {"w": torch.arange(64, dtype=torch.float32).reshape(8, 8), "n": torch.tensor(3)}
    d = tmp_path / f"ck{abs(hash((tuple(cuts), flip, truncate)))}"
    save_checkpoint(d, payload)
    path = d / "cluster-checkpoint.pt"
    raw = bytearray(path.read_bytes())
    if truncate:
        raw = raw[: cuts[0] % len(raw)]
    else:
        for c in cuts:
            raw[c % len(raw)] ^= flip
    path.write_bytes(bytes(raw))
    try:
        ck = read_checkpoint(d)
    except EdgeSplitError as exc:
        assert "\n" not in str(exc)
        return
    assert ck is not None and ck["round"] == 2 and ck["records"] == payload["records"]
    assert ck["config"] == cfg.to_dict()
    assert set(ck["model"]) == {"w", "n"}
    assert all(torch.equal(ck["model"][k], v) for k, v in payload["model"].items())
