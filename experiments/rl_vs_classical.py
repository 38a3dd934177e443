"""Study: the learned v1 scheduler vs the classical ones, leave-one-family-out (issue 9, items 5-6).

    python -m experiments.rl_vs_classical --out results/rl_vs_classical [--episodes 24] [--rounds 5]
        [--minutes 12] [--models DIR] [--stage all|train|eval] [--traces DIR ...] [--folds FAMILY ...]
        [--jobs 2] [--options] [--quick]

Protocol (nothing is tuned on the family a fold is judged on):

1. The five real families of ``../shared/data/traces``: ``fcc`` and ``hsdpa`` (Norway HSDPA, both
   in ``pensieve-train``), ``conext23-starlink-mobility``, ``conext23-starlink-roam``,
   ``conext23-att`` (or the families of ``--traces DIR ...``: a folder is a family; a fold model
   on disk is used only if it was trained on exactly the study's other families). For each family
   F (a *fold*), ``pf``'s exponent, window and planning prior are tuned on the other four (``pf-tuned``, :func:`edgesplit.agents.classical_tuning.tune_pf`,
   episode seeds 7000+, disjoint from the evaluation seeds), and the learned tilt is trained on
   the other four on top of that rule
   (:func:`edgesplit.agents.learned_v1_training.train_es`, the config of
   ``agents/hyperparams/edgesplit-dynamic-v1-learned.yml``); its checkpoint is chosen on held-out
   traces of those four, never on F.
2. Each fold's policy plays ``EdgeSplitDynamic-v1`` with every device on family F (N = 10,
   ``--rounds`` rounds, ``--episodes`` episodes with seeds ``--seed + k``), and so do the classical
   policies (``alternating``, ``exact``, ``static``, ``mpc``, ``mpc-harmonic``, ``robust-mpc``,
   ``pf`` with its defaults, and the fold's ``pf-tuned``, what the learned tilt starts from) and
   the ``oracle`` reference, on the very same episodes.
3. Per family: mean total time of each policy, its ratio to ``alternating``, to the best classical
   policy *on that family* (the strongest baseline, picked with hindsight) and to ``oracle``, and
   the gap closed ``(T_best - T) / (T_best - T_oracle)``. Across families: interquartile means of
   the per-episode ratios to the oracle with stratified bootstrap 95 % confidence intervals
   (episodes resampled within each family), and the mean gap closed with its bootstrap interval.

Writes ``episodes.csv`` (as it goes), ``summary.csv``, ``aggregate.csv``, ``selection.csv`` (the
policy kept per fold and every option's selection score), ``results.md`` and
``rl_vs_classical.png`` to ``--out``; fold models to ``--models`` (default ``OUT/models``). With
``--options``, also ``options.csv``: a diagnostic that plays every option the selection chose
among on the held-out episodes (it chooses nothing; :func:`option_diagnostics`).
``--quick`` runs the whole pipeline on two small synthetic families (or ``--traces``) with tiny
settings in a few seconds (for tests).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"
FOLDERS = ("pensieve-train", "conext23-starlink-mobility", "conext23-starlink-roam", "conext23-att")
CLASSICAL_V1 = ("alternating", "exact", "static", "mpc", "mpc-harmonic", "robust-mpc", "pf", "pf-tuned")
"""The classical side of the study; ``pf-tuned`` is ``pf`` with the exponent, window and planning
prior tuned on the fold's four training families (``models/<fold>/pf.json``): the learned tilt of
the fold starts from it (a zero tilt plays it); ``pf`` runs with its library defaults."""
QUICK_CLASSICAL = ("alternating", "pf", "pf-tuned")
QUICK_TUNE = {"episodes": 1, "rounds": 2, "grid": {"exponent": (1.0, 4.0), "window_s": (60.0,), "prior_s": (0.0,)},
              "progress": False}


def real_families(folders: Sequence[str | Path] | None = None) -> list[Any]:
    """The trace families of ``folders`` (a folder is a family; Pensieve's holds ``fcc`` and
    ``hsdpa``); ``None``: the five real families of ``../shared/data/traces``. At least two
    families (a fold trains on the others), with distinct names."""
    from edgesplit.traces import load_families

    paths = [Path(f) for f in folders] if folders else [TRACES / f for f in FOLDERS]
    missing = [str(f) for f in paths if not f.is_dir()]
    if missing:
        hint = "" if folders else " (the study needs ../shared/data, or --traces DIR ...; --quick runs without it)"
        raise FileNotFoundError(f"traces: {', '.join(missing)} not found{hint}")
    fams = list(load_families([str(f) for f in paths]))
    names = [f.name for f in fams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"traces: two folders give the family name(s) {dup}; a family's name is its folder's name")
    if len(fams) < 2:
        raise ValueError(f"traces: leave-one-family-out needs at least 2 families, got {names}")
    return fams


def quick_families(n: int = 2) -> list[Any]:
    """``n`` (at most 3) small synthetic families ``synthetic-a``, ``-b``, ... (for ``--quick`` and tests)."""
    from edgesplit.traces import TraceFamily, synthetic_traces

    return [TraceFamily(f"synthetic-{c}", tuple(synthetic_traces(n_traces=4, duration_s=600.0, seed=s)))
            for c, s in (("a", 11), ("b", 22), ("c", 33))[:n]]


def quick_config() -> Any:
    """The tiny ES settings of ``--quick`` (seconds; the numbers mean nothing)."""
    from edgesplit.agents.learned_v1_training import ESConfig

    tiny = ESConfig(population=2, batch_rounds=2, generations=2, val_rounds=2, eval_every=1, n_devices=4,
                    horizon_s=900.0, minutes=1.0)
    tiny.tilt.hidden = 4
    return tiny


def play(env: Any, policy: Any, seed: int) -> float:
    """Total simulated seconds of one episode of ``env`` (reset with ``seed``) played by ``policy``.
    Shares are clipped at 0 (an LP solver's ``-5e-15`` is not a negative share)."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    total = 0.0
    while True:
        action = policy.act(obs, info)
        action = {**action, "shares": np.maximum(np.asarray(action["shares"], dtype=np.float64), 0.0)}
        obs, _, terminated, truncated, info = env.step(action)
        total += float(info["step_time_s"])
        if terminated or truncated:
            return total


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def train_folds(families: Sequence[Any], folds: Sequence[str], models: Path, candidates: Sequence[tuple[str, Any]],
                log: Any = sys.stderr, more: bool = False, tune: dict[str, Any] | None = None, jobs: int = 1) -> None:
    """Per fold (all families but the fold's): tune ``pf`` on them (``models/<fold>/pf.json``,
    :func:`edgesplit.agents.learned_v1_training.tuned_backbone`), train every candidate
    configuration on that backbone and keep the one with the best validation score on those
    families (:func:`~edgesplit.agents.learned_v1_training.train_candidates`) as
    ``models/<fold>/model``. A fold whose model exists is kept, or with ``more`` trained further
    from it (another leg of its candidate's budget, seed + 1; the first leg's model is kept as
    ``model-leg1``). ``tune``: keyword arguments of the tuning (episodes, grid, ...); ``jobs``:
    candidates of a fold trained at once (one process each)."""
    import dataclasses

    from edgesplit.agents.learned_v1 import TiltEnsemble, TiltModel, load_tilt
    from edgesplit.agents.learned_v1_training import train_candidates, train_es, tuned_backbone

    by_name = dict(candidates)
    for fold in folds:
        out = models / fold
        train = [f for f in families if f.name != fold]
        if (out / "model.json").is_file():
            check_fold_model(models, fold, [f.name for f in train], candidates)
            if not more:
                print(f"fold {fold}: model exists, kept ({out})", file=log)
                continue
            first = load_tilt(out / "model")
            if isinstance(first, TiltEnsemble):
                raise ValueError(f"fold {fold}: --more continues one tilt, but {out / 'model'} is an ensemble")
            first.save(out / "model-leg1")
            cfg = by_name.get(first.meta.get("candidate"), candidates[0][1])
            print(f"fold {fold}: training further on {[f.name for f in train]}", file=log, flush=True)
            train_es(train, dataclasses.replace(cfg, seed=cfg.seed + 1, split_seed=cfg.split(), tilt=first.cfg),
                     out / "leg2", log=log,
                     init=first, extra_meta={k: first.meta[k] for k in ("backbone_pf", "candidate") if k in first.meta})
            TiltModel.load(out / "leg2" / "model").save(out / "model")
            continue
        print(f"fold {fold}: tuning pf on {[f.name for f in train]}", file=log, flush=True)
        _, params = tuned_backbone(train, candidates[0][1], out, **(tune or {}))
        print(f"fold {fold}: pf-tuned = {params.to_json()}; training {len(candidates)} candidate(s) on it",
              file=log, flush=True)
        train_candidates(train, candidates, out, log=log, jobs=jobs)


def check_fold_model(models: Path, fold: str, train_names: Sequence[str],
                     candidates: Sequence[tuple[str, Any]] = ()) -> None:
    """Raise ``ValueError`` unless ``models/<fold>/model`` (and its ``pf.json``) was trained on
    exactly ``train_names`` (the study's other families): a fold model found on disk from a study
    with other families (``--traces``) is never reused, and one that saw the fold's own family is
    never judged on it. With ``candidates`` (when training), every candidate trained in the fold
    must also have the ES settings the study would train it with
    (:func:`~edgesplit.agents.learned_v1_training.check_reusable`, the network aside), so an
    override such as ``--augment-warp`` is never silently ignored for a fold that exists."""
    import json

    from edgesplit.agents.learned_v1 import TiltModel
    from edgesplit.agents.learned_v1_training import check_reusable

    path = models / fold / "model.json"
    trained = json.loads(path.read_text()).get("trained_on")
    if not isinstance(trained, list):
        raise ValueError(f"fold {fold}: {path} does not record the families it was trained on; "
                         f"remove {path.parent} to retrain")
    if fold in trained:
        raise ValueError(f"fold {fold}: {path} was trained on {trained}, which includes the family it is judged on")
    if set(trained) != set(train_names):
        raise ValueError(f"fold {fold}: {path} was trained on {sorted(trained)}, not on this study's other families "
                         f"{sorted(train_names)}; use another --models folder or remove {path.parent}")
    pf = models / fold / "pf.json"
    if pf.is_file() and set(json.loads(pf.read_text()).get("tuned_on") or []) != set(train_names):
        raise ValueError(f"fold {fold}: {pf} was tuned on {json.loads(pf.read_text()).get('tuned_on')}, not on "
                         f"{sorted(train_names)}; remove {path.parent} to train the fold again")
    for name, cfg in candidates:
        sub = models / fold / name / "model.json"
        if sub.is_file():
            try:
                check_reusable(name, TiltModel.load(sub.with_suffix("")), cfg, network=False)
            except ValueError as exc:
                raise ValueError(f"fold {fold}: {exc} (the fold's model exists; use another --models folder, "
                                 f"or --stage eval to evaluate it as it is)") from None


def fold_pf(models: Path, fold: str) -> dict[str, float]:
    """The fold's tuned ``pf`` parameters (``models/<fold>/pf.json``), as ``get_policy("pf", ...)`` options."""
    import dataclasses
    import json

    from edgesplit.agents.classical_tuning import PFParams

    path = models / fold / "pf.json"
    if not path.is_file():
        raise FileNotFoundError(f"fold {fold}: {path} not found (train the fold first: --stage train)")
    return dataclasses.asdict(PFParams.from_json(json.loads(path.read_text())["pf"]))


def evaluate_folds(families: Sequence[Any], folds: Sequence[str], models: Path, out: Path, episodes: int,
                   rounds: int, n_devices: int, seed: int, classical: Sequence[str],
                   log: Any = sys.stderr) -> pd.DataFrame:
    """Every policy on ``episodes`` episodes of each fold's family; rows appended to
    ``out/episodes.csv`` as they come."""
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401
    from edgesplit.agents.learned_v1 import LearnedV1Policy
    from edgesplit.agents.policies import get_policy

    by_name = {f.name: f for f in families}
    path = out / "episodes.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["family", "policy", "episode", "seed",
                                                                         "total_time_s", "wall_s"])
    have = {(r.family, r.policy, int(r.episode)) for r in done.itertuples()}
    rows = done.to_dict("records")
    for fold in folds:
        check_fold_model(models, fold, [f.name for f in families if f.name != fold])
    for fold in folds:
        env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=n_devices, traces=[by_name[fold]], rounds=rounds)
        policies = []
        for n in classical:
            if n == "pf-tuned":
                pol = get_policy("pf", **fold_pf(models, fold))
                pol.name = n
            else:
                pol = get_policy(n)
            policies.append(pol)
        policies.append(LearnedV1Policy(models / fold / "model", name="learned"))
        policies.append(get_policy("oracle"))
        for pol in policies:
            t0 = time.time()
            for k in range(episodes):
                if (fold, pol.name, k) in have:
                    continue
                w0 = time.time()
                total = play(env, pol, seed + k)
                row = {"family": fold, "policy": pol.name, "episode": k, "seed": seed + k,
                       "total_time_s": total, "wall_s": round(time.time() - w0, 2)}
                rows.append(row)
                pd.DataFrame([row]).to_csv(path, mode="a", header=not path.is_file(), index=False)
            print(f"{fold}: {pol.name} done ({time.time() - t0:.0f} s)", file=log, flush=True)
        env.close()
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, classical: Sequence[str], reps: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-family summary and the across-family aggregate (see module doc); IQM and the stratified
    bootstrap are :mod:`edgesplit.agents.evaluation`'s."""
    from edgesplit.agents.evaluation import gap_closed, iqm, stratified_bootstrap_ci
    rows = []
    fams = list(dict.fromkeys(df["family"]))
    wide = {f: df[df.family == f].pivot_table(index="episode", columns="policy", values="total_time_s") for f in fams}
    for f in fams:
        w = wide[f]
        means = w.mean()
        present = [c for c in classical if c in w.columns]
        best = min(present, key=lambda c: means[c])
        T_best, T_or, T_alt = means[best], means["oracle"], means.get("alternating", math.nan)
        for pol in w.columns:
            gap = _nan_if_none(gap_closed(means[pol], T_best, T_or))
            rows.append({"family": f, "policy": pol, "episodes": int(w[pol].count()),
                         "mean_total_time_s": means[pol], "ratio_to_alternating": means[pol] / T_alt,
                         "ratio_to_best_classical": means[pol] / T_best, "ratio_to_oracle": means[pol] / T_or,
                         "best_classical": best, "gap_closed": gap,
                         "wins_vs_best_classical": int((w[pol] < w[best]).sum())})
    summary = pd.DataFrame(rows)
    agg = []
    pols = [p for p in dict.fromkeys(df["policy"]) if p != "oracle"]
    for pol in pols + ["best classical"]:
        groups = []
        for f in fams:
            w = wide[f]
            col = summary[(summary.family == f)].iloc[0]["best_classical"] if pol == "best classical" else pol
            groups.append((w[col] / w["oracle"]).to_numpy())
        flat = np.concatenate(groups)
        lo, hi = stratified_bootstrap_ci(groups, iqm, reps=reps)
        agg.append({"policy": pol, "iqm_ratio_to_oracle": float(iqm(flat)), "ci95_low": lo, "ci95_high": hi})
    # gap closed by the learned policy, mean over families, with a stratified bootstrap interval
    # (episodes resampled within each family; the gap of a resample is computed from its means)
    if "learned" in pols:
        per_f = []
        boot = []
        rng = np.random.default_rng(1)
        for f in fams:
            w = wide[f]
            best = summary[(summary.family == f)].iloc[0]["best_classical"]
            per_f.append(w[[best, "learned", "oracle"]].to_numpy())
        fam_boot: list[list[float]] = [[] for _ in fams]
        for _ in range(reps):
            gs = []
            for j, a in enumerate(per_f):
                s = a[rng.integers(0, a.shape[0], a.shape[0])].mean(axis=0)
                gs.append((s[0] - s[1]) / (s[0] - s[2]) if s[0] > s[2] else math.nan)
                fam_boot[j].append(gs[-1])
            boot.append(np.nanmean(gs))
        # per family: the learned policy's gap closed with its bootstrap interval (episodes resampled)
        summary["gap_closed_ci95_low"] = math.nan
        summary["gap_closed_ci95_high"] = math.nan
        for f, b in zip(fams, fam_boot):
            row = (summary.family == f) & (summary.policy == "learned")
            summary.loc[row, ["gap_closed_ci95_low", "gap_closed_ci95_high"]] = np.nanpercentile(b, [2.5, 97.5])
        point = float(np.nanmean(summary[summary.policy == "learned"]["gap_closed"]))
        lo, hi = np.nanpercentile(boot, [2.5, 97.5])
        agg.append({"policy": "learned: mean gap closed", "iqm_ratio_to_oracle": point, "ci95_low": float(lo),
                    "ci95_high": float(hi)})
    return summary, pd.DataFrame(agg)


def plot(summary: pd.DataFrame, path: Path) -> None:
    """Bars: ratio to the oracle per family for alternating, pf, the best classical and learned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(summary["family"]))
    shown = ["alternating", "pf", "best classical", "learned"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(fams) + 2), 3.8))
    width = 0.8 / len(shown)
    for j, name in enumerate(shown):
        vals = []
        for f in fams:
            s = summary[summary.family == f]
            pol = s.iloc[0]["best_classical"] if name == "best classical" else name
            r = s[s.policy == pol]["ratio_to_oracle"]
            vals.append(float(r.iloc[0]) if len(r) else math.nan)
        label = name if name != "best classical" else "best classical (per family)"
        ax.bar(np.arange(len(fams)) + (j - (len(shown) - 1) / 2) * width, vals, width, label=label)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="oracle")
    ax.set_xticks(np.arange(len(fams)))
    ax.set_xticklabels([f.replace("conext23-", "") for f in fams], rotation=0)
    ax.set_ylabel("total time / oracle's")
    ax.set_title("EdgeSplitDynamic-v1, leave-one-family-out (each family unseen in training)")
    lo = np.nanmin(summary["ratio_to_oracle"])
    ax.set_ylim(max(0.0, min(0.95, lo - 0.05)), None)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fold_selection(models: Path, folds: Sequence[str]) -> pd.DataFrame:
    """Per fold, what was kept and why: the option selected and every option's score on the
    selection batch (training families only), from ``models/<fold>/model.json``."""
    import json

    rows = []
    for fold in folds:
        path = models / fold / "model.json"
        if not path.is_file():
            continue
        meta = json.loads(path.read_text())
        scores = meta.get("selection_log_ratio_vs_pf") or meta.get("selected_from") or {}
        es = meta.get("es") or ((meta.get("member_meta") or [{}])[0].get("es") or {})
        rows.append({"family": fold, "kept": meta.get("selected", meta.get("candidate")),
                     "selection_rounds": meta.get("selection_rounds"),
                     "augment_warp": es.get("augment_warp", 1.0), "augment_gamma": es.get("augment_gamma", 1.0),
                     **{f"score[{k}]": round(float(v), 5) for k, v in scores.items()}})
    return pd.DataFrame(rows)


def option_diagnostics(families: Sequence[Any], folds: Sequence[str], models: Path, episodes: int, rounds: int,
                       n_devices: int, seed: int, df: pd.DataFrame, classical: Sequence[str],
                       log: Any = sys.stderr) -> pd.DataFrame:
    """A diagnostic that chooses nothing: every option the fold's selection chose among
    (:func:`~edgesplit.agents.learned_v1_training.selection_options` of its candidates) played on
    the held-out episodes of ``df``, next to its selection score on the training families. Rows:
    family, option, kept, selection score, mean total time, ratio to the best classical policy
    and gap closed (both against ``df``'s classical and oracle rows on the same episodes), and
    per family the Spearman correlation of selection score and held-out time (does the selection
    on the training families predict the held-out family?)."""
    import json

    import gymnasium as gym
    from scipy.stats import spearmanr

    from edgesplit import envs  # noqa: F401
    from edgesplit.agents.learned_v1 import LearnedV1Policy, TiltModel
    from edgesplit.agents.evaluation import gap_closed
    from edgesplit.agents.learned_v1_training import selection_options

    by_name = {f.name: f for f in families}
    rows = []
    for fold in folds:
        meta = json.loads((models / fold / "model.json").read_text())
        scores = meta.get("selection_log_ratio_vs_pf") or {}
        if not meta.get("checkpoint_validation"):
            print(f"{fold}: the model records no selection among candidates (older or --more): no options to play",
                  file=log, flush=True)
            continue
        trained = []
        for name in meta.get("checkpoint_validation", {}):
            sub = models / fold / name
            avg = TiltModel.load(sub / "model-avg") if (sub / "model-avg.json").is_file() else None
            trained.append((name, TiltModel.load(sub / "model"), avg))
        ep = df[(df.family == fold) & (df.episode < episodes)]
        means = ep.groupby("policy").total_time_s.mean()
        t_best = float(min(means[c] for c in classical if c in means))
        t_oracle = float(means["oracle"])
        env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=n_devices, traces=[by_name[fold]], rounds=rounds)
        fold_rows = []
        for oname, model in selection_options(trained).items():
            pol = LearnedV1Policy(model=model, name=f"option:{oname}")
            t = float(np.mean([play(env, pol, seed + k) for k in range(episodes)]))
            fold_rows.append({"family": fold, "option": oname, "kept": oname == meta.get("selected"),
                              "selection_score": scores.get(oname, float("nan")), "mean_total_time_s": t,
                              "ratio_to_best_classical": t / t_best,
                              "gap_closed": _nan_if_none(gap_closed(t, t_best, t_oracle))})
        env.close()
        rho = spearmanr([r["selection_score"] for r in fold_rows], [r["mean_total_time_s"] for r in fold_rows])[0]
        for r in fold_rows:
            r["spearman_selection_vs_heldout"] = float(rho)
        print(f"{fold}: {len(fold_rows)} options, gap closed {min(r['gap_closed'] for r in fold_rows):.1%} - "
              f"{max(r['gap_closed'] for r in fold_rows):.1%}, Spearman(selection, held-out) {rho:+.2f}",
              file=log, flush=True)
        rows += fold_rows
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame, agg: pd.DataFrame, meta: dict[str, Any],
             selection: pd.DataFrame | None = None) -> str:
    """``results.md``: the leave-one-family-out table and the aggregate."""
    lines = [f"# Learned v1 scheduler vs classical, leave-one-family-out", "",
             f"N = {meta['n_devices']}, {meta['rounds']} rounds per episode, {meta['episodes']} episodes per family "
             f"(seeds {meta['seed']}..{meta['seed'] + meta['episodes'] - 1}); each fold's policy never saw its family.", "",
             "| family (unseen) | best classical | learned / best classical | learned / oracle | best classical / oracle "
             "| pf / oracle | alternating / oracle | gap closed (95 % CI) | learned wins (episodes) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in dict.fromkeys(summary["family"]):
        s = summary[summary.family == f].set_index("policy")
        best = s.iloc[0]["best_classical"]
        if "learned" not in s.index:
            continue
        L = s.loc["learned"]
        lines.append(f"| {f} | {best} | {L.ratio_to_best_classical:.3f} | {L.ratio_to_oracle:.3f} | "
                     f"{s.loc[best].ratio_to_oracle:.3f} | {s.loc['pf'].ratio_to_oracle if 'pf' in s.index else math.nan:.3f} | "
                     f"{s.loc['alternating'].ratio_to_oracle if 'alternating' in s.index else math.nan:.3f} | "
                     f"{L.gap_closed:.1%} ({getattr(L, 'gap_closed_ci95_low', math.nan):.0%} - "
                     f"{getattr(L, 'gap_closed_ci95_high', math.nan):.0%}) | "
                     f"{int(L.wins_vs_best_classical)}/{int(L.episodes)} |")
    lines += ["", "Across families (interquartile mean of per-episode ratios to the oracle, stratified bootstrap 95 % CI):", "",
              "| policy | IQM total / oracle | 95 % CI |", "|---|---:|---|"]
    for r in agg.itertuples():
        lines.append(f"| {r.policy} | {r.iqm_ratio_to_oracle:.3f} | {r.ci95_low:.3f} - {r.ci95_high:.3f} |")
    lines += ["", "All policies, per family:", "", "| family | policy | mean total time (h) | / alternating | / best classical "
              "| / oracle | gap closed |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {r.family} | {r.policy} | {r.mean_total_time_s / 3600:.3f} | {r.ratio_to_alternating:.3f} | "
                     f"{r.ratio_to_best_classical:.3f} | {r.ratio_to_oracle:.3f} | {r.gap_closed:.1%} |")
    if selection is not None and len(selection):
        cols = [c for c in selection.columns if c.startswith("score[")]
        lines += ["", "Policy kept per fold, and the mean log round time vs the fold's pf-tuned of every option on "
                  "the selection batch (validation traces of the training families; lower is better):", "",
                  "| family (unseen) | kept | " + " | ".join(c[6:-1] for c in cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for r in selection.to_dict("records"):
            lines.append(f"| {r['family']} | {r['kept']} | " + " | ".join(f"{r[c]:+.4f}" for c in cols) + " |")
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module doc and ``--help``)."""
    ap = argparse.ArgumentParser(prog="python -m experiments.rl_vs_classical",
                                 description="Leave-one-family-out study of the learned EdgeSplitDynamic-v1 scheduler.")
    ap.add_argument("--out", default="results/rl_vs_classical", help="output folder")
    ap.add_argument("--models", default=None, help="fold models folder (default OUT/models); existing folds are reused")
    ap.add_argument("--stage", choices=("all", "train", "eval"), default="all", help="train the folds, evaluate, or both")
    ap.add_argument("--traces", nargs="+", default=None, metavar="DIR",
                    help="trace folders, one family each (Pensieve's folder holds fcc and hsdpa); default: the "
                    "five real families of ../shared/data/traces. Each fold trains on all the other families: "
                    "to judge a family of your own on a policy trained on ours, add its folder and --folds NAME")
    ap.add_argument("--folds", nargs="*", default=None, help="families to hold out (default: all of them)")
    ap.add_argument("--config", default=str(ROOT / "agents" / "hyperparams" / "edgesplit-dynamic-v1-learned.yml"),
                    help="training hyper-parameters (YAML)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="wall-clock cap per candidate and fold (overrides the config; generations bound it too)")
    ap.add_argument("--augment-warp", type=float, default=None, help="override every candidate's augment_warp "
                    "(randomised training rounds, protocol v4; 1 = off)")
    ap.add_argument("--augment-gamma", type=float, default=None, help="override every candidate's augment_gamma "
                    "(randomised training rounds, protocol v4; 1 = off)")
    ap.add_argument("--episodes", type=int, default=24, help="evaluation episodes per family (default 24)")
    ap.add_argument("--tune-episodes", type=int, default=8,
                    help="episodes per training family and grid point when tuning pf per fold (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per evaluation episode")
    ap.add_argument("--n-devices", type=int, default=10, help="devices")
    ap.add_argument("--seed", type=int, default=20_000, help="first evaluation episode seed")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--jobs", type=int, default=1, help="candidates of a fold trained at once, one process each "
                    "(default 1; the models do not depend on it)")
    ap.add_argument("--options", action="store_true", help="diagnostic: also play every option the selection "
                    "chose among on the held-out episodes (options.csv; chooses nothing)")
    ap.add_argument("--more", action="store_true", help="train existing fold models one more leg of --minutes")
    ap.add_argument("--quick", action="store_true", help="tiny end-to-end run on synthetic families (seconds)")
    args = ap.parse_args(argv)
    import dataclasses

    from edgesplit.agents.learned_v1_training import check_shared_split, load_candidates

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = Path(args.models) if args.models else out / "models"
    try:
        if args.quick:
            families = real_families(args.traces) if args.traces else quick_families()
            tiny = quick_config()
            candidates = [("raw", tiny), ("rank", dataclasses.replace(tiny, fitness="rank"))]
            classical, episodes, rounds, n_dev, reps = QUICK_CLASSICAL, 1, 2, 4, 50
        else:
            families = real_families(args.traces)
            candidates = [(n, dataclasses.replace(c, n_devices=args.n_devices)) for n, c in load_candidates(args.config)]
            classical, episodes, rounds, n_dev, reps = CLASSICAL_V1, args.episodes, args.rounds, args.n_devices, args.bootstrap
        over = {k: v for k, v in (("minutes", args.minutes), ("augment_warp", args.augment_warp),
                                  ("augment_gamma", args.augment_gamma)) if v is not None}
        candidates = [(n, dataclasses.replace(c, **over)) for n, c in candidates]
        names = [f.name for f in families]
        folds = args.folds or names
        bad = [f for f in folds if f not in names]
        if bad:
            raise ValueError(f"folds: unknown families {bad}; known: {names}")
        if episodes < 1 or rounds < 1:
            raise ValueError("episodes and rounds: must be >= 1")
        if args.jobs < 1:
            raise ValueError(f"jobs: must be >= 1, got {args.jobs}")
        check_shared_split(candidates)
        for fold in folds:  # fold models on disk: from this study's families only (checked before any work)
            if (models / fold / "model.json").is_file():
                check_fold_model(models, fold, [n for n in names if n != fold],
                                 candidates if args.stage in ("all", "train") else ())
            elif args.stage == "eval":
                raise FileNotFoundError(f"fold {fold}: no model in {models / fold} (run --stage train first)")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.time()
    if args.stage in ("all", "train"):
        train_folds(families, folds, models, candidates, more=args.more,
                    tune=QUICK_TUNE if args.quick else {"episodes": args.tune_episodes}, jobs=args.jobs)
    if args.stage == "train":
        return 0
    df = evaluate_folds(families, folds, models, out, episodes, rounds, n_dev, args.seed, classical)
    df = df[df.family.isin(folds)]
    summary, agg = summarize(df, classical, reps=reps)
    summary.to_csv(out / "summary.csv", index=False)
    agg.to_csv(out / "aggregate.csv", index=False)
    meta = {"n_devices": n_dev, "rounds": rounds, "episodes": episodes, "seed": args.seed,
            "note": "Quick mode: tiny training and evaluation; the numbers mean nothing." if args.quick else ""}
    selection = fold_selection(models, folds)
    selection.to_csv(out / "selection.csv", index=False)
    (out / "results.md").write_text(markdown(summary, agg, meta, selection))
    if args.options:
        opts = option_diagnostics(families, folds, models, episodes, rounds, n_dev, args.seed, df, classical)
        opts.to_csv(out / "options.csv", index=False)
    plot(summary, out / "rl_vs_classical.png")
    print((out / "results.md").read_text())
    print(f"wrote {out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
