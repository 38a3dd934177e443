"""Review fixes of the v1 trace handling: a family needs 2 traces (never looped, never scaled by its
only trace's own mean), a split keeps 2 traces of a family on each side, and a split part is scaled
by its WHOLE family's mean."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from edgesplit import envs  # noqa: F401  (registers the env ids)
from edgesplit.agents.evaluation import resolve_eval_families
from edgesplit.traces import (Trace, TraceFamily, builtin_trace_dir, load_families, load_traces, split_families,
                              split_traces)


def _flat(rate: float, name: str, period: float = 50.0) -> Trace:
    return Trace(name, np.array([0.0]), np.array([rate]), period)


def test_v1_refuses_a_family_of_one_trace() -> None:
    with pytest.raises(ValueError, match=r"family 'solo'.*at least 2"):
        gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=2, traces=[TraceFamily("solo", (_flat(1e6, "x"),))])
    with pytest.raises(ValueError, match="at least 2"):  # a list of one Trace is a one-trace family too
        gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=2, traces=[_flat(1e6, "x")])


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_keeps_two_traces_per_family_on_each_side(split: str) -> None:
    traces = load_traces(builtin_trace_dir())  # 5 FCC + 4 HSDPA
    fams = load_families(builtin_trace_dir())
    for part in split_families(fams, split):
        assert len(part) >= 2, (split, part.name, len(part))
    train, test = split_traces(traces, "train"), split_traces(traces, "test")
    assert {t.name for t in train}.isdisjoint({t.name for t in test})  # 4+ traces: disjoint
    assert len(train) + len(test) == len(traces)
    # every part can drive the env (it used to get a one-trace hsdpa family on 'test')
    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=3, rounds=2, traces=split_families(fams, split))
    env.reset(seed=0)


def test_split_leaves_a_family_of_fewer_than_four_whole_on_both_sides() -> None:
    three = [_flat(1e6 * (k + 1), f"t{k}") for k in range(3)]
    assert [t.name for t in split_traces(three, "train")] == [t.name for t in split_traces(three, "test")] \
        == ["t0", "t1", "t2"]


def test_a_split_part_is_scaled_by_its_whole_familys_mean() -> None:
    slow = [_flat(1e6, f"s{k}") for k in range(4)]
    fast = [_flat(9e6, f"f{k}") for k in range(2)]
    whole = TraceFamily("mixed", tuple(slow + fast))  # 6 traces: 2 held out
    assert whole.mean_bps == pytest.approx((4 * 1e6 + 2 * 9e6) / 6)
    for split in ("train", "test"):
        (part,) = split_families([whole], split)
        assert part.mean_bps == pytest.approx(whole.mean_bps)
        env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=2, rounds=1, traces=[part])
        assert env.unwrapped._fam_mean[0] == pytest.approx(whole.mean_bps)
    # resolve_eval_families (``edgesplit evaluate --trace-split``) carries the whole family's mean too
    full = {f.name: f.mean_bps for f in load_families(builtin_trace_dir())}
    for f in resolve_eval_families(str(builtin_trace_dir()), "test"):
        assert f.mean_bps == pytest.approx(full[f.name])
        assert f.mean_bps != pytest.approx(TraceFamily(f.name, f.traces).mean_bps)


def test_full_mean_must_be_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="full_mean_bps"):
        TraceFamily("f", (_flat(1e6, "a"), _flat(1e6, "b")), full_mean_bps=0.0)


def test_a_device_that_sends_nothing_is_not_given_the_coming_rate() -> None:
    """A device with no bits in a round has no transfer to measure; its round rate falls back to the
    last measured window (the nominal rate before any), never to the trace's bin at the clock: at
    the episode's start that bin ([0, 10) s at 5 Mbit/s here) lies wholly in the future."""
    def tr(name: str) -> Trace:
        return Trace(name, np.array([0.0, 10.0]), np.array([5e6, 1e6]), 50.0)

    env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=3, rounds=2, interval_s=None, migration_factor=0.0,
                   trace_start="beginning", traces=[TraceFamily("f", (tr("a"), tr("b")))])
    env.reset(seed=0)
    base = env.unwrapped
    base._V = np.zeros_like(base._V)  # no traffic at any cut: nobody sends, tau = 0 for all
    _, _, _, _, info = env.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
    assert info["round_done"] and base._clock > 0
    nominal = base.policy_view()["nominal_rate_bps"]
    np.testing.assert_allclose(base.known_rates_bps(), nominal)  # not 5/1.8 x nominal (the coming bin)
    # the next round: the last measured window ([0, clock) at 5 Mbit/s, the past) is what it knows
    past = base.policy_view()["past_rates_bps"][0]
    _, _, _, _, info = env.step({"cuts": np.zeros(3, dtype=int), "shares": np.ones(3)})
    np.testing.assert_allclose(base.known_rates_bps(), past)


def test_offline_traces_drops_only_the_missing_shared_paths(tmp_path, capsys) -> None:
    from edgesplit.agents.training import offline_traces

    here = str(builtin_trace_dir())
    gone = str(tmp_path / "shared" / "data" / "traces" / "conext23-att")
    assert offline_traces([here, gone]) == [here]  # the existing folder stays
    assert "conext23-att" in capsys.readouterr().err
    assert offline_traces([gone]) is None and offline_traces(gone) is None  # nothing left: built-in set
    assert offline_traces([here]) == [here] and offline_traces(None) is None
    other = str(tmp_path / "elsewhere")  # a missing path outside ../shared is the loader's to refuse
    assert offline_traces([here, other]) == [here, other]


def test_train_agent_parts_keep_the_whole_family_mean() -> None:
    """What ``train-agent --env EdgeSplitDynamic-v1 --trace-split train`` trains on."""
    from edgesplit.traces import load_family_split

    full = {f.name: f.mean_bps for f in load_families(builtin_trace_dir())}
    for split in ("train", "test"):
        parts = load_family_split(builtin_trace_dir(), split)
        assert {f.name for f in parts} == set(full)
        for f in parts:
            assert f.mean_bps == pytest.approx(full[f.name], rel=1e-12) and len(f) >= 2
    (syn,) = load_family_split(None, "train")
    assert syn.mean_bps == pytest.approx(TraceFamily("s", tuple(load_traces_default())).mean_bps, rel=1e-12)


def load_traces_default() -> list[Trace]:
    from edgesplit.traces import default_traceset

    return list(default_traceset().traces)
