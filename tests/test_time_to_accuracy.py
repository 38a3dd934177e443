"""``experiments.time_to_accuracy`` end to end on a tiny configuration (synthetic data, small_cnn)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from edgesplit.experiments.time_to_accuracy import main


def test_tiny_time_to_accuracy_run_writes_table_figure_and_timing(tmp_path: Path, capsys):
    before = torch.get_num_threads()
    try:
        rc = main(["--out", str(tmp_path), "--dataset", "synthetic", "--model", "small_cnn", "--devices", "2",
                   "--samples-per-device", "32", "--iterations", "1", "--batch-size", "16", "--test-samples", "64",
                   "--splits", "iid,0.5", "--target", "0.05", "--max-rounds", "2", "--extra-rounds", "0",
                   "--profile", "shipped"])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    md = capsys.readouterr().out
    assert "| iid | alternating |" in md and "| dirichlet0.5 | fl |" in md
    table = pd.read_csv(tmp_path / "time_to_accuracy.csv")
    assert set(table["split"]) == {"iid", "dirichlet0.5"} and set(table["scheduler"]) == {"alternating", "psl", "fl"}
    # the target (5%) is reached at round 0 or 1 by every schedule of one training: the same round
    assert table.groupby("split")["rounds_to_target"].nunique().eq(1).all()
    assert (tmp_path / "time_to_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    for split in ("iid", "dirichlet0.5"):
        timing = pd.read_csv(tmp_path / split / "timing.csv")
        rounds = int(table.loc[table["split"] == split, "rounds"].iloc[0])  # it stops once the target is reached
        assert rounds >= 1 and len(timing) == 3 * 2 * rounds and (timing["measured_s"] > 0).all()
