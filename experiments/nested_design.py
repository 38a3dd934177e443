"""Nested leave-one-family-out: choose the learned tilt's design for each fold on its training families only.

    python -m experiments.nested_design --out results/nested_design [--jobs 2] [--generations 200]
        [--augment-warp 2] [--augment-gamma 1.5] [--traces DIR ...] [--quick]

The study (``experiments.rl_vs_classical``) judges each family F on a policy trained on the other
families. Choosing between two *designs* by their held-out results would tune on F; this chooses
per fold F with an inner leave-one-family-out over the other families only:

1. For every set ``S`` of all families but two, ``pf`` is tuned on ``S`` (as in a fold) and a tilt
   of each design is trained on ``S`` (candidate ``--candidate`` of the YAML, ``--generations``):
   ``plain`` (the YAML's settings) and ``augmented`` (the same with the training rounds
   randomised: :attr:`~edgesplit.agents.learned_v1_training.ESConfig.augment_warp`,
   :attr:`~edgesplit.agents.learned_v1_training.ESConfig.augment_gamma`).
2. Each is scored on each of the two families ``g`` not in ``S``: the mean log round time vs the
   backbone (``pf`` tuned on ``S``) on ``--rounds`` simulated rounds of ``g`` (all its traces), the
   same rounds for both designs (``inner.csv``, written as it comes).
3. Fold F's inner folds are the pairs ``(S, g)`` with ``S + g`` = every family but F; F gets
   ``augmented`` if its mean score over them is lower than ``plain``'s, else ``plain``
   (``decisions.csv``, ``results.md``). No number of F enters F's decision.

One training on ``S`` serves the two folds outside ``S``, so ``n`` families cost ``n (n - 1) / 2``
trainings per design. ``--quick``: three small synthetic families, tiny settings (seconds).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DESIGNS = ("plain", "augmented")


def subset_name(names: Sequence[str]) -> str:
    """The folder of a training set (its families, sorted, joined by ``+``)."""
    return "+".join(sorted(names))


def design_configs(cfg: Any, warp: float, gamma: float) -> dict[str, Any]:
    """``plain`` (``cfg``) and ``augmented`` (``cfg`` with the training rounds randomised)."""
    return {"plain": cfg, "augmented": dataclasses.replace(cfg, augment_warp=warp, augment_gamma=gamma)}


def inner_scores(train: Sequence[Any], judged: Sequence[Any], designs: dict[str, Any], out: Path, rounds: int,
                 seed: int, tune: dict[str, Any]) -> list[dict[str, Any]]:
    """Tune ``pf`` on ``train``, train every design on it (into ``out/<design>``; a model found
    there is reused if trained with the same settings) and score each on every family of
    ``judged`` (rows of ``inner.csv``)."""
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401
    from edgesplit.agents.learned_v1 import TiltModel
    from edgesplit.agents.learned_v1_training import (FamilyRates, check_reusable, sample_rounds, simulate_models,
                                                      train_es, tuned_backbone)

    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.txt", "a")
    try:
        models: dict[str, TiltModel] = {}
        cfgs: dict[str, Any] = {}
        for name, cfg in designs.items():
            cfg, params = tuned_backbone(train, cfg, out, **tune)  # tuned once (out/pf.json), then read back
            cfgs[name] = cfg
            sub = out / name
            if (sub / "model.json").is_file():
                model = TiltModel.load(sub / "model")
                check_reusable(name, model, cfg)
            else:
                model, _ = train_es(train, cfg, sub, log=log, extra_meta={"design": name, "backbone_pf": params.to_json()})
            models[name] = model
        cfg0 = next(iter(cfgs.values()))
        rows = []
        for k, fam in enumerate(judged):
            env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=cfg0.n_devices, traces=[fam]).unwrapped
            fr = FamilyRates(fam.name, fam.traces, fam.mean_bps)
            batch = sample_rounds(np.random.default_rng(seed + k), [fr], rounds, cfg0, env,
                                  max(cfg0.tilt.pf_window, 6))
            T = simulate_models(batch, [TiltModel.zero(cfg0.tilt)] + [models[n] for n in designs], cfg0)
            for j, name in enumerate(designs):
                rows.append({"train": subset_name([f.name for f in train]), "judged": fam.name, "design": name,
                             "log_ratio_vs_pf": float(np.mean(np.log(T[j + 1] / T[0]))), "rounds": rounds,
                             "best_generation": models[name].meta.get("best_generation"),
                             "validation_log_ratio_vs_pf": models[name].meta.get("validation_log_ratio_vs_pf")})
            env.close()
        return rows
    finally:
        log.close()


def _inner_job(train: Sequence[Any], judged: Sequence[Any], designs: dict[str, Any], out: Path, rounds: int,
               seed: int, tune: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`inner_scores` in a worker process (one thread)."""
    return inner_scores(train, judged, designs, out, rounds, seed, tune)


def decide(inner: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per fold F: the mean inner score of each design over F's inner folds (``(S, g)`` with
    ``S + g`` = every family but F, ``S`` of ``len(names) - 2`` families), their difference and the
    design chosen (the lower mean). Rows of other families are ignored; a fold without all its
    ``len(names) - 1`` inner folds scored for both designs raises ``ValueError``."""
    rows = []
    known = set(names)
    for fold in names:
        others = known - {fold}
        parts = inner["train"].str.split("+").apply(set)
        mask = [p | {j} == others and len(p) == len(names) - 2 and j not in p
                for p, j in zip(parts, inner["judged"])]
        sel = inner[mask]
        piv = sel.pivot_table(index=["train", "judged"], columns="design", values="log_ratio_vs_pf")
        if not set(DESIGNS) <= set(piv.columns) or len(piv.dropna()) != len(names) - 1:
            raise ValueError(f"fold {fold}: {len(piv)} of its {len(names) - 1} inner folds are scored for both "
                             f"designs; run the missing training sets first")
        piv = piv.dropna()
        diff = piv["augmented"] - piv["plain"]
        rows.append({"fold": fold, "inner_folds": int(len(piv)), "plain": float(piv["plain"].mean()),
                     "augmented": float(piv["augmented"].mean()), "augmented_minus_plain": float(diff.mean()),
                     "augmented_better_in": int((diff < 0).sum()),
                     "chosen": "augmented" if float(diff.mean()) < 0 else "plain"})
    return pd.DataFrame(rows)


def markdown(inner: pd.DataFrame, decisions: pd.DataFrame, meta: dict[str, Any]) -> str:
    """``results.md``: the inner scores and the decision per fold."""
    lines = ["# Nested leave-one-family-out: plain vs augmented training rounds", "",
             f"Candidate `{meta['candidate']}`, {meta['generations']} generations, augmentation: time warp up to "
             f"x{meta['augment_warp']}, power up to {meta['augment_gamma']}; {meta['rounds']} simulated rounds per "
             "judged family; score = mean log round time vs the backbone (pf tuned on the training set; lower is "
             "better).", "", "| trained on | judged on | plain | augmented | augmented - plain |", "|---|---|---:|---:|---:|"]
    piv = inner.pivot_table(index=["train", "judged"], columns="design", values="log_ratio_vs_pf")
    for (tr, jg), r in piv.iterrows():
        if set(DESIGNS) <= set(r.index):
            lines.append(f"| {tr} | {jg} | {r['plain']:+.4f} | {r['augmented']:+.4f} | {r['augmented'] - r['plain']:+.4f} |")
    lines += ["", "Decision per fold (its inner folds only; no number of the fold's own family):", "",
              "| fold | inner folds | plain | augmented | augmented - plain | augmented better in | chosen |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for r in decisions.itertuples():
        lines.append(f"| {r.fold} | {r.inner_folds} | {r.plain:+.4f} | {r.augmented:+.4f} | "
                     f"{r.augmented_minus_plain:+.4f} | {r.augmented_better_in} of {r.inner_folds} | {r.chosen} |")
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module doc and ``--help``)."""
    ap = argparse.ArgumentParser(prog="python -m experiments.nested_design",
                                 description="Choose the learned tilt's design per fold by an inner leave-one-family-out "
                                             "on the fold's training families (plain vs augmented training rounds).")
    ap.add_argument("--out", default="results/nested_design", help="output folder (models per training set inside)")
    ap.add_argument("--traces", nargs="+", default=None, metavar="DIR",
                    help="trace folders, a family each (default: the five of ../shared/data/traces); at least 3")
    ap.add_argument("--config", default=str(ROOT / "agents" / "hyperparams" / "edgesplit-dynamic-v1-learned.yml"),
                    help="training hyper-parameters (YAML)")
    ap.add_argument("--candidate", default="rank-meanmax", help="the YAML candidate both designs start from")
    ap.add_argument("--generations", type=int, default=200, help="ES generations per training (default 200)")
    ap.add_argument("--augment-warp", type=float, default=2.0, help="augmented design: time warp up to this factor")
    ap.add_argument("--augment-gamma", type=float, default=1.5, help="augmented design: rate power up to this factor")
    ap.add_argument("--rounds", type=int, default=480, help="simulated rounds per judged family (default 480)")
    ap.add_argument("--tune-episodes", type=int, default=8, help="episodes per family and grid point to tune pf")
    ap.add_argument("--seed", type=int, default=30_000, help="seed of the judged rounds")
    ap.add_argument("--jobs", type=int, default=1, help="training sets at once, one process each")
    ap.add_argument("--quick", action="store_true", help="three small synthetic families, tiny settings (seconds)")
    args = ap.parse_args(argv)
    from edgesplit.agents.learned_v1_training import load_candidates
    from .rl_vs_classical import QUICK_TUNE, quick_config, quick_families, real_families

    out = Path(args.out)
    try:
        if args.quick:
            families, cfg = quick_families(3), quick_config()
            rounds, tune = 4, QUICK_TUNE
        else:
            families = real_families(args.traces)
            cands = dict(load_candidates(args.config))
            if args.candidate not in cands:
                raise ValueError(f"candidate: {args.candidate!r} is not in {args.config}; known: {sorted(cands)}")
            for field, v in (("generations", args.generations), ("rounds", args.rounds),
                             ("tune-episodes", args.tune_episodes)):
                if v < 1:
                    raise ValueError(f"--{field}: must be an integer >= 1, got {v}")
            cfg = dataclasses.replace(cands[args.candidate], generations=args.generations)
            rounds, tune = args.rounds, {"episodes": args.tune_episodes}
        if len(families) < 3:
            raise ValueError(f"traces: an inner leave-one-family-out needs at least 3 families, got "
                             f"{[f.name for f in families]}")
        bad = [f.name for f in families if "+" in f.name]
        if bad:
            raise ValueError(f"traces: family names may not contain '+' (it joins a training set's names), got {bad}")
        if args.jobs < 1:
            raise ValueError(f"jobs: must be >= 1, got {args.jobs}")
        designs = design_configs(cfg, args.augment_warp, args.augment_gamma)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in families]
    # what the scores in OUT were made with: a run with other settings or families never reuses them
    import json

    settings = {"families": names, "candidate": "quick" if args.quick else args.candidate,
                "generations": cfg.generations, "augment_warp": args.augment_warp,
                "augment_gamma": args.augment_gamma, "rounds": rounds, "seed": args.seed,
                "tune_episodes": tune.get("episodes")}
    spath = out / "settings.json"
    if spath.is_file():
        saved = json.loads(spath.read_text())
        diff = {k: {"saved": saved.get(k), "now": v} for k, v in settings.items() if saved.get(k) != v}
        if diff:
            print(f"error: {out} holds scores made with other settings {diff}; use another --out", file=sys.stderr)
            return 2
    else:
        spath.write_text(json.dumps(settings, indent=2) + "\n")
    jobs = []
    for k, train_names in enumerate(itertools.combinations(names, len(names) - 2)):
        train = [f for f in families if f.name in train_names]
        judged = [f for f in families if f.name not in train_names]
        jobs.append((train, judged, designs, out / subset_name(train_names), rounds, args.seed, tune))
    path = out / "inner.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["train", "judged", "design"])
    have = set(done["train"])
    todo = [j for j in jobs if subset_name([f.name for f in j[0]]) not in have]
    t0 = time.time()
    print(f"{len(jobs)} training sets x {len(designs)} designs ({len(jobs) - len(todo)} done already)", file=sys.stderr)

    def record(rows: list[dict[str, Any]]) -> None:
        pd.DataFrame(rows).to_csv(path, mode="a", header=not path.is_file(), index=False)
        print(f"[{time.time() - t0:.0f} s] trained on {rows[0]['train']}: " +
              ", ".join(f"{r['design']} on {r['judged']} {r['log_ratio_vs_pf']:+.4f}" for r in rows),
              file=sys.stderr, flush=True)

    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(args.jobs, len(todo)), mp_context=mp.get_context("spawn")) as ex:
            for fut in as_completed([ex.submit(_inner_job, *j) for j in todo]):
                record(fut.result())
    else:
        for j in todo:
            record(inner_scores(*j))
    inner = pd.read_csv(path)
    decisions = decide(inner, names)
    decisions.to_csv(out / "decisions.csv", index=False)
    meta = {"candidate": args.candidate, "generations": cfg.generations, "augment_warp": args.augment_warp,
            "augment_gamma": args.augment_gamma, "rounds": rounds,
            "note": "Quick mode: synthetic families, tiny settings; the numbers mean nothing." if args.quick else ""}
    (out / "results.md").write_text(markdown(inner, decisions, meta))
    print((out / "results.md").read_text())
    print(f"wrote {out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
