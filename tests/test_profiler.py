"""The profiler: sizes and FLOPs it reports are the model's real ones; CSV round trip; the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from edgesplit.cli import main
from edgesplit.errors import EdgeSplitError
from edgesplit.profiler import describe_host, profile_model
from edgesplit.profiles import PROFILE_COLUMNS, load_builtin_profile, read_profile_csv
from edgesplit.zoo import MODEL_BUILDERS, SplitModel, build_model, dataset_shape

BATCH = 4


@pytest.fixture(scope="module")
def small_profile():
    return profile_model("small_cnn", "mnist", batch_size=BATCH, warmup=1, repeats=2, seed=0)


def _unit_output_sizes(model: SplitModel, dataset: str) -> list[int]:
    s = dataset_shape(dataset)
    h = torch.randn(1, s.channels, s.size, s.size)
    sizes = []
    model.eval()
    with torch.no_grad():
        for unit in model.units:
            h = unit(h)
            sizes.append(h.numel() * h.element_size())
    return sizes


def test_rows_names_and_metadata(small_profile) -> None:
    model = build_model("small_cnn", "mnist")
    p = small_profile
    assert p.names == tuple(model.names)
    assert (p.model, p.dataset, p.batch_size) == ("small_cnn", "mnist", BATCH)
    assert "torch" in p.host and p.host.startswith(describe_host()) and "load average" in p.host
    assert np.all(np.isfinite(p.fwd_s)) and np.all(p.fwd_s > 0)
    assert np.all(np.isfinite(p.bwd_s)) and np.all(p.bwd_s > 0)


def test_param_and_activation_bytes_are_the_real_ones(small_profile) -> None:
    model = build_model("small_cnn", "mnist")
    per_unit = [sum(q.numel() * 4 for q in u.parameters()) for u in model.units]
    assert small_profile.param_bytes.tolist() == per_unit
    assert small_profile.param_bytes.sum() == sum(q.numel() * q.element_size() for q in model.parameters())
    assert small_profile.activation_bytes.tolist() == _unit_output_sizes(model, "mnist")
    assert small_profile.activation_bytes[0] == 32 * 28 * 28 * 4


def test_flops_match_the_conv_and_linear_formulas(small_profile) -> None:
    flops = small_profile.fwd_flops
    assert flops is not None and np.all(flops > 0)
    assert flops[0] == 2 * 32 * 1 * 3 * 3 * 28 * 28  # conv1: 2 * Cout * Cin * k * k * H * W
    assert flops[3] == 2 * (64 * 7 * 7) * 128  # fc1: 2 * in * out
    assert flops[1] > flops[0]


def test_csv_round_trip(small_profile, tmp_path) -> None:
    path = small_profile.to_csv(tmp_path / "p.csv")
    assert list(pd.read_csv(path).columns) == PROFILE_COLUMNS
    back = read_profile_csv(path)
    assert back.names == small_profile.names
    for key in ("fwd_s", "bwd_s", "activation_bytes", "param_bytes", "fwd_flops"):
        np.testing.assert_allclose(getattr(back, key), getattr(small_profile, key), rtol=1e-12)
    assert (back.model, back.dataset, back.host, back.batch_size) == (
        "small_cnn", "mnist", small_profile.host, BATCH)


def test_custom_model_with_in_place_first_op() -> None:
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    p = profile_model(SplitModel.from_modules(seq, name="mine"), batch_size=2, warmup=0, repeats=1,
                      input_shape=(3, 16, 16))
    assert p.model == "mine" and p.n_layers == 5
    assert p.activation_bytes.tolist() == [8 * 16 * 16 * 4, 8 * 16 * 16 * 4, 8 * 8 * 8 * 4, 512 * 4, 40]
    assert p.param_bytes[1] == 0 and p.fwd_flops[1] == 0


@pytest.mark.parametrize("kwargs, field", [({"batch_size": 0}, "batch_size"), ({"repeats": 0}, "repeats"),
                                           ({"warmup": -1}, "warmup"), ({"dataset": "svhn"}, "dataset")])
def test_bad_arguments_name_the_field(kwargs, field) -> None:
    with pytest.raises(EdgeSplitError, match=field):
        profile_model("small_cnn", **{"dataset": "mnist", **kwargs})


@pytest.mark.parametrize("name", list(MODEL_BUILDERS))
def test_shipped_reference_profile_matches_the_zoo(name: str) -> None:
    """The package data was measured with ``edgesplit profile``: its sizes must be the zoo's."""
    p = load_builtin_profile(name)
    model = build_model(name, p.dataset)
    assert p.model == name and p.names == tuple(model.names)
    assert p.param_bytes.tolist() == [sum(q.numel() * 4 for q in u.parameters()) for u in model.units]
    assert p.activation_bytes.tolist() == _unit_output_sizes(model, p.dataset)
    assert np.all(p.fwd_s > 0) and np.all(p.bwd_s > 0) and p.fwd_flops is not None
    assert "PROVISIONAL" not in p.host


def test_cli_writes_a_valid_profile(tmp_path, capsys) -> None:
    out = tmp_path / "sc.csv"
    rc = main(["profile", "--model", "small_cnn", "--dataset", "mnist", "--batch-size", "2",
               "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert rc == 0
    p = read_profile_csv(out)
    assert p.n_layers == 5 and p.batch_size == 2
    printed = capsys.readouterr().out
    assert "conv2_pool" in printed and str(out) in printed


@pytest.mark.parametrize("argv, needle", [
    (["--model", "alexnet", "--out", "x.csv"], "--model: unknown 'alexnet'"),
    (["--model", "small_cnn", "--dataset", "svhn", "--out", "x.csv"], "dataset: unknown 'svhn'"),
    (["--model", "small_cnn", "--batch-size", "0", "--out", "x.csv"], "--batch-size"),
    (["--model", "small_cnn"], "--out"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "x.csv").exists()
