"""Classical policies, the LP oracle and `edgesplit evaluate` on EdgeSplitDynamic-v1."""

from __future__ import annotations

import itertools
import json
import math

import gymnasium as gym
import numpy as np
import pytest
from scipy.stats import trim_mean

from edgesplit.agents.classical_oracle import ORACLE_TOLERANCE, lp_feasible, min_round_time_lp
from edgesplit.agents.evaluation import (evaluate_v1, iqm, stratified_bootstrap_ci, summarize_v1)
from edgesplit.agents.policies import REFERENCE, V1_CLASSICAL, V1_ONLY, get_policy, policy_kinds
from edgesplit.cli import main
from edgesplit.traces import builtin_trace_dir, load_families

from .conftest import SHARED_DATA

TRACES = SHARED_DATA / "traces"
BUILTIN = builtin_trace_dir()  # shipped Pensieve traces: families fcc (5) and hsdpa (4)
needs_shared = pytest.mark.skipif(not TRACES.is_dir(), reason="needs ../shared/data/traces (absent in this clone)")


# ----------------------------------------------------------------------------- the LP oracle


def _piecewise(rates: np.ndarray, width: float):
    """cumulative(times (E, N)) for per-interval whole-band rates ``rates`` (J, N), constant after."""
    edges = np.arange(rates.shape[0] + 1) * width
    cum_edges = np.vstack([np.zeros(rates.shape[1]), np.cumsum(rates * width, axis=0)])

    def cumulative(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=float)
        out = np.empty_like(t)
        for i in range(rates.shape[1]):
            x = t[:, i]
            j = np.minimum(np.searchsorted(edges, x, side="right") - 1, rates.shape[0] - 1)
            out[:, i] = cum_edges[j, i] + rates[j, i] * (x - edges[j])
        return out

    return cumulative


def _finish_times(shares: np.ndarray, rates: np.ndarray, width: float, B: np.ndarray) -> np.ndarray:
    """Brute-force simulator, batched: fixed shares per interval (``shares`` (K, J, N)), no
    renormalisation; each device's finish time (K, N), inf if it never finishes."""
    K, J, N = shares.shape
    r = shares * rates[None]  # (K, J, N) rates each device gets
    before = np.concatenate([np.zeros((K, 1, N)), np.cumsum(r * width, axis=1)], axis=1)  # bits at interval starts
    out = np.full((K, N), np.inf)
    for j in range(J - 1, -1, -1):  # the first interval where the bits are through wins
        done = (before[:, j + 1] >= B) & (before[:, j] < B)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = j * width + (B - before[:, j]) / r[:, j]
        out = np.where(done, t, out)
    return out


@pytest.mark.parametrize("case", range(4))
def test_lp_oracle_equals_brute_force_on_tiny_instances(case: int) -> None:
    rng = np.random.default_rng(case)
    J, N, width = 3, 2, 1.0
    rates = rng.uniform(0.2, 3.0, size=(J, N))
    rates[rng.integers(0, J), rng.integers(0, N)] = 0.0  # an outage somewhere
    A = rng.uniform(0.0, 0.5, size=N)
    B = np.array([rates[:2, 0].sum() * 0.45, rates[:2, 1].sum() * 0.4])
    T, beta, edges = min_round_time_lp(B, A, 0.0, width, _piecewise(rates, width), T_hint=1.0, rtol=1e-9)
    # brute force: device 0's share per interval on a grid, device 1 gets the rest
    grid = np.linspace(0.0, 1.0, 81)
    combos = np.array(list(itertools.product(grid, repeat=J)))  # device 0's share per interval
    sh = np.stack([combos, 1.0 - combos], axis=2)  # (K, J, 2)
    best = float(np.max(A + _finish_times(sh, rates, width, B), axis=1).min())
    assert T <= best * (1 + 1e-5)  # LP_MARGIN asks for 1e-6 more bits
    assert best <= T * 1.03  # the grid's resolution
    assert (beta >= 0).all() and (beta.sum(axis=1) <= 1 + 1e-6).all()  # never -1e-15; sums within the LP tolerance
    # the LP's shares achieve T (checked by the independent simulator)
    full = np.zeros((J, N))
    full[:beta.shape[0]] = beta
    assert float(np.max(A + _finish_times(full[None], rates, width, B))) <= T * (1 + 1e-6)


def test_lp_feasibility_basics() -> None:
    caps = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert lp_feasible(np.array([0.99, 0.99]), caps) is not None  # about half the band each, two intervals
    assert lp_feasible(np.array([1.5, 1.0]), caps) is None  # 2.5 bits > 2 intervals' worth
    beta = lp_feasible(np.array([1.99, 0.0]), caps)
    assert beta is not None and beta[:, 0].sum() >= 1.99 - 1e-9


# ----------------------------------------------------------------------------- the policies


def _episode(env: gym.Env, pol, seed: int) -> float:
    obs, info = env.reset(seed=seed)
    pol.reset(env, seed)
    total = 0.0
    while True:
        act = pol.act(obs, info)
        assert env.action_space["cuts"].contains(np.asarray(act["cuts"], dtype=np.int64))
        assert np.all(np.asarray(act["shares"]) >= 0) and np.isfinite(act["shares"]).all()
        obs, _, term, trunc, info = env.step(act)
        total += info["step_time_s"]
        if term or trunc:
            return total


@needs_shared
def test_no_classical_policy_beats_the_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a set of episodes over real families no classical policy beats the oracle by more than
    ORACLE_TOLERANCE; and no classical policy ever reads the reference-only accessors."""
    from edgesplit.envs.dynamic_v1 import EdgeSplitDynamicV1Env

    fams = load_families([TRACES / "conext23-starlink-roam", TRACES / "pensieve-train"])
    totals: dict[str, list[float]] = {}
    for fam in fams:
        env = gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=3, traces=[fam])
        for name in V1_CLASSICAL + REFERENCE:
            pol = get_policy(name)
            with monkeypatch.context() as m:
                if name not in REFERENCE:
                    for attr in ("reference_only_future_bits", "reference_only_cumulative_bits"):
                        m.setattr(EdgeSplitDynamicV1Env, attr, lambda *a, **k: pytest.fail("a policy read the future"))
                totals.setdefault(name, []).extend(_episode(env, pol, s) for s in range(2))
    orc = np.asarray(totals["oracle"])
    for name in V1_CLASSICAL:
        assert np.mean(totals[name]) >= np.mean(orc) * (1 - ORACLE_TOLERANCE), name
    assert np.mean(totals["alternating"]) > np.mean(orc)


def test_v1_only_policies_refuse_the_per_round_envs() -> None:
    env = gym.make("EdgeSplitDynamic-v0", n_devices=3)
    env.reset(seed=0)
    for name in V1_ONLY:
        with pytest.raises(ValueError, match="EdgeSplitDynamic-v1"):
            get_policy(name).reset(env, 0)


def test_static_plans_once_and_fixed_share_policies_keep_their_shares() -> None:
    env = gym.make("EdgeSplitDynamic-v1", n_devices=4, rounds=2)
    obs, info = env.reset(seed=0)
    pol = get_policy("static")
    pol.reset(env, 0)
    first = pol.act(obs, info)
    obs, _, _, _, info = env.step(first)
    again = pol.act(obs, info)
    assert np.array_equal(first["shares"], again["shares"])


def test_pf_tilts_towards_links_above_their_average() -> None:
    from edgesplit.agents.classical import ProportionalFairPolicy

    pol = ProportionalFairPolicy(exponent=2.0, window_s=100.0)
    pol._plan_shares = np.array([0.5, 0.5])
    view = {"past_rates_bps": np.array([[2.0, 1.0], [1.0, 1.0], [1.0, 1.0]]),
            "past_durations_s": np.array([5.0, 5.0, 5.0]), "nominal_rate_bps": np.ones(2),
            "sending": np.array([True, True])}
    sh = pol.reshare(view)
    assert sh[0] > sh[1]
    assert sh[0] / sh[1] == pytest.approx((2.0 / (4 / 3)) ** 2)


def test_shrunk_mean_rates_blend_measured_and_nominal() -> None:
    from edgesplit.agents.classical import shrunk_mean_rates

    mean, nom = np.array([2.0, 0.5]), np.array([1.0, 1.0])
    assert np.array_equal(shrunk_mean_rates(mean, nom, 300.0, 0.0), mean)
    assert np.array_equal(shrunk_mean_rates(mean, nom, 300.0, math.inf), nom)
    assert np.array_equal(shrunk_mean_rates(mean, nom, 0.0, 100.0), nom)  # nothing measured yet
    # 100 s of prior at the nominal rate, 300 s measured: a weighted mean, by hand
    np.testing.assert_allclose(shrunk_mean_rates(mean, nom, 300.0, 100.0), [(100 + 600) / 400, (100 + 150) / 400])


def test_pf_prior_moves_its_plan_from_the_measured_mean_to_the_nominal_rates() -> None:
    """``prior_s = inf`` plans every round as ``static`` does; ``prior_s = 0`` on the measured mean."""
    from edgesplit.agents.classical import ProportionalFairPolicy

    env = gym.make("EdgeSplitDynamic-v1", n_devices=5, rounds=3)
    obs, info = env.reset(seed=4)
    static, inf_pf, zero_pf = get_policy("static"), ProportionalFairPolicy(prior_s=math.inf), ProportionalFairPolicy()
    static.reset(env, 4)
    for p in (inf_pf, zero_pf):
        p.bind(env)
    while True:  # to the second round's cut epoch
        obs, _, _, _, info = env.step(static.act(obs, info))
        if info.get("round_done"):
            break
    view = env.unwrapped.policy_view()
    assert view["phase"] == "cuts"
    np.testing.assert_array_equal(inf_pf.planning_rates(view), view["nominal_rate_bps"])
    np.testing.assert_allclose(zero_pf.planning_rates(view), view["mean_rate_bps"])
    with pytest.raises(ValueError, match="prior_s"):
        ProportionalFairPolicy(prior_s=-1.0)


def test_tune_pf_picks_the_best_grid_point_on_its_own_episodes() -> None:
    from edgesplit.agents.classical_tuning import PFParams, tune_pf
    from edgesplit.agents.evaluation import run_episode
    from edgesplit.traces import TraceFamily, synthetic_traces

    fams = [TraceFamily(f"syn-{s}", tuple(synthetic_traces(n_traces=3, duration_s=600.0, seed=s))) for s in (1, 2)]
    grid = {"exponent": (0.0, 4.0), "window_s": (60.0,), "prior_s": (0.0,)}
    best, rows = tune_pf(fams, episodes=2, rounds=2, n_devices=4, seed=5, grid=grid, progress=False)
    assert len(rows) == 2 and rows[0]["log_ratio_to_static"] <= rows[1]["log_ratio_to_static"]
    assert best == PFParams(rows[0]["exponent"], rows[0]["window_s"], rows[0]["prior_s"])
    # the score is recomputed independently: mean over families of mean log(total / static's)
    scores = []
    for f in fams:
        env = gym.make("EdgeSplitDynamic-v1", n_devices=4, traces=[f], rounds=2)
        st = [run_episode(env, get_policy("static"), s).total_time_s for s in (5, 6)]
        pf = [run_episode(env, get_policy("pf", exponent=best.exponent, window_s=60.0, prior_s=0.0), s).total_time_s
              for s in (5, 6)]
        scores.append(np.mean(np.log(np.array(pf) / np.array(st))))
    assert rows[0]["log_ratio_to_static"] == pytest.approx(np.mean(scores))
    assert PFParams.from_json(best.to_json()) == best
    assert PFParams.from_json(PFParams(1.0, 60.0, math.inf).to_json()).prior_s == math.inf
    with pytest.raises(ValueError, match="grid"):
        tune_pf(fams, grid={"exponent": (1.0,), "speed": (2.0,)}, progress=False)


# ----------------------------------------------------------------------------- aggregation and the CLI


def test_iqm_and_stratified_bootstrap() -> None:
    assert iqm([1, 2, 3, 4, 100, -100, 2.5, 3.5]) == pytest.approx(np.mean([2, 2.5, 3, 3.5]))
    lo, hi = stratified_bootstrap_ci([[1.0] * 5, [2.0] * 5], iqm, reps=200)
    assert lo == hi == pytest.approx(1.5)  # no spread within strata: every resample is the same
    lo, hi = stratified_bootstrap_ci([np.random.default_rng(0).normal(0, 1, 50)], iqm, reps=500)
    assert lo < 0.3 and hi > -0.3 and lo < hi


def test_summary_has_ratios_per_family() -> None:
    fams = load_families(BUILTIN)
    df = evaluate_v1("pf", fams, n_devices=3, episodes=2, seed=0, rounds=2)
    s = summarize_v1(df, "pf")
    assert s["families"] == ["fcc", "hsdpa"] and s["episodes"] == 2 and s["episodes_total"] == 4
    # the ratios, recomputed independently from the per-episode frame: IQM over (family, episode)
    # of pf's total over the reference's total on the same episode
    tot = df.pivot_table(index=["family", "episode"], columns="policy", values="total_time_s")
    best = min(V1_CLASSICAL, key=lambda p: tot[p].mean())
    assert s["best_classical"] == best
    for key, ref in (("ratio_to_alternating", "alternating"), ("ratio_to_best_classical", best),
                     ("ratio_to_oracle", "oracle")):
        assert s[key] == pytest.approx(float(trim_mean((tot["pf"] / tot[ref]).to_numpy(), 0.25)), rel=1e-12), key
    assert set(s["per_family"]) == {"fcc", "hsdpa"}
    assert set(s["classical_ratio_to_oracle"]) == set(V1_CLASSICAL)
    s_alt = summarize_v1(df, "alternating")
    assert s_alt["ratio_to_alternating"] == pytest.approx(1.0)
    s_orc = summarize_v1(df, "oracle")
    assert s_orc["ratio_to_oracle"] == pytest.approx(1.0)


def test_evaluate_cli_v1_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--env", "EdgeSplitDynamic-v1", "--policy", "mpc-harmonic", "--episodes", "2",
                 "--n-devices", "3", "--rounds", "2", "--traces", str(BUILTIN), "--seed", "3",
                 "--json"]) == 0
    cap = capsys.readouterr()
    out = cap.out.strip().splitlines()
    assert len(out) == 1
    res = json.loads(out[0])
    for key in ("policy", "episodes", "mean_total_time_s", "ci95_total_time_s", "ratio_to_alternating",
                "ratio_to_best_classical", "ratio_to_oracle", "best_classical", "per_family"):
        assert key in res, key
    assert res["policy"] == "mpc-harmonic" and res["families"] == ["fcc", "hsdpa"]
    lo, hi = res["ci95_total_time_s"]
    assert lo <= res["mean_total_time_s"] <= hi
    assert "evaluate" in cap.err  # the progress bar, on stderr also with --json


def test_list_policies_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--env", "EdgeSplitDynamic-v1", "--list-policies", "--json"]) == 0
    kinds = json.loads(capsys.readouterr().out)
    by = {k["name"]: k["kind"] for k in kinds}
    assert by["oracle"] == "reference" and by["learned"] == "learned" and by["pf"] == "classical"
    assert set(V1_CLASSICAL) <= set(by)
    assert kinds == policy_kinds("EdgeSplitDynamic-v1")


def test_csv_folder_fails_before_any_episode(tmp_path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import edgesplit.agents.evaluation as ev

    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("episodes ran before the --csv check"))
    assert main(["evaluate", "--policy", "static", "--episodes", "1", "--csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--csv" in err[0]


def test_text_report_shows_na_for_undefined_ratios() -> None:
    from edgesplit.agents.commands.evaluate import _fmt

    assert _fmt(None) == "n/a" and _fmt(math.inf) == "n/a" and _fmt(math.nan) == "n/a" and _fmt(1.5) == "1.5"


def test_tune_pf_cli_writes_the_best_parameters(tmp_path, capsys) -> None:
    from edgesplit.experiments import tune_pf

    out = tmp_path / "pf.json"
    assert tune_pf.main(["--episodes", "1", "--rounds", "1", "--n-devices", "3", "--exponents", "1,4",
                         "--windows", "60", "--priors", "0,inf", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["tuned_on"] == ["synthetic"] and doc["pf"]["window_s"] == 60.0
    assert doc["pf"]["exponent"] in (1.0, 4.0) and doc["pf"]["prior_s"] in (0.0, "inf")
    assert "best:" in capsys.readouterr().out
    assert tune_pf.main(["--windows", "60,-1"]) == 2
    assert "--windows" in capsys.readouterr().err
