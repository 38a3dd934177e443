"""Scenario files: JSON and YAML, inline and shipped profiles, one clear error per bad field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgesplit.devices import CATALOGUE, generate_devices, generate_scenario
from edgesplit.errors import ScenarioError
from edgesplit.profiles import load_builtin_profile
from edgesplit.scenario import load_scenario, save_scenario, scenario_from_dict

LAYERS = [
    {"name": "conv1", "fwd_s": 2e-4, "bwd_s": 4e-4, "activation_bytes": 262144, "param_bytes": 7168},
    {"name": "fc", "fwd_s": 1e-5, "bwd_s": 2e-5, "activation_bytes": 40, "param_bytes": 40960},
]


def base() -> dict:
    return {
        "model": {"layers": [dict(x) for x in LAYERS]},
        "batch_size": 32,
        "devices": [{"name": "pi-0", "speed": 0.05, "memory_bytes": 4e9, "rate_bps": 2e7, "samples": 1000}],
        "server": {"speed": 8.0, "sharing": "dedicated"},
    }


def test_inline_json_round_trip(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(base()))
    s = load_scenario(path)
    assert s.n_layers == 2 and s.n_devices == 1 and s.batch_size == 32
    assert s.profile.names == ("conv1", "fc")
    again = load_scenario(save_scenario(s, tmp_path / "again.json"))
    np.testing.assert_array_equal(again.profile.fwd_s, s.profile.fwd_s)
    assert again.devices == s.devices


def test_yaml_with_exponents_and_shipped_profile(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "model: {profile: vgg19}\nbatch_size: 16\ndevices:\n"
        "  - {name: a, speed: 0.1, memory_bytes: 4.0e9, rate_bps: 2e7, samples: 100}\n"
    )
    s = load_scenario(path)
    assert s.devices[0].memory_bytes == 4e9 and s.devices[0].rate_bps == 2e7
    assert s.n_layers == load_builtin_profile("vgg19").n_layers


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["devices"][0].update(speed=-1), r"devices\[0\]\.speed: must be > 0"),
        (lambda d: d["devices"][0].update(rate_bps="fast"), r"devices\[0\]\.rate_bps: expected a number"),
        (lambda d: d["devices"][0].pop("samples"), r"devices\[0\]\.samples: missing"),
        (lambda d: d["devices"][0].update(samples=0), r"devices\[0\]\.samples: must be an integer >= 1"),
        (lambda d: d["devices"][0].update(memory_bytes=float("nan")), r"devices\[0\]\.memory_bytes"),
        (lambda d: d.update(batch_size=0), r"batch_size: must be an integer >= 1"),
        (lambda d: d.update(devices=[]), r"devices: expected a non-empty list"),
        (lambda d: d["server"].update(sharing="half"), r"server\.sharing: must be one of dedicated, shared"),
        (lambda d: d["server"].update(speed=0), r"server\.speed: must be > 0"),
        (lambda d: d["model"]["layers"][1].update(fwd_s=-1.0), r"model\.layers\[1\]\.fwd_s"),
        (lambda d: d["model"]["layers"][0].pop("param_bytes"), r"model\.layers\[0\]\.param_bytes: missing"),
        (lambda d: d.update(model="no-such-model"), r"model: unknown profile 'no-such-model'"),
        (lambda d: d.update(colour="red"), r"colour: unknown field"),
    ],
)
def test_bad_fields_are_named(mutate, field):
    d = base()
    mutate(d)
    with pytest.raises(ScenarioError, match=field):
        scenario_from_dict(d)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "missing.json")


def test_generator_is_seeded_and_hits_the_heterogeneity_ratio():
    a = generate_devices(12, heterogeneity=20.0, seed=4)
    b = generate_devices(12, heterogeneity=20.0, seed=4)
    assert a == b
    speeds = np.array([d.speed for d in a])
    assert speeds.max() / speeds.min() == pytest.approx(20.0)
    rates = np.array([d.rate_bps for d in a])
    assert rates.min() == pytest.approx(5e6) and rates.max() == pytest.approx(50e6)
    assert generate_devices(12, heterogeneity=20.0, seed=5) != a
    s = generate_scenario(load_builtin_profile("vgg19"), 5, seed=1)
    assert s.n_devices == 5
    with pytest.raises(ScenarioError, match="heterogeneity: must be >= 1"):
        generate_devices(3, heterogeneity=0.5)


def test_catalogue_entries_have_sources():
    assert {"raspberry-pi-4", "jetson-nano", "jetson-xavier-nx", "phone", "laptop", "edge-server"} <= set(CATALOGUE)
    for c in CATALOGUE.values():
        assert c.speed > 0 and c.memory_bytes > 0 and len(c.source) > 20
