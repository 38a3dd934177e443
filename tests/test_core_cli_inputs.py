"""Issue 10 core items: profile import (path escape, inf, implausible, header only), output paths
checked before the work, strict JSON from plan; the reproduce studies' outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgesplit.cli import main
from edgesplit.errors import ProfileError
from edgesplit.reproduce import GridConfig, reproduce
from edgesplit.testbed import flagged_machines, check_testbed_profile, import_testbed_profiles


class Result:
    """What a CLI run left: exit status and output (in-process, to keep the tests fast)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Result(code, out.out, out.err)
    return run


def one_line_exit_2(r: Result, needle: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def sheets(tmp_path: Path, machines: dict[str, list[tuple[float, float]]]) -> tuple[Path, Path]:
    """A small testbed pair: 5 layers (a pool at index 2), times per machine as (fwd_ms, bwd_ms)."""
    mem = pd.DataFrame({"layer": range(5), "activation_kb": [4096, 4096, 1024, 2048, 10],
                        "weight_kb": [10, 150, 1.8, 300, 40]})
    rows = [{"layer": l, "machine": m, "fwd_ms": f, "bwd_ms": b, "update_ms": 0.0}
            for m, t in machines.items() for l, (f, b) in enumerate(t)]
    tp, mp = tmp_path / "net-cifar-times.csv", tmp_path / "net-cifar-memory.csv"
    pd.DataFrame(rows).to_csv(tp, index=False)
    mem.to_csv(mp, index=False)
    return tp, mp


GOOD = [(8.0, 15.0), (46.0, 144.0), (7.5, 3.8), (25.0, 90.0), (1.0, 2.0)]


def test_machine_name_cannot_escape_the_out_dir(tmp_path, cli):
    tp, mp = sheets(tmp_path, {"ok": GOOD, "../../evil": GOOD})
    out = tmp_path / "out"
    r = cli("profile", "--import-testbed", str(tp), str(mp), "--out-dir", str(out))
    one_line_exit_2(r, "machine '../../evil' is not a safe file name")
    assert not any(tmp_path.rglob("*evil*"))
    with pytest.raises(ProfileError, match="not a safe file name"):
        import_testbed_profiles(tp, mp)


@pytest.mark.parametrize("bad, kind", [(float("inf"), "not_finite"), (1e308, "implausible"), (2e7, "implausible")])
def test_infinite_and_implausible_times_are_flagged_and_left_out(tmp_path, cli, bad, kind):
    times = list(GOOD)
    times[1] = (bad, 144.0)
    tp, mp = sheets(tmp_path, {"ok": GOOD, "odd": times})
    flags = check_testbed_profile(tp, mp)
    assert flagged_machines(flags) == ["odd"]
    assert any(f.kind == kind and f.machine == "odd" for f in flags)
    prof = import_testbed_profiles(tp, mp)["odd"]
    assert prof.meta["flagged"] and np.isfinite(prof.fwd_s).all()
    out = tmp_path / "out"
    r = cli("profile", "--import-testbed", str(tp), str(mp), "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "left out odd:" in r.stdout and kind in r.stdout
    assert [p.name for p in out.glob("*.csv")] == ["net-cifar10-ok.csv"]
    r = cli("profile", "--import-testbed", str(tp), str(mp), "--out-dir", str(out), "--include-flagged")
    assert r.returncode == 0 and len(list(out.glob("*.csv"))) == 2


def test_header_only_sheet_is_an_error(tmp_path, cli):
    tp, mp = sheets(tmp_path, {"ok": GOOD})
    tp.write_text("layer,machine,fwd_ms,bwd_ms,update_ms\n")
    r = cli("profile", "--import-testbed", str(tp), str(mp), "--out-dir", str(tmp_path / "o"))
    one_line_exit_2(r, "no data rows")
    assert not (tmp_path / "o").exists()


def test_output_paths_are_checked_before_the_work(tmp_path, cli):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    one_line_exit_2(cli("reproduce", "--quick", "--out", str(a_file)), "is not a folder")
    one_line_exit_2(cli("reproduce", "--quick", "--out", str(a_file / "sub")), "is not a folder")
    one_line_exit_2(cli("profile", "--model", "small_cnn", "--out", str(tmp_path)), "is a folder")
    tp, mp = sheets(tmp_path, {"ok": GOOD})
    one_line_exit_2(cli("profile", "--import-testbed", str(tp), str(mp), "--out-dir", str(a_file)),
                    "is not a folder")


def test_plan_json_is_strict_and_extreme_values_are_one_line(tmp_path, cli):
    scen = {"model": "small_cnn", "batch_size": 8,
            "devices": [{"speed": 0.5, "memory_bytes": 4e9, "rate_bps": 1e7, "samples": 64},
                        {"speed": 0.5, "memory_bytes": 4e9, "rate_bps": 0, "samples": 64}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scen))
    r = cli("plan", "--scenario", str(path), "--scheduler", "psl", "--json")
    assert r.returncode == 0
    out = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert out["round_time_s"] is None and "infinite" in out["note"]
    scen["devices"][0]["samples"] = 10 ** 400
    path.write_text(json.dumps(scen))
    one_line_exit_2(cli("plan", "--scenario", str(path)), "devices[0].samples")
    scen["devices"][0].update(samples=64, speed=1e-18)
    path.write_text(json.dumps(scen))
    one_line_exit_2(cli("plan", "--scenario", str(path)), "devices[0].speed")


def test_reproduce_studies_write_the_decomposition_and_the_testbed(tmp_path):
    cfg = GridConfig(models=["small_cnn"], n_devices=[4], heterogeneity=[1.0, 10.0], seeds=2)
    summary = reproduce(cfg, tmp_path, progress=False)
    assert "random" not in set(summary["baseline"])
    dec = pd.read_csv(tmp_path / "decomposition.csv")
    assert set(dec["links"]) == {"equal", "spread"} and len(dec) == 2 * 2 * 2
    # exact is the optimum: both parts together gain at least as much as either alone
    assert (dec["gain_exact"] >= dec["gain_uniform-cut-opt-bw"] * (1 - 1e-9)).all()
    assert (dec["gain_exact"] >= dec["gain_per-device-cuts-equal-bw"] * (1 - 1e-9)).all()
    # equal links, equal speeds: only memory differs, nothing to gain from the shares
    flat = dec[(dec["links"] == "equal") & (dec["heterogeneity"] == 1.0)]
    assert np.allclose(flat["gain_uniform-cut-opt-bw"], 1.0, rtol=1e-6)
    tb = pd.read_csv(tmp_path / "testbed.csv")
    assert (tb["exact_on_speeds_s"] >= tb["exact_s"] * (1 - 1e-9)).all()
    assert np.allclose(tb["alternating_s"], tb["exact_s"], rtol=1e-6)
    for name in ("decomposition.md", "testbed.md", "speedups.md"):
        assert (tmp_path / name).read_text().count("|") > 20
    assert (tmp_path / "decomposition.png").stat().st_size > 10_000


def test_subprocess_exit_status_and_single_line(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    r = subprocess.run([sys.executable, "-m", "edgesplit.cli", "reproduce", "--quick", "--out", str(a_file)],
                       capture_output=True, text=True, timeout=120)
    one_line_exit_2(r, "is not a folder")
