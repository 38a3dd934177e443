"""edgesplit sweep: trials on Ray Tune, trials.csv, summary with IQM and stratified bootstrap intervals, plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgesplit.agents.sweep import SweepConfig, iqm, trial_specs


def test_sweep_aggregates_with_iqm_and_a_stratified_bootstrap_interval() -> None:
    from edgesplit.agents.sweep import aggregate

    df = pd.DataFrame({"algo": ["ppo"] * 5 + ["a2c"] * 2, "hp_set": "default",
                       "gap_closed": [0.1, 0.2, 0.3, 0.4, 5.0, 0.5, None]})
    rows = {r["algo"]: r for r in aggregate(df, "gap_closed", reps=500)}
    assert rows["ppo"]["iqm"] == pytest.approx(iqm([0.1, 0.2, 0.3, 0.4, 5.0])) and rows["ppo"]["iqm"] < 1.0  # trimmed
    assert rows["ppo"]["ci_low"] <= rows["ppo"]["iqm"] <= rows["ppo"]["ci_high"]
    assert rows["a2c"]["runs"] == 2 and rows["a2c"]["finite"] == 1 and math.isnan(rows["a2c"]["ci_low"])


def test_trial_specs_cover_algos_sets_and_seeds(tmp_path: Path) -> None:
    cfg = SweepConfig(algos=["ppo", "a2c"], seeds=3, first_seed=5, out=str(tmp_path))
    names = [s["trial"] for s in trial_specs(cfg)]
    assert len(names) == len(set(names)) == 6 and "a2c__default__s7" in names
    with pytest.raises(ValueError, match="--algo"):
        SweepConfig(algos=["dqn"]).check()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for the Ray tests of this module (starting Ray takes ~10 s)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_tiny_sweep_on_local_ray(tmp_path: Path, local_ray) -> None:
    from edgesplit.cli import main

    out = tmp_path / "sweep"
    args = ["sweep", "--env", "edgesplit/EdgeSplit-v0", "--algo", "ppo,a2c", "--seeds", "1", "--timesteps", "64",
            "--n-envs", "2", "--hp", "n_steps=32", "--episodes", "1", "--n-devices", "3", "--workers", "2",
            "--out", str(out)]
    assert main(args) == 0
    df = pd.read_csv(out / "trials.csv")
    assert list(df.columns[:5]) == ["trial", "algo", "hp_set", "seed", "timesteps"]
    assert {"mean_total_time_s", "gap_closed", "ratio_to_alternating", "ratio_to_oracle"} <= set(df.columns)
    assert sorted(df["algo"]) == ["a2c", "ppo"] and (df["timesteps"] == 64).all()
    assert (df["mean_total_time_s"] > 0).all() and (df["ratio_to_oracle"] >= 1 - 1e-9).all()
    md = (out / "summary.md").read_text()
    assert "IQM" in md and "| ppo | default | 1 |" in md and "| a2c | default | 1 |" in md
    assert (out / "sweep.png").stat().st_size > 1000
    # a rerun skips finished trials (nothing lost, nothing redone)
    before = sorted(p.stat().st_mtime for p in (out / "trials").glob("*.json"))
    assert main(args) == 0
    assert sorted(p.stat().st_mtime for p in (out / "trials").glob("*.json")) == before


def test_sweep_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    from edgesplit.cli import main

    assert main(["sweep", "--algo", "ppo", "--seeds", "1", "--timesteps", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[sweep]'" in err


def test_train_many_on_ray_returns_runs_in_order(tmp_path: Path, local_ray) -> None:
    from edgesplit.agents.sweep import train_many
    from edgesplit.agents.training import TrainConfig

    cfgs = [TrainConfig(env_id="edgesplit/EdgeSplit-v0", n_devices=3, n_envs=2, timesteps=64, seed=s, out=str(tmp_path),
                        hyperparams={"n_steps": 32, "batch_size": 64, "n_epochs": 1}, tensorboard=False) for s in (4, 5)]
    res = train_many(cfgs, workers=2)
    assert [Path(r["run_dir"]).name.split("__")[2] for r in res] == ["4", "5"]
    assert all(Path(r["metadata_path"]).is_file() and r["timesteps"] == 64 for r in res)
