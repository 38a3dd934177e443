"""The Gymnasium environments: registration, API checks (gymnasium and SB3) for every simulated id
and wrapper, determinism, reward/info against an independent cost-model evaluation, migration,
trace dynamics, memory masking, bad actions, pickling and vector envs."""

from __future__ import annotations

import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_checker import data_equivalence
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from edgesplit import envs
from edgesplit.costmodel import CostModel, optimal_shares
from edgesplit.devices import generate_scenario
from edgesplit.profiles import load_builtin_profile
from edgesplit.scenario import Device, Scenario, Server
from edgesplit.schedulers import best_cuts_for_shares, get_scheduler
from edgesplit.traces import Trace
from edgesplit.envs.wrappers import SHARE_KAPPA, cuts_from_unit, shares_from_unit

from .conftest import SHARED_DATA

N = 4
WRAPPER_KINDS = ["native", "flat", "hybrid", "shares", "forecast"]  # H-dyn: every wrapper under its one name


def make(env_id: str, kind: str = "native", **kw) -> gym.Env:
    kw.setdefault("n_devices", N)
    return envs.wrap(gym.make(env_id, **kw), kind)


def flat_trace(rate_bps: float = 1e6) -> list[Trace]:
    """A constant trace: the dynamic env then behaves like the static one (plus migration)."""
    return [Trace("flat", np.array([0.0]), np.array([rate_bps]), 10.0)]


def memory_need(profile, batch_size: int) -> np.ndarray:
    """DESIGN.md: 3 W(c) + b sum_{l<=c} act[l], written out independently of the library."""
    return 3.0 * np.cumsum(profile.param_bytes) + batch_size * np.cumsum(profile.activation_bytes)


@pytest.fixture(scope="module")
def vgg19():
    return load_builtin_profile("vgg19")


# ----------------------------------------------------------------------------- registration and API


def test_ids_are_registered_with_time_limits() -> None:
    for env_id in envs.ALL_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is not None and spec.max_episode_steps > 0
    assert set(envs.SIMULATED_IDS) <= set(envs.ALL_IDS)
    assert gym.spec("edgesplit/EdgeSplitTrain-v0").entry_point == "edgesplit.envs.train_env:EdgeSplitTrainEnv"
    env = gym.make("envs:EdgeSplit-v0", n_devices=3)
    assert env.unwrapped.n_devices == 3 and env.spec.max_episode_steps == envs.DEFAULT_ROUNDS


@pytest.mark.parametrize("env_id", envs.SIMULATED_IDS)
@pytest.mark.parametrize("kind", WRAPPER_KINDS)
def test_gymnasium_and_sb3_check_env(env_id: str, kind: str) -> None:
    env = make(env_id, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "wrapped env" / "Dict action space" notices, not failures
        gym_check_env(env.unwrapped if kind == "native" else env, skip_render_check=False)
        sb3_check_env(env, warn=True)


@pytest.mark.parametrize("env_id", envs.SIMULATED_IDS)
def test_same_seed_same_episode_bit_for_bit(env_id: str) -> None:
    def episode(seed: int) -> list:
        env = gym.make(env_id, n_devices=N, rounds=15)
        env.action_space.seed(seed)
        out = [env.reset(seed=seed)]
        while True:
            step = env.step(env.action_space.sample())
            out.append(step)
            if step[2] or step[3]:
                return out

    a, b, c = episode(11), episode(11), episode(12)
    assert len(a) == len(b) and (len(a) == 16 or env_id == "EdgeSplitDynamic-v1")  # v1: a step per decision epoch
    for x, y in zip(a, b):
        assert data_equivalence(x, y, exact=True)
        assert x[0].tobytes() == y[0].tobytes()
    assert not all(data_equivalence(x, y, exact=True) for x, y in zip(a, c))


@pytest.mark.parametrize("env_id", envs.SIMULATED_IDS)
def test_pickle_roundtrip_continues_identically(env_id: str) -> None:
    env = gym.make(env_id, n_devices=N)
    env.reset(seed=5)
    env.action_space.seed(5)
    for _ in range(3):
        env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(3):
        act = env.action_space.sample()
        assert data_equivalence(env.step(act), clone.step(act), exact=True)
    assert data_equivalence(env.reset(), clone.reset(), exact=True)  # the RNG state came along


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode: str) -> None:
    vec = gym.make_vec("EdgeSplitDynamic-v0" if mode == "sync" else "EdgeSplit-v0", num_envs=2,
                       vectorization_mode=mode, n_devices=N, rounds=3)
    try:
        obs, info = vec.reset(seed=0)
        assert obs.shape == (2,) + vec.single_observation_space.shape
        seen = []
        for _ in range(5):  # through an autoreset
            obs, rew, term, trunc, info = vec.step(vec.action_space.sample())
            assert np.isfinite(obs).all() and np.isfinite(rew).all()
            seen.append("round_time_s" in info)
            if "round_time_s" in info:
                assert info["round_time_s"].shape == (2,)
        assert seen[:4] == [True, True, True, False]  # 3 rounds, then the autoreset step
    finally:
        vec.close()


def test_defaults_run_offline() -> None:
    env = gym.make("EdgeSplitDynamic-v0")
    assert all(name.startswith("synthetic") for name in env.unwrapped.traceset.names)
    assert env.unwrapped.n_devices == 10 and env.unwrapped.profile.model == "vgg19"
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_render_ansi() -> None:
    env = gym.make("EdgeSplit-v0", n_devices=N, render_mode="ansi")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    text = env.render()
    assert isinstance(text, str) and "round 1/" in text


# ----------------------------------------------------------------------------- static env: reward and info


def test_static_reward_and_info_match_the_cost_model(vgg19) -> None:
    env = gym.make("EdgeSplit-v0", n_devices=6, rounds=10)
    obs, info0 = env.reset(seed=3)
    base = env.unwrapped
    # the scenario the env drew is the generator's, with the env's seeded RNG
    s = generate_scenario(vgg19, 6, rng=np.random.default_rng(3))
    assert [d.speed for d in s.devices] == [d.speed for d in base.scenario.devices]
    cm = CostModel.from_scenario(s)
    ref = get_scheduler("alternating").plan(s)
    assert info0["reference_time_s"] == pytest.approx(ref.round_time_s, rel=1e-12)
    np.testing.assert_array_equal(info0["cuts"], ref.cuts)
    rng = np.random.default_rng(0)
    deepest = cm.deepest_feasible_cut()
    clock = 0.0
    for t in range(10):
        cuts = rng.integers(0, base.n_layers, 6)
        raw = rng.uniform(0.05, 2.0, 6)
        obs, rew, term, trunc, info = env.step({"cuts": cuts, "shares": raw})
        eff = np.minimum(cuts + 1, deepest)
        shares = raw / raw.sum()
        per = cm.device_times(eff, shares)
        np.testing.assert_allclose(info["per_device_time_s"], per, rtol=1e-12)
        assert info["round_time_s"] == pytest.approx(per.max(), rel=1e-12)
        assert rew == pytest.approx(-min(per.max() / ref.round_time_s, base.max_penalty), rel=1e-12)
        np.testing.assert_array_equal(info["cuts"], eff)
        np.testing.assert_array_equal(info["memory_clipped"], cuts + 1 > deepest)
        np.testing.assert_allclose(info["shares"], shares, rtol=1e-15)
        np.testing.assert_array_equal(info["traffic_bits"], cm.traffic_bits[np.arange(6), eff - 1])
        np.testing.assert_array_equal(info["migration_bits"], np.zeros(6))
        assert info["alternating_round_time_s"] == pytest.approx(ref.round_time_s, rel=1e-12)
        clock += per.max()
        assert info["sim_clock_s"] == pytest.approx(clock, rel=1e-12)
        assert term == (t == 9) and not trunc
        # observation: last device times and cuts, progress
        H = base.history
        o_time = obs[(2 + H) * 6:(3 + H) * 6]
        np.testing.assert_allclose(o_time, np.minimum(per / ref.round_time_s, envs.MAX_OBS), rtol=1e-6)
        np.testing.assert_allclose(obs[(3 + H) * 6:(4 + H) * 6], eff / base.n_layers, rtol=1e-6)
        assert obs[-1] == pytest.approx((t + 1) / 10)


def test_alternating_plan_earns_minus_one_per_round() -> None:
    env = gym.make("EdgeSplit-v0", n_devices=8, rounds=5)
    env.reset(seed=1)
    act = envs.action_from_plan(env.unwrapped.alternating_plan)
    rewards = [env.step(act)[1] for _ in range(5)]
    np.testing.assert_allclose(rewards, -1.0, rtol=1e-9)


def test_shares_are_normalised(vgg19) -> None:
    results = []
    for factor in (1.0, 7.0, 0.01):
        env = gym.make("EdgeSplit-v0", n_devices=N)
        env.reset(seed=2)
        results.append(env.step({"cuts": np.array([3, 5, 7, 9]), "shares": np.array([0.1, 0.2, 0.3, 0.4]) * factor}))
    assert results[0][4]["shares"].sum() == pytest.approx(1.0)
    for r in results[1:]:
        assert r[1] == pytest.approx(results[0][1], rel=1e-12)


def test_zero_share_stalls_and_terminates_without_nan() -> None:
    env = gym.make("EdgeSplit-v0", n_devices=N, rounds=10)
    env.reset(seed=0)
    env.step({"cuts": np.zeros(N, dtype=int), "shares": np.full(N, 0.25)})
    obs, rew, term, trunc, info = env.step({"cuts": np.zeros(N, dtype=int), "shares": np.array([0.0, 0.5, 0.25, 0.25])})
    assert info["stalled"] and term and math.isinf(info["round_time_s"])
    assert rew == pytest.approx(-env.unwrapped.max_penalty * 9)  # this round and the 8 after it
    assert np.isfinite(obs).all() and env.observation_space.contains(obs)


def test_memory_infeasible_cut_is_masked_and_reported(vgg19) -> None:
    need = memory_need(vgg19, 32)
    devs = [Device(f"d{i}", 0.3, float(need[-1] * 2), 2e7, 256) for i in range(3)]
    devs[1] = Device("small", 0.3, float(need[2] * 1.0001), 2e7, 256)  # fits cuts 1..3 only
    s = Scenario(vgg19, 32, tuple(devs), Server(10.0, "dedicated"))
    env = gym.make("EdgeSplit-v0", scenario=s)
    obs, _ = env.reset(seed=0)
    L = vgg19.n_layers
    assert obs[3 + 1] == pytest.approx(3 / L)  # deepest-feasible-cut feature of device 1
    _, _, _, _, info = env.step({"cuts": np.array([L - 1, L - 1, 0]), "shares": np.ones(3)})
    np.testing.assert_array_equal(info["cuts"], [L, 3, 1])
    np.testing.assert_array_equal(info["memory_clipped"], [False, True, False])


def test_fixed_scenario_and_reset_options(vgg19) -> None:
    s = generate_scenario(vgg19, N, seed=9)
    env = gym.make("EdgeSplit-v0", scenario=s)
    env.reset(seed=0)
    assert env.unwrapped.scenario is s
    env.reset(seed=1)
    assert env.unwrapped.scenario is s
    other = generate_scenario(vgg19, N, seed=10)
    env.reset(options={"scenario": other})
    assert env.unwrapped.scenario is other
    with pytest.raises(ValueError, match="devices"):
        env.reset(options={"scenario": generate_scenario(vgg19, N + 1, seed=0)})
    with pytest.raises(ValueError, match="n_devices"):
        gym.make("EdgeSplit-v0", scenario=s, n_devices=N + 2)


def test_rounds_and_time_limit() -> None:
    env = gym.make("EdgeSplit-v0", n_devices=N, rounds=3)
    env.reset(seed=0)
    ends = [env.step(env.action_space.sample())[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), (True, False)]  # terminated by the env itself
    env = gym.make("EdgeSplit-v0", n_devices=N, rounds=150, max_episode_steps=150)
    env.reset(seed=0)
    ends = [env.step(env.action_space.sample())[2:4] for _ in range(150)]
    assert ends[-1][0] and not any(t or u for t, u in ends[:-1])


# ----------------------------------------------------------------------------- bad actions


@pytest.mark.parametrize("env_id", envs.SIMULATED_IDS)
@pytest.mark.parametrize("action, pattern", [
    ({"cuts": np.zeros(N, dtype=int), "shares": np.array([0.25, np.nan, 0.25, 0.25])}, r"shares'\]\[1\].*not finite"),
    ({"cuts": np.zeros(N, dtype=int), "shares": np.array([0.25, np.inf, 0.25, 0.25])}, r"shares'\]\[1\].*not finite"),
    ({"cuts": np.array([0.0, np.nan, 0.0, 0.0]), "shares": np.full(N, 0.25)}, r"cuts'\]\[1\].*not finite"),
    ({"cuts": np.array([0, 0, 999, 0]), "shares": np.full(N, 0.25)}, r"cuts'\]\[2\].*out of range"),
    ({"cuts": np.array([0, -1, 0, 0]), "shares": np.full(N, 0.25)}, r"cuts'\]\[1\].*out of range"),
    ({"cuts": np.zeros(N, dtype=int), "shares": np.array([0.5, -0.1, 0.3, 0.3])}, r"shares'\]\[1\].*negative"),
    ({"cuts": np.zeros(N, dtype=int), "shares": np.zeros(N)}, r"all shares are 0"),
    ({"cuts": np.zeros(N + 1, dtype=int), "shares": np.full(N, 0.25)}, r"cuts'\].*shape"),
    ({"cuts": np.zeros(N, dtype=int)}, r"keys 'cuts' and 'shares'"),
    (np.zeros(2 * N), r"keys 'cuts' and 'shares'"),
])
def test_bad_actions_raise_value_error(env_id: str, action, pattern: str) -> None:
    env = gym.make(env_id, n_devices=N)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.unwrapped.step(action)


@pytest.mark.parametrize("kind, action, pattern", [
    ("flat", np.array([0.0] * (2 * N - 1) + [np.nan]), r"action\[7\].*not finite"),
    ("flat", np.array([0.0] * (2 * N - 1) + [1.5]), r"action\[7\].*outside"),
    ("shares", np.array([0.0, -2.0, 0.0, 0.0]), r"action\[1\].*outside"),
    ("hybrid", np.array([0, 0, 0, 999]), r"action\[3\].*out of range"),
])
def test_bad_wrapped_actions_raise_value_error(kind: str, action, pattern: str) -> None:
    env = make("EdgeSplit-v0", kind)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=pattern):
        env.step(action)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"rounds": 0}, "rounds"),
    ({"n_devices": 0}, "n_devices"),
    ({"model": "no-such-model"}, "model"),
    ({"max_penalty": -1.0}, "max_penalty"),
    ({"heterogeneity": 0.5}, "heterogeneity"),
])
def test_bad_arguments_name_the_field(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        gym.make("EdgeSplit-v0", **kwargs)


# ----------------------------------------------------------------------------- wrappers


def test_unit_mappings() -> None:
    L = 24
    np.testing.assert_array_equal(cuts_from_unit(np.array([-1.0, -0.999, 0.0, 0.999, 1.0]), L), [0, 0, 12, 23, 23])
    sh = shares_from_unit(np.array([1.0, -1.0, 0.0]))
    assert sh.sum() == pytest.approx(1.0)
    assert sh[0] / sh[1] == pytest.approx(1000.0) and SHARE_KAPPA == pytest.approx(math.log(1000) / 2)


def test_cuts_wrapper_sets_optimal_shares(vgg19) -> None:
    env = make("EdgeSplit-v0", "hybrid", n_devices=6)
    env.reset(seed=4)
    base = env.unwrapped
    cm = CostModel.from_scenario(base.scenario)
    cuts = np.array([2, 5, 8, 11, 14, 23]) % base.n_layers
    eff = np.minimum(cuts + 1, cm.deepest_feasible_cut())
    a, v = cm.select(eff)
    _, T_opt = optimal_shares(a, v, cm.rate_bps)
    _, _, _, _, info = env.step(cuts)
    assert info["round_time_s"] == pytest.approx(T_opt, rel=1e-9)
    assert info["round_time_s"] <= cm.round_time(eff, np.full(6, 1 / 6)) + 1e-9
    # the alternating cuts with optimal shares reproduce the alternating plan's round time
    alt = base.alternating_plan
    _, _, _, _, info = env.step(alt.cuts - 1)
    assert info["round_time_s"] == pytest.approx(alt.round_time_s, rel=1e-9)


def test_shares_wrapper_uses_the_alternating_cut_rule() -> None:
    env = make("EdgeSplit-v0", "shares", n_devices=6)
    env.reset(seed=4)
    a = np.linspace(-1, 1, 6)
    _, _, _, _, info = env.step(a)
    shares = shares_from_unit(a)
    expected = best_cuts_for_shares(CostModel.from_scenario(env.unwrapped.scenario), shares)
    np.testing.assert_array_equal(info["cuts"], expected)
    np.testing.assert_allclose(info["shares"], shares, rtol=1e-12)


def test_flat_wrapper_maps_both_halves() -> None:
    env = make("EdgeSplit-v0", "flat")
    env.reset(seed=0)
    L = env.unwrapped.n_layers
    a = np.array([-1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    _, _, _, _, info = env.step(a)
    deepest = env.unwrapped.cost_model.deepest_feasible_cut()
    np.testing.assert_array_equal(info["cuts"], np.minimum([1, 1, L, L], deepest))
    np.testing.assert_allclose(info["shares"], 0.25)


# ----------------------------------------------------------------------------- dynamic env


def test_constant_trace_dynamic_equals_cost_model_plus_migration(vgg19) -> None:
    env = gym.make("EdgeSplitDynamic-v0", n_devices=5, traces=flat_trace(), rounds=7, history=2)
    _, info0 = env.reset(seed=8)
    base = env.unwrapped
    cm = CostModel.from_scenario(base.scenario)  # rates = the link classes = the constant traces
    W = np.cumsum(vgg19.param_bytes)
    prev = info0["cuts"]
    rng = np.random.default_rng(1)
    clock = 0.0
    for _ in range(6):
        cuts = rng.integers(0, base.n_layers, 5)
        raw = rng.uniform(0.1, 1.0, 5)
        _, rew, _, _, info = env.step({"cuts": cuts, "shares": raw})
        eff = np.minimum(cuts + 1, cm.deepest_feasible_cut())
        shares = raw / raw.sum()
        mig = 3 * 8 * np.abs(W[eff - 1] - W[prev - 1])  # weights + gradients + momentum, in bits
        np.testing.assert_allclose(info["migration_bits"], mig, rtol=1e-12)
        per = cm.device_times(eff, shares) + mig / (shares * cm.rate_bps)
        np.testing.assert_allclose(info["per_device_time_s"], per, rtol=1e-9)
        np.testing.assert_allclose(info["measured_rate_bps"], cm.rate_bps, rtol=1e-9)
        assert rew == pytest.approx(-min(per.max() / base.reference_time_s, 10.0), rel=1e-9)
        clock += per.max()
        assert info["sim_clock_s"] == pytest.approx(clock, rel=1e-12)
        # hindsight reference: alternating on the true (here constant) rates, by the cost model
        np.testing.assert_allclose(info["true_rate_bps"], cm.rate_bps, rtol=1e-9)
        alt = get_scheduler("alternating").plan(cm).round_time_s
        assert info["alternating_round_time_s"] == pytest.approx(alt, rel=1e-9)
        prev = eff
    # keeping the cuts costs no migration
    _, _, _, _, info = env.step({"cuts": prev - 1, "shares": np.ones(5)})
    np.testing.assert_array_equal(info["migration_bits"], np.zeros(5))


def test_dynamic_rounds_integrate_the_traces(vgg19) -> None:
    env = gym.make("EdgeSplitDynamic-v0", n_devices=N, rounds=8, history=3)
    obs, info0 = env.reset(seed=21)
    base = env.unwrapped
    ts = base.traceset
    k, off = info0["trace_index"], info0["trace_offset_s"]
    scale = base.scenario.array("rate_bps") / ts.mean_bps[k]
    cm = CostModel.from_scenario(base.scenario)
    prev_obs = obs
    rng = np.random.default_rng(3)
    for _ in range(8):
        clock = base._clock
        cuts = rng.integers(0, base.n_layers, N)
        raw = rng.uniform(0.1, 1.0, N)
        obs, _, _, _, info = env.step({"cuts": cuts, "shares": raw})
        shares = raw / raw.sum()
        bits = info["traffic_bits"] + info["migration_bits"]
        a, v = cm.select(info["cuts"])
        np.testing.assert_array_equal(info["traffic_bits"], v)
        for i in range(N):
            tr = ts.traces[k[i]]
            tau = tr.transfer_time(bits[i], off[i] + clock, scale[i] * shares[i])
            assert info["per_device_time_s"][i] == pytest.approx(a[i] + tau, rel=1e-9)
            assert info["measured_rate_bps"][i] == pytest.approx(bits[i] / (shares[i] * tau), rel=1e-9)
            true = tr.bits_between(off[i] + clock, off[i] + clock + base.reference_time_s, scale[i]) / base.reference_time_s
            assert info["true_rate_bps"][i] == pytest.approx(true, rel=1e-9)
        # the agent sees the last measured rates, and the history shifts by one round
        r_norm = base.scenario.array("rate_bps").max()
        np.testing.assert_allclose(obs[2 * N:3 * N], np.minimum(info["measured_rate_bps"] / r_norm, 10), rtol=1e-6)
        np.testing.assert_array_equal(obs[3 * N:5 * N], prev_obs[2 * N:4 * N])
        prev_obs = obs
        assert np.isfinite(info["round_time_s"])


def test_outage_trace_stalls_the_round_but_ends(vgg19) -> None:
    outage = Trace("outage", np.array([0.0, 1.0]), np.array([1e6, 0.0]), 1001.0)  # 1 s up, 1000 s down
    env = gym.make("EdgeSplitDynamic-v0", n_devices=2, traces=[outage], rounds=6)
    _, info0 = env.reset(seed=0)
    cm = CostModel.from_scenario(env.unwrapped.scenario)
    waited = False
    for _ in range(6):
        pos = (info0["trace_offset_s"] + env.unwrapped._clock) % 1001.0
        obs, rew, term, trunc, info = env.step({"cuts": np.zeros(2, dtype=int), "shares": np.ones(2)})
        assert np.isfinite(info["round_time_s"]) and np.isfinite(rew) and np.isfinite(obs).all()
        tau = info["per_device_time_s"] - cm.select(info["cuts"])[0]
        wait = np.where(pos >= 1.0, 1001.0 - pos, 0.0)  # a transfer starting in the outage waits for the link
        assert (tau >= wait - 1e-9).all()
        waited |= bool((wait > 0).any())
    assert waited


def test_pensieve_traces_in_the_dynamic_env() -> None:
    folder = SHARED_DATA / "traces" / "pensieve-train"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    env = gym.make("EdgeSplitDynamic-v0", n_devices=N, traces=str(folder), rounds=5)
    _, info = env.reset(seed=0)
    assert len(env.unwrapped.traceset) == 127 and (info["trace_index"] < 127).all()
    for _ in range(5):
        obs, rew, _, _, info = env.step(env.action_space.sample())
        assert np.isfinite(rew) and env.observation_space.contains(obs)


def test_cuts_wrapper_in_the_dynamic_env_plans_on_measured_rates(vgg19) -> None:
    env = make("EdgeSplitDynamic-v0", "hybrid", rounds=4)
    env.reset(seed=6)
    base = env.unwrapped
    cuts = np.array([3, 3, 6, 6])
    known = base.known_rates_bps()
    cm = CostModel.from_scenario(base.scenario).with_rates(known)
    eff = np.minimum(cuts + 1, cm.deepest_feasible_cut())
    a, v = cm.select(eff)
    W = np.cumsum(vgg19.param_bytes)
    mig = 3 * 8 * np.abs(W[eff - 1] - W[base.current_cuts() - 1])
    shares, _ = optimal_shares(a, v + mig, known)
    _, _, _, _, info = env.step(cuts)
    np.testing.assert_allclose(info["shares"], shares, rtol=1e-12)
