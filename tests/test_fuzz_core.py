"""Fuzz tests (Hypothesis) of the core inputs: scenario files (JSON and YAML), profile sheets
(profile CSVs and testbed CSVs) and static-env actions. The property everywhere: a clear error
(a ``ValueError`` subclass; the CLI turns it into one line and exit 2) or a valid result (no NaN,
strict JSON, an observation inside the space). Kept fast: few examples each, no deadline."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgesplit.costmodel import CostModel  # noqa: E402
from edgesplit.errors import EdgeSplitError  # noqa: E402
from edgesplit.profiles import read_profile_csv  # noqa: E402
from edgesplit.scenario import load_scenario, scenario_from_dict  # noqa: E402
from edgesplit.schedulers import SCHEDULERS, plan  # noqa: E402
from edgesplit.testbed import import_testbed_profiles  # noqa: E402

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

weird = st.one_of(
    st.sampled_from(["laptop", "profiling-host", "nope", {"csv": "missing.csv"}, {"layers": []}, {}]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.sampled_from([0, -1, 5e-324, 1e-300, 1e308, 1e-18, 10 ** 309, float("inf"), float("nan")]),
    st.booleans(), st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2),
)


def plausible(lo: float, hi: float) -> st.SearchStrategy:
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


def log_uniform(lo: float, hi: float) -> st.SearchStrategy:
    """Floats spread over the orders of magnitude of ``[lo, hi]`` (extreme but valid values included)."""
    return st.one_of(st.sampled_from([lo, hi]), plausible(math.log10(lo), math.log10(hi)).map(lambda e: 10.0 ** e))


@st.composite
def valid_scenario(draw) -> dict:
    """A scenario dict inside every documented range (extremes included)."""
    n_layers = draw(st.integers(1, 4))
    if draw(st.booleans()):
        model = draw(st.sampled_from(["small_cnn", "vgg11"]))
        n_layers = {"small_cnn": 5, "vgg11": 16}[model]
    else:
        t = st.one_of(st.just(0.0), log_uniform(1e-15, 1e6))
        b = st.one_of(st.just(0.0), log_uniform(1e-6, 1e15))
        model = {"layers": [{"name": f"u{i}", "fwd_s": draw(t), "bwd_s": draw(t), "activation_bytes": draw(b),
                             "param_bytes": draw(b)} for i in range(n_layers)]}
    devices = []
    for _ in range(draw(st.integers(1, 4))):
        d = {"memory_bytes": draw(log_uniform(1.0, 1e18)), "rate_bps": draw(st.one_of(st.just(0.0), log_uniform(1e-3, 1e15))),
             "samples": draw(st.integers(1, 10 ** 12))}
        if draw(st.booleans()):
            d["speed"] = draw(log_uniform(1e-9, 1e9))
        else:
            names = model["layers"] if isinstance(model, dict) else [{"name": None}] * n_layers
            d["profile"] = {"layers": [{"name": x["name"], "fwd_s": draw(log_uniform(1e-15, 1e6)),
                                        "bwd_s": draw(log_uniform(1e-15, 1e6))} if x["name"] else
                                       {"fwd_s": 1e-3, "bwd_s": 1e-3} for x in names]}
            if not isinstance(model, dict):
                d["profile"] = "profiling-host"
        devices.append(d)
    server = {"sharing": draw(st.sampled_from(["dedicated", "shared"])), "speed": draw(log_uniform(1e-9, 1e9))}
    return {"model": model, "batch_size": draw(st.integers(1, 10 ** 9)), "devices": devices, "server": server}


def _paths(obj, prefix=()):
    """Every (path, value) of a nested dict/list."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def perturbed_scenario(draw) -> dict:
    """A valid scenario with one value replaced by a weird one, or one key added or removed."""
    data = draw(valid_scenario())
    paths = [p for p in _paths(data) if p]
    path = draw(st.sampled_from(paths))
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = draw(weird)
    elif action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["colour", "speed", "profile", "class", "csv", "name"]))] = draw(weird)
    return data


scenario = st.one_of(valid_scenario(), perturbed_scenario())


def check_valid(s) -> None:
    """A scenario that loaded must plan without NaN and serialise to strict JSON with every scheduler."""
    try:
        cm = CostModel.from_scenario(s)
    except EdgeSplitError:  # e.g. a device whose memory fits no cut: a clear error is fine
        return
    assert not np.isnan(cm.compute_s).any() and not np.isnan(cm.traffic_bits).any()
    for name in SCHEDULERS:
        p = plan(cm, name, seed=0)
        assert not math.isnan(p.round_time_s) and p.round_time_s >= 0, name
        assert not np.isnan(p.per_device_time_s).any(), name
        json.dumps(p.to_dict(), allow_nan=False)
    json.dumps(s.to_dict(), allow_nan=False)


@FAST
@given(scenario)
def test_scenario_dicts_give_a_clear_error_or_a_valid_plan(data):
    try:
        s = scenario_from_dict(data)
    except ValueError:
        return
    check_valid(s)


@FAST
@given(scenario, st.sampled_from(["json", "yaml"]))
def test_scenario_files_give_a_clear_error_or_a_valid_plan(data, fmt):
    import yaml

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"s.{fmt}"
        try:
            text = json.dumps(data) if fmt == "json" else yaml.safe_dump(data)
        except (ValueError, OverflowError, yaml.YAMLError):
            return  # not representable in the format
        path.write_text(text)
        try:
            s = load_scenario(path)
        except ValueError:
            return
        check_valid(s)


@FAST
@given(st.text(alphabet="abc:-[]{}&*!|>'\"\n 0123456789.e", max_size=120))
def test_arbitrary_yaml_text_is_a_clear_error_or_a_scenario(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.yaml"
        path.write_text(text)
        try:
            load_scenario(path)
        except ValueError:
            pass


cell = st.one_of(plausible(0, 1e-2), plausible(0, 1e6), st.sampled_from(["", "x", "inf", "-1", "nan", "1e308", "5e-324"]))


@FAST
@given(st.integers(0, 5), st.lists(st.sampled_from(["index", "name", "fwd_s", "bwd_s", "activation_bytes",
                                                      "param_bytes", "fwd_flops", "batch_size"]),
                                     min_size=1, max_size=8, unique=True), st.data())
def test_profile_csvs_give_a_clear_error_or_a_valid_profile(rows, columns, data):
    frame = pd.DataFrame({c: [data.draw(cell) for _ in range(rows)] for c in columns})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.csv"
        frame.to_csv(path, index=False)
        try:
            prof = read_profile_csv(path)
        except ValueError:
            return
        assert np.isfinite(prof.train_s).all() and (prof.train_s >= 0).all()


ms = st.one_of(plausible(0, 1e4), st.sampled_from(["", "inf", "-inf", "nan", "-3", "1e308", "x", "0"]))


@FAST
@given(st.integers(0, 4), st.lists(st.sampled_from(["laptop", "d1", "../x", "a/b", ".hidden", "ok-1"]),
                                   min_size=1, max_size=3, unique=True), st.data())
def test_testbed_sheets_give_a_clear_error_or_finite_profiles(n_layers, machines, data):
    mem = pd.DataFrame({"layer": range(n_layers),
                        "activation_kb": [data.draw(st.one_of(plausible(0, 1e5), st.sampled_from(["nan", "-1"])))
                                          for _ in range(n_layers)],
                        "weight_kb": [data.draw(plausible(0, 1e5)) for _ in range(n_layers)]})
    rows = [{"layer": l, "machine": m, "fwd_ms": data.draw(ms), "bwd_ms": data.draw(ms), "update_ms": data.draw(ms)}
            for m in machines for l in range(n_layers)]
    times = pd.DataFrame(rows, columns=["layer", "machine", "fwd_ms", "bwd_ms", "update_ms"])
    with tempfile.TemporaryDirectory() as d:
        tp, mp = Path(d) / "net-cifar-times.csv", Path(d) / "net-cifar-memory.csv"
        times.to_csv(tp, index=False)
        mem.to_csv(mp, index=False)
        try:
            profiles = import_testbed_profiles(tp, mp)
        except ValueError:
            return
        for machine, prof in profiles.items():
            assert "/" not in machine and ".." not in machine
            assert np.isfinite(prof.fwd_s).all() and np.isfinite(prof.bwd_s).all()
            if not prof.meta["flagged"]:
                assert (prof.train_s <= 1e7 / 1000 / 128 * 2).all()


N, L = 3, 5
entry = st.one_of(st.integers(-3, 8), st.floats(allow_nan=True, allow_infinity=True, width=32),
                  st.sampled_from([1e-300, 5e-324, 1e308, 0.0, -0.0]))


@pytest.fixture(scope="module")
def env():
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401

    return gym.make("EdgeSplit-v0", n_devices=N, model="small_cnn").unwrapped


@FAST
@given(st.one_of(st.lists(entry, min_size=N, max_size=N), st.lists(entry, max_size=5), weird),
       st.one_of(st.lists(entry, min_size=N, max_size=N), st.lists(entry, max_size=5), weird),
       st.booleans())
def test_static_env_actions_give_a_clear_error_or_a_valid_step(env, cuts, shares, as_dict):
    env.reset(seed=0)
    action = {"cuts": np.asarray(cuts) if isinstance(cuts, list) else cuts,
              "shares": np.asarray(shares) if isinstance(shares, list) else shares} if as_dict else (cuts, shares)
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except ValueError:
        return
    assert env.observation_space.contains(obs)
    assert not math.isnan(reward) and not np.isnan(info["per_device_time_s"]).any()
