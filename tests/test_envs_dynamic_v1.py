"""EdgeSplitDynamic-v1: Gymnasium/SB3 conventions, the two time scales, renormalised shares,
family-mean scaling, continuation without looping, and the episode's return."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from edgesplit import envs
from edgesplit.costmodel import CostModel
from edgesplit.schedulers import get_scheduler
from edgesplit.traces import Trace, TraceFamily, builtin_trace_dir, load_families

from .conftest import SHARED_DATA

TRACES = SHARED_DATA / "traces"
BUILTIN = builtin_trace_dir()  # shipped Pensieve traces: families fcc (5) and hsdpa (4)
needs_shared = pytest.mark.skipif(not TRACES.is_dir(), reason="needs ../shared/data/traces (absent in this clone)")


def flat(rate: float, period: float = 50.0, name: str = "flat") -> Trace:
    return Trace(name, np.array([0.0]), np.array([rate]), period)


def play(env: gym.Env, seed: int, policy=None, max_steps: int = 100_000) -> tuple[list[np.ndarray], list[float], dict]:
    """Observations and rewards of one episode with equal shares and the cuts in place."""
    obs, info = env.reset(seed=seed)
    n = env.unwrapped.n_devices
    obs_l, rew = [obs], []
    for _ in range(max_steps):
        act = policy(obs, info) if policy else {"cuts": np.asarray(env.unwrapped.current_cuts()) - 1,
                                                "shares": np.ones(n)}
        obs, r, term, trunc, info = env.step(act)
        obs_l.append(obs)
        rew.append(r)
        if term or trunc:
            break
    return obs_l, rew, info


def test_checkers_pass() -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check

    for interval in (5.0, None):
        env = gym.make("EdgeSplitDynamic-v1", n_devices=4, interval_s=interval, rounds=3)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check(envs.wrap(gym.make("EdgeSplitDynamic-v1", n_devices=4, interval_s=interval, rounds=3), "flat"))


def test_same_seed_same_episode_and_pickling() -> None:
    mk = lambda: gym.make("EdgeSplitDynamic-v1", n_devices=5, rounds=3,  # noqa: E731
                          traces=BUILTIN)
    a_obs, a_rew, _ = play(mk(), 3)
    b_obs, b_rew, _ = play(mk(), 3)
    assert len(a_obs) == len(b_obs) and all(np.array_equal(x, y) for x, y in zip(a_obs, b_obs))
    assert a_rew == b_rew
    c_obs, _, _ = play(mk(), 4)
    assert not (len(c_obs) == len(a_obs) and all(np.array_equal(x, y) for x, y in zip(a_obs, c_obs)))
    # pickle mid-episode: the copy continues exactly as the original
    env = mk()
    env.reset(seed=3)
    n = env.unwrapped.n_devices
    act = {"cuts": env.unwrapped.current_cuts() - 1, "shares": np.ones(n)}
    for _ in range(7):
        env.step(act)
    twin = pickle.loads(pickle.dumps(env))
    for _ in range(30):
        o1, r1, t1, _, _ = env.step(act)
        o2, r2, t2, _, _ = twin.step(act)
        assert np.array_equal(o1, o2) and r1 == r2 and t1 == t2
        if t1:
            break


def test_make_vec() -> None:
    v = gym.make_vec("EdgeSplitDynamic-v1", num_envs=2, vectorization_mode="sync", n_devices=3, rounds=2)
    obs, _ = v.reset(seed=0)
    assert obs.shape == (2, 3 * (9 + 4) + 3)
    obs, rew, term, trunc, _ = v.step(v.action_space.sample())
    assert rew.shape == (2,) and (rew < 0).all()


def test_return_is_total_time_and_rounds_add_up() -> None:
    env = gym.make("EdgeSplitDynamic-v1", n_devices=6, rounds=4, traces=BUILTIN)
    obs, rew, info = play(env, 0)
    base = env.unwrapped
    assert math.isclose(-sum(rew), info["sim_clock_s"] / base.reference_time_s, rel_tol=1e-12)
    # per round: the steps' times add up to the round's time
    obs, info = env.reset(seed=1)
    t_round, rounds = 0.0, 0
    while True:
        obs, r, term, _, info = env.step({"cuts": base.current_cuts() - 1, "shares": np.ones(6)})
        t_round += info["step_time_s"]
        if info.get("round_done"):
            assert math.isclose(t_round, info["round_time_s"], rel_tol=1e-9)
            t_round, rounds = 0.0, rounds + 1
        if term:
            break
    assert rounds == 4


def test_phases_interval_grid_and_cut_epoch_only_reads_cuts_then() -> None:
    env = gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=2, interval_s=7.0)
    obs, info = env.reset(seed=0)
    base = env.unwrapped
    assert info["phase"] == "cuts" and obs[-3] == 1.0
    obs, _, _, _, info = env.step({"cuts": np.zeros(4, dtype=int), "shares": np.ones(4)})
    assert info["phase"] == "shares" and obs[-3] == 0.0
    assert math.isclose(info["step_time_s"], 7.0) and math.isclose(info["sim_clock_s"], 7.0)
    # in a share epoch the cuts are ignored (even an out-of-range value)
    obs, _, _, _, info = env.step({"cuts": np.full(4, 999), "shares": np.ones(4)})
    assert (base.current_cuts() == 1).all() and math.isclose(info["sim_clock_s"], 14.0)
    with pytest.raises(ValueError, match="share"):
        env.step({"cuts": np.zeros(4, dtype=int), "shares": np.where(info["sending"], 0.0, 1.0)})
    # interval_s=None: one step per round
    env = gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=3, interval_s=None)
    _, rew, info = play(env, 0)
    assert len(rew) == 3


def test_constant_links_match_the_cost_model() -> None:
    """Flat traces: the round time of the optimal plan is the cost model's whatever interval_s (the
    device that finishes sending first is the one with the most compute; it gets nothing from the
    renormalisation, the others finish no later than planned)."""
    for interval in (None, 5.0, 0.7):
        env = gym.make("EdgeSplitDynamic-v1", n_devices=5, rounds=2, traces=[flat(1e6, name="a"), flat(1e6, name="b")],
                       migration_factor=0.0,
                       interval_s=interval)
        obs, info = env.reset(seed=2)
        base = env.unwrapped
        cm = base.cost_model  # nominal rates = the (family-mean scaled) flat links
        plan = get_scheduler("exact").plan(cm)
        act = envs.action_from_plan(plan)
        while True:
            obs, r, term, _, info = env.step(act)
            if info.get("round_done"):
                break
        assert math.isclose(info["round_time_s"], plan.round_time_s, rel_tol=1e-9)
        assert (info["per_device_time_s"] <= plan.per_device_time_s * (1 + 1e-9)).all()
        assert (info["per_device_time_s"] < plan.per_device_time_s * (1 - 1e-6)).any()


def test_shares_are_renormalised_when_a_device_finishes() -> None:
    """Two devices, one link class, flat 1 Mbit/s: the first to finish hands its half to the other."""
    env = gym.make("EdgeSplitDynamic-v1", n_devices=2, rounds=1, traces=[flat(1e6, 1e6, "a"), flat(1e6, 1e6, "b")],
                   interval_s=None,
                   migration_factor=0.0)
    env.reset(seed=0)
    base = env.unwrapped
    scen = base.scenario
    cm = base.cost_model
    r = cm.rate_bps
    cuts = np.array([1, 1])
    a, v = cm.select(cuts)
    _, _, _, _, info = env.step({"cuts": cuts - 1, "shares": np.array([0.5, 0.5])})
    # device j with fewer seconds-alone finishes first at 2 * v_j / r_j; the other then has the whole band
    s = v / r
    j = int(np.argmin(s))
    o = 1 - j
    t_j = 2 * s[j]
    t_o = t_j + (s[o] - s[j])  # half rate until t_j (delivered s_j's worth), then full rate
    assert math.isclose(info["per_device_time_s"][j], t_j + a[j], rel_tol=1e-9)
    assert math.isclose(info["per_device_time_s"][o], t_o + a[o], rel_tol=1e-9)
    assert scen.n_devices == 2


def test_family_mean_scaling_not_own_mean() -> None:
    """A family of two flat traces (1 and 3 Mbit/s, same length): family mean 2 Mbit/s, so a device
    of class r runs at r/2 or 3r/2, never at r (the own-mean scaling of v0 would give r)."""
    fam = TraceFamily("two", (flat(1e6, 1e6, "slow"), flat(3e6, 1e6, "fast")))
    assert math.isclose(fam.mean_bps, 2e6)
    env = gym.make("EdgeSplitDynamic-v1", n_devices=8, rounds=1, traces=[fam])
    env.reset(seed=5)
    base = env.unwrapped
    _, _, _, _, info = env.step({"cuts": base.current_cuts() - 1, "shares": np.ones(8)})
    ratio = base.policy_view()["past_rates_bps"][0] / base.policy_view()["nominal_rate_bps"]
    assert np.all(np.isclose(ratio, 0.5) | np.isclose(ratio, 1.5))
    assert np.isclose(ratio, 0.5).any() and np.isclose(ratio, 1.5).any()


@needs_shared
def test_families_from_folders() -> None:
    fams = {f.name: len(f) for f in load_families(TRACES / "pensieve-train")}
    assert fams == {"fcc": 59, "hsdpa": 68}
    env = gym.make("EdgeSplitDynamic-v1", n_devices=3, traces=[TRACES / "pensieve-train", TRACES / "conext23-att",
                                                                  TRACES / "conext23-starlink-mobility",
                                                                  TRACES / "conext23-starlink-roam"])
    assert env.unwrapped.family_names == ("conext23-att", "conext23-starlink-mobility", "conext23-starlink-roam",
                                          "fcc", "hsdpa")
    assert gym.make("EdgeSplitDynamic-v1", n_devices=3).unwrapped.family_names == ("synthetic",)


def test_no_trace_loops_within_an_episode() -> None:
    """Short traces (FCC ones last ~70-300 s) over a long episode: every device moves on to another
    trace of its family, from that trace's beginning, and never re-enters a trace where it was."""
    env = gym.make("EdgeSplitDynamic-v1", n_devices=6, rounds=15, traces=BUILTIN,
                   trace_start="beginning")
    play(env, 0)
    base = env.unwrapped
    ref = base.reference_only_trace_info()
    ts = base.traceset
    assert ref["switches"] >= 12
    fam_of = {k: f for f, fam in enumerate(base.families) for k in range(base._fam_start[f], base._fam_start[f] + len(fam))}
    for segs in ref["segments"]:
        for (t0, k0), (t1, k1) in zip(segs, segs[1:]):
            assert k1 != k0 and fam_of[k1] == fam_of[k0]
            assert math.isclose(t1 - t0, ts.period_s[k0], rel_tol=1e-12, abs_tol=1e-9)  # k0 played once, whole
    assert all(segs[0][0] == 0.0 for segs in ref["segments"])  # trace_start="beginning"


def test_measured_rates_follow_the_trace_with_beginning_start() -> None:
    """With trace_start='beginning' and 1 s intervals on 1 s bins, a device's window rates are its
    trace's bins, scaled by nominal / family mean."""
    rates = np.array([1.0, 2.0, 0.0, 4.0, 3.0, 5.0, 1.0, 2.0] * 50) * 1e6
    tr = Trace("steps", np.arange(rates.size, dtype=float), rates, float(rates.size))
    other = Trace("other", np.arange(rates.size, dtype=float), rates[::-1].copy(), float(rates.size))
    fam = TraceFamily("f", (tr, other))
    env = gym.make("EdgeSplitDynamic-v1", n_devices=3, rounds=1, traces=[fam], interval_s=1.0,
                   trace_start="beginning")
    env.reset(seed=0)
    base = env.unwrapped
    ref = base.reference_only_trace_info()
    k = ref["start_trace"]
    seen = []
    for _ in range(6):
        _, _, _, _, info = env.step({"cuts": base.current_cuts() - 1, "shares": np.ones(3)})
        seen.append(base.policy_view()["past_rates_bps"][0])
    seen = np.array(seen)
    scale = base.policy_view()["nominal_rate_bps"] / fam.mean_bps
    for i in range(3):
        expect = base.traceset.traces[k[i]].rates_bps[:6] * scale[i]
        assert np.allclose(seen[:, i], expect, rtol=1e-9)


def test_step_after_end_and_bad_actions() -> None:
    env = gym.make("EdgeSplitDynamic-v1", n_devices=3, rounds=1, interval_s=None)
    base = env.unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        base.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shares"):
        env.step({"cuts": np.zeros(3, dtype=int), "shares": np.array([1.0, np.nan, 1.0])})
    _, _, term, _, _ = env.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
    assert term
    with pytest.raises(RuntimeError, match="reset"):
        base.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
    with pytest.raises(ValueError, match="interval_s"):
        gym.make("EdgeSplitDynamic-v1", interval_s=0.0)
    with pytest.raises(ValueError, match="trace_start"):
        gym.make("EdgeSplitDynamic-v1", trace_start="middle")


def test_tiny_share_gives_a_stall_not_nan() -> None:
    """A share of 1e-300 for a device still sending: never NaN; the round stalls and the episode ends."""
    for interval in (None, 5.0):
        env = gym.make("EdgeSplitDynamic-v1", n_devices=3, rounds=2, interval_s=interval, max_round_factor=2.0)
        obs, info = env.reset(seed=0)
        act = {"cuts": np.zeros(3, dtype=int), "shares": np.array([1e-300, 1.0, 1.0])}
        total = 0.0
        for _ in range(10_000):
            obs, r, term, _, info = env.step(act)
            assert not np.isnan(obs).any() and not math.isnan(r)
            total += r
            if term:
                break
        assert term and info["stalled"]
        assert env.observation_space.contains(obs)


def test_builtin_traces_ship_with_the_package() -> None:
    from edgesplit.traces import builtin_trace_dir

    fams = {f.name: len(f) for f in load_families(builtin_trace_dir())}
    assert fams == {"fcc": 5, "hsdpa": 4}
    env = gym.make("EdgeSplitDynamic-v1", n_devices=3, rounds=1, traces=builtin_trace_dir())
    _, rew, info = play(env, 0)
    assert info["round_done"] and all(r < 0 for r in rew)
