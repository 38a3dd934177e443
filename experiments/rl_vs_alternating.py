"""Study: a learned scheduler vs the alternating algorithm under trace-driven bandwidth.

    python -m experiments.rl_vs_alternating --out results/rl_vs_alternating [--seeds 3]
        [--timesteps 60000] [--episodes 20] [--traces ../shared/data/traces/pensieve-train]

The question (issue 5): with N = 10 devices whose links follow real throughput traces, re-solving
each round on the rates measured in the last round (the paper's alternating algorithm, or the
exact optimum on those rates) is stale. How much of the gap between it and a clairvoyant oracle
(exact on the true rates of the coming round) can a learned scheduler close on traces it never saw?

Protocol:

1. Split the traces (``edgesplit.agents.environment.split_traces``: a fixed 70/30 split per trace family,
   FCC broadband and Norway HSDPA): the agents train on the ``train`` part only.
2. For each seed, train PPO with the ``forecast`` action (a per-device rate forecast; the exact
   rule plans on it), the device-shared network and the counterfactual training reward
   (``edgesplit train-agent`` defaults of the shipped policy, fewer steps).
3. Evaluate on the ``test`` traces: ``--episodes`` episodes with fixed seeds (new devices, new
   traces and offsets each), the same episodes for every policy: learned (each seed), alternating,
   exact, static, oracle, psl, and a hand-made rule with the same action (plan on
   ``s * nominal * (measured / nominal) ** -lam``, ``lam`` and ``s`` tuned on training traces):
   it shows what the forecast action gives without learning.
4. Report total times, ratios to alternating and oracle, and the fraction of the
   alternating-to-oracle gap each policy closes; for the learned policy the mean over seeds with a
   95 % t confidence interval over seeds (and each seed's value).

Writes ``episodes.csv`` (one row per policy x episode), ``summary.csv``, ``gap_by_seed.csv``,
``rl_vs_alternating.png`` and ``results.md`` to ``--out``. Without ``../shared`` it falls back to
the built-in synthetic traces and says so in the outputs.
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
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edgesplit.agents.environment import fast_exact_plan, load_trace_list, make_base_env  # noqa: E402
from edgesplit.agents.evaluation import evaluate_policies, mean_ci95  # noqa: E402
from edgesplit.agents.policies import LearnedPolicy, Policy, get_policy  # noqa: E402
from edgesplit.agents.training import TrainConfig, resolved_net, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACES = ROOT.parent / "shared" / "data" / "traces" / "pensieve-train"
CLASSICAL_IN_STUDY = ("alternating", "exact", "static", "oracle", "psl")
PLOTTED = ("alternating", "exact", "static", "rule", "learned", "oracle")


class ReversionRule(Policy):
    """Hand-made forecast: plan (exact) on ``s * nominal * (measured / nominal) ** -lam``.

    ``lam > 0`` bets that a link that was above its mean in the last round will be below it in
    the next (the traces are scaled to their class mean and repeat, so long windows revert to the
    mean); ``s < 1`` plans a little pessimistically. Uses only what a scheduler may know.
    """

    def __init__(self, lam: float, scale: float, name: str = "rule") -> None:
        self.lam, self.scale, self.name = float(lam), float(scale), name

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> dict[str, np.ndarray]:
        """The exact plan on the rule's forecast."""
        base = self.base
        nom = base.cost_model.rate_bps
        known = np.maximum(base.known_rates_bps(), 1e-3 * nom)
        forecast = self.scale * nom * np.exp(-self.lam * np.log(known / nom))
        cuts, shares = fast_exact_plan(base.cost_model.with_rates(forecast))
        return {"cuts": cuts - 1, "shares": shares}


def tune_rule(train_traces: list, n_devices: int, episodes: int, seed: int) -> tuple[float, float, pd.DataFrame]:
    """Grid-search the rule's ``lam`` and ``s`` on training traces (never the test traces)."""
    env = make_base_env("EdgeSplitDynamic-v0", n_devices, train_traces)
    grid = [ReversionRule(lam, s, name=f"rule lam={lam} s={s}") for lam in (0.0, 0.3, 0.6, 0.9) for s in (0.8, 0.9, 1.0)]
    df = evaluate_policies(grid, env, episodes, seed)
    means = df.groupby("policy")["total_time_s"].mean()
    best = means.idxmin()
    rule = next(r for r in grid if r.name == best)
    table = means.rename("mean_total_time_s").reset_index()
    return rule.lam, rule.scale, table


def summarize_study(df: pd.DataFrame, learned_names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary per policy (mean total, 95 % CI over episodes, ratios, gap closed) and gap by seed."""
    piv = df.pivot(index="episode", columns="policy", values="total_time_s")
    alt, orc = piv["alternating"], piv["oracle"]
    alt_m, orc_m = alt.mean(), orc.mean()
    rows = []
    for pol in piv.columns:
        x = piv[pol]
        m, lo, hi = mean_ci95(x.to_numpy())
        r_alt = (x / alt).to_numpy()
        rows.append({"policy": pol, "episodes": int(x.size), "mean_total_time_s": m, "ci95_lo_s": lo, "ci95_hi_s": hi,
                     "mean_round_time_s": m / 100.0, "ratio_to_alternating": m / alt_m, "ratio_to_oracle": m / orc_m,
                     "gap_closed": (alt_m - m) / (alt_m - orc_m),
                     "episodes_better_than_alternating": float(np.mean(r_alt < 1.0))})
    summary = pd.DataFrame(rows)
    gaps = pd.DataFrame([{"policy": name, "ratio_to_oracle": piv[name].mean() / orc_m,
                          "gap_closed": (alt_m - piv[name].mean()) / (alt_m - orc_m)} for name in learned_names])
    return summary, gaps


def plot(summary: pd.DataFrame, gaps: pd.DataFrame, path: Path, title: str) -> None:
    """Bar chart of total time / oracle per policy; learned = mean over seeds with its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary.set_index("policy")
    labels, vals, errs, colors = [], [], [], []
    palette = {"alternating": "#d62728", "exact": "#ff7f0e", "static": "#8c564b", "rule": "#7f7f7f",
               "learned": "#1f77b4", "oracle": "#2ca02c", "psl": "#9467bd"}
    for name in PLOTTED:
        if name == "learned":
            if gaps.empty:
                continue
            m, lo, hi = mean_ci95(gaps["ratio_to_oracle"].to_numpy())
            labels.append(f"learned\n(mean of {len(gaps)} seeds)")
            vals.append(m)
            errs.append(0.0 if math.isnan(lo) else hi - m)
        elif name in s.index:
            labels.append(name)
            vals.append(s.loc[name, "ratio_to_oracle"])
            errs.append(0.0)
        else:
            continue
        colors.append(palette[name])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(vals))
    ax.bar(x, vals, yerr=errs, color=colors, capsize=6)
    if not gaps.empty:
        j = labels.index(next(lab for lab in labels if lab.startswith("learned")))
        ax.scatter(np.full(len(gaps), j) + np.linspace(-0.2, 0.2, len(gaps)), gaps["ratio_to_oracle"],
                   color="k", s=12, zorder=3, label="learned, each seed")
        ax.legend(loc="upper right")
    for xi, v in zip(x, vals):
        ax.text(xi, v + 0.01, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.axhline(1.0, color="#2ca02c", lw=0.8, ls="--")
    ax.set_xticks(x, labels)
    ax.set_ylabel("total training time / oracle's")
    ax.set_ylim(0.9, max(vals) * 1.08)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: pd.DataFrame, gaps: pd.DataFrame, meta: dict[str, Any]) -> str:
    """The results page."""
    lines = [f"# RL vs alternating under trace-driven bandwidth (N = {meta['n_devices']})", ""]
    if meta.get("note"):
        lines += [f"> **Note:** {meta['note']}", ""]
    lines += [
        f"Traces: {meta['traces']} — {meta['n_train']} for training, {meta['n_test']} held out for testing "
        f"(split per family, seed 0). Evaluation: {meta['episodes']} episodes on the held-out traces "
        f"(seeds {meta['eval_seed']}..{meta['eval_seed'] + meta['episodes'] - 1}: new devices, traces and offsets), "
        f"the same episodes for every policy; 100 rounds each.",
        f"Learned: {meta['algo']} + `{meta['wrapper']}` action, `{meta['net']}` network, `{meta['reward']}` reward, "
        f"{meta['timesteps']} steps per seed, seeds {meta['seeds']}; training took "
        f"{meta['train_wall_s']:.0f} s in all ({meta['train_sps']:.0f} env steps/s overall, "
        f"{meta['train_env_sps']:.0f} env steps/s while collecting rollouts).",
        f"Rule: the same forecast action with `lam = {meta['rule_lam']}`, `s = {meta['rule_scale']}`, "
        f"tuned on {meta['rule_episodes']} training-trace episodes.",
        "",
        "| policy | mean total time (h) | 95% CI (h) | / alternating | / oracle | gap closed | episodes better than alternating |",
        "|---|---|---|---|---|---|---|",
    ]
    order = {n: i for i, n in enumerate(["oracle", "learned", "rule", "static", "exact", "alternating", "psl"])}
    srt = summary.assign(_o=summary["policy"].map(lambda p: order.get(p.split(" ")[0], 1.5)))
    for _, r in srt.sort_values(["_o", "policy"]).iterrows():
        lines.append(f"| {r['policy']} | {r['mean_total_time_s'] / 3600:.2f} | {r['ci95_lo_s'] / 3600:.2f} .. "
                     f"{r['ci95_hi_s'] / 3600:.2f} | {r['ratio_to_alternating']:.3f} | {r['ratio_to_oracle']:.3f} | "
                     f"{r['gap_closed']:.3f} | {r['episodes_better_than_alternating']:.0%} |")
    lines.append("")
    if not gaps.empty:
        m, lo, hi = mean_ci95(gaps["gap_closed"].to_numpy())
        r, rlo, rhi = mean_ci95(gaps["ratio_to_oracle"].to_numpy())
        ci = "n/a (one seed)" if math.isnan(lo) else f"{lo:.3f} .. {hi:.3f}"
        rci = "n/a" if math.isnan(rlo) else f"{rlo:.3f} .. {rhi:.3f}"
        lines += [
            f"**Gap closed by the learned policy** (alternating = 0, oracle = 1), mean over {len(gaps)} seeds: "
            f"**{m:.3f}**, 95% CI over seeds {ci}; its total time is {r:.3f}x the oracle's (95% CI {rci}).",
            "Per seed: " + ", ".join(f"{p.split('seed ')[-1].rstrip(')')}: {g:.3f}" for p, g in
                                      zip(gaps["policy"], gaps["gap_closed"])) + ".",
            "",
        ]
    lines += ["![total time / oracle](rl_vs_alternating.png)", "",
              "Gap closed = (alternating - policy) / (alternating - oracle) of the mean total times over the "
              "test episodes. The oracle is exact on the true mean rate of each link over the coming round "
              "(a clairvoyant reference, not a real scheduler).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the study and write its outputs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/rl_vs_alternating", help="output folder")
    p.add_argument("--traces", default=str(DEFAULT_TRACES), help="trace folder (falls back to synthetic if absent)")
    p.add_argument("--n-devices", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..seeds-1")
    p.add_argument("--timesteps", type=int, default=60_000, help="training steps per seed")
    p.add_argument("--episodes", type=int, default=20, help="test episodes (held-out traces)")
    p.add_argument("--eval-seed", type=int, default=10_000, help="seed of the first test episode")
    p.add_argument("--rule-episodes", type=int, default=8, help="training-trace episodes to tune the rule")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--wrapper", default="forecast")
    p.add_argument("--net", default="auto")
    p.add_argument("--reward", default="counterfactual")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--models", nargs="*", default=None,
                   help="evaluate these saved policies (paths) instead of training new ones")
    p.add_argument("--shipped", action="store_true", help="also evaluate the shipped policy (`learned`)")
    p.add_argument("--workers", type=int, default=1,
                   help="train the seeds as parallel Ray Tune trials (needs the sweep extra); 1 = one after another here")
    p.add_argument("--address", default=None, help="train on this Ray cluster (ray://HEAD:10001) instead of locally")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note = ""
    traces_dir: str | None = args.traces
    if not Path(args.traces).exists():
        note = (f"{args.traces} not found: this run uses the built-in synthetic traces (Gilbert-Elliott), "
                f"not the Pensieve traces; its figures are not the study's.")
        print(f"[study] NOTE: {note}", file=sys.stderr)
        traces_dir = None
    train_traces = load_trace_list(traces_dir, "train")
    test_traces = load_trace_list(traces_dir, "test")
    print(f"[study] {len(train_traces)} training traces, {len(test_traces)} test traces", file=sys.stderr)

    t0 = time.perf_counter()
    lam, scale, rule_table = tune_rule(train_traces, args.n_devices, args.rule_episodes, seed=50_000)
    rule_table.to_csv(out / "rule_tuning.csv", index=False)
    print(f"[study] rule tuned on training traces: lam={lam}, s={scale} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    learned: list[Policy] = []
    wall = sps = env_sps = 0.0
    if args.models is None:
        from edgesplit.agents.sweep import train_many

        cfgs = [TrainConfig(env_id="EdgeSplitDynamic-v0", algo=args.algo, wrapper=args.wrapper,
                            timesteps=args.timesteps, seed=seed, out=str(out / "runs"), n_devices=args.n_devices,
                            traces=traces_dir, trace_split="train", reward=args.reward, net=args.net,
                            n_envs=args.n_envs, checkpoint_every=max(args.timesteps // 2, 1),
                            progress_bar=False, print_every_s=60.0,
                            command="python -m experiments.rl_vs_alternating " + " ".join(sys.argv[1:]))
                for seed in range(args.seeds)]
        for seed, res in enumerate(train_many(cfgs, args.workers, args.address)):
            wall += res["wall_s"]
            sps += res["steps_per_s"] / args.seeds
            env_sps += res["env_steps_per_s"] / args.seeds
            learned.append(LearnedPolicy(res["metadata_path"], name=f"learned (seed {seed})"))
    else:
        for i, m in enumerate(args.models):
            pol = get_policy(m)
            pol.name = f"learned (seed {pol.meta['training']['seed']})" if isinstance(pol, LearnedPolicy) else pol.name
            learned.append(pol)
    extra: list[Policy] = []
    if args.shipped:
        shipped = get_policy("learned")
        shipped.name = "learned-shipped"
        extra.append(shipped)

    env = make_base_env("EdgeSplitDynamic-v0", args.n_devices, test_traces)
    policies = [get_policy(n) for n in CLASSICAL_IN_STUDY] + [ReversionRule(lam, scale)] + learned + extra
    t1 = time.perf_counter()
    df = evaluate_policies(policies, env, args.episodes, args.eval_seed, progress=True)
    print(f"[study] evaluated {len(policies)} policies x {args.episodes} episodes in "
          f"{time.perf_counter() - t1:.0f} s", file=sys.stderr)
    df.to_csv(out / "episodes.csv", index=False)
    names = [p.name for p in learned]
    summary, gaps = summarize_study(df, names)
    summary.to_csv(out / "summary.csv", index=False)
    gaps.to_csv(out / "gap_by_seed.csv", index=False)
    meta = {"n_devices": args.n_devices, "note": note,
            "traces": "built-in synthetic traces" if traces_dir is None else "Pensieve (../shared/data/traces/pensieve-train)",
            "n_train": len(train_traces), "n_test": len(test_traces), "episodes": args.episodes,
            "eval_seed": args.eval_seed, "algo": args.algo, "wrapper": args.wrapper,
            "net": resolved_net(TrainConfig(algo=args.algo, net=args.net)),
            "reward": args.reward, "timesteps": args.timesteps, "seeds": list(range(args.seeds)) if args.models is None else "given",
            "train_wall_s": wall, "train_sps": sps, "train_env_sps": env_sps, "rule_lam": lam, "rule_scale": scale,
            "rule_episodes": args.rule_episodes}
    title = (f"N={args.n_devices}, {len(test_traces)} held-out traces, {args.episodes} episodes"
             + (" (SYNTHETIC fallback)" if note else ""))
    plot(summary, gaps, out / "rl_vs_alternating.png", title)
    (out / "results.md").write_text(markdown(summary, gaps, meta))
    print((out / "results.md").read_text())
    print(f"[study] wrote {out}/ in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
