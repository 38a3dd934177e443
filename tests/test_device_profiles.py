"""Per-device layer profiles (DESIGN.md): the cost model, the schedulers, scenario files, the
catalogue of real device classes and the generator."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from edgesplit.costmodel import CostModel
from edgesplit.devices import (
    CATALOGUE,
    TESTBED_CLASSES,
    GeneratorConfig,
    class_profile,
    class_spread,
    generate_scenario,
)
from edgesplit.errors import ScenarioError
from edgesplit.profiles import LayerProfile, load_builtin_profile
from edgesplit.scenario import Device, Scenario, Server, load_scenario, scenario_from_dict
from edgesplit.schedulers import SCHEDULERS, get_scheduler, plan
from tests.conftest import random_profile


def own_times(rng: np.random.Generator, model: LayerProfile) -> LayerProfile:
    """A device's own per-layer times: every layer scaled by its own random factor (1e-2..1e2)."""
    f = 10 ** rng.uniform(-2, 2, model.n_layers)
    b = 10 ** rng.uniform(-2, 2, model.n_layers)
    return LayerProfile(model.names, model.fwd_s * f, model.bwd_s * b, model.activation_bytes, model.param_bytes)


def per_device_scenario(rng: np.random.Generator, n: int, L: int) -> Scenario:
    """Random devices, most with their own random per-layer times; the server too, sometimes."""
    prof = random_profile(rng, L)
    need = 3 * np.cumsum(prof.param_bytes) + 16 * np.cumsum(prof.activation_bytes)
    devices = []
    for i in range(n):
        own = own_times(rng, prof) if rng.random() < 0.8 else None
        devices.append(Device(f"d{i}", float(rng.uniform(0.02, 1.0)), float(rng.uniform(need[0], need[-1] * 1.2)),
                              float(rng.uniform(1e6, 1e8)), int(rng.integers(16, 400)), own))
    server_own = own_times(rng, prof) if rng.random() < 0.5 else None
    server = Server(float(rng.uniform(1.0, 20.0)), str(rng.choice(["dedicated", "shared"])), server_own)
    return Scenario(prof, 16, tuple(devices), server)


def independent_compute(s: Scenario) -> np.ndarray:
    """A_i(c) straight from DESIGN.md, layer by layer, with plain Python loops."""
    L, n, b = s.n_layers, s.n_devices, s.batch_size
    share = 1.0 / n if s.server.sharing == "shared" else 1.0
    if s.server.profile is not None:
        srv = [s.server.profile.fwd_s[l] + s.server.profile.bwd_s[l] for l in range(L)]
    else:
        srv = [(s.profile.fwd_s[l] + s.profile.bwd_s[l]) / s.server.speed for l in range(L)]
    out = np.zeros((n, L))
    for i, d in enumerate(s.devices):
        if d.profile is not None:
            dev = [d.profile.fwd_s[l] + d.profile.bwd_s[l] for l in range(L)]
        else:
            dev = [(s.profile.fwd_s[l] + s.profile.bwd_s[l]) / d.speed for l in range(L)]
        k = math.ceil(d.samples / b)
        for c in range(1, L + 1):
            out[i, c - 1] = k * b * (sum(dev[:c]) + sum(srv[c:]) / share)
    return out


def equal_finish_time(a: np.ndarray, w: np.ndarray) -> float:
    """The smallest round time ``T`` with ``sum w / (T - a) <= 1`` (compute seconds ``a``, transfer
    seconds ``w`` on the whole band): the best shares for fixed cuts, by plain bisection (no shared
    solver)."""
    lo, hi = float(np.max(a + w)), float(np.max(a) + np.sum(w))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if np.sum(w / (mid - a)) <= 1.0 else (mid, hi)
    return hi


def brute_force(s: Scenario, A: np.ndarray, cm: CostModel) -> float:
    """Every combination of feasible cuts, optimal shares by plain bisection (no shared solver)."""
    best = math.inf
    r = s.array("rate_bps")
    for combo in itertools.product(*[np.flatnonzero(row) + 1 for row in cm.feasible]):
        idx = np.array(combo) - 1
        a = A[np.arange(s.n_devices), idx]
        v = cm.traffic_bits[np.arange(s.n_devices), idx]
        best = min(best, equal_finish_time(a, v / r))
    return best


@pytest.mark.parametrize("seed", range(30))
def test_exact_is_the_global_optimum_with_per_device_profiles(seed):
    rng = np.random.default_rng(1000 + seed)
    s = per_device_scenario(rng, int(rng.integers(1, 5)), int(rng.integers(2, 7)))
    cm = CostModel.from_scenario(s)
    A = independent_compute(s)
    np.testing.assert_allclose(cm.compute_s, A, rtol=1e-12)
    ex = plan(cm, "exact")
    assert ex.round_time_s == pytest.approx(brute_force(s, A, cm), rel=1e-9)
    for name in SCHEDULERS:
        p = plan(cm, name, seed=seed)
        if p.feasible:
            assert p.round_time_s >= ex.round_time_s * (1 - 1e-9), name


def paper_alternating(cm: CostModel, A: np.ndarray) -> float:
    """The paper's alternating algorithm written out independently: equal shares; then repeat
    (best cut per device for the shares; optimal shares for the cuts by bisection) until the cuts
    stop changing. Returns the best round time seen."""
    n = cm.n_devices
    r = cm.rate_bps
    shares = np.full(n, 1.0 / n)
    best, prev = math.inf, None
    for _ in range(50):
        t = A + cm.traffic_bits / (shares[:, None] * r[:, None])
        t[~cm.feasible] = np.inf
        cuts = np.argmin(t, axis=1)
        if prev is not None and np.array_equal(cuts, prev):
            break
        a = A[np.arange(n), cuts]
        v = cm.traffic_bits[np.arange(n), cuts] / r
        hi = equal_finish_time(a, v)
        shares = v / (hi - a)
        shares /= shares.sum()
        best = min(best, float(np.max(a + v / shares)))
        prev = cuts
    return best


@pytest.mark.parametrize("seed", range(20))
def test_alternating_is_the_papers_algorithm_with_per_device_profiles(seed):
    rng = np.random.default_rng(2000 + seed)
    s = per_device_scenario(rng, int(rng.integers(2, 9)), int(rng.integers(3, 12)))
    cm = CostModel.from_scenario(s)
    assert plan(cm, "alternating").round_time_s == pytest.approx(
        paper_alternating(cm, independent_compute(s)), rel=1e-7)


def test_a_profile_equal_to_the_scaled_model_costs_the_same_as_the_speed():
    model = load_builtin_profile("resnet18")
    d = Device("a", 0.25, 8e9, 2e7, 300)
    scaled = model.scaled(1 / 0.25)
    with_profile = Scenario(model, 32, (Device("a", 0.25, 8e9, 2e7, 300, scaled),), Server(4.0))
    np.testing.assert_allclose(CostModel.from_scenario(with_profile).compute_s,
                               CostModel.from_scenario(Scenario(model, 32, (d,), Server(4.0))).compute_s, rtol=1e-12)
    np.testing.assert_allclose(CostModel.from_scenario(with_profile).effective_speed, [0.25], rtol=1e-12)


# ----------------------------------------------------------------------------- scenario files

TWO = [{"name": "conv1", "fwd_s": 2e-4, "bwd_s": 4e-4, "activation_bytes": 262144, "param_bytes": 7168},
       {"name": "fc", "fwd_s": 1e-5, "bwd_s": 2e-5, "activation_bytes": 40, "param_bytes": 40960}]


def scenario_dict(device: dict) -> dict:
    return {"model": {"layers": [dict(x) for x in TWO]}, "batch_size": 8,
            "devices": [{"name": "x", "memory_bytes": 4e9, "rate_bps": 2e7, "samples": 100, **device}]}


def test_inline_and_csv_device_profiles(tmp_path):
    own = [{"name": "conv1", "fwd_s": 1e-3, "bwd_s": 3e-3}, {"name": "fc", "fwd_s": 5e-6, "bwd_s": 1e-5}]
    s = scenario_from_dict(scenario_dict({"profile": {"layers": own}}))
    d = s.devices[0]
    np.testing.assert_allclose(d.profile.fwd_s, [1e-3, 5e-6])
    assert d.profile.activation_bytes is s.profile.activation_bytes  # bytes are the model's
    assert d.speed == pytest.approx((6e-4 + 3e-5) / (4e-3 + 1.5e-5))
    # CSV in the format `edgesplit profile` writes, relative to the scenario file
    d.profile.to_csv(tmp_path / "own.csv")
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario_dict({"profile": {"csv": "own.csv"}})))
    again = load_scenario(path)
    np.testing.assert_allclose(again.devices[0].profile.bwd_s, d.profile.bwd_s)
    # to_dict round trip keeps the profile
    back = scenario_from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_allclose(CostModel.from_scenario(back).compute_s, CostModel.from_scenario(s).compute_s)


@pytest.mark.parametrize("device, message", [
    ({"profile": {"layers": [{"name": "conv1", "fwd_s": 1e-3, "bwd_s": 1e-3}]}},
     r"devices\[0\]\.profile: has 1 layers, the model"),
    ({"profile": {"layers": [{"name": "conv1", "fwd_s": 1, "bwd_s": 1}, {"name": "head", "fwd_s": 1, "bwd_s": 1}]}},
     r"devices\[0\]\.profile: layer 2 is named 'head', the model's is 'fc'"),
    ({"profile": {"layers": [{"name": "conv1", "fwd_s": 0, "bwd_s": 0}, {"name": "fc", "fwd_s": 0, "bwd_s": 0}]}},
     r"devices\[0\]\.profile: every forward and backward time is 0"),
    ({"profile": {"layers": [{"fwd_s": 1, "bwd_s": 1, "colour": 1}, {"fwd_s": 1, "bwd_s": 1}]}},
     r"devices\[0\]\.profile\.layers\[0\]\.colour: unknown field"),
    ({"profile": {"csv": "missing.csv"}}, r"devices\[0\]\.profile: profile file not found"),
    ({"profile": "laptop"}, r"devices\[0\]\.profile: class 'laptop' has no per-layer profile for model"),
    ({"profile": "no-such-class"}, r"devices\[0\]\.profile: unknown device class 'no-such-class'"),
    ({"profile": {"csv": "a.csv", "layers": []}}, r"devices\[0\]\.profile: give exactly one"),
    ({"profile": 3}, r"devices\[0\]\.profile: expected a catalogue class name"),
    ({"speed": 1.0, "profile": "laptop"}, r"devices\[0\]\.speed: give speed or profile, not both"),
    ({}, r"devices\[0\]\.speed: missing"),
])
def test_bad_device_profiles_are_one_error_naming_the_device(device, message):
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(scenario_dict(device))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["model"].update(colour="red"), r"model\.colour: unknown field"),
    (lambda d: d["model"]["layers"][1].update(colour="red"), r"model\.layers\[1\]\.colour: unknown field"),
    (lambda d: d["model"].update(csv="x.csv"), r"model: give one of"),
    (lambda d: d["devices"][0].update(samples=10 ** 400), r"devices\[0\]\.samples: must be an integer in"),
    (lambda d: d["devices"][0].update(rate_bps=10 ** 400), r"devices\[0\]\.rate_bps: must be 0 or a number in"),
    (lambda d: d["model"]["layers"][0].update(fwd_s=10 ** 400), r"model\.layers\[0\]\.fwd_s: must be 0 or a finite"),
    (lambda d: d["devices"][0].update(speed=1e-18), r"devices\[0\]\.speed: must be a number in \[1e-09"),
    (lambda d: d["devices"][0].update(rate_bps=5e-324), r"devices\[0\]\.rate_bps: must be 0 or a number"),
    (lambda d: d["model"]["layers"][0].update(fwd_s=1e308), r"model\.layers\[0\]\.fwd_s"),
    (lambda d: d["model"]["layers"][0].update(activation_bytes=5e-324), r"model\.layers\[0\]\.activation_bytes"),
    (lambda d: d.update(batch_size=10 ** 400), r"batch_size: must be an integer in"),
])
def test_unknown_keys_and_implausible_numbers_are_refused(mutate, message):
    d = scenario_dict({"speed": 0.5})
    mutate(d)
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(d)


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines += ["model: vgg19", "batch_size: 8",
              "devices: [{name: *a11, speed: 1, memory_bytes: 4e9, rate_bps: 1e7, samples: 10}]"]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    # refused by the loader before any alias is expanded (an expanded bomb would take minutes and GBs)
    with pytest.raises(ScenarioError, match="aliases are not allowed"):
        load_scenario(path)


def test_plan_json_is_strict_with_an_infinite_time():
    s = Scenario(load_builtin_profile("small_cnn"), 8,
                 (Device("up", 0.5, 4e9, 1e7, 64), Device("down", 0.5, 4e9, 0.0, 64)), Server(2.0))
    p = plan(s, "psl")
    text = json.dumps(p.to_dict(), allow_nan=False)
    out = json.loads(text)
    assert out["round_time_s"] is None and out["per_device_time_s"][1] is None
    assert "infinite" in out["note"]


def test_tiny_gap_does_not_divide_by_zero():
    # compute of ~1e18 s next to ~1 s of traffic: T - A_i rounds to 0 in floating point
    model = load_builtin_profile("small_cnn")
    s = Scenario(model, 8, (Device("slow", 1e-9, 4e9, 1e15, 10 ** 12), Device("ok", 1.0, 4e9, 1e7, 64)),
                 Server(1e-9))
    for name in SCHEDULERS:
        p = plan(s, name, seed=0)
        assert not np.isnan(p.per_device_time_s).any() and not math.isnan(p.round_time_s), name


# ----------------------------------------------------------------------------- catalogue


def test_catalogue_testbed_classes_carry_the_trustworthy_machines():
    model = load_builtin_profile("vgg19_testbed", "cifar10")
    spread = class_spread(model)
    assert set(spread) == set(TESTBED_CLASSES)
    assert spread["testbed-vm"] == pytest.approx(1.0)  # the testbed model's reference machine
    assert spread["laptop"] / spread["edge-device-d1"] > 10  # d1 is far slower than the laptop
    # per-layer shapes differ: the d1/laptop ratio is not one number
    r = class_profile("edge-device-d1", model).train_s / class_profile("laptop", model).train_s
    r = r[np.isfinite(r) & (r > 0)]
    assert np.percentile(r, 95) / np.percentile(r, 5) > 3
    for c in CATALOGUE.values():
        assert c.speed > 0 and c.memory_bytes > 0 and len(c.source) > 20
    # MNIST: d1 is flagged there (ratio outliers) and so has no MNIST profile
    mnist = load_builtin_profile("vgg19_testbed", "mnist")
    assert set(class_spread(mnist)) == {"laptop", "testbed-vm"}


def test_profiling_host_class_is_the_zoo_profile():
    model = load_builtin_profile("resnet18")
    np.testing.assert_array_equal(class_profile("profiling-host", model).train_s, model.train_s)


def test_scenario_class_key_fills_profile_memory_and_rate():
    model_yaml = {"profile": "vgg19_testbed", "dataset": "cifar10"}
    s = scenario_from_dict({"model": model_yaml, "batch_size": 16,
                            "devices": [{"class": "edge-device-d1", "samples": 100},
                                        {"class": "laptop", "samples": 100, "rate_bps": 3e6},
                                        {"class": "raspberry-pi-4", "samples": 100}],
                            "server": {"class": "testbed-vm"}})
    d1, lap, pi = s.devices
    assert d1.profile is not None and d1.device_class == "edge-device-d1" and d1.memory_bytes == 2e9
    assert lap.rate_bps == 3e6 and lap.profile is not None
    assert pi.profile is None and pi.speed == CATALOGUE["raspberry-pi-4"].speed
    assert s.server.profile is not None
    # an explicit speed overrides the class's profile
    s2 = scenario_from_dict({"model": model_yaml, "batch_size": 16,
                             "devices": [{"class": "laptop", "speed": 0.3, "samples": 100}]})
    assert s2.devices[0].profile is None and s2.devices[0].speed == 0.3


def test_generator_draws_classes_with_their_profiles():
    model = load_builtin_profile("vgg19_testbed")
    cfg = GeneratorConfig(device_classes=("laptop", "edge-device-d1"), server_class="testbed-vm",
                          rate_range_bps=(1e7, 1e8))
    a = generate_scenario(model, 40, cfg, seed=3)
    b = generate_scenario(model, 40, cfg, seed=3)
    assert [d.device_class for d in a.devices] == [d.device_class for d in b.devices]
    assert {d.device_class for d in a.devices} == {"laptop", "edge-device-d1"}
    assert all(d.profile is class_profile(d.device_class, model) for d in a.devices)
    assert a.server.profile is not None
    # a class without a profile for the model falls back to its speed
    zoo = load_builtin_profile("vgg19")
    z = generate_scenario(zoo, 5, cfg, seed=3)
    assert all(d.profile is None and d.speed == CATALOGUE[d.device_class].speed for d in z.devices)
    with pytest.raises(ScenarioError, match=r"device_classes\[0\]: unknown device class"):
        GeneratorConfig(device_classes=("gpu-cluster",))
    with pytest.raises(ScenarioError, match="colour: unknown generator option"):
        generate_scenario(zoo, 3, colour=1)


def test_every_scheduler_takes_a_seed():
    s = generate_scenario(load_builtin_profile("vgg11"), 6, seed=2)
    for name in SCHEDULERS:
        assert get_scheduler(name, seed=7).plan(s).cuts.shape == (6,)
    assert np.array_equal(plan(s, "random", seed=1).cuts, plan(s, "random", seed=1).cuts)


def test_shipped_class_profiles_are_the_conversion_of_the_shared_sheets(tmp_path):
    from edgesplit.devices import testbed_data_dir
    from edgesplit.profiles import builtin_profile_dir, read_profile_csv
    from edgesplit.testbed import export_testbed_classes
    from tests.conftest import SHARED_DATA

    prof_dir = SHARED_DATA / "profiles"
    if not (prof_dir / "vgg19-cifar-times.csv").is_file():
        pytest.skip("../shared/data/profiles not available")
    for ds, expect_out in (("cifar", {"d2", "jetson-cpu", "jetson-gpu"}), ("mnist", {"d1", "d2", "jetson-cpu", "jetson-gpu"})):
        written, left_out = export_testbed_classes(prof_dir / f"vgg19-{ds}-times.csv", prof_dir / f"vgg19-{ds}-memory.csv",
                                                   tmp_path / "classes", tmp_path / "models")
        assert set(left_out) == expect_out
        for machine, path in written.items():
            shipped = read_profile_csv(testbed_data_dir() / path.name)
            fresh = read_profile_csv(path)
            np.testing.assert_allclose(shipped.fwd_s, fresh.fwd_s, rtol=1e-12)
            np.testing.assert_allclose(shipped.bwd_s, fresh.bwd_s, rtol=1e-12)
            np.testing.assert_allclose(shipped.activation_bytes, fresh.activation_bytes, rtol=1e-12)
        ref = next((tmp_path / "models").glob(f"vgg19_testbed-{'cifar10' if ds == 'cifar' else 'mnist'}.csv"))
        np.testing.assert_allclose(read_profile_csv(builtin_profile_dir() / ref.name).train_s,
                                   read_profile_csv(ref).train_s, rtol=1e-12)


def test_testbed_example_scenario_plans_with_own_profiles():
    from pathlib import Path

    s = load_scenario(Path(__file__).resolve().parents[1] / "examples" / "scenario-testbed.yaml")
    assert all(d.profile is not None for d in s.devices) and s.server.profile is not None
    ex, psl = plan(s, "exact"), plan(s, "psl")
    assert ex.round_time_s <= psl.round_time_s and math.isfinite(ex.round_time_s)
