"""Studies on Ray Tune: every (algorithm, hyper-parameter set, seed) trains and evaluates as a trial.

    from edgesplit.agents.sweep import SweepConfig, run_sweep
    df = run_sweep(SweepConfig(env_id="edgesplit/EdgeSplitDynamic-v0", algos=["ppo", "a2c"], seeds=5,
                               timesteps=50_000, out="results/sweep", workers=4))

Each trial is :func:`run_trial`: ``train-agent`` on the ``train`` split of the traces, then
``edgesplit evaluate`` of its final model on ``episodes`` held-out episodes (the ``test`` split,
seeds from ``eval_seed``: the same episodes for every trial), with ``alternating`` and ``oracle``
on the same episodes. Ray runs the trials: on this machine (``ray.init(num_cpus=workers)``, one
CPU per trial) by default, or on an existing cluster with ``address`` (``ray://HEAD:10001`` or
``auto``; every node needs this package installed, see ``docs/sweeps.md``).

Written to ``out`` as results come: ``trials/<trial>.json`` (one per finished trial, so a crash
loses nothing and a rerun skips finished trials), ``trials.csv``, ``summary.md`` (per algorithm
and hyper-parameter set: interquartile mean and 95 % stratified-bootstrap interval of the gap
closed and of the ratio to alternating, as rliable computes them, with
:func:`edgesplit.agents.evaluation.iqm` and :func:`~edgesplit.agents.evaluation.stratified_bootstrap_ci`)
and ``sweep.png``.

Ray is an optional extra: ``pip install -e '.[sweep]'``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgesplit.agents.evaluation import iqm, stratified_bootstrap_ci  # the one place of these formulas
from edgesplit.agents.loading import MissingExtraError

TRIAL_COLUMNS = ["trial", "algo", "hp_set", "seed", "timesteps", "mean_total_time_s", "alternating_mean_total_time_s",
                 "oracle_mean_total_time_s", "ratio_to_alternating", "ratio_to_oracle", "gap_closed", "episodes",
                 "train_wall_s", "run_dir"]
"""Columns of ``trials.csv``."""


@dataclass
class SweepConfig:
    """A study: ``algos`` x hyper-parameter sets (``configs``; none = the defaults) x ``seeds`` seeds."""

    env_id: str = "edgesplit/EdgeSplitDynamic-v0"
    algos: Sequence[str] = ("ppo",)
    seeds: int = 3
    timesteps: int = 50_000
    out: str = "results/sweep"
    configs: Sequence[str] = ()
    workers: int = 2
    address: str | None = None
    episodes: int = 10
    eval_seed: int = 100_000
    n_devices: int = 10
    n_envs: int = 4
    traces: str | None = None
    train_split: str = "train"
    eval_split: str = "test"
    first_seed: int = 0
    hyperparams: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    reward: str | None = None

    def check(self) -> None:
        """Raise ``ValueError`` naming a bad field."""
        from edgesplit.agents.loading import ALGO_NAMES

        if not self.algos:
            raise ValueError("--algo: give at least one algorithm")
        for a in self.algos:
            if a not in ALGO_NAMES:
                raise ValueError(f"--algo: {a!r} is not one of {', '.join(ALGO_NAMES)}")
        for name in ("seeds", "timesteps", "workers", "episodes", "n_devices", "n_envs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be an integer >= 1, got {v!r}")
        for c in self.configs:
            if not Path(c).is_file():
                raise FileNotFoundError(f"--config: {c} not found")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out: {out} exists and is not a folder")


def trial_specs(cfg: SweepConfig) -> list[dict[str, Any]]:
    """One spec per (algorithm, hyper-parameter set, seed), with a stable trial name."""
    sets: list[tuple[str, str | None]] = [(Path(c).stem, str(Path(c).resolve())) for c in cfg.configs] or [("default", None)]
    specs = []
    for algo in cfg.algos:
        for hp_set, config in sets:
            for k in range(cfg.seeds):
                seed = cfg.first_seed + k
                specs.append({"trial": f"{algo}__{hp_set}__s{seed}", "algo": algo, "hp_set": hp_set, "config": config,
                              "seed": seed, "sweep": {**asdict(cfg), "out": str(Path(cfg.out).resolve())}})
    return specs


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one trial (in any process: a Ray worker or this one); return its row."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from edgesplit.agents.evaluation import evaluate
    from edgesplit.agents.training import TrainConfig, canonical_env_id, train

    sw = spec["sweep"]
    out = Path(sw["out"])
    dynamic = canonical_env_id(sw["env_id"]) != "EdgeSplit-v0"
    given = {k: sw[k] for k in ("wrapper", "reward") if sw.get(k)}
    if spec["algo"] == "ppo_mask" and "wrapper" not in given and not spec["config"]:
        given["wrapper"] = "hybrid"
    cfg = TrainConfig(env_id=sw["env_id"], algo=spec["algo"], timesteps=int(sw["timesteps"]), seed=int(spec["seed"]),
                      out=str(out / "runs" / spec["trial"]), n_devices=int(sw["n_devices"]), traces=sw["traces"],
                      trace_split=sw["train_split"] if dynamic else "all", n_envs=int(sw["n_envs"]),
                      checkpoint_every=max(int(sw["timesteps"]) // 4, 1), progress_bar=False, tensorboard=False,
                      print_every_s=1e9, hyperparams=dict(sw.get("hyperparams") or {}), config=spec["config"],
                      explicit=("timesteps", "n_envs", *given), command=f"edgesplit sweep (trial {spec['trial']})", **given)
    res = train(cfg)
    summary, _ = evaluate(str(res.model_path), env_id=canonical_env_id(sw["env_id"]), episodes=int(sw["episodes"]),
                          seed=int(sw["eval_seed"]), traces=sw["traces"] if dynamic else None,
                          trace_split=sw["eval_split"] if dynamic else "all")
    row = {"trial": spec["trial"], "algo": spec["algo"], "hp_set": spec["hp_set"], "seed": spec["seed"],
           "timesteps": res.timesteps, "episodes": summary["episodes"], "train_wall_s": round(res.wall_s, 1),
           "run_dir": str(res.run_dir)}
    for k in ("mean_total_time_s", "alternating_mean_total_time_s", "oracle_mean_total_time_s", "ratio_to_alternating",
              "ratio_to_oracle", "gap_closed"):
        row[k] = summary.get(k)
    trials = out / "trials"
    trials.mkdir(parents=True, exist_ok=True)
    tmp = trials / f"{spec['trial']}.json.tmp"
    tmp.write_text(json.dumps(row, indent=2))
    os.replace(tmp, trials / f"{spec['trial']}.json")
    return row


def _ray_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    row = run_trial(config["spec"])
    tune.report({k: (math.nan if v is None else v) for k, v in row.items() if isinstance(v, (int, float)) or v is None})


def _train_trainable(config: dict[str, Any]) -> None:
    from ray import tune

    res = _train_one(config["item"]["cfg"], config["item"]["result"])
    tune.report({"timesteps": res["timesteps"], "wall_s": res["wall_s"]})


def _train_one(cfg_dict: dict[str, Any], result_file: str) -> dict[str, Any]:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from edgesplit.agents.training import TrainConfig, train

    d = dict(cfg_dict)
    d["eval_baselines"] = tuple(d.get("eval_baselines", ()))
    d["explicit"] = tuple(d.get("explicit", ()))
    res = train(TrainConfig(**d))
    row = {"run_dir": str(res.run_dir), "model_path": str(res.model_path), "metadata_path": str(res.metadata_path),
           "timesteps": res.timesteps, "wall_s": res.wall_s, "steps_per_s": res.steps_per_s,
           "env_steps_per_s": res.env_steps_per_s}
    Path(result_file).parent.mkdir(parents=True, exist_ok=True)
    Path(result_file).write_text(json.dumps(row))
    return row


def train_many(configs: Sequence[Any], workers: int = 1, address: str | None = None,
               storage: str | Path | None = None) -> list[dict[str, Any]]:
    """Train every :class:`~edgesplit.agents.training.TrainConfig` of ``configs``: one after another
    in this process when ``workers == 1`` and no ``address``, else as Ray Tune trials (``workers``
    at a time on local Ray, or on the cluster at ``address``). Returns, in the order of
    ``configs``, dicts with ``run_dir``, ``model_path``, ``metadata_path``, ``timesteps``,
    ``wall_s``, ``steps_per_s``, ``env_steps_per_s``. This is what the study entry points call
    (``experiments/rl_vs_alternating.py --workers W --address ADDR``)."""
    items = []
    for i, c in enumerate(configs):
        d = asdict(c)
        d["out"] = str(Path(d["out"]).resolve())
        if d.get("traces"):
            d["traces"] = str(Path(d["traces"]).resolve()) if Path(d["traces"]).exists() else d["traces"]
        if d.get("config"):
            d["config"] = str(Path(d["config"]).resolve())
        d["progress_bar"] = False
        result = Path(storage or d["out"]).resolve() / "train_many" / f"{i:04d}.json"
        items.append({"cfg": d, "result": str(result)})
    if workers <= 1 and not address:
        return [_train_one(it["cfg"], it["result"]) for it in items]
    try:
        import ray
        from ray import tune
    except ImportError:
        raise MissingExtraError("--workers/--address: Ray Tune is not installed; pip install -e '.[sweep]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        ray.init(address=address, **kwargs) if address else ray.init(num_cpus=workers, **kwargs)
    try:
        for it in items:
            Path(it["result"]).unlink(missing_ok=True)
        tuner = tune.Tuner(tune.with_resources(_train_trainable, {"cpu": 1}),
                           param_space={"item": tune.grid_search(items)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=workers),
                           run_config=tune.RunConfig(name="train_many", verbose=0,
                                                     storage_path=str(Path(storage or items[0]["cfg"]["out"]).resolve() / "ray"),
                                                     failure_config=tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
        errors = [str(r.error).splitlines()[-1] for r in results if r.error is not None]
    finally:
        if started:
            ray.shutdown()
    if errors:
        raise RuntimeError(f"train_many: {len(errors)} of {len(items)} trainings failed; first: {errors[0][:300]}")
    return [json.loads(Path(it["result"]).read_text()) for it in items]


# ----------------------------------------------------------------------------- aggregation


def aggregate(df: Any, metric: str, reps: int = 2000) -> list[dict[str, Any]]:
    """Per (algo, hp_set): runs, IQM, 95 % stratified bootstrap interval and mean of ``metric``."""
    out = []
    for (algo, hp_set), g in df.groupby(["algo", "hp_set"], sort=True):
        v = g[metric].astype(float).to_numpy()
        v = v[np.isfinite(v)]
        lo, hi = stratified_bootstrap_ci([v], reps=reps) if v.size >= 2 else (math.nan, math.nan)
        out.append({"algo": algo, "hp_set": hp_set, "runs": int(len(g)), "finite": int(v.size), "iqm": float(iqm(v)) if v.size else math.nan,
                    "ci_low": lo, "ci_high": hi, "mean": float(v.mean()) if v.size else math.nan})
    return out


def _fmt(x: Any) -> str:
    return "n/a" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.3f}"


def write_report(df: Any, out: Path, cfg: SweepConfig) -> None:
    """``trials.csv``, ``summary.md`` and ``sweep.png`` from the trial rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    df = df.sort_values(["algo", "hp_set", "seed"]).reset_index(drop=True)
    df[TRIAL_COLUMNS].to_csv(out / "trials.csv", index=False)
    gap = aggregate(df, "gap_closed")
    ratio = aggregate(df, "ratio_to_alternating")
    lines = [f"# Sweep on {cfg.env_id}", "",
             f"{len(df)} trials: {', '.join(cfg.algos)} x {df['hp_set'].nunique()} hyper-parameter set(s) x "
             f"{cfg.seeds} seeds, {cfg.timesteps} steps each; evaluated on {cfg.episodes} held-out episodes "
             f"(seeds from {cfg.eval_seed}, the {cfg.eval_split!r} traces; the same episodes for every trial).", "",
             "Interquartile mean (IQM) over seeds with a 95 % stratified bootstrap interval (2000 resamples; "
             "rliable's method). Gap closed: (alternating - agent) / (alternating - oracle) of the mean total time; "
             "1 = as good as the clairvoyant oracle, 0 = no better than alternating, < 0 = worse.", "",
             "| algo | hp set | runs | gap closed IQM [95% CI] | ratio to alternating IQM [95% CI] |",
             "|---|---|---:|---|---|"]
    for g, r in zip(gap, ratio):
        lines.append(f"| {g['algo']} | {g['hp_set']} | {g['runs']} | {_fmt(g['iqm'])} [{_fmt(g['ci_low'])}, "
                     f"{_fmt(g['ci_high'])}] | {_fmt(r['iqm'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] |")
    lines += ["", "Per trial: `trials.csv`; plot: `sweep.png`.", ""]
    (out / "summary.md").write_text("\n".join(lines))
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(ratio) + 1.5))
    labels = [f"{r['algo']} ({r['hp_set']})" for r in ratio]
    y = np.arange(len(ratio))
    mid = np.array([r["iqm"] for r in ratio], dtype=float)
    err = np.array([[m - r["ci_low"], r["ci_high"] - m] for m, r in zip(mid, ratio)], dtype=float).T
    ax.errorbar(mid, y, xerr=np.nan_to_num(err), fmt="o", capsize=4)
    for i, (a, h) in enumerate(zip(df.groupby(["algo", "hp_set"], sort=True), ratio)):
        ax.scatter(a[1]["ratio_to_alternating"].astype(float), np.full(len(a[1]), i) + 0.15, s=10, alpha=0.5)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, labels)
    ax.set_xlabel("mean total time / alternating's (IQM, 95% stratified bootstrap CI; dots: seeds)")
    ax.set_title(f"sweep on {cfg.env_id}")
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)


def _load_rows(out: Path) -> dict[str, dict[str, Any]]:
    rows = {}
    for f in sorted((out / "trials").glob("*.json")):
        try:
            rows[f.stem] = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
    return rows


def run_sweep(cfg: SweepConfig, progress: bool = True) -> Any:
    """Run every trial not yet finished in ``cfg.out`` on Ray Tune; write and return the trial table."""
    import pandas as pd

    cfg.check()
    try:
        import ray
        from ray import tune
    except ImportError:
        raise MissingExtraError("sweep: Ray Tune is not installed; pip install -e '.[sweep]' "
                                "(or pip install 'ray[tune]')") from None
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    specs = trial_specs(cfg)
    done = _load_rows(out)
    todo = [s for s in specs if s["trial"] not in done]
    if done:
        print(f"[sweep] {len(done)} of {len(specs)} trials already in {out / 'trials'}; running {len(todo)}", file=sys.stderr)
    if todo:
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if cfg.address:
                ray.init(address=cfg.address, **kwargs)
            else:
                ray.init(num_cpus=cfg.workers, **kwargs)
        try:
            os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
            t0 = time.perf_counter()
            tuner = tune.Tuner(
                tune.with_resources(_ray_trainable, {"cpu": 1}),
                param_space={"spec": tune.grid_search(todo)},
                tune_config=tune.TuneConfig(max_concurrent_trials=cfg.workers),
                run_config=tune.RunConfig(name="sweep", storage_path=str(out / "ray"), verbose=1 if progress else 0,
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
            results = tuner.fit()
            errors = [str(r.error).splitlines()[-1] for r in results if r.error is not None]
            print(f"[sweep] {len(todo)} trials on Ray in {time.perf_counter() - t0:.0f} s "
                  f"({len(errors)} failed)", file=sys.stderr)
        finally:
            if started:
                ray.shutdown()
        if errors:
            print(f"[sweep] first failure: {errors[0][:300]}", file=sys.stderr)
    rows = _load_rows(out)
    mine = [rows[s["trial"]] for s in specs if s["trial"] in rows]
    if not mine:
        raise ValueError(f"sweep: no trial finished (see {out / 'ray'})")
    df = pd.DataFrame(mine)
    write_report(df, out, cfg)
    return df
