"""Testbed-profile importer: unit conversion, and flags on suspicious machines (not on good ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgesplit.cli import main
from edgesplit.errors import ProfileError
from edgesplit.profiles import read_profile_csv
from edgesplit.schedulers import conventional_cut
from edgesplit.testbed import (
    VGG19_TESTBED_NAMES,
    check_testbed_profile,
    flagged_machines,
    import_testbed_profiles,
)
from tests.conftest import SHARED_DATA

PROFILES = SHARED_DATA / "profiles"


def _shared(ds: str) -> tuple[Path, Path]:
    if not PROFILES.is_dir():
        pytest.skip(f"shared testbed profiles not found at {PROFILES}")
    return PROFILES / f"vgg19-{ds}-times.csv", PROFILES / f"vgg19-{ds}-memory.csv"


def _kinds(flags, machine: str) -> set[str]:
    return {f.kind for f in flags if f.machine == machine and f.severity == "error"}


def test_shared_cifar_flags_d2_and_the_jetsons_only() -> None:
    flags = check_testbed_profile(*_shared("cifar"))
    assert set(flagged_machines(flags)) == {"d2", "jetson-cpu", "jetson-gpu"}
    assert "mostly_zero" in _kinds(flags, "d2")
    assert "shifted_bwd" in _kinds(flags, "jetson-cpu")
    assert "shifted_bwd" in _kinds(flags, "jetson-gpu")
    for good in ("laptop", "VM", "d1"):
        assert not _kinds(flags, good), good


def test_shared_mnist_flags_the_empty_jetsons_and_the_memory_file() -> None:
    flags = check_testbed_profile(*_shared("mnist"))
    assert "all_zero" in _kinds(flags, "jetson-cpu") and "all_zero" in _kinds(flags, "jetson-gpu")
    assert "mostly_zero" in _kinds(flags, "d2")
    assert any(f.kind == "memory_shifted" and f.machine == "*" for f in flags)
    assert not _kinds(flags, "laptop") and not _kinds(flags, "VM")


def test_import_converts_to_per_sample_units() -> None:
    times, memory = _shared("cifar")
    profiles = import_testbed_profiles(times, memory, batch_size=128)
    assert list(profiles) == ["laptop", "VM", "d1", "d2", "jetson-cpu", "jetson-gpu"]
    lap = profiles["laptop"]
    assert lap.n_layers == 25 and lap.names == VGG19_TESTBED_NAMES
    assert (lap.model, lap.dataset, lap.batch_size) == ("vgg19", "cifar10", 128)
    assert lap.fwd_s[1] == pytest.approx(46.1034 / 1000 / 128)
    assert lap.bwd_s[1] == pytest.approx(144.103 / 1000 / 128)
    assert lap.activation_bytes[0] == pytest.approx(32769.568359375 * 1024 / 128)
    assert lap.param_bytes[1] == pytest.approx(147.306640625 * 1024)
    assert lap.meta["update_s"][22] == pytest.approx(121.308 / 1000 / 128)
    assert conventional_cut(lap) == 3  # after pool1
    assert not lap.meta["flagged"]
    assert profiles["d2"].meta["flagged"] and profiles["d2"].meta["flags"]
    kept = import_testbed_profiles(times, memory, drop_flagged=True)
    assert set(kept) == {"laptop", "VM", "d1"}


def _write(tmp_path: Path, fwd: np.ndarray, bwd: np.ndarray, machine: str = "m") -> tuple[Path, Path]:
    n = len(fwd)
    times = tmp_path / "net-cifar-times.csv"
    memory = tmp_path / "net-cifar-memory.csv"
    pd.DataFrame({"layer": range(n), "machine": machine, "fwd_ms": fwd, "bwd_ms": bwd,
                  "update_ms": 0.0}).to_csv(times, index=False)
    pd.DataFrame({"layer": range(n), "activation_kb": np.linspace(4000, 100, n),
                  "weight_kb": np.full(n, 100.0)}).to_csv(memory, index=False)
    return times, memory


def _synthetic(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    fwd = rng.uniform(1.0, 100.0, n)
    return fwd, fwd * rng.uniform(1.8, 2.6, n)


def test_clean_synthetic_machine_has_no_flags(tmp_path) -> None:
    fwd, bwd = _synthetic()
    assert check_testbed_profile(*_write(tmp_path, fwd, bwd)) == []


def test_shifted_backward_column_is_flagged(tmp_path) -> None:
    fwd, bwd = _synthetic()
    shifted = np.concatenate([[1.0], bwd[:-1]])  # bwd[l] is really bwd[l-1]
    flags = check_testbed_profile(*_write(tmp_path, fwd, shifted))
    assert "shifted_bwd" in _kinds(flags, "m")


def test_nan_negative_and_ratio_outliers_are_flagged_and_zeroed(tmp_path) -> None:
    fwd, bwd = _synthetic()
    fwd[2], bwd[5], bwd[9] = np.nan, -3.0, fwd[9] * 500
    times, memory = _write(tmp_path, fwd, bwd)
    flags = check_testbed_profile(times, memory)
    got = {(f.kind, f.layer) for f in flags}
    assert {("nan", 2), ("negative", 5), ("ratio_outlier", 9)} <= got
    prof = import_testbed_profiles(times, memory, batch_size=8)["m"]
    assert prof.fwd_s[2] == 0 and prof.bwd_s[5] == 0 and prof.meta["flagged"]
    assert prof.model == "net" and prof.dataset == "cifar10"


def test_malformed_files_raise_naming_the_field(tmp_path) -> None:
    fwd, bwd = _synthetic()
    times, memory = _write(tmp_path, fwd, bwd)
    pd.read_csv(memory).drop(columns="weight_kb").to_csv(tmp_path / "bad-memory.csv", index=False)
    with pytest.raises(ProfileError, match="weight_kb"):
        import_testbed_profiles(times, tmp_path / "bad-memory.csv")
    pd.read_csv(times).iloc[:-1].to_csv(tmp_path / "short-times.csv", index=False)
    with pytest.raises(ProfileError, match="layers do not match"):
        check_testbed_profile(tmp_path / "short-times.csv", memory)
    with pytest.raises(ProfileError, match="batch_size"):
        import_testbed_profiles(times, memory, batch_size=0)
    with pytest.raises(ProfileError, match="not found"):
        import_testbed_profiles(tmp_path / "nope.csv", memory)


def test_cli_import_writes_one_csv_per_kept_machine(tmp_path, capsys) -> None:
    times, memory = _shared("cifar")
    rc = main(["profile", "--import-testbed", str(times), str(memory), "--out-dir", str(tmp_path),
               "--drop-flagged"])
    assert rc == 0
    written = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert written == ["vgg19-cifar10-VM.csv", "vgg19-cifar10-d1.csv", "vgg19-cifar10-laptop.csv"]
    assert read_profile_csv(tmp_path / "vgg19-cifar10-laptop.csv").n_layers == 25
    out = capsys.readouterr().out
    assert "3 of 6 machines flagged" in out and "shifted_bwd" in out
    assert main(["profile", "--import-testbed", str(times), str(memory)]) == 2
    assert "--out-dir" in capsys.readouterr().err
