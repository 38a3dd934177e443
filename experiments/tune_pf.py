"""Tune ``pf``'s exponent, window and planning prior on training families only
(:func:`edgesplit.agents.classical_tuning.tune_pf`) and print the table (best first).

    python -m experiments.tune_pf [--traces DIR ...] [--exclude-family NAME ...] [--episodes 8]
        [--seed 7000] [--csv FILE] [--json FILE]

Default families: the built-in synthetic one (no comparison judges on it). The leave-one-family-out
study runs the same function once per fold on the four training families.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def _floats(text: str | None, field: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{field}: expected comma-separated numbers (inf allowed), got {text!r}") from None
    if not vals or any(not v >= 0 for v in vals):
        raise ValueError(f"{field}: expected numbers >= 0, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    """Run the grid and print the table."""
    p = argparse.ArgumentParser(prog="python -m experiments.tune_pf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", nargs="+", default=None, help="family folders (a folder = a family; default synthetic)")
    p.add_argument("--exclude-family", nargs="*", default=[], help="families left out (the one a fold judges on)")
    p.add_argument("--episodes", type=int, default=8, help="episodes per family and configuration (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per episode (default 5)")
    p.add_argument("--seed", type=int, default=7000, help="first episode seed (default 7000)")
    p.add_argument("--n-devices", type=int, default=10, help="N (default 10)")
    p.add_argument("--exponents", default=None, help="comma-separated exponents (default 1,2,4,6)")
    p.add_argument("--windows", default=None, help="comma-separated windows in s (default 30,60,120)")
    p.add_argument("--priors", default=None, help="comma-separated planning priors in s (default 0,1800,inf)")
    p.add_argument("--csv", default=None, help="write the table here too")
    p.add_argument("--json", default=None, help="write the best parameters here (JSON)")
    a = p.parse_args(argv)
    import pandas as pd

    from edgesplit.agents.classical_tuning import PF_GRID, tune_pf
    from edgesplit.traces import TraceFamily, load_families, synthetic_traces

    try:
        grid = dict(PF_GRID)
        for key, text, field in (("exponent", a.exponents, "--exponents"), ("window_s", a.windows, "--windows"),
                                 ("prior_s", a.priors, "--priors")):
            vals = _floats(text, field)
            if vals is not None:
                grid[key] = vals
        if a.traces:
            fams = [f for f in load_families(a.traces) if f.name not in set(a.exclude_family)]
        else:
            fams = [TraceFamily("synthetic", tuple(synthetic_traces()))]
        if not fams:
            raise ValueError(f"traces: no family left to tune on (excluded {a.exclude_family})")
        best, rows = tune_pf(fams, episodes=a.episodes, rounds=a.rounds, n_devices=a.n_devices, seed=a.seed, grid=grid)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    df = pd.DataFrame(rows)
    print(f"tuned on {[f.name for f in fams]}; best: {best.to_json()}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if a.csv:
        df.to_csv(a.csv, index=False)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"tuned_on": [f.name for f in fams], "pf": best.to_json()}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
