"""``edgesplit train`` and :mod:`edgesplit.training`: CSV, plot, JSON, train once and time every
schedule, measured vs predicted timing, checkpoints and --resume, bad input. Tiny runs: small_cnn
on synthetic 28x28 data, 2 devices, 1-3 rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from edgesplit.cli import main
from edgesplit.training import (
    CSV_COLUMNS,
    TIMING_COLUMNS,
    RunConfig,
    load_checkpoint,
    prepare,
    time_to_accuracy,
    train_and_time,
    train_per_scheduler,
)

TINY = ["--model", "small_cnn", "--dataset", "synthetic_mnist", "--devices", "2", "--samples-per-device", "32",
        "--batch-size", "16", "--test-samples", "100", "--threads", "1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _rounds(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns) == CSV_COLUMNS
    return df


def test_train_once_times_every_scheduler_csv_plot_json(tmp_path: Path, capsys):
    rc = main(["train", *TINY, "--rounds", "2", "--schedulers", "alternating,psl,fl", "--target-acc", "0.05",
               "--out", str(tmp_path), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "train-once" and summary["timing"] == "measured"
    assert set(summary["schedulers"]) == {"alternating", "psl", "fl"}
    frames = {s: _rounds(tmp_path / s / "rounds.csv") for s in summary["schedulers"]}
    for s, df in frames.items():
        assert df["round"].tolist() == [0, 1, 2]
        assert df["sim_time_s"].is_monotonic_increasing and df["sim_time_s"].iloc[0] == 0
        assert (df["wall_s"].diff().iloc[1:] > 0).all()
        e = summary["schedulers"][s]
        # the prediction column is the cost model's clock; the measured one differs from it
        assert e["predicted_sim_time_s"] == pytest.approx(2 * e["round_time_s"])
        assert e["sim_time_s"] > 0 and e["sim_time_s"] != e["predicted_sim_time_s"]
        assert e["time_to_target_s"] == time_to_accuracy(df, 0.05)
    # one training: the same accuracies and the same wall clock for every schedule
    ref = frames["alternating"]
    for df in frames.values():
        pd.testing.assert_series_equal(df["test_acc"], ref["test_acc"])
        pd.testing.assert_series_equal(df["wall_s"], ref["wall_s"])
    assert summary["schedulers"]["fl"]["cuts"] == [5, 5]
    assert (tmp_path / "checkpoint.pt").is_file()
    png = tmp_path / "time_to_accuracy.png"
    assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    combined = pd.read_csv(tmp_path / "time_to_accuracy.csv")
    assert len(combined) == 9 and set(combined["scheduler"]) == {"alternating", "psl", "fl"}
    timing = pd.read_csv(tmp_path / "timing.csv")
    assert list(timing.columns) == TIMING_COLUMNS and len(timing) == 3 * 2 * 2  # schedulers x rounds x devices
    assert (timing["measured_s"] > 0).all() and np.isfinite(timing["rel_error"]).all()
    assert summary["timing_error"]["count"] == 12
    assert (tmp_path / "profile.csv").is_file() and (tmp_path / "timing_error.png").is_file()


def test_measured_clock_is_the_max_of_the_measured_device_times(tmp_path: Path):
    """... or their sum for sl, whose devices train one after another."""
    cfg = RunConfig(model="small_cnn", dataset="synthetic_mnist", devices=2, rounds=2, samples_per_device=32,
                    batch_size=16, test_samples=64)
    res = train_and_time(prepare(cfg), ["psl", "fl", "sl"], tmp_path)
    assert res["sl"].plan.sequential and not res["psl"].plan.sequential
    for name, r in res.items():
        t = pd.DataFrame(r.timing)
        by_round = t.groupby("round")["measured_s"]
        per_round = (by_round.sum() if r.plan.sequential else by_round.max()).to_numpy()
        np.testing.assert_allclose(np.diff(r.frame()["sim_time_s"]), per_round)
        np.testing.assert_allclose(t["predicted_s"], np.tile(r.plan.per_device_time_s, 2))


def test_model_timing_and_retrain_mode_learn_the_same(tmp_path: Path, capsys):
    a, b = tmp_path / "once", tmp_path / "retrain"
    assert main(["train", *TINY, "--rounds", "2", "--schedulers", "alternating,fl", "--timing", "model",
                 "--out", str(a)]) == 0
    assert main(["train", *TINY, "--rounds", "2", "--schedulers", "alternating,fl", "--timing", "model",
                 "--retrain", "--out", str(b)]) == 0
    for s in ("alternating", "fl"):
        x, y = _rounds(a / s / "rounds.csv"), _rounds(b / s / "rounds.csv")
        # model timing: the clock is the cost model's, to the bit
        pd.testing.assert_series_equal(x["sim_time_s"], x["predicted_sim_time_s"], check_names=False)
        pd.testing.assert_series_equal(x["sim_time_s"], y["sim_time_s"])
        # split learning is FedAvg whatever the cuts: trained once or per scheduler, the same model
        pd.testing.assert_series_equal(x["test_acc"], y["test_acc"], atol=1e-6)
        pd.testing.assert_series_equal(x["loss"], y["loss"], atol=1e-4, rtol=1e-4)
        assert (b / s / "checkpoint.pt").is_file()


def test_resume_continues_without_losing_a_round(tmp_path: Path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    args = [*TINY, "--scheduler", "alternating", "--timing", "model"]
    assert main(["train", *args, "--rounds", "3", "--out", str(full)]) == 0
    assert main(["train", *args, "--rounds", "1", "--out", str(part)]) == 0
    assert len(_rounds(part / "alternating" / "rounds.csv")) == 2
    assert main(["train", *args, "--rounds", "3", "--out", str(part), "--resume"]) == 0
    a, b = _rounds(full / "alternating" / "rounds.csv"), _rounds(part / "alternating" / "rounds.csv")
    assert b["round"].tolist() == [0, 1, 2, 3]
    for col in ("sim_time_s", "test_acc", "loss"):
        pd.testing.assert_series_equal(a[col], b[col], rtol=0, atol=0)
    assert b["wall_s"].is_monotonic_increasing
    capsys.readouterr()
    # other settings than the checkpoint's: a clear error, exit status 2
    rc = main(["train", *args, "--lr", "0.2", "--rounds", "4", "--out", str(part), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "lr" in err and err.count("\n") == 1


def test_interrupted_run_resumes_from_the_last_checkpoint(tmp_path: Path):
    cfg = RunConfig(model="small_cnn", dataset="synthetic_mnist", devices=2, rounds=3, samples_per_device=32,
                    batch_size=16, test_samples=64, momentum=0.9, timing="model")
    prep = prepare(cfg)
    ref = train_per_scheduler(prep, "psl").frame()

    def crash(r: int, row: dict) -> None:
        if r == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_per_scheduler(prep, "psl", tmp_path, on_round=crash)
    assert len(_rounds(tmp_path / "rounds.csv")) == 3  # rounds 0, 1, 2 were saved
    df = train_per_scheduler(prep, "psl", tmp_path, resume=True).frame()
    pd.testing.assert_frame_equal(df.drop(columns="wall_s"), ref.drop(columns="wall_s"))


def test_truncated_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path: Path, capsys):
    args = [*TINY, "--scheduler", "psl", "--timing", "model"]
    ref = tmp_path / "ref"
    assert main(["train", *args, "--rounds", "3", "--out", str(ref)]) == 0
    out = tmp_path / "run"
    assert main(["train", *args, "--rounds", "2", "--out", str(out)]) == 0
    ck = out / "checkpoint.pt"
    assert (out / "checkpoint.pt.prev").is_file()  # the previous good one is kept
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])  # a crash mid-write of a non-atomic save
    capsys.readouterr()
    assert main(["train", *args, "--rounds", "3", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "unreadable" in err and "previous good checkpoint" in err and "round 1" in err
    a, b = _rounds(ref / "psl" / "rounds.csv"), _rounds(out / "psl" / "rounds.csv")
    assert b["round"].tolist() == [0, 1, 2, 3]
    pd.testing.assert_series_equal(a["test_acc"], b["test_acc"], rtol=0, atol=0)


def test_truncated_checkpoint_without_fallback_is_one_line(tmp_path: Path, capsys):
    args = [*TINY, "--scheduler", "psl", "--timing", "model", "--rounds", "1", "--out", str(tmp_path)]
    assert main(["train", *args]) == 0
    ck = tmp_path / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", *args[:-4], "--rounds", "2", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint" in err and "Traceback" not in err


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "edgesplit-train/2", "meta_json": "{}", "trainer": Evil(), "torch_rng": torch.zeros(1)},
               path)
    with pytest.raises(ValueError, match="unreadable"):
        load_checkpoint(path)


@pytest.mark.parametrize("argv, needle", [
    (["--scheduler", "nope"], "unknown name 'nope'"),
    (["--schedulers", "fl,fl"], "twice"),
    (["--devices", "0"], "devices"),
    (["--non-iid", "-1"], "non-iid"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}"], "data_batch_1"),
    (["--samples-per-device", "0"], "samples-per-device"),
    (["--device", "tpu"], "device"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(["train", *TINY, "--rounds", "1", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and err.count("\n") == 1


def test_train_once_resume_with_sparse_checkpoints_keeps_each_round_once(tmp_path: Path):
    cfg = RunConfig(model="small_cnn", dataset="synthetic_mnist", devices=2, rounds=3, samples_per_device=32,
                    batch_size=16, test_samples=64, timing="model")
    prep = prepare(cfg)
    ref = train_and_time(prep, ["psl", "fl"])

    def crash(r: int, rows: dict) -> None:
        if r == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_time(prep, ["psl", "fl"], tmp_path, on_round=crash, checkpoint_every=2)
    res = train_and_time(prep, ["psl", "fl"], tmp_path, resume=True)
    for s in ("psl", "fl"):
        df = _rounds(tmp_path / s / "rounds.csv")
        assert df["round"].tolist() == [0, 1, 2, 3]
        pd.testing.assert_frame_equal(res[s].frame().drop(columns="wall_s"), ref[s].frame().drop(columns="wall_s"))
    timing = pd.read_csv(tmp_path / "timing.csv")
    assert sorted(timing.groupby(["scheduler", "round"]).size().to_dict().values()) == [2] * 6


def test_help_literals_match_the_library_and_help_imports_no_torch():
    import subprocess
    import sys

    from edgesplit.commands import train as cmd
    from edgesplit.datasets import DATASETS
    from edgesplit.schedulers import SCHEDULERS
    from edgesplit.training import TIMINGS

    assert tuple(cmd.DATASET_NAMES) == tuple(DATASETS)
    assert tuple(cmd.SCHEDULER_NAMES) == tuple(SCHEDULERS)
    assert tuple(cmd.TIMING_NAMES) == tuple(TIMINGS)
    code = ("import sys; from edgesplit.commands import train; "
            "print(any(m in sys.modules for m in ('torch', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
