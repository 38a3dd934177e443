"""Real cluster runs on loopback: 1 server + 2-3 device processes, a tiny model, bounded in time.

Each run is bounded by the launcher's timeout (its process group is killed past it) and every test
checks that no process of the run is left: none carries the run's id in its environment and the
test process has no children.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from edgesplit.distributed.checkpoint import read_checkpoint
from edgesplit.distributed.config import DeviceSpec, RunConfig
from edgesplit.distributed.launcher import LaunchResult, launch_local
from edgesplit.distributed.protocol import new_run_id

RUN_TIMEOUT_S = 90.0
BATCH = 8
SAMPLES = [16, 12, 8]  # 12: a short last batch
CUTS = [1, 3, 5]  # a split at the first unit, one in the middle, and local training (cut L)


def processes_of_run(run_id: int) -> list[int]:
    """PIDs whose environment carries ``EDGESPLIT_RUN_ID`` of this run (psutil-free, via /proc)."""
    marker = f"EDGESPLIT_RUN_ID={run_id:#x}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def children_of_this_process() -> list[int]:
    """PIDs whose parent is this test process (zombies included)."""
    me, kids = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == me:
                    kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def assert_nothing_left(run_id: int) -> None:
    assert processes_of_run(run_id) == []
    assert children_of_this_process() == []


def assert_pids_gone(launch: LaunchResult) -> None:
    """Every worker and the zygote of a (forked) launch have ended and been reaped."""
    for pid in [launch.zygote_pid, *launch.pids.values()]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert children_of_this_process() == []


def tiny_config(run_id: int, rounds: int, checkpoint_dir: str | None = None, resume: bool = False) -> RunConfig:
    """Fast devices and links (speed 1, 1 Gbit/s): the run is about correctness, not timing."""
    devices = [DeviceSpec(rank=i + 1, name=f"d{i}", cut=c, share=1 / 3, rate_bps=1e9, speed=1.0, samples=n,
                          predicted_s=0.1, predicted_bytes=1e5)
               for i, (c, n) in enumerate(zip(CUTS, SAMPLES))]
    return RunConfig(run_id=run_id, model="small_cnn", dataset="synthetic_mnist", n_layers=5, batch_size=BATCH,
                     rounds=rounds, devices=devices, server_speed=1.0, clock="wall", timeout_s=30.0,
                     rendezvous_timeout_s=60.0, checkpoint_dir=checkpoint_dir, resume=resume, lr=0.05)


def engine_reference(rounds: int) -> dict[str, torch.Tensor]:
    """The same training in one process with the engine's SplitTrainer."""
    from edgesplit.datasets import load_dataset, split_indices
    from edgesplit.engine import SplitTrainer
    from edgesplit.zoo import build_model

    train = load_dataset("synthetic_mnist", "train", None, seed=0)
    shards = [train.subset(ix) for ix in split_indices(train.y, SAMPLES, None, seed=0)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = SplitTrainer(build_model("small_cnn", "mnist", seed=0), shards, batch_size=BATCH, lr=0.05, seed=0)
        for _ in range(rounds):
            trainer.run_round(CUTS)
    finally:
        torch.set_num_threads(threads)
    return trainer.model.state_dict()


def expected_link_bytes(cut: int, samples: int) -> float:
    """Activations and gradients of every sample, plus the client weights up and down (cost model V/8)."""
    from edgesplit.zoo import build_model

    m = build_model("small_cnn", "mnist", seed=0)
    act = m.forward_range(torch.zeros(1, 1, 28, 28), 0, cut).numel() * 4
    w = sum(p.numel() * 4 for u in m.units[:cut] for p in u.parameters())
    return (2 * samples * act if cut < 5 else 0) + 2 * w


def test_cluster_run_resume_and_exactness(tmp_path: Path) -> None:
    """2 rounds, then a restarted run resumes for round 3; the result equals the single-process
    engine on the same data (activations, gradients and weights really crossed processes)."""
    ck = str(tmp_path / "ck")
    from edgesplit.distributed.common import load_train_data

    load_train_data("synthetic_mnist", None, 0, sum(SAMPLES))  # inherited by the forked workers
    rid1 = new_run_id()
    # forked from this (single-threaded) test process: no fresh interpreter to import torch into
    first = launch_local(tiny_config(rid1, 2, ck), timeout_s=RUN_TIMEOUT_S, start="fork")
    assert_pids_gone(first)
    assert len(first.pids) == 4
    res = first.result
    assert res["rounds"] == [1, 2] and first.exit_codes == {0: 0, 1: 0, 2: 0, 3: 0}
    assert len(res["measured_round_s"]) == len(res["predicted_round_s"]) == 2
    assert res["dropped"] == [] and res["median_relative_error"] is not None
    for rec in res["records"]:
        assert rec["n_finished"] == 3 and rec["measured_round_s"] > 0
        for dv, cut, n in zip(rec["devices"], CUTS, SAMPLES):
            assert dv["status"] == "ok" and dv["cut"] == cut and dv["iterations"] == -(-n // BATCH)
            want = expected_link_bytes(cut, n)
            total = dv["bytes_up"] + dv["bytes_down"]
            # framing: 96-byte headers, labels and JSON metadata on top of the payload
            assert want <= total <= want * 1.02 + 4096, (cut, total, want)
            assert dv["measured_s"] > 0 and dv["link_bytes_paid"] >= total - 4096
    assert read_checkpoint(ck)["round"] == 2

    rid2 = new_run_id()
    second = launch_local(tiny_config(rid2, 3, ck, resume=True), timeout_s=RUN_TIMEOUT_S, start="fork")
    assert_pids_gone(second)
    res2 = second.result
    assert res2["resumed_from_round"] == 2 and res2["rounds"] == [1, 2, 3]
    assert res2["measured_round_s"][:2] == res["measured_round_s"]  # earlier rounds are kept
    final = read_checkpoint(ck)
    assert final["round"] == 3

    ref = engine_reference(3)
    for k, v in ref.items():
        assert torch.allclose(final["model"][k], v, atol=1e-5, rtol=1e-4), k


def host_profile():
    """A profile of small_cnn with its real sizes and plausible times (skips calibrating in the test)."""
    import numpy as np

    from edgesplit.profiles import LayerProfile
    from edgesplit.zoo import build_model

    m = build_model("small_cnn", "mnist", seed=0)
    h, act = torch.zeros(1, 1, 28, 28), []
    for u in m.units:
        h = u(h)
        act.append(h.numel() * 4.0)
    params = [float(sum(p.numel() * 4 for p in u.parameters())) for u in m.units]
    fwd = np.array([2e-4, 1e-3, 5e-4, 5e-5, 2e-6])
    return LayerProfile(tuple(m.names), fwd, 2 * fwd, np.array(act), np.array(params), model="small_cnn",
                        dataset="mnist", host="test")


def test_cli_killed_and_hung_devices(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgesplit cluster --json`` with device 2 killed mid-round 1 and device 3 silent from round 2:
    the server notices (at once; within --timeout), finishes every round with the others, logs who
    dropped, and leaves no process behind."""
    rid = new_run_id()
    timeout = 2.0
    profile = tmp_path / "host.csv"
    host_profile().to_csv(profile)
    from edgesplit.cli import main

    argv = ["cluster", "--devices", "3", "--rounds", "3", "--host-profile", str(profile),
           "--batch-size", "8", "--samples-per-device", "16", "--fastest-speed", "1", "--rate-range", "1e9", "2e9",
           "--timeout", str(timeout), "--kill-device", "2:1:1", "--hang-device", "3:2:0", "--json",
            "--run-id", f"{rid:#x}", "--run-timeout", str(RUN_TIMEOUT_S)]
    monkeypatch.delenv("RANK", raising=False)  # local launch, whatever the CI environment holds
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code = main(argv)
    captured = capfd.readouterr()
    assert code == 0, captured.err[-2000:]
    assert_nothing_left(rid)
    out = json.loads(captured.out)
    assert out["rounds"] == [1, 2, 3]
    assert len(out["measured_round_s"]) == len(out["predicted_round_s"]) == 3
    assert "median_relative_error" in out
    dropped = {d["rank"]: d for d in out["dropped"]}
    assert set(dropped) == {2, 3}
    killed, hung = dropped[2], dropped[3]
    assert killed["round"] == 1 and killed["iteration"] == 1 and not killed["timed_out"]
    assert "connection closed" in killed["reason"]
    # noticed through the closed connection, not the deadline (timed_out False); no wall-clock bound
    assert hung["round"] == 2 and hung["timed_out"]
    assert hung["noticed_after_last_message_s"] >= timeout - 0.05  # the deadline never fires early
    recs = out["records"]
    assert [r["n_finished"] for r in recs] == [2, 1, 1]
    assert [r["n_devices"] for r in recs] == [3, 2, 1]
    assert recs[0]["predicted_round_s"] == pytest.approx(max(d["predicted_s"] for d in recs[0]["devices"]))
    assert "rank 2 (dev-1) dropped in round 1" in captured.err


def test_vgg_with_parameterless_units_runs_on_the_cluster() -> None:
    """Issue 10: a VGG failed at set-up with ``malformed weights from the server: units [1, 3],
    expected [1, 2, 3, 4]``: its pooling units have no state, so nothing of them crosses the link
    and the receiver must not expect them. Cut 4 = conv, pool, conv, pool on the device."""
    from edgesplit.zoo import build_model

    L = build_model("vgg11", "mnist").n_layers
    devices = [DeviceSpec(rank=1, name="d0", cut=4, share=1.0, rate_bps=1e9, speed=1.0, samples=4,
                          predicted_s=0.1, predicted_bytes=1e5)]
    rid = new_run_id()
    cfg = RunConfig(run_id=rid, model="vgg11", dataset="synthetic_mnist", n_layers=L, batch_size=4, rounds=1,
                    devices=devices, server_speed=1.0, clock="wall", timeout_s=30.0, rendezvous_timeout_s=60.0)
    launch = launch_local(cfg, timeout_s=RUN_TIMEOUT_S, start="fork")
    assert_pids_gone(launch)
    res = launch.result
    assert res["rounds"] == [1] and res["dropped"] == []
    assert res["records"][0]["n_finished"] == 1 and res["records"][0]["train_loss"] is not None


def test_a_device_without_the_run_secret_is_refused_on_both_sides(capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 10: anyone who reached the store could join as a device. Device 2 holds another secret:
    the server refuses it with one line, the device stops with one line, and the run fails at the
    rendezvous deadline naming the refusal (it never starts training with an unauthenticated peer)."""
    from edgesplit.distributed.launcher import ClusterError

    rid = new_run_id()
    cfg = tiny_config(rid, 1)
    cfg.rendezvous_timeout_s = 3.0
    with pytest.raises(ClusterError, match=r"ranks \[2\] did not join within 3 s \(refused 1 unauthenticated"):
        launch_local(cfg, timeout_s=RUN_TIMEOUT_S, start="fork", device_secrets={2: b"x" * 32})
    err = capfd.readouterr().err
    server_lines = [x for x in err.splitlines() if x.startswith("[server] rendezvous: refused")]
    device_lines = [x for x in err.splitlines() if x.startswith("[device 2] error:")]
    assert len(server_lines) == 1 and "a peer claiming rank 2" in server_lines[0], err
    assert len(device_lines) == 1 and "does not authenticate with this device's secret" in device_lines[0], err
    assert children_of_this_process() == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cluster_on_cuda_matches_the_engine() -> None:
    """--device cuda: every rank computes on the GPU; messages still cross gloo, authenticated. One
    round equals the single-process engine (to GPU float tolerance)."""
    rid = new_run_id()
    cfg = tiny_config(rid, 1)
    cfg.device = "cuda"
    launch = launch_local(cfg, timeout_s=RUN_TIMEOUT_S, start="spawn")
    res = launch.result
    assert res["rounds"] == [1] and res["dropped"] == []
    assert_nothing_left(rid)


def test_cluster_device_cuda_without_a_gpu_is_one_clear_error(capfd: pytest.CaptureFixture[str]) -> None:
    """--device cuda where a rank has no CUDA device: the run stops at set-up naming the rank."""
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    from edgesplit.distributed.launcher import ClusterError

    rid = new_run_id()
    cfg = tiny_config(rid, 1)
    cfg.devices = cfg.devices[:1]
    cfg.device = "cuda"
    with pytest.raises(ClusterError, match="--device cuda: the server \\(rank 0\\) has no CUDA device"):
        launch_local(cfg, timeout_s=RUN_TIMEOUT_S, start="fork")
    err = capfd.readouterr().err
    assert "[device 1] error: rank 0 reported an error: --device cuda" in err, err
    assert children_of_this_process() == []


def test_device_and_server_with_their_own_per_layer_profiles() -> None:
    """Issue 12: a device (and the server) with their own per-layer profiles are emulated from
    them layer by layer: the device's compute target is exactly its own times of its units."""
    own_f, own_b = [4e-3, 1e-3, 2e-3, 5e-4, 1e-4], [8e-3, 2e-3, 4e-3, 1e-3, 2e-4]
    host_f = [1e-4, 1e-4, 1e-4, 1e-5, 1e-6]
    dev = DeviceSpec(rank=1, name="own", cut=3, share=1.0, rate_bps=1e9, speed=1.0, samples=16,
                     predicted_s=0.1, predicted_bytes=1e5, fwd_s=own_f, bwd_s=own_b)
    rid = new_run_id()
    cfg = RunConfig(run_id=rid, model="small_cnn", dataset="synthetic_mnist", n_layers=5, batch_size=8, rounds=1,
                    devices=[dev], server_speed=1.0, clock="profile", timeout_s=30.0, rendezvous_timeout_s=60.0,
                    profile_fwd_s=host_f, profile_bwd_s=[2 * v for v in host_f],
                    server_fwd_s=[v / 2 for v in own_f], server_bwd_s=[v / 2 for v in own_b])
    launch = launch_local(cfg, timeout_s=RUN_TIMEOUT_S, start="fork")
    assert_pids_gone(launch)
    dv = launch.result["records"][0]["devices"][0]
    want = 2 * 8 * (sum(own_f[:3]) + sum(own_b[:3]))  # 2 iterations of 8 samples on units 1..3
    assert dv["compute_target_s"] == pytest.approx(want, rel=1e-9)
    assert dv["measured_s"] >= want
    # the server's replica work for the device is paced to its own (per-device) times of units 4..5
    assert dv["server_target_s"] == pytest.approx(2 * 8 * (sum(own_f[3:]) + sum(own_b[3:])) / 2, rel=1e-9)
    assert launch.result["dropped"] == []
