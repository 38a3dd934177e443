"""edgesplit sweep: trials on Ray Tune, trials.csv, summary with IQM and stratified bootstrap intervals, plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgesplit.agents.sweep import SweepConfig, iqm, stratified_bootstrap_ci, trial_specs


def test_iqm_is_scipys_trimmed_mean() -> None:
    trim_mean = pytest.importorskip("scipy.stats").trim_mean
    x = np.random.default_rng(1).normal(size=(13, 3))
    assert iqm(x) == pytest.approx(trim_mean(x, 0.25, axis=None))


def test_iqm_trims_a_quarter_each_side_and_the_bootstrap_interval_covers_it() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 3))
    assert iqm([1.0, 2.0, 3.0, 100.0]) == 2.5  # the outlier is trimmed
    assert iqm(np.arange(8.0)) == 3.5 and iqm([5.0]) == 5.0
    lo, hi = stratified_bootstrap_ci(x, reps=500)
    assert lo < iqm(x) < hi
    # stratified: every resample keeps each task's column; a constant task adds no width
    lo2, hi2 = stratified_bootstrap_ci(np.column_stack([x[:, 0], np.full(13, 5.0)]), reps=500)
    assert lo2 < hi2 and math.isnan(stratified_bootstrap_ci(np.ones((1, 1)))[0])


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
