"""``edgesplit train``: CSV, plot, JSON, identical learning across schedulers, checkpoints and
--resume, bad input. Tiny runs: small_cnn on synthetic 28x28 data, 2 devices, 1-3 rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from edgesplit.cli import main
from edgesplit.commands.train import CSV_COLUMNS, TrainConfig, prepare, run_scheduler, time_to_accuracy

TINY = ["--model", "small_cnn", "--dataset", "synthetic_mnist", "--devices", "2", "--samples-per-device", "32",
        "--batch-size", "16", "--test-samples", "100", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rounds(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    assert list(df.columns) == CSV_COLUMNS
    return df


def test_train_several_schedulers_csv_plot_json(tmp_path: Path, capsys):
    rc = main(["train", *TINY, "--rounds", "2", "--schedulers", "alternating,psl,fl", "--target-acc", "0.05",
               "--out", str(tmp_path), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["schedulers"]) == {"alternating", "psl", "fl"}
    frames = {s: _rounds(tmp_path / s / "rounds.csv") for s in summary["schedulers"]}
    for s, df in frames.items():
        assert df["round"].tolist() == [0, 1, 2]
        assert df["sim_time_s"].is_monotonic_increasing and df["sim_time_s"].iloc[0] == 0
        assert (df["wall_s"].diff().iloc[1:] > 0).all()
        assert (tmp_path / s / "checkpoint.pt").is_file()
        e = summary["schedulers"][s]
        assert e["sim_time_s"] == pytest.approx(2 * e["round_time_s"])
        assert e["time_to_target_s"] == time_to_accuracy(df, 0.05)
    # the schedule changes the time axis, not the learning
    ref = frames["alternating"]
    for df in frames.values():
        pd.testing.assert_series_equal(df["test_acc"], ref["test_acc"], atol=1e-6)
        pd.testing.assert_series_equal(df["loss"], ref["loss"], atol=1e-5, rtol=1e-5)
    assert summary["schedulers"]["fl"]["cuts"] == [5, 5]
    png = tmp_path / "time_to_accuracy.png"
    assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    combined = pd.read_csv(tmp_path / "time_to_accuracy.csv")
    assert len(combined) == 9 and set(combined["scheduler"]) == {"alternating", "psl", "fl"}
    assert (tmp_path / "profile.csv").is_file()


def test_resume_continues_without_losing_a_round(tmp_path: Path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *TINY, "--rounds", "3", "--scheduler", "alternating", "--out", str(full)]) == 0
    assert main(["train", *TINY, "--rounds", "1", "--scheduler", "alternating", "--out", str(part)]) == 0
    assert len(_rounds(part / "alternating" / "rounds.csv")) == 2
    assert main(["train", *TINY, "--rounds", "3", "--scheduler", "alternating", "--out", str(part), "--resume"]) == 0
    a, b = _rounds(full / "alternating" / "rounds.csv"), _rounds(part / "alternating" / "rounds.csv")
    assert b["round"].tolist() == [0, 1, 2, 3]
    for col in ("sim_time_s", "test_acc", "loss"):
        pd.testing.assert_series_equal(a[col], b[col], rtol=0, atol=0)
    assert b["wall_s"].is_monotonic_increasing
    capsys.readouterr()
    # other settings than the checkpoint's: a clear error, exit status 2
    rc = main(["train", *TINY[:-4], "--test-samples", "100", "--threads", "1", "--lr", "0.2", "--rounds", "4",
               "--out", str(part), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "lr" in err and err.count("\n") == 1


def test_interrupted_run_resumes_from_the_last_checkpoint(tmp_path: Path):
    cfg = TrainConfig(model="small_cnn", dataset="synthetic_mnist", devices=2, rounds=3, samples_per_device=32,
                      batch_size=16, test_samples=64, momentum=0.9)
    prep = prepare(cfg)
    ref, _ = run_scheduler(prep, "psl")

    def crash(r: int, row: dict) -> None:
        if r == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scheduler(prep, "psl", tmp_path, on_round=crash)
    assert len(_rounds(tmp_path / "rounds.csv")) == 3  # rounds 0, 1, 2 were saved
    df, _ = run_scheduler(prep, "psl", tmp_path, resume=True)
    pd.testing.assert_frame_equal(df.drop(columns="wall_s"), ref.drop(columns="wall_s"))


@pytest.mark.parametrize("argv, needle", [
    (["--scheduler", "nope"], "unknown name 'nope'"),
    (["--schedulers", "fl,fl"], "twice"),
    (["--devices", "0"], "devices"),
    (["--non-iid", "-1"], "non-iid"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}"], "data_batch_1"),
    (["--samples-per-device", "0"], "samples-per-device"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = [a for a in TINY]
    rc = main(["train", *base, "--rounds", "1", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and err.count("\n") == 1
