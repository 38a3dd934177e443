"""Reproduce the paper's speed-ups: EdgeSplit (alternating) against every baseline on a seeded
grid of models x device counts x heterogeneity levels.

Writes ``speedups.csv`` (one row per model, dataset, N, heterogeneity, baseline; times are means
over seeds, ``speedup`` is the mean over seeds of ``baseline_round_s / edgesplit_round_s``),
``speedups_per_seed.csv``, ``speedups.md`` and two plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgesplit.costmodel import CostModel
from edgesplit.devices import GB, generate_scenario
from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import list_builtin_profiles, load_builtin_profile
from edgesplit.schedulers import BASELINES, get_scheduler

CSV_COLUMNS = ["model", "dataset", "n_devices", "heterogeneity", "baseline",
               "edgesplit_round_s", "baseline_round_s", "speedup"]
REFERENCE = "alternating"
COMPARED = ("exact",) + BASELINES


@dataclass
class GridConfig:
    """The reproduction grid. Defaults follow the paper's setting in spirit (see README)."""

    models: list[str] = field(default_factory=lambda: ["vgg19", "resnet18"])
    dataset: str = "cifar10"
    n_devices: list[int] = field(default_factory=lambda: [5, 10, 20])
    heterogeneity: list[float] = field(default_factory=lambda: [1.0, 3.0, 10.0, 30.0])
    seeds: int = 5
    batch_size: int = 32
    samples: int = 500
    rate_range_bps: tuple[float, float] = (5e6, 50e6)
    memory_range_bytes: tuple[float, float] = (2 * GB, 8 * GB)
    fastest_speed: float = 0.5
    server_speed: float = 10.0

    @classmethod
    def quick(cls) -> "GridConfig":
        """A grid that finishes in seconds."""
        return cls(seeds=3)

    @classmethod
    def full(cls) -> "GridConfig":
        """Every shipped model, more seeds and heterogeneity levels."""
        shipped = [n.rsplit("-", 1)[0] for n in list_builtin_profiles()
                   if n.endswith("-cifar10") and "_testbed" not in n]  # the testbed model has its own study
        return cls(models=shipped or ["vgg19"], heterogeneity=[1.0, 2.0, 5.0, 10.0, 20.0, 50.0], seeds=20)


def run_grid(cfg: GridConfig, progress: bool = True) -> pd.DataFrame:
    """Per-seed results: one row per model, N, H, seed and compared scheduler."""
    from tqdm import tqdm

    profiles = {}
    for m in cfg.models:
        profiles[m] = load_builtin_profile(m, cfg.dataset)
    jobs = [(m, n, h, s) for m in cfg.models for n in cfg.n_devices for h in cfg.heterogeneity
            for s in range(cfg.seeds)]
    rows = []
    for m, n, h, seed in tqdm(jobs, desc="reproduce", disable=not progress, unit="scenario"):
        sc = generate_scenario(profiles[m], n, heterogeneity=h, rate_range_bps=cfg.rate_range_bps,
                               memory_range_bytes=cfg.memory_range_bytes,
                               fastest_speed=cfg.fastest_speed, samples=cfg.samples,
                               batch_size=cfg.batch_size, server_speed=cfg.server_speed,
                               seed=1000 * seed + n)
        cm = CostModel.from_scenario(sc)
        ref = get_scheduler(REFERENCE).plan(cm)
        for name in COMPARED:
            p = get_scheduler(name, seed=seed).plan(cm)
            rows.append({
                "model": m, "dataset": cfg.dataset, "n_devices": n, "heterogeneity": h,
                "seed": seed, "baseline": name, "edgesplit_round_s": ref.round_time_s,
                "baseline_round_s": p.round_time_s,
                "speedup": p.round_time_s / ref.round_time_s,
                "edgesplit_distinct_cuts": len(set(ref.cuts.tolist())),
            })
    return pd.DataFrame(rows)


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds, in the issue's column order (infinite rounds stay ``inf``)."""
    keys = ["model", "dataset", "n_devices", "heterogeneity", "baseline"]
    out = per_seed.groupby(keys, sort=False)[["edgesplit_round_s", "baseline_round_s", "speedup"]].mean()
    return out.reset_index()[CSV_COLUMNS]


def markdown_table(summary: pd.DataFrame) -> str:
    """Speed-up of EdgeSplit over each baseline: max and mean over the grid, per model."""
    lines = ["| model | baseline | mean speed-up | max speed-up | where max (N, H) |",
             "|---|---|---:|---:|---|"]
    for (model, base), g in summary.groupby(["model", "baseline"], sort=False):
        finite = g[np.isfinite(g["speedup"])]
        if finite.empty:
            lines.append(f"| {model} | {base} | infeasible | infeasible | |")
            continue
        i = finite["speedup"].idxmax()
        note = "" if len(finite) == len(g) else f" ({len(g) - len(finite)} cells infeasible)"
        lines.append(f"| {model} | {base} | {finite['speedup'].mean():.2f}x | "
                     f"{finite.loc[i, 'speedup']:.2f}x | N={int(finite.loc[i, 'n_devices'])}, "
                     f"H={finite.loc[i, 'heterogeneity']:g}{note} |")
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame, out: Path, n_ref: int, h_ref: float) -> list[Path]:
    """Speed-up vs heterogeneity (at N = n_ref) and vs N (at H = h_ref), one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paths = []
    models = list(dict.fromkeys(summary["model"]))
    for xcol, fixcol, fixval, fname, xlabel in [
        ("heterogeneity", "n_devices", n_ref, "speedup_vs_heterogeneity.png", "heterogeneity (fastest / slowest speed)"),
        ("n_devices", "heterogeneity", h_ref, "speedup_vs_n.png", "number of devices N"),
    ]:
        ncols = min(4, len(models))
        nrows = -(-len(models) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
        for ax in axes.flat[len(models):]:
            ax.axis("off")
        for ax, model in zip(axes.flat, models):
            # `random` is left out: its speed-ups (100-1000x) would flatten every other line
            sub = summary[(summary["model"] == model) & (summary[fixcol] == fixval)
                          & (summary["baseline"] != "random")]
            for base, g in sub.groupby("baseline", sort=False):
                g = g.sort_values(xcol)
                y = g["speedup"].replace([np.inf], np.nan)
                ax.plot(g[xcol], y, marker="o", label=base)
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_title(f"{model} ({'N' if fixcol == 'n_devices' else 'H'} = {fixval:g})", fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("speed-up (x)")
            if xcol == "heterogeneity":
                ax.set_xscale("log")
            ax.set_yscale("log")
            fmt = FuncFormatter(lambda y, _: f"{y:g}")
            ax.yaxis.set_major_formatter(fmt)
            ax.yaxis.set_minor_formatter(fmt)
            ax.grid(alpha=0.3, which="both")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels),
                   bbox_to_anchor=(0.5, -0.01))
        fig.suptitle(f"Speed-up of EdgeSplit (alternating) over each baseline; mean over seeds")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def reproduce(cfg: GridConfig, out: str | Path, progress: bool = True) -> pd.DataFrame:
    """Run the grid and write every output into ``out``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.models:
        raise EdgeSplitError("models: need at least one model")
    per_seed = run_grid(cfg, progress=progress)
    per_seed.to_csv(out / "speedups_per_seed.csv", index=False)
    summary = summarise(per_seed)
    summary.to_csv(out / "speedups.csv", index=False)
    header = (f"# EdgeSplit speed-ups\n\nEdgeSplit = the paper's alternating algorithm. Speed-up = "
              f"baseline round time / EdgeSplit round time, mean over {cfg.seeds} seeds per cell; "
              f"grid: models {', '.join(cfg.models)}, N in {cfg.n_devices}, heterogeneity in "
              f"{cfg.heterogeneity}. `exact` below 1.00x would mean EdgeSplit is worse than "
              f"the optimum.\n\n")
    (out / "speedups.md").write_text(header + markdown_table(summary))
    n_ref = 10 if 10 in cfg.n_devices else cfg.n_devices[0]
    h_ref = 10.0 if 10.0 in cfg.heterogeneity else cfg.heterogeneity[-1]
    plot(summary, out, n_ref, h_ref)
    return summary


def headline(summary: pd.DataFrame) -> str:
    """One line per baseline: the largest finite speed-up over the grid."""
    parts = []
    for base, g in summary.groupby("baseline", sort=False):
        s = g["speedup"][np.isfinite(g["speedup"])]
        parts.append(f"{base}: up to {s.max():.2f}x" if len(s) else f"{base}: infeasible")
    return "; ".join(parts)

