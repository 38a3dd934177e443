"""train-agent like the Zoo: --hp checked (no orphan folder), resume appends and falls back to the
previous good checkpoint, evaluation during training with the best model kept, Zoo config files,
sb3-contrib algorithms; loading never unpickles (truncated zips and pickle payloads)."""

from __future__ import annotations

import base64
import csv
import json
import pickle
import zipfile
from pathlib import Path

import pytest

from edgesplit.agents.loading import ModelFileError, check_hyperparams, load_model
from edgesplit.agents.training import TrainConfig, load_zoo_config, train
from edgesplit.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["train-agent", "--n-devices", "4", "--n-envs", "2", "--hp", "n_steps=32", "--hp", "batch_size=64",
        "--hp", "n_epochs=1", "--checkpoint-every", "64", "--no-progress", "--no-tensorboard", "--seed", "1"]


def _steps(run: Path) -> list[int]:
    with open(run / "progress.csv", newline="") as fh:
        return [int(float(r["time/total_timesteps"])) for r in csv.DictReader(fh)]


@pytest.mark.parametrize("hp, says", [("foo=1", "not a PPO hyper-parameter"), ("nstep=64", "did you mean n_steps"),
                                      ("gamma=2", "must be in [0, 1]"), ("n_steps=abc", "must be an integer"),
                                      ("policy_kwargs=[1]", "must be a mapping")])
def test_bad_hp_is_one_line_exit_2_and_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             hp: str, says: str) -> None:
    assert main([*TINY, "--timesteps", "64", "--out", str(tmp_path / "runs"), "--hp", hp]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err and hp.split("=")[0] in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_appends_logs_stops_at_timesteps_and_falls_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "runs")
    assert main([*TINY, "--timesteps", "128", "--out", out]) == 0
    run = next(Path(out).iterdir())
    assert _steps(run) == [64, 128]
    assert main([*TINY, "--timesteps", "256", "--out", out, "--resume"]) == 0
    assert _steps(run) == [64, 128, 192, 256]  # appended, not restarted; stopped at --timesteps
    assert json.loads((run / "model.json").read_text())["timesteps"] == 256
    monitor = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert monitor[0].startswith("#") and sum(1 for ln in monitor if ln.startswith("#")) == 1  # appended
    # the newest checkpoint truncated, the one before lost its statistics, the final model gone
    ck = run / "checkpoints"
    data = (ck / "model_256_steps.zip").read_bytes()
    (ck / "model_256_steps.zip").write_bytes(data[: len(data) // 2])
    (ck / "model_192_steps.norm.json").unlink()
    (run / "model.zip").unlink()
    capsys.readouterr()
    assert main([*TINY, "--timesteps", "320", "--out", out, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "model_256_steps.zip is unreadable" in err and "normalisation statistics model_192_steps.norm.json are missing" in err
    assert "resuming from the previous good checkpoint checkpoints/model_128_steps.zip" in err
    assert _steps(run) == [64, 128, 192, 256, 320]  # rows after the checkpoint rolled back, then logged again
    assert sorted(p.name for p in ck.glob("*.tmp")) == []


def test_evaluation_during_training_logs_gap_closed_and_keeps_the_best_model(tmp_path: Path) -> None:
    cfg = TrainConfig(env_id="edgesplit/EdgeSplit-v0", n_devices=4, n_envs=2, timesteps=128, checkpoint_every=64,
                      hyperparams={"n_steps": 32, "batch_size": 64, "n_epochs": 1}, out=str(tmp_path),
                      progress_bar=False, tensorboard=False, eval_every=64, eval_episodes=1,
                      eval_baselines=("alternating", "static", "oracle"))
    res = train(cfg)
    assert [r["timesteps"] for r in res.evaluations] == [64, 128]
    with open(res.run_dir / "evaluations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and {"gap_closed_vs_alternating", "gap_closed_vs_best_classical", "best_classical"} <= set(rows[0])
    assert rows[0]["best_classical"] in ("alternating", "static")
    best = min(res.evaluations, key=lambda r: r["mean_total_time_s"])
    meta = json.loads((res.run_dir / "best_model.json").read_text())
    assert meta["model_file"] == "best_model.zip" and meta["validation"]["timesteps"] == best["timesteps"]
    from edgesplit.agents.evaluation import evaluate

    s, _ = evaluate(str(res.run_dir / "best_model.json"), env_id="EdgeSplit-v0", episodes=1)
    assert s["mean_total_time_s"] > 0
    with open(res.run_dir / "progress.csv", newline="") as fh:
        assert "eval/mean_total_time_s" in next(csv.reader(fh))  # (no gap to close in v0: n/a, not logged)


def test_truncated_policy_zip_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shipped = ROOT / "agents" / "shipped" / "edgesplit-dynamic-n10"
    data = shipped.with_suffix(".zip").read_bytes()
    (tmp_path / "p.zip").write_bytes(data[:3000])
    (tmp_path / "p.json").write_text(shipped.with_suffix(".json").read_text().replace("edgesplit-dynamic-n10.zip", "p.zip"))
    assert main(["evaluate", "--policy", str(tmp_path / "p.zip"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p.zip" in err and "truncated or corrupt" in err


def _with_payload(src: Path, dst: Path, key: str, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = json.loads(members["data"])
    entry = dict(data.get(key, {":type:": "x"}))
    entry[":serialized:"] = base64.b64encode(pickle.dumps(Evil())).decode()
    data[key] = entry
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


def test_loading_never_unpickles_a_payload(tmp_path: Path) -> None:
    shipped = ROOT / "agents" / "shipped" / "edgesplit-dynamic-n10.zip"
    marker = tmp_path / "pwned"
    # a payload in place of a known blob: replaced, never unpickled; the model still loads
    _with_payload(shipped, tmp_path / "a.zip", "lr_schedule", marker)
    model = load_model(tmp_path / "a.zip", "ppo")
    assert model.observation_space.shape == (111,) and not marker.exists()
    # a payload under a key we do not know: refused, naming --trust
    _with_payload(shipped, tmp_path / "b.zip", "surprise", marker)
    with pytest.raises(ModelFileError, match="--trust"):
        load_model(tmp_path / "b.zip", "ppo")
    assert not marker.exists()
    # the test can fail: plain stable-baselines3 does run the payload
    from stable_baselines3 import PPO

    try:
        PPO.load(str(tmp_path / "b.zip"), device="cpu")
    except Exception:  # noqa: BLE001 - whatever happens after the unpickling
        pass
    assert marker.exists()


def test_hyperparams_checked_against_each_algorithm() -> None:
    check_hyperparams("sac", {"buffer_size": 1000, "ent_coef": "auto", "action_noise_sigma": 0.2})
    with pytest.raises(ValueError, match="n_epochs"):
        check_hyperparams("sac", {"n_epochs": 3})
    with pytest.raises(ValueError, match="gradient_steps"):
        check_hyperparams("td3", {"gradient_steps": 0})


def test_shipped_zoo_config_files_parse_and_name_the_shipped_settings() -> None:
    files = sorted((ROOT / "agents" / "hyperparams").glob("*.yml"))
    assert {"ppo.yml", "ppo_mask.yml", "ppo_lstm.yml"} <= {f.name for f in files}
    ppo = load_zoo_config(ROOT / "agents" / "hyperparams" / "ppo.yml", "edgesplit/EdgeSplitDynamic-v0", "ppo")
    shipped = json.loads((ROOT / "agents" / "shipped" / "edgesplit-dynamic-n10.json").read_text())["training"]
    assert ppo["settings"]["wrapper"] == "forecast" and ppo["settings"]["reward"] == "counterfactual"
    assert ppo["settings"]["timesteps"] == 250_000 and ppo["settings"]["net"] == "device"
    for k, v in shipped["hyperparams"].items():
        if k != "policy_kwargs":
            assert ppo["hyperparams"][k] == v, k
    from edgesplit.agents.loading import read_zip_data

    assert ppo["hyperparams"]["policy_kwargs"] == read_zip_data(ROOT / "agents" / "shipped" / "edgesplit-dynamic-n10.zip")["policy_kwargs"]
    for f in files:
        algo = f.stem
        if algo.startswith("edgesplit-"):
            continue
        import yaml

        for env_id in yaml.safe_load(f.read_text()):
            zoo = load_zoo_config(f, env_id, algo)
            check_hyperparams(algo, zoo["hyperparams"])


@pytest.mark.parametrize("algo", ["ppo_mask", "ppo_lstm"])
def test_sb3_contrib_algorithms_train_and_evaluate(tmp_path: Path, algo: str) -> None:
    pytest.importorskip("sb3_contrib")
    assert main([*TINY, "--algo", algo, "--timesteps", "64", "--out", str(tmp_path), "--eval-every", "64",
                 "--eval-episodes", "1", "--env", "edgesplit/EdgeSplit-v0"]) == 0
    run = next(tmp_path.iterdir())
    meta = json.loads((run / "model.json").read_text())
    assert meta["algo"] == algo and meta["wrapper"] == ("hybrid" if algo == "ppo_mask" else "forecast")
    from edgesplit.agents.evaluation import evaluate

    s, _ = evaluate(str(run / "model.zip"), env_id="EdgeSplit-v0", episodes=1)
    assert s["mean_total_time_s"] > 0
    from edgesplit.agents.factories import make_base_env
    from edgesplit.agents.policies import get_policy

    pol, env = get_policy(str(run / "model.zip")), make_base_env("EdgeSplit-v0", 4)
    obs, info = env.reset(seed=0)
    pol.reset(env, 0)
    pol.act(obs, info)
    assert (pol._rnn is not None) == (algo == "ppo_lstm")  # the LSTM state is carried between rounds
    pol.reset(env, 1)
    assert pol._rnn is None  # and fresh each episode


def test_cut_masks_are_the_memory_feasible_cuts() -> None:
    import numpy as np

    from edgesplit.agents.environment import make_agent_env
    from edgesplit.agents.training import CutMasks

    env = CutMasks(make_agent_env("EdgeSplit-v0", "hybrid", 5))
    env.reset(seed=3)
    mask = env.action_masks().reshape(5, -1)
    assert np.array_equal(mask, env.unwrapped.cost_model.feasible | ~env.unwrapped.cost_model.feasible.any(axis=1, keepdims=True))
