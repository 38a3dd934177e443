"""Reproduce the paper's speed-ups honestly: EdgeSplit (alternating) against every baseline on a
seeded grid, a decomposition of the gain over ``psl``, and a study on real per-machine profiles.

Three studies, each written as CSV + markdown (+ plots) into one folder:

1. **Speed-ups** (``speedups.csv``, ``speedups_per_seed.csv``, ``speedups.md``, two plots): models
   x N x heterogeneity H (fastest/slowest device speed), devices = the model's host profile scaled
   by one speed each. ``speedup`` is the mean over seeds of ``baseline_round_s / edgesplit_round_s``.
   ``random`` is not in these tables (it is a sanity check, see the tests).
2. **Decomposition of the gain over psl** (``decomposition.csv``, ``decomposition.md``,
   ``decomposition.png``): per scenario the round time of ``psl`` (best single cut, equal shares)
   divided by that of bandwidth allocation alone (``uniform-cut-opt-bw``: best single cut, optimal
   shares), per-device cuts alone (``per-device-cuts-equal-bw``: each device's best cut, equal
   shares) and both (``exact``), on the same devices with **equal links** (every link the geometric
   mean of the range) and with **spread links** (log-uniform over the range), so that the effect of
   compute heterogeneity shows on its own (H = 1 with equal links: nothing to gain but memory).
3. **Testbed** (``testbed.csv``, ``testbed.md``): the testbed's VGG-19 with devices drawn from the
   measured device classes of the catalogue (each with its own per-layer profile), the testbed VM
   as the server, equal and spread links; every baseline, the decomposition, and the price of
   planning on one speed per device (``exact`` on the speeds ``F(L)/F_i(L)``, re-costed with each
   machine's own profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from edgesplit.costmodel import CostModel
from edgesplit.devices import (
    CATALOGUE,
    GB,
    TESTBED_CLASSES,
    GeneratorConfig,
    class_profile,
    class_spread,
    generate_scenario,
)
from edgesplit.errors import EdgeSplitError
from edgesplit.profiles import list_builtin_profiles, load_builtin_profile
from edgesplit.scenario import Scenario, Server
from edgesplit.schedulers import BASELINES, get_scheduler

CSV_COLUMNS = ["model", "dataset", "n_devices", "heterogeneity", "baseline",
               "edgesplit_round_s", "baseline_round_s", "speedup"]
REFERENCE = "alternating"
COMPARED = ("exact",) + tuple(b for b in BASELINES if b != "random")
"""Schedulers of the speed-up tables (``random`` is a sanity check, not a baseline)."""
DECOMPOSITION: dict[str, str] = {
    "bandwidth allocation alone": "uniform-cut-opt-bw",
    "per-device cuts alone": "per-device-cuts-equal-bw",
    "both": "exact",
}
"""The parts of the gain over ``psl`` and the scheduler that realises each."""
LINK_GRIDS = ("equal", "spread")
TESTBED_MODEL = ("vgg19_testbed", "cifar10")
TESTBED_SERVER = "testbed-vm"


@dataclass
class GridConfig:
    """The reproduction grids. Defaults follow the paper's setting in spirit (see README)."""

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
    decomposition_n: list[int] | None = None
    """N values of the decomposition (default: those of the speed-up grid)."""
    testbed: bool = True

    @classmethod
    def quick(cls) -> "GridConfig":
        """A grid that finishes in about ten seconds."""
        return cls(seeds=3, decomposition_n=[10])

    @classmethod
    def full(cls) -> "GridConfig":
        """Every shipped zoo model, more seeds and heterogeneity levels."""
        shipped = [n.rsplit("-", 1)[0] for n in list_builtin_profiles()
                   if n.endswith("-cifar10") and "_testbed" not in n]  # the testbed model has its own study
        return cls(models=shipped or ["vgg19"], heterogeneity=[1.0, 2.0, 5.0, 10.0, 20.0, 50.0], seeds=20)

    def generator(self, heterogeneity: float) -> GeneratorConfig:
        """The device generator of one heterogeneity level."""
        return GeneratorConfig(heterogeneity=heterogeneity, rate_range_bps=self.rate_range_bps,
                               memory_range_bytes=self.memory_range_bytes, fastest_speed=self.fastest_speed,
                               samples=self.samples, batch_size=self.batch_size, server_speed=self.server_speed)

    def equal_rate_bps(self) -> float:
        """The link rate of the equal-link grid: the geometric mean of ``rate_range_bps``."""
        lo, hi = self.rate_range_bps
        return math.sqrt(lo * hi)


def _scenario(cfg: GridConfig, profile, n: int, h: float, seed: int) -> Scenario:
    return generate_scenario(profile, n, cfg.generator(h), seed=1000 * seed + n)


def with_links(sc: Scenario, grid: str, cfg: GridConfig) -> Scenario:
    """The same devices with spread links (as drawn) or every link at the equal rate."""
    return sc if grid == "spread" else sc.with_rates(np.full(sc.n_devices, cfg.equal_rate_bps()))


def run_grid(cfg: GridConfig, progress: bool = True) -> pd.DataFrame:
    """Per-seed results of the speed-up grid: one row per model, N, H, seed and compared scheduler."""
    from tqdm import tqdm

    profiles = {m: load_builtin_profile(m, cfg.dataset) for m in cfg.models}
    jobs = [(m, n, h, s) for m in cfg.models for n in cfg.n_devices for h in cfg.heterogeneity
            for s in range(cfg.seeds)]
    rows = []
    for m, n, h, seed in tqdm(jobs, desc="speed-ups", disable=not progress, unit="scenario"):
        cm = CostModel.from_scenario(_scenario(cfg, profiles[m], n, h, seed))
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


def decompose(cm: CostModel, seed: int = 0) -> dict[str, float]:
    """Round times of ``psl`` and of each part of :data:`DECOMPOSITION` on one scenario."""
    out = {"psl_s": get_scheduler("psl").plan(cm).round_time_s}
    for part, name in DECOMPOSITION.items():
        out[f"{name}_s"] = get_scheduler(name, seed=seed).plan(cm).round_time_s
    return out


def run_decomposition(cfg: GridConfig, progress: bool = True) -> pd.DataFrame:
    """Per-seed decomposition rows on the zoo models (speed-scaled devices), both link grids."""
    from tqdm import tqdm

    profiles = {m: load_builtin_profile(m, cfg.dataset) for m in cfg.models}
    ns = cfg.decomposition_n or cfg.n_devices
    jobs = [(m, n, h, s) for m in cfg.models for n in ns for h in cfg.heterogeneity for s in range(cfg.seeds)]
    rows = []
    for m, n, h, seed in tqdm(jobs, desc="decomposition", disable=not progress, unit="scenario"):
        sc = _scenario(cfg, profiles[m], n, h, seed)
        for grid in LINK_GRIDS:
            row = {"devices": "speed-scaled", "model": m, "links": grid, "n_devices": n, "heterogeneity": h,
                   "seed": seed}
            row.update(decompose(CostModel.from_scenario(with_links(sc, grid, cfg)), seed))
            rows.append(row)
    return _gains(pd.DataFrame(rows))


def _gains(df: pd.DataFrame) -> pd.DataFrame:
    for part, name in DECOMPOSITION.items():
        df[f"gain_{name}"] = df["psl_s"] / df[f"{name}_s"]
    return df


def speed_twin(sc: Scenario) -> Scenario:
    """The scenario with every own profile replaced by one speed ``F(L)/F_i(L)`` (what a planner
    that knows only one number per machine sees)."""
    eff = CostModel.from_scenario(sc, check_feasible=False).effective_speed
    devs = tuple(replace(d, speed=float(s), profile=None) for d, s in zip(sc.devices, eff))
    srv = sc.server
    return replace(sc, devices=devs, server=Server(srv.speed, srv.sharing, None, srv.device_class))


def testbed_generator(cfg: GridConfig) -> GeneratorConfig:
    """Devices drawn from the measured testbed classes, the testbed VM as the server."""
    return GeneratorConfig(device_classes=TESTBED_CLASSES, server_class=TESTBED_SERVER,
                           rate_range_bps=cfg.rate_range_bps, samples=cfg.samples, batch_size=cfg.batch_size)


def run_testbed(cfg: GridConfig, progress: bool = True) -> pd.DataFrame:
    """Per-seed rows of the testbed study: every baseline, the decomposition and the speed-only plan."""
    from tqdm import tqdm

    model = load_builtin_profile(*TESTBED_MODEL)
    gen = testbed_generator(cfg)
    jobs = [(n, s) for n in cfg.n_devices for s in range(cfg.seeds)]
    names = ("alternating",) + COMPARED
    rows = []
    for n, seed in tqdm(jobs, desc="testbed", disable=not progress, unit="scenario"):
        base = generate_scenario(model, n, gen, seed=1000 * seed + n)
        classes = [d.device_class for d in base.devices]
        for grid in LINK_GRIDS:
            sc = with_links(base, grid, cfg)
            cm = CostModel.from_scenario(sc)
            row = {"devices": "testbed classes", "model": TESTBED_MODEL[0], "links": grid, "n_devices": n,
                   "seed": seed, "classes": "+".join(sorted(set(classes)))}
            for name in names:
                row[f"{name}_s"] = get_scheduler(name, seed=seed).plan(cm).round_time_s
            twin = get_scheduler("exact").plan(speed_twin(sc))
            row["exact_on_speeds_s"] = cm.round_time(twin.cuts, twin.shares)
            row["exact_on_speeds_predicted_s"] = twin.round_time_s
            rows.append(row)
    return _gains(pd.DataFrame(rows))


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


def _gain_cols() -> list[str]:
    return [f"gain_{name}" for name in DECOMPOSITION.values()]


def decomposition_table(dec: pd.DataFrame, testbed: pd.DataFrame | None = None) -> str:
    """Mean (and max) gain over ``psl`` of each part, per link grid and H (speed-scaled devices over
    every model and N), then the testbed classes."""
    parts = list(DECOMPOSITION)
    lines = ["| devices | links | H | " + " | ".join(parts) + " |",
             "|---|---|---:|" + "---:|" * len(parts)]

    def cells(g: pd.DataFrame) -> str:
        return " | ".join(f"{g[c].mean():.2f}x (max {g[c].max():.2f}x)" for c in _gain_cols())

    for (grid, h), g in dec.groupby(["links", "heterogeneity"], sort=True):
        lines.append(f"| speed-scaled | {grid} | {h:g} | {cells(g)} |")
    if testbed is not None and not testbed.empty:
        for grid, g in testbed.groupby("links", sort=True):
            lines.append(f"| testbed classes (own per-layer profiles) | {grid} | measured | {cells(g)} |")
    return "\n".join(lines) + "\n"


def testbed_table(tb: pd.DataFrame) -> str:
    """Per link grid and N: round times relative to ``exact`` (mean over seeds)."""
    names = ["alternating", "psl", "uniform-cut-opt-bw", "per-device-cuts-equal-bw", "edgesplit-cuts-equal-bw",
             "psl-fixed", "fl", "sl"]
    lines = ["| links | N | exact round (s) | " + " | ".join(f"`{n}` / exact" for n in names)
             + " | exact on one speed per device, re-costed / exact |",
             "|---|---:|---:|" + "---:|" * (len(names) + 1)]
    for (grid, n), g in tb.groupby(["links", "n_devices"], sort=True):
        ex = g["exact_s"]
        rel = [f"{(g[f'{x}_s'] / ex).mean():.2f}x" for x in names]
        lines.append(f"| {grid} | {n} | {ex.mean():.1f} | " + " | ".join(rel)
                     + f" | {(g['exact_on_speeds_s'] / ex).mean():.2f}x (max {(g['exact_on_speeds_s'] / ex).max():.2f}x) |")
    return "\n".join(lines) + "\n"


def catalogue_spread() -> dict[str, object]:
    """The real heterogeneity the catalogue supports: whole-model speed spread of the measured testbed
    classes, the 5th-95th percentile of their per-layer time ratios per pair of classes, and the
    speed spread of the catalogue's device classes."""
    model = load_builtin_profile(*TESTBED_MODEL)
    spread = class_spread(model, TESTBED_CLASSES)
    order = sorted(spread, key=spread.get)  # slowest first
    pairs = {}
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            ta, tb = class_profile(a, model).train_s, class_profile(b, model).train_s
            ok = (ta > 0) & (tb > 0)
            r = ta[ok] / tb[ok]  # how many times slower a is than b, per layer
            pairs[f"{a}/{b}"] = (float(np.percentile(r, 5)), float(np.percentile(r, 95)))
    dev_speeds = [c.speed for c in CATALOGUE.values() if c.role == "device"]
    return {
        "testbed_whole_model_spread": max(spread.values()) / min(spread.values()),
        "testbed_per_layer_ratios": pairs,
        "catalogue_device_speed_spread": max(dev_speeds) / min(dev_speeds),
    }


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
            sub = summary[(summary["model"] == model) & (summary[fixcol] == fixval)]
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
        fig.suptitle("Speed-up of EdgeSplit (alternating) over each baseline; mean over seeds")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_decomposition(dec: pd.DataFrame, testbed: pd.DataFrame | None, spread: float, out: Path) -> Path:
    """Gain over psl of each part vs H, equal and spread links; the testbed classes as markers at
    their measured whole-model spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), sharey=True)
    colours = dict(zip(DECOMPOSITION, ["tab:blue", "tab:orange", "tab:green"]))
    for ax, grid in zip(axes, LINK_GRIDS):
        g = dec[dec["links"] == grid].groupby("heterogeneity")[_gain_cols()].mean()
        for part, col in zip(DECOMPOSITION, _gain_cols()):
            ax.plot(g.index, g[col], marker="o", color=colours[part], label=f"{part} (speed-scaled)")
            if testbed is not None and not testbed.empty:
                t = testbed[testbed["links"] == grid][col].mean()
                ax.plot([spread], [t], marker="*", ms=13, ls="none", color=colours[part],
                        label=f"{part} (testbed classes)")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("compute heterogeneity H (fastest / slowest)")
        ax.set_title(f"{grid} links")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gain over psl (x)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7.5, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Where the gain over psl comes from (mean over models, N and seeds)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path = out / "decomposition.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def check_output_dir(out: str | Path) -> Path:
    """The output folder, or an :class:`EdgeSplitError` before any work if it cannot be one."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise EdgeSplitError(f"--out: {p} exists and is not a folder; give a folder for the results")
    return out


def reproduce(cfg: GridConfig, out: str | Path, progress: bool = True) -> pd.DataFrame:
    """Run the three studies and write every output into ``out`` (each file as soon as its study is
    done); returns the speed-up summary."""
    out = check_output_dir(out)
    if not cfg.models:
        raise EdgeSplitError("models: need at least one model")
    out.mkdir(parents=True, exist_ok=True)
    per_seed = run_grid(cfg, progress=progress)
    per_seed.to_csv(out / "speedups_per_seed.csv", index=False)
    summary = summarise(per_seed)
    summary.to_csv(out / "speedups.csv", index=False)
    header = (f"# EdgeSplit speed-ups\n\nEdgeSplit = the paper's alternating algorithm. Speed-up = "
              f"baseline round time / EdgeSplit round time, mean over {cfg.seeds} seeds per cell; "
              f"grid: models {', '.join(cfg.models)}, N in {cfg.n_devices}, heterogeneity in "
              f"{cfg.heterogeneity}; links {cfg.rate_range_bps[0] / 1e6:g}-{cfg.rate_range_bps[1] / 1e6:g} "
              f"Mbit/s. `exact` below 1.00x would mean EdgeSplit is worse than the optimum. `random` is not "
              f"a baseline and is not listed.\n\n")
    (out / "speedups.md").write_text(header + markdown_table(summary))
    n_ref = 10 if 10 in cfg.n_devices else cfg.n_devices[0]
    h_ref = 10.0 if 10.0 in cfg.heterogeneity else cfg.heterogeneity[-1]
    plot(summary, out, n_ref, h_ref)

    dec = run_decomposition(cfg, progress=progress)
    dec.to_csv(out / "decomposition.csv", index=False)
    tb = run_testbed(cfg, progress=progress) if cfg.testbed else None
    spread = catalogue_spread()
    if tb is not None:
        tb.to_csv(out / "testbed.csv", index=False)
    ratios = "; ".join(f"{k} {lo:.1f}x to {hi:.1f}x" for k, (lo, hi) in spread["testbed_per_layer_ratios"].items())
    just = (f"Why these H: the measured testbed classes span {spread['testbed_whole_model_spread']:.0f}x in "
            f"whole-model speed (d1 to the VM), and per layer the ratios differ (5th to 95th percentile over "
            f"layers: {ratios}); the catalogue's device classes (measured and estimated) span "
            f"{spread['catalogue_device_speed_spread']:.0f}x. The grid runs from H = 1 (no compute "
            f"heterogeneity) to H = {max(cfg.heterogeneity):g}, i.e. up to about that real spread.\n")
    (out / "decomposition.md").write_text(
        "# Where the gain over psl comes from\n\n"
        "Gain = `psl` round time / the part's round time (mean over seeds, models and N; max in brackets). "
        "Bandwidth allocation alone = `uniform-cut-opt-bw` (best single cut, optimal shares); per-device "
        "cuts alone = `per-device-cuts-equal-bw` (each device's best cut for equal shares); both = `exact`. "
        f"Equal links: every link {cfg.equal_rate_bps() / 1e6:.1f} Mbit/s; spread links: log-uniform "
        f"{cfg.rate_range_bps[0] / 1e6:g}-{cfg.rate_range_bps[1] / 1e6:g} Mbit/s (the same devices otherwise).\n\n"
        + decomposition_table(dec, tb) + "\n" + just)
    plot_decomposition(dec, tb, spread["testbed_whole_model_spread"], out)
    if tb is not None:
        (out / "testbed.md").write_text(
            "# Testbed study: real per-machine profiles\n\n"
            f"Model: the testbed's VGG-19 (`{TESTBED_MODEL[0]}`, {TESTBED_MODEL[1]}). Devices drawn uniformly "
            f"from the measured classes {', '.join(TESTBED_CLASSES)} (each with its own per-layer profile from "
            f"the testbed sheets), server: `{TESTBED_SERVER}` (dedicated), {cfg.samples} samples per device, "
            f"batch {cfg.batch_size}, {cfg.seeds} seeds per cell. Entries: round time / `exact` round time "
            f"(1.00x = optimal). The last column plans `exact` on one speed per machine (`F(L)/F_i(L)`) and "
            f"costs that plan with the machines' own profiles.\n\n" + testbed_table(tb))
    return summary


def headline(summary: pd.DataFrame) -> str:
    """One line per baseline: the largest finite speed-up over the grid."""
    parts = []
    for base, g in summary.groupby("baseline", sort=False):
        s = g["speedup"][np.isfinite(g["speedup"])]
        parts.append(f"{base}: up to {s.max():.2f}x" if len(s) else f"{base}: infeasible")
    return "; ".join(parts)


def decomposition_headline(out: str | Path) -> str:
    """One line from ``out/decomposition.csv`` (and ``testbed.csv``): mean gain over psl of each part."""
    out = Path(out)
    dec = pd.read_csv(out / "decomposition.csv")
    parts = []
    for grid, g in dec.groupby("links", sort=True):
        parts.append(f"{grid} links: " + ", ".join(f"{part} {g[col].mean():.2f}x"
                                                   for part, col in zip(DECOMPOSITION, _gain_cols())))
    line = "gain over psl (speed-scaled devices) - " + "; ".join(parts)
    if (out / "testbed.csv").is_file():
        tb = pd.read_csv(out / "testbed.csv")
        line += "\ntestbed classes - " + "; ".join(
            f"{grid} links: both {g['gain_exact'].mean():.2f}x over psl, planning on one speed per machine "
            f"costs {(g['exact_on_speeds_s'] / g['exact_s']).mean():.2f}x the optimum"
            for grid, g in tb.groupby("links", sort=True))
    return line
