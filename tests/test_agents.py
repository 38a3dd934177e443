"""agents: the policy interface, the forecast action, trace splits, and `edgesplit evaluate`."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from edgesplit.agents.environment import (RateFeatures, make_agent_env, make_base_env, rate_features,
                                split_traces)
from edgesplit.agents.evaluation import evaluate, evaluate_policies, mean_ci95, summarize
from edgesplit.agents.policies import CLASSICAL, V1_ONLY, Policy, get_policy, shipped_policy_path
from edgesplit.cli import main
from edgesplit.schedulers import get_scheduler
from edgesplit.traces import default_traceset


def _valid_native(env: gym.Env, action: dict) -> None:
    base = env.unwrapped
    cuts, shares = np.asarray(action["cuts"]), np.asarray(action["shares"])
    assert cuts.shape == (base.n_devices,) and shares.shape == (base.n_devices,)
    assert cuts.min() >= 0 and cuts.max() < base.n_layers
    assert np.all(shares >= 0) and shares.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("env_id", ["EdgeSplit-v0", "EdgeSplitDynamic-v0"])
@pytest.mark.parametrize("name", [n for n in CLASSICAL if n not in V1_ONLY])
def test_classical_policies_share_one_interface(env_id: str, name: str) -> None:
    env = make_base_env(env_id, n_devices=4)
    pol = get_policy(name)
    assert isinstance(pol, Policy) and pol.name == name
    obs, info = env.reset(seed=3)
    pol.reset(env, 3)
    for _ in range(3):
        action = pol.act(obs, info)
        _valid_native(env, action)
        obs, _, term, trunc, info = env.step(action)
        assert np.isfinite(info["round_time_s"])


def test_policies_agree_where_rates_are_fixed() -> None:
    """With fixed rates, static, exact and oracle are the same plan; alternating is no better."""
    env = make_base_env("EdgeSplit-v0", n_devices=6)
    df = evaluate_policies([get_policy(n) for n in ("static", "exact", "oracle", "alternating")], env, 2, seed=5)
    tot = df.groupby("policy")["total_time_s"].mean()
    assert tot["static"] == pytest.approx(tot["exact"], rel=1e-9)
    assert tot["oracle"] == pytest.approx(tot["exact"], rel=1e-9)
    assert tot["alternating"] >= tot["exact"] * (1 - 1e-9)


def test_oracle_beats_last_rate_rescheduling_on_traces() -> None:
    env = make_base_env("EdgeSplitDynamic-v0", n_devices=6)
    df = evaluate_policies([get_policy("oracle"), get_policy("alternating")], env, 2, seed=0)
    tot = df.groupby("policy")["total_time_s"].mean()
    assert tot["oracle"] < tot["alternating"]


def test_unknown_policy_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="neither a policy name"):
        get_policy("no-such-policy")


def test_forecast_action_plans_with_the_exact_scheduler() -> None:
    """The forecast wrapper's native action is edgesplit.schedulers' exact plan on the forecast rates."""
    env = make_agent_env("EdgeSplitDynamic-v0", "forecast", n_devices=6)
    env.reset(seed=2)
    base = env.unwrapped
    a = np.random.default_rng(0).uniform(-1, 1, 6).astype(np.float32)
    native = env.action(a)
    plan = get_scheduler("exact").plan(base.cost_model.with_rates(base.cost_model.rate_bps * np.exp(a.astype(float))))
    assert np.array_equal(native["cuts"] + 1, plan.cuts) and np.allclose(native["shares"], plan.shares)


def test_every_wrapper_has_one_name() -> None:
    from edgesplit.envs.wrappers import WRAPPERS, ForecastAction

    assert set(WRAPPERS) == {"flat", "hybrid", "shares", "forecast"} and WRAPPERS["forecast"] is ForecastAction
    assert len(set(WRAPPERS.values())) == len(WRAPPERS)


def test_forecast_action_zero_is_the_static_plan() -> None:
    env = make_agent_env("EdgeSplitDynamic-v0", "forecast", n_devices=5)
    obs, _ = env.reset(seed=1)
    base = env.unwrapped
    native = env.action(np.zeros(5, dtype=np.float32))
    plan = get_scheduler("exact").plan(base.cost_model)
    assert np.array_equal(native["cuts"] + 1, plan.cuts)
    np.testing.assert_allclose(native["shares"], plan.shares, rtol=1e-3)
    assert env.observation_space.contains(obs)
    with pytest.raises(ValueError, match=r"action\[2\]"):
        env.action(np.array([0, 0, np.nan, 0, 0], dtype=np.float32))


def test_rate_features_recover_measured_rates() -> None:
    env = make_base_env("EdgeSplitDynamic-v0", n_devices=4)
    obs, _ = env.reset(seed=2)
    base = env.unwrapped
    obs, *_ = env.step(_static_action(env))
    f = rate_features(obs, base)
    measured = base.known_rates_bps()
    expect = np.clip(np.log(measured / base.cost_model.rate_bps), -4, 4)
    n, raw = 4, obs.size
    np.testing.assert_allclose(f[raw:raw + n], expect, rtol=1e-4, atol=1e-4)
    wrapped = RateFeatures(make_base_env("EdgeSplitDynamic-v0", n_devices=4))
    o, _ = wrapped.reset(seed=0)
    assert wrapped.observation_space.contains(o)


def _static_action(env: gym.Env) -> dict:
    pol = get_policy("static")
    pol.reset(env, 0)
    return pol.act(None, {})


def test_sb3_check_env_passes_for_the_forecast_env() -> None:
    from stable_baselines3.common.env_checker import check_env

    check_env(make_agent_env("EdgeSplitDynamic-v0", "forecast", n_devices=3), warn=True)


def test_trace_split_is_disjoint_deterministic_and_covers_all() -> None:
    traces = list(default_traceset().traces)
    train, test = split_traces(traces, "train"), split_traces(traces, "test")
    names = lambda ts: {t.name for t in ts}  # noqa: E731
    assert names(train).isdisjoint(names(test))
    assert names(train) | names(test) == names(traces)
    assert names(split_traces(traces[::-1], "test")) == names(test)
    assert 0.2 < len(test) / len(traces) < 0.4
    with pytest.raises(ValueError, match="trace_split"):
        split_traces(traces, "validation")


def test_mean_ci95() -> None:
    m, lo, hi = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / np.sqrt(3)) and hi == pytest.approx(2 + 4.303 / np.sqrt(3))


EVAL_FIELDS = ("policy", "episodes", "mean_total_time_s", "mean_round_time_s", "ci95_total_time_s",
               "ratio_to_alternating", "ratio_to_oracle")


def _evaluate_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["evaluate", *args, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_evaluate_cli_prints_one_json_object(capsys: pytest.CaptureFixture) -> None:
    res = _evaluate_json(capsys, "--env", "EdgeSplitDynamic-v0", "--policy", "static", "--episodes", "2",
                         "--n-devices", "5", "--seed", "7")
    for key in EVAL_FIELDS:
        assert key in res, key
    assert res["policy"] == "static" and res["episodes"] == 2
    lo, hi = res["ci95_total_time_s"]
    assert lo <= res["mean_total_time_s"] <= hi
    assert res["ratio_to_alternating"] == pytest.approx(res["mean_total_time_s"] / res["alternating_mean_total_time_s"])
    assert res["ratio_to_oracle"] == pytest.approx(res["mean_total_time_s"] / res["oracle_mean_total_time_s"])
    assert res["mean_round_time_s"] == pytest.approx(res["mean_total_time_s"] / 100)


def test_same_seed_same_evaluation_numbers(capsys: pytest.CaptureFixture) -> None:
    args = ("--env", "EdgeSplitDynamic-v0", "--policy", "random", "--episodes", "2", "--n-devices", "4", "--seed", "11")
    a = _evaluate_json(capsys, *args)
    b = _evaluate_json(capsys, *args)
    assert a == b
    c = _evaluate_json(capsys, "--env", "EdgeSplitDynamic-v0", "--policy", "random", "--episodes", "2",
                       "--n-devices", "4", "--seed", "12")
    assert c["mean_total_time_s"] != a["mean_total_time_s"]


def test_alternating_against_itself_is_one() -> None:
    summary, df = evaluate("alternating", env_id="EdgeSplitDynamic-v0", episodes=1, n_devices=3, seed=0)
    assert summary["ratio_to_alternating"] == 1.0
    assert set(df["policy"]) == {"alternating", "oracle"}
    assert summarize(df, "oracle")["ratio_to_oracle"] == 1.0


def test_evaluate_cli_bad_input_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--policy", "nonsense", "--episodes", "1", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "policy" in err[0]
    assert main(["evaluate", "--policy", "static", "--episodes", "0"]) == 2
    assert main(["evaluate", "--policy", "static", "--env", "EdgeSplit-v0", "--traces", "x", "--episodes", "1"]) == 2


def test_shipped_policy_runs_with_the_learned_name() -> None:
    try:
        shipped_policy_path()
    except FileNotFoundError:
        pytest.skip("no shipped policy in this checkout")
    pol = get_policy("learned")
    env = make_base_env(pol.meta["env_id"], n_devices=pol.meta["n_devices"], history=pol.meta["history"])
    obs, info = env.reset(seed=0)
    pol.reset(env, 0)
    _valid_native(env, pol.act(obs, info))
    with pytest.raises(ValueError, match="N=10"):
        pol.reset(make_base_env(pol.meta["env_id"], n_devices=4), 0)
