"""agents: a tiny `edgesplit train-agent` run (checkpoint, --resume, metadata), and saved policies
refused for another N or env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgesplit.agents.environment import make_base_env
from edgesplit.agents.evaluation import evaluate
from edgesplit.agents.policies import LearnedPolicy, get_policy
from edgesplit.agents.training import run_name, seed_everything
from edgesplit.cli import main

TINY = ["--env", "EdgeSplitDynamic-v0", "--algo", "ppo", "--wrapper", "forecast", "--n-devices", "4",
        "--seed", "3", "--n-envs", "2", "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=2",
        "--checkpoint-every", "128", "--no-progress", "--reward", "counterfactual"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256-step PPO run, then resumed to 384 steps."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train-agent", *TINY, "--timesteps", "256", "--out", str(out)]) == 0
    assert main(["train-agent", *TINY, "--timesteps", "384", "--out", str(out), "--resume"]) == 0
    runs = list(out.iterdir())
    assert len(runs) == 1
    return runs[0]


def test_run_folder_has_name_hyperparams_checkpoints_and_statistics(tiny_run: Path) -> None:
    env_id, algo, seed, stamp = tiny_run.name.split("__")
    assert (env_id, algo, seed) == ("EdgeSplitDynamic-v0", "ppo", "3") and stamp.isdigit()
    hp = json.loads((tiny_run / "hyperparams.json").read_text())
    assert hp["wrapper"] == "forecast" and hp["hyperparams"]["n_steps"] == 64
    ckpts = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert "model_128_steps.zip" in ckpts and "model_128_steps.vecnormalize.pkl" in ckpts and "model_128_steps.norm.json" in ckpts
    assert "model_256_steps.zip" in ckpts and "model_384_steps.zip" in ckpts  # written after --resume
    assert (tiny_run / "vecnormalize.pkl").is_file() and (tiny_run / "progress.csv").is_file()
    meta = json.loads((tiny_run / "model.json").read_text())
    assert meta["timesteps"] == 384 and meta["n_devices"] == 4 and meta["env_id"] == "EdgeSplitDynamic-v0"
    assert len(meta["obs_rms"]["mean"]) == meta["obs_dim"]
    assert meta["training"]["steps_per_s"] > 0 and meta["training"]["env_steps_per_s"] > 0


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train-agent", *TINY, "--timesteps", "128", "--out", str(tmp_path), "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_saved_policy_evaluates_by_path_deterministically(tiny_run: Path) -> None:
    a, _ = evaluate(str(tiny_run / "model.zip"), episodes=1, seed=4)
    b, _ = evaluate(str(tiny_run), episodes=1, seed=4)
    assert a["n_devices"] == 4 and a["mean_total_time_s"] == b["mean_total_time_s"]
    assert a["ratio_to_oracle"] >= 1.0 - 1e-9


def test_saved_policy_is_refused_for_another_n_or_env(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    path = str(tiny_run / "model.zip")
    assert main(["evaluate", "--policy", path, "--n-devices", "5", "--episodes", "1", "--json"]) == 2
    err = capsys.readouterr().err
    assert "trained for EdgeSplitDynamic-v0 with N=4" in err and "N=5" in err
    assert main(["evaluate", "--policy", path, "--env", "EdgeSplit-v0", "--episodes", "1", "--json"]) == 2
    assert "refusing to run it on EdgeSplit-v0" in capsys.readouterr().err
    pol = get_policy(path)
    assert isinstance(pol, LearnedPolicy)
    with pytest.raises(ValueError, match="N=6"):
        pol.reset(make_base_env("EdgeSplitDynamic-v0", n_devices=6), 0)


def test_bad_training_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train-agent", "--algo", "sac", "--wrapper", "hybrid", "--timesteps", "10",
                 "--out", str(tmp_path)]) == 2
    assert "hybrid" in capsys.readouterr().err
    assert main(["train-agent", "--env", "EdgeSplitTrain-v0", "--timesteps", "10", "--out", str(tmp_path)]) == 2


def test_seed_everything_and_run_name() -> None:
    seed_everything(5)
    a = np.random.rand()
    seed_everything(5)
    assert np.random.rand() == a
    assert run_name("E-v0", "ppo", 2, when=1234.9) == "E-v0__ppo__2__1234"


def test_study_falls_back_to_synthetic_traces_with_a_note(tiny_run: Path, tmp_path: Path) -> None:
    from edgesplit.experiments.rl_vs_alternating import main as study

    out = tmp_path / "study"
    assert study(["--out", str(out), "--traces", str(tmp_path / "no-such-folder"), "--n-devices", "4",
                  "--episodes", "2", "--rule-episodes", "1", "--models", str(tiny_run / "model.zip")]) == 0
    for name in ("episodes.csv", "summary.csv", "gap_by_seed.csv", "rl_vs_alternating.png", "results.md"):
        assert (out / name).is_file(), name
    md = (out / "results.md").read_text()
    assert "built-in synthetic traces" in md and "Note" in md
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv").set_index("policy")
    assert summary.loc["alternating", "gap_closed"] == 0.0 and summary.loc["oracle", "gap_closed"] == 1.0
    assert {"learned (seed 3)", "rule", "static", "exact"} <= set(summary.index)
