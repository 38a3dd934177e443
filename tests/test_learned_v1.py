"""The learned v1 tilt: features, network, simulator, saved policy, env policy (issue 9 item 5)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from edgesplit import envs  # noqa: F401
from edgesplit.agents.learned_v1 import (FEATURE_NAMES, MIN_SHARE, LearnedV1Policy, TiltConfig, TiltEnsemble,
                                         TiltModel, equal_finish_shares, load_tilt, shares_from_logits,
                                         tilt_features, tilt_logits)
from edgesplit.agents.learned_v1_training import (ESConfig, RoundBatch, simulate, simulate_models, train_candidates,
                                                  train_es)
from edgesplit.traces import TraceFamily, synthetic_traces


def _features(rng: np.random.Generator, M: int = 3, N: int = 5, K: int = 24):
    cfg = TiltConfig()
    nominal = rng.uniform(5e6, 50e6, (M, N))
    past = nominal[:, None, :] * rng.lognormal(0, 0.5, (M, K, N))
    B = rng.uniform(1e8, 3e8, (M, N))
    left = B * rng.uniform(0.1, 1.0, (M, N))
    sending = rng.random((M, N)) < 0.8
    sending[:, 0] = True
    A = rng.uniform(10, 100, (M, N))
    plan, T = equal_finish_shares(B, A, nominal, np.ones((M, N), bool))
    x, base = tilt_features(past, nominal * 0.9, nominal, left, B, sending, A, np.full(M, 30.0), plan, T, cfg)
    return cfg, x, base, sending


def test_equal_finish_shares_make_everyone_finish_together():
    rng = np.random.default_rng(0)
    B = rng.uniform(1e8, 3e8, (4, 6))
    A = rng.uniform(5, 80, (4, 6))
    r = rng.uniform(5e6, 5e7, (4, 6))
    act = rng.random((4, 6)) < 0.7
    act[:, 0] = True
    s, T = equal_finish_shares(B, A, r, act, now_s=10.0)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    assert (s[~act] == 0).all()
    finish = 10.0 + B / (np.where(act, s, 1.0) * r) + A
    for m in range(4):
        np.testing.assert_allclose(finish[m, act[m]], T[m], rtol=1e-6)


@pytest.mark.parametrize("context", ["mean", "mean_max"])
def test_zero_network_is_the_backbone_and_shares_are_a_distribution(context):
    rng = np.random.default_rng(1)
    _, x, base, sending = _features(rng)
    cfg = TiltConfig(context=context)
    assert x.shape == base.shape + (len(FEATURE_NAMES),)
    logits = tilt_logits(np.zeros(cfg.n_params()), x, base, sending, cfg)
    np.testing.assert_allclose(logits[sending], base[sending])
    assert np.isneginf(logits[~sending]).all()
    sh = shares_from_logits(logits)
    np.testing.assert_allclose(sh.sum(axis=1), 1.0)
    assert (sh[~sending] == 0).all() and (sh[sending] >= MIN_SHARE / 2).all()


@pytest.mark.parametrize("context", ["mean", "mean_max"])
def test_tilt_is_permutation_equivariant(context):
    rng = np.random.default_rng(2)
    _, x, base, sending = _features(rng, M=2, N=6)
    cfg = TiltConfig(context=context)
    theta = rng.normal(0, 0.3, cfg.n_params())
    perm = rng.permutation(6)
    a = tilt_logits(theta, x, base, sending, cfg)
    b = tilt_logits(theta, x[:, perm], base[:, perm], sending[:, perm], cfg)
    np.testing.assert_allclose(a[:, perm], b)


@pytest.mark.parametrize("context", ["mean", "mean_max"])
def test_population_rows_match_single_candidates(context):
    rng = np.random.default_rng(3)
    _, x, base, sending = _features(rng, M=2, N=4)
    cfg = TiltConfig(context=context)
    thetas = rng.normal(0, 0.3, (3, cfg.n_params()))
    X = np.concatenate([x] * 3)
    out = tilt_logits(thetas, X, np.concatenate([base] * 3), np.concatenate([sending] * 3), cfg)
    for c in range(3):
        np.testing.assert_allclose(out[2 * c:2 * c + 2], tilt_logits(thetas[c], x, base, sending, cfg))


def _constant_batch(M: int = 2, N: int = 4, S: int = 900) -> tuple[RoundBatch, np.ndarray]:
    rng = np.random.default_rng(4)
    nominal = rng.uniform(5e6, 2e7, (M, N))
    B = rng.uniform(5e8, 1e9, (M, N))
    A = rng.uniform(10, 60, (M, N))
    plan, T = equal_finish_shares(B, A, nominal, np.ones((M, N), bool))
    R = np.repeat(nominal[:, :, None], S, axis=2).astype(np.float32)
    past = np.repeat(nominal[:, None, :], 24, axis=1)
    return RoundBatch(R=R, past=past, past_dur=np.full((M, 24), 5.0), mean_rate=nominal, nominal=nominal, B=B, A=A, plan_shares=plan, plan_time=T), T


def test_simulator_reproduces_the_plan_at_constant_rates():
    """Constant links: the backbone keeps the plan's shares, so the round lasts the plan's time."""
    batch, T = _constant_batch()
    cfg = ESConfig(n_devices=4, horizon_s=900.0)
    got = simulate(batch, np.zeros((1, cfg.tilt.n_params())), cfg)[0]
    np.testing.assert_allclose(got, T, rtol=1e-4)


def test_simulator_renormalises_over_devices_still_sending():
    """A device with nothing to send leaves the band to the others at once."""
    batch, _ = _constant_batch(M=1, N=3)
    batch.B[0, 0] = 0.0
    cfg = ESConfig(n_devices=3, horizon_s=900.0)
    got = simulate(batch, np.zeros((1, cfg.tilt.n_params())), cfg)[0, 0]
    # the two others share the whole band; bound: each alone needs B/r, together at most the sum
    r, B, A = batch.R[0, :, 0].astype(float), batch.B[0], batch.A[0]
    assert got <= (B[1] / r[1] + B[2] / r[2]) + A[1:].max() + 1e-6
    assert got >= max(B[1] / r[1] + A[1], B[2] / r[2] + A[2]) - 1e-6


def test_model_save_load_roundtrip_and_errors(tmp_path):
    cfg = TiltConfig(hidden=4)
    theta = np.arange(cfg.n_params(), dtype=float) / 100
    TiltModel(theta=theta, cfg=cfg, meta={"trained_on": ["a"]}).save(tmp_path / "m")
    m = TiltModel.load(tmp_path / "m.json")
    np.testing.assert_array_equal(m.theta, theta)
    assert m.cfg == cfg and m.meta["trained_on"] == ["a"]
    with pytest.raises(FileNotFoundError, match="learned v1 policy"):
        TiltModel.load(tmp_path / "missing")
    (tmp_path / "m.json").write_text((tmp_path / "m.json").read_text().replace('"format": 2', '"format": 99'))
    with pytest.raises(ValueError, match="format"):
        TiltModel.load(tmp_path / "m")


def test_ensemble_tilt_is_the_mean_of_its_members_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    cfg, x, base, sending = _features(rng)
    a = TiltModel(theta=rng.normal(0, 0.5, cfg.n_params()), cfg=cfg, meta={"candidate": "a"})
    cfg_b = TiltConfig(context="mean_max", hidden=8)
    b = TiltModel(theta=rng.normal(0, 0.5, cfg_b.n_params()), cfg=cfg_b)
    ens = TiltEnsemble([a, b], meta={"selected": "ensemble"})
    got = ens.logits(x, base, sending)
    # independently: base + (g_a + g_b) / 2 on the devices sending, each g from its own network
    ga = tilt_logits(a.theta, x, base, sending, a.cfg) - base
    gb = tilt_logits(b.theta, x, base, sending, b.cfg) - base
    np.testing.assert_allclose(got[sending], (base + 0.5 * (ga + gb))[sending], rtol=1e-12)
    assert np.isneginf(got[~sending]).all()
    ens.save(tmp_path / "e")
    back = load_tilt(tmp_path / "e.json")
    assert isinstance(back, TiltEnsemble) and back.meta["selected"] == "ensemble"
    assert [m.cfg for m in back.members] == [cfg, cfg_b] and back.members[0].meta["candidate"] == "a"
    np.testing.assert_array_equal(back.logits(x, base, sending), got)
    assert isinstance(load_tilt(a.save(tmp_path / "single")[0]), TiltModel)
    with pytest.raises(ValueError, match="differs from tilt 0 in \\['alpha'\\]"):
        TiltEnsemble([a, TiltModel.zero(TiltConfig(alpha=3.0))])


def test_simulate_models_matches_the_population_simulator():
    cfg = ESConfig(n_devices=3, interval_s=5.0, horizon_s=600.0)
    cfg.tilt.hidden = 4
    rng = np.random.default_rng(4)
    M, N, S = 3, 3, 600
    nominal = rng.uniform(5e6, 20e6, (M, N))
    B = rng.uniform(5e8, 1e9, (M, N))
    A = rng.uniform(5, 30, (M, N))
    plan, T = equal_finish_shares(B, A, nominal, np.ones((M, N), bool))
    batch = RoundBatch(R=(nominal[:, :, None] * rng.lognormal(0, 0.6, (M, N, S))).astype(np.float32),
                       past=np.broadcast_to(nominal[:, None, :], (M, 24, N)).copy(), past_dur=np.zeros((M, 24)),
                       mean_rate=nominal, nominal=nominal, B=B, A=A, plan_shares=plan, plan_time=T)
    thetas = rng.normal(0, 0.5, (2, cfg.tilt.n_params()))
    pop = simulate(batch, thetas, cfg)
    models = [TiltModel(theta=t, cfg=cfg.tilt) for t in thetas]
    np.testing.assert_allclose(simulate_models(batch, models, cfg), pop, rtol=1e-12)
    # an ensemble of two copies of one tilt plays that tilt
    np.testing.assert_allclose(simulate_models(batch, [TiltEnsemble([models[1], models[1]])], cfg)[0], pop[1],
                               rtol=1e-9)


def _family() -> TraceFamily:
    return TraceFamily("synthetic-t", tuple(synthetic_traces(n_traces=3, duration_s=600.0, seed=5)))


@pytest.mark.parametrize("ensemble", [False, True])
def test_policy_plays_v1_deterministically_without_the_future(ensemble):
    fam = _family()
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=4, traces=[fam], rounds=2)

    def forbidden(*a, **k):
        raise AssertionError("the learned policy read the coming rates")

    env.unwrapped.reference_only_future_bits = forbidden
    cfg = TiltConfig(hidden=4)
    rng = np.random.default_rng(0)
    model = TiltModel(theta=rng.normal(0, 0.3, cfg.n_params()), cfg=cfg)
    if ensemble:
        model = TiltEnsemble([model, TiltModel(theta=rng.normal(0, 0.3, cfg.n_params()), cfg=cfg)])
    pol = LearnedV1Policy(model=model)
    totals = []
    for _ in range(2):
        obs, info = env.reset(seed=3)
        pol.reset(env, 3)
        total, done = 0.0, False
        while not done:
            a = pol.act(obs, info)
            assert env.action_space.contains({"cuts": a["cuts"], "shares": a["shares"]})
            obs, _, term, trunc, info = env.step(a)
            total += info["step_time_s"]
            done = term or trunc
        totals.append(total)
    assert totals[0] == totals[1] > 0


def test_policy_refuses_an_env_without_policy_view():
    env = gym.make("edgesplit/EdgeSplit-v0", n_devices=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="EdgeSplitDynamic-v1"):
        LearnedV1Policy(model=TiltModel.zero()).reset(env, 0)


def test_evaluating_a_learned_tilt_also_plays_its_backbone_as_a_classical_policy():
    """The learned tilt is judged against its own backbone (pf with the tilt's exponent, window,
    planning rates and prior, tuned on its training families), so tuning pf is not credited to
    learning; the zero tilt plays that rule (up to the tilt's share floor)."""
    from edgesplit.agents.evaluation import backbone_of, evaluate, run_episode
    from edgesplit.agents.policies import get_policy

    cfg = TiltConfig(alpha=3.0, pf_window=6, plan_prior_s=600.0, context="mean")
    zero = LearnedV1Policy(model=TiltModel.zero(cfg), name="zero")
    bb = backbone_of(zero, interval_s=10.0)
    assert bb.name == "pf-backbone"
    pf = bb.v1
    assert (pf.exponent, pf.window_s, pf.prior_s) == (3.0, 60.0, 600.0)
    assert backbone_of(get_policy("pf")) is None
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=4, traces=[_family()], rounds=2)
    for seed in (0, 1):
        t_zero = run_episode(env, zero, seed).total_time_s
        assert t_zero == pytest.approx(run_episode(env, backbone_of(zero), seed).total_time_s, rel=5e-3)
    summary, df = evaluate("learned", episodes=1, seed=0, n_devices=10, rounds=1)
    assert "pf-backbone" in set(df["policy"]) and "pf-backbone" in summary["classical_ratio_to_oracle"]
    shipped = get_policy("learned").v1.model.cfg
    bb = backbone_of(get_policy("learned")).v1
    assert (bb.exponent, bb.window_s) == (shipped.alpha, shipped.pf_window * 5.0)


def test_es_training_runs_and_keeps_validation_best(tmp_path):
    cfg = ESConfig(population=2, batch_rounds=2, generations=2, val_rounds=2, eval_every=1, n_devices=3,
                   horizon_s=900.0, minutes=1.0)
    cfg.tilt.hidden = 4
    model, rows = train_es([_family(), TraceFamily("synthetic-u", tuple(synthetic_traces(3, 600.0, seed=6)))],
                           cfg, tmp_path)
    assert len(rows) == 2 and (tmp_path / "model.npz").is_file() and (tmp_path / "progress.csv").is_file()
    assert model.meta["trained_on"] == ["synthetic-t", "synthetic-u"]
    assert model.meta["validation_log_ratio_vs_pf"] <= 0.0
    assert TiltModel.load(tmp_path / "model").theta.shape == (cfg.tilt.n_params(),)


def test_candidates_keep_the_best_option_on_a_fresh_selection_batch(tmp_path):
    from edgesplit.agents.learned_v1_training import selection_scores

    cfg = ESConfig(population=2, batch_rounds=2, generations=4, val_rounds=2, eval_every=1, n_devices=3,
                   horizon_s=900.0, minutes=1.0, select_rounds=6)
    cfg.tilt.hidden = 4
    fams = [_family(), TraceFamily("synthetic-u", tuple(synthetic_traces(3, 600.0, seed=6)))]
    import dataclasses

    cands = [("a", cfg), ("b", dataclasses.replace(cfg, fitness="rank", seed=1, split_seed=0))]
    kept = train_candidates(fams, cands, tmp_path, backbone=False)
    scores = kept.meta["selection_log_ratio_vs_pf"]
    assert set(scores) == {"a", "a:avg", "b", "b:avg", "ensemble", "ensemble:avg"}
    assert kept.meta["selected"] == min(scores, key=scores.get)
    assert kept.meta["validation_log_ratio_vs_pf"] == scores[kept.meta["selected"]]
    for name in ("a", "b"):  # the tail average of the second half of training is saved next to the checkpoint
        avg = TiltModel.load(tmp_path / name / "model-avg")
        assert avg.meta["weights"] == "mean over generations 3..4"
    # the saved policy is the option chosen: it scores the same on the same selection batch
    again = selection_scores(fams, {"saved": load_tilt(tmp_path / "model")}, cfg)
    assert again["saved"] == pytest.approx(scores[kept.meta["selected"]], abs=1e-12)


def test_ppo_tilt_env_passes_check_env_and_zero_action_is_the_backbone():
    from gymnasium.utils.env_checker import check_env

    from edgesplit.agents.learned_v1_ppo import TiltActionEnv

    def make():
        return TiltActionEnv(gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=3, traces=[_family()], rounds=1),
                             TiltConfig(hidden=4))

    check_env(make(), skip_render_check=True)
    env = make()
    base_env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=3, traces=[_family()], rounds=1)
    pol = LearnedV1Policy(model=TiltModel.zero(TiltConfig(hidden=4)))
    obs, info = env.reset(seed=1)
    o2, i2 = base_env.reset(seed=1)
    pol.reset(base_env, 1)
    t1 = t2 = 0.0
    done = False
    while not done:
        _, _, term, trunc, info = env.step(np.zeros(3, np.float32))
        o2, _, _, _, i2 = base_env.step(pol.act(o2, i2))
        t1 += info["step_time_s"]
        t2 += i2["step_time_s"]
        done = term or trunc
    assert t1 == pytest.approx(t2)


@pytest.mark.parametrize("seed", [3, 11])
def test_simulator_plays_a_first_round_as_the_env_does(seed):
    """The ES trainer's batched round simulator is a second model of a v1 round: on the env's own
    first round (its scenario, its plan, its links' rates second by second, nothing measured yet)
    and a random non-zero tilt, it must give the round time the env gives."""
    from edgesplit.agents.learned_v1 import round_plan

    rng = np.random.default_rng(seed)
    fam = TraceFamily("syn", tuple(synthetic_traces(n_traces=4, duration_s=900.0, seed=seed)))
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=4, traces=[fam], trace_start="beginning",
                   interval_s=5.0, rounds=2).unwrapped
    tc = TiltConfig(alpha=2.0, pf_window=6, hidden=4)
    model = TiltModel(theta=rng.normal(0.0, 0.7, tc.n_params()), cfg=tc)
    pol = LearnedV1Policy(model=model)
    obs, info = env.reset(seed=seed)
    pol.reset(env, seed)
    view = env.policy_view()
    cm, nominal = view["cost_model"], np.asarray(view["nominal_rate_bps"], dtype=np.float64)
    S = 1800
    R = env.reference_only_future_bits(np.arange(S + 1, dtype=np.float64)).T  # (N, S): whole-band bits per second
    env_round, steps = 0.0, 0
    while True:
        obs, _, terminated, truncated, info = env.step(pol.act(obs, info))
        env_round += float(info["step_time_s"])
        steps += 1
        if info.get("round_done") or terminated or truncated:
            break
    assert steps > 3  # the tilt re-divided the band several times within the round
    plan = round_plan(cm, nominal)
    compute, traffic = cm.select(plan.cuts)
    K = max(tc.pf_window, 6)
    batch = RoundBatch(R=R[None].astype(np.float32), past=np.broadcast_to(nominal, (1, K, 4)).copy(),
                       past_dur=np.zeros((1, K)), mean_rate=nominal[None], nominal=nominal[None],
                       B=np.asarray(traffic, dtype=np.float64)[None], A=np.asarray(compute, dtype=np.float64)[None],
                       plan_shares=np.asarray(plan.shares, dtype=np.float64)[None],
                       plan_time=np.array([float(plan.round_time_s)]))
    sim = simulate(batch, model.theta, ESConfig(n_devices=4, interval_s=5.0, horizon_s=float(S), tilt=tc))[0, 0]
    zero = simulate(batch, np.zeros(tc.n_params()), ESConfig(n_devices=4, interval_s=5.0, horizon_s=float(S), tilt=tc))
    assert abs(sim - zero[0, 0]) > 1e-3 * sim  # the tilt matters here, so the match below says something
    assert sim == pytest.approx(env_round, rel=1e-4)


def test_config_candidates_share_settings_and_merge_tilt_overrides(tmp_path):
    from edgesplit.agents.learned_v1_training import load_candidates

    p = tmp_path / "c.yml"
    p.write_text("EdgeSplitDynamic-v1:\n  population: 8\n  tilt: {hidden: 8, clip: 4.0}\n"
                 "  candidates:\n    - {name: a}\n    - {name: b, fitness: rank, tilt: {context: mean_max}}\n")
    (na, a), (nb, b) = load_candidates(p)
    assert (na, nb) == ("a", "b") and a.population == b.population == 8
    assert a.fitness == "raw" and b.fitness == "rank"
    assert a.tilt == TiltConfig(hidden=8, clip=4.0) and b.tilt == TiltConfig(hidden=8, clip=4.0, context="mean_max")
    p.write_text("candidates:\n  - {name: a}\n  - {name: a, lr: 0.1}\n")
    with pytest.raises(ValueError, match="distinct"):
        load_candidates(p)
    p.write_text("candidates:\n  - {name: x, fitness: best}\n")
    with pytest.raises(ValueError, match="candidate 'x'.*fitness"):
        load_candidates(p)


def test_candidates_must_share_the_split_and_train_the_same_in_parallel(tmp_path, capfd, monkeypatch):
    import dataclasses

    from edgesplit.agents import learned_v1_training as lt

    cfg = ESConfig(population=2, batch_rounds=2, generations=3, val_rounds=2, eval_every=1, n_devices=3,
                   horizon_s=900.0, minutes=1.0, select_rounds=4)
    cfg.tilt.hidden = 4
    # eight traces a family: families under four traces are not split at all, and the split seed would not matter
    fams = [TraceFamily("synthetic-t", tuple(synthetic_traces(8, 600.0, seed=5))),
            TraceFamily("synthetic-u", tuple(synthetic_traces(8, 600.0, seed=6)))]
    # a second ES seed without a shared split_seed would validate on traces the first trained on
    with pytest.raises(ValueError, match="split_seed"):
        train_candidates(fams, [("a", cfg), ("b", dataclasses.replace(cfg, seed=1))], tmp_path / "x", backbone=False)
    cands = [("a", dataclasses.replace(cfg, split_seed=0)),
             ("b", dataclasses.replace(cfg, fitness="rank", seed=1, split_seed=0))]
    assert [(c.seed, c.split()) for _, c in lt.reseed(cands, 5)] == [(5, 5), (6, 5)]
    seen: list[int] = []
    real_split = lt.split_family

    def recording_split(fam, val_fraction, seed=0):
        seen.append(seed)
        return real_split(fam, val_fraction, seed=seed)

    monkeypatch.setattr(lt, "split_family", recording_split)
    one = train_candidates(fams, cands, tmp_path / "one", backbone=False, jobs=1)
    # both candidates' training and validation and the selection batch split the traces with split_seed 0,
    # though candidate b's ES seed is 1 (and the split with seed 1 is another one)
    assert seen and set(seen) == {0}
    s0, s1 = real_split(fams[0], 0.25, seed=0), real_split(fams[0], 0.25, seed=1)
    assert [r.tobytes() for r in s0[1].rates] != [r.tobytes() for r in s1[1].rates]
    monkeypatch.setattr(lt, "split_family", real_split)
    capfd.readouterr()
    two = train_candidates(fams, cands, tmp_path / "two", backbone=False, jobs=2)
    err = capfd.readouterr().err
    assert "[a] gen 3" in err and "[b] gen 3" in err  # trained in the worker processes
    for name in ("a", "b"):
        for stem in ("model", "model-avg"):
            np.testing.assert_array_equal(TiltModel.load(tmp_path / "one" / name / stem).theta,
                                          TiltModel.load(tmp_path / "two" / name / stem).theta)
    assert one.meta["selected"] == two.meta["selected"]
    assert one.meta["selection_log_ratio_vs_pf"] == two.meta["selection_log_ratio_vs_pf"]
    # a and b (other ES seed and fitness) gave different weights: the comparison above is not vacuous
    assert not np.array_equal(TiltModel.load(tmp_path / "one" / "a" / "model").theta,
                              TiltModel.load(tmp_path / "one" / "b" / "model").theta)
    # candidates found on disk are reused only if trained the same way: another split is refused
    moved = [(n, dataclasses.replace(c, split_seed=1)) for n, c in cands]
    with pytest.raises(ValueError, match="candidate a: trained with other settings.*split"):
        train_candidates(fams, moved, tmp_path / "one", backbone=False)


def test_candidates_may_not_validate_on_the_selection_rounds():
    from edgesplit.agents.learned_v1_training import check_shared_split

    check_shared_split([("a", ESConfig(split_seed=0)), ("b", ESConfig(seed=1, split_seed=0))])
    with pytest.raises(ValueError, match="selection rounds"):
        check_shared_split([("a", ESConfig(split_seed=0)), ("b", ESConfig(seed=10_000, split_seed=0))])


@pytest.mark.parametrize("bad", [{"split_seed": True}, {"split_seed": -1}, {"seed": -2}, {"split_seed": 1.5}])
def test_es_config_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ESConfig(**bad)


@pytest.mark.parametrize("bad", [{"augment_warp": 0.5}, {"augment_gamma": 11.0}, {"augment_warp": True},
                                 {"augment_gamma": "2"}])
def test_es_config_rejects_bad_augmentation(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ESConfig(**bad)


def test_augmented_sequences_warp_time_and_reshape_rates_but_keep_the_family_mean():
    from edgesplit.agents.learned_v1_training import FamilyRates, augmented_sequence

    fam = _family()
    fr = FamilyRates(fam.name, fam.traces, fam.mean_bps)
    plain = fr.sequence(np.random.default_rng(4), 401)
    assert np.array_equal(augmented_sequence(np.random.default_rng(4), fr, 200, 1.0, 1.0), plain[:200])
    warped = augmented_sequence(np.random.default_rng(4), fr, 200, 2.0, 1.0)
    assert np.array_equal(warped, plain[0:400:2])  # time runs twice as fast
    slow = augmented_sequence(np.random.default_rng(4), fr, 200, 0.5, 1.0)
    assert np.array_equal(slow, np.repeat(plain[:100], 2))
    # the power keeps zeros at zero, keeps the order of the rates and the family mean on average
    zeroed = FamilyRates(fam.name, fam.traces, fam.mean_bps)
    zeroed.rates = [np.where(np.arange(r.size) % 7 == 0, 0.0, r) for r in zeroed.rates]
    b = augmented_sequence(np.random.default_rng(5), zeroed, 300, 1.0, 2.0)
    a = zeroed.sequence(np.random.default_rng(5), 301)[:300]
    assert np.array_equal(b == 0, a == 0)
    assert np.array_equal(np.argsort(a, kind="stable"), np.argsort(b, kind="stable"))
    np.testing.assert_allclose(b, fam.mean_bps * (a / fam.mean_bps) ** 2 / zeroed.power_mean(2.0), rtol=1e-12)
    allx = np.concatenate(zeroed.rates)
    assert zeroed.power_mean(2.0) == pytest.approx(np.mean((allx / fam.mean_bps) ** 2), rel=1e-12)
    # over many draws the augmented link keeps the family mean (the power is renormalised)
    rng = np.random.default_rng(9)
    long = np.concatenate([augmented_sequence(rng, zeroed, 600, 1.0, 2.0) for _ in range(300)])
    assert long.mean() == pytest.approx(fam.mean_bps, rel=0.05)


def test_augmentation_randomises_training_rounds_only_and_is_recorded(tmp_path):
    from edgesplit.agents.learned_v1_training import FamilyRates, check_reusable, sample_rounds

    fam = _family()
    fr = [FamilyRates(fam.name, fam.traces, fam.mean_bps)]
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=3, traces=[fam]).unwrapped
    off = ESConfig(n_devices=3, horizon_s=300.0)
    on = ESConfig(n_devices=3, horizon_s=300.0, augment_warp=3.0, augment_gamma=2.0)
    base = sample_rounds(np.random.default_rng(0), fr, 3, off, env, 6)
    # off, or not asked for (validation and selection rounds): the very same rounds
    for cfg, aug in ((off, True), (on, False)):
        again = sample_rounds(np.random.default_rng(0), fr, 3, cfg, env, 6, augment=aug)
        assert np.array_equal(again.R, base.R) and np.array_equal(again.plan_shares, base.plan_shares)
    assert not np.array_equal(sample_rounds(np.random.default_rng(0), fr, 3, on, env, 6, augment=True).R, base.R)
    cfg = ESConfig(population=2, batch_rounds=2, generations=2, val_rounds=2, eval_every=1, n_devices=3,
                   horizon_s=600.0, minutes=1.0, augment_warp=2.0)
    cfg.tilt.hidden = 4
    model, _ = train_es([fam, TraceFamily("synthetic-u", tuple(synthetic_traces(3, 600.0, seed=6)))], cfg, tmp_path)
    assert model.meta["es"]["augment_warp"] == 2.0 and model.meta["es"]["augment_gamma"] == 1.0
    check_reusable("a", model, cfg)
    import dataclasses

    with pytest.raises(ValueError, match="augment_warp"):
        check_reusable("a", model, dataclasses.replace(cfg, augment_warp=1.0))
