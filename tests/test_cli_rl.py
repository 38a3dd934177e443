"""The CLI rule (one line, exit 2, traceback only with --debug), fast help (no heavy imports),
every option described, a user's own envs/ and agents/ folders harmless, the LICENSE."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from edgesplit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_top_level_help_imports_neither_torch_nor_gymnasium_nor_sb3() -> None:
    r = _run("""
        import sys
        import edgesplit.cli as cli
        parser, _ = cli.build_parser()
        parser.format_help()
        heavy = [m for m in ("torch", "gymnasium", "stable_baselines3", "pandas") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout


def test_agent_command_help_imports_no_torch() -> None:
    r = _run("""
        import sys
        import edgesplit.cli as cli
        for name in ("train-agent", "evaluate", "sweep"):
            parser, cmds = cli.build_parser(only=name)
            assert name in cmds, name
        print("HEAVY", [m for m in ("torch", "gymnasium", "stable_baselines3", "ray") if m in sys.modules])
    """)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    parser, _ = build_parser(full=True)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_and_option_has_a_description() -> None:
    parsers = _all_parsers()
    assert {"plan", "train-agent", "evaluate", "sweep"} <= set(parsers)
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in parsers.items() for a in p._actions
               if not a.help or a.help == argparse.SUPPRESS and a.dest != "debug"]
    assert missing == []


def test_top_level_help_lists_every_command_with_its_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in _all_parsers():
        assert name in out
    assert "train a learned scheduler" in out


def test_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    cmd = [sys.executable, "-m", "edgesplit.cli", "evaluate", "--policy", str(bad), "--episodes", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert r.stderr.startswith("edgesplit evaluate: error:") and "bad.json" in r.stderr  # names the input
    r = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_a_trace_with_a_huge_value_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    """A 1e300 throughput in a --traces file (the library refuses it, see test_fuzz_traces) reaches
    the user as the CLI rule says: one line naming the file, the line and the problem, exit 2."""
    traces = tmp_path / "fam"
    traces.mkdir()
    (traces / "a-huge.txt").write_text("0 1e300\n1 2.0\n")
    for name in ("b.txt", "c.txt"):  # the rest of the family is fine
        (traces / name).write_text("0 1.5\n1 2.0\n2 2.5\n")
    cmd = [sys.executable, "-m", "edgesplit.cli", "evaluate", "--env", "EdgeSplitDynamic-v1", "--policy", "alternating",
           "--traces", str(traces), "--episodes", "1", "--n-devices", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert r.stderr.startswith("edgesplit evaluate: error:")
    assert "a-huge.txt" in r.stderr and "line 1" in r.stderr and "out of range" in r.stderr


def test_own_envs_and_agents_folders_in_the_cwd_do_not_break_evaluation(tmp_path: Path) -> None:
    for name in ("envs", "agents", "experiments"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("SIMULATED_IDS = 'not ours'\n")
    r = _run("""
        from edgesplit.agents.evaluation import evaluate
        s, _ = evaluate("learned", episodes=1, seed=0, n_devices=10)
        print("OK", s["policy"], s["mean_total_time_s"] > 0)
    """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OK learned True" in r.stdout


def test_license_matches_pyproject() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_readme_commands_run_without_the_shared_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = str(tmp_path / "shared" / "data" / "traces" / "pensieve-train")
    assert main(["evaluate", "--env", "edgesplit/EdgeSplitDynamic-v0", "--policy", "learned", "--episodes", "1",
                 "--traces", missing, "--trace-split", "test", "--json"]) == 0
    out = capsys.readouterr()
    assert "using the built-in synthetic traces" in out.err and '"traces": "synthetic (built-in)"' in out.out


def test_profile_help_names_the_zoo_without_importing_it() -> None:
    from edgesplit.commands import profile
    from edgesplit.zoo import DATASET_SHAPES, MODEL_BUILDERS

    assert tuple(MODEL_BUILDERS) == profile.ZOO_MODELS and tuple(DATASET_SHAPES) == profile.ZOO_DATASETS
    r = _run("""
        import sys
        import edgesplit.cli as cli
        for name in ("profile", "train", "cluster", "plan", "reproduce", "benchmark"):
            assert name in cli.build_parser(only=name)[1]
        print("HEAVY", [m for m in ("torch", "gymnasium", "stable_baselines3") if m in sys.modules])
    """)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
