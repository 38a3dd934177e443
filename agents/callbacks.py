"""stable-baselines3 callbacks of ``edgesplit train-agent``: speed and progress, atomic checkpoints,
and periodic evaluation against classical schedulers with the best model kept (as RL Zoo's
``EvalCallback`` does, but scored by what matters here: total time, and the fraction of the gap
between a classical scheduler and the oracle that the agent closes).

Checkpoints (:class:`AtomicCheckpointCallback`), every ``every`` env steps, in ``checkpoints/``::

    model_<steps>_steps.norm.json          normalisation statistics (JSON, read back by --resume)
    model_<steps>_steps.vecnormalize.pkl   the same for SB3 / RL Zoo users (pickle; never read by us)
    model_<steps>_steps.zip                the model, written last: its presence marks a complete checkpoint

Each file is written to ``NAME.tmp`` and renamed (``os.replace``), so a crash leaves either the
old checkpoint or the new one, never half a file, and earlier checkpoints are kept.

Evaluation (:class:`EvalGapCallback`), every ``every`` env steps: the current policy plays
``episodes`` validation episodes (fixed seeds of their own, never the training env's; the traces
of the training split, never the test split), and so do the classical ``baselines`` (once: they are
deterministic). Logged as ``eval/*`` (progress.csv, TensorBoard) and appended to
``evaluations.csv``: mean total time, ratio to ``alternating``, gap closed vs ``alternating``
(``(alt - agent) / (alt - oracle)``) and vs the best classical baseline (the lowest mean total
time among the baselines other than ``oracle``). The model with the lowest mean total time so far
is saved as ``best_model.zip`` + ``best_model.json`` (a policy ``edgesplit evaluate`` takes).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from edgesplit.agents.evaluation import gap_closed
from edgesplit.agents.loading import normalize_state, write_json_atomic

VALIDATION_SEED = 1_000_003
"""First episode seed of the validation episodes (training envs are seeded from the run's seed)."""


def fmt_ratio(x: float | None, digits: int = 4) -> str:
    """A ratio for humans: ``n/a`` for ``None``, NaN or an infinite value (e.g. 0/0)."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


class SpeedCallback(BaseCallback):
    """Progress bar, env steps per second inside the algorithm, and a printed line every
    ``print_every_s`` seconds (steps, overall steps/s, env steps/s, mean round time / T_ref)."""

    def __init__(self, total: int, progress_bar: bool = True, print_every_s: float = 30.0) -> None:
        super().__init__()
        self.total = int(total)
        self.progress_bar = progress_bar
        self.print_every_s = float(print_every_s)
        self.rollout_s = 0.0
        self.rollout_steps = 0
        self._t_roll = 0.0
        self._n_roll = 0
        self._t0 = 0.0
        self._steps0 = 0
        self._last_print = 0.0
        self.bar: Any = None
        self.ratios: deque[float] = deque(maxlen=4096)

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._last_print = self._t0
        self._steps0 = self.num_timesteps
        if self.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", desc="train",
                            dynamic_ncols=True, file=sys.stderr)

    def _on_rollout_start(self) -> None:
        self._t_roll = time.perf_counter()
        self._n_roll = self.num_timesteps

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._t_roll
        self.rollout_steps += self.num_timesteps - self._n_roll
        self.logger.record("time/env_steps_per_s", self.env_steps_per_s)
        now = time.perf_counter()
        if now - self._last_print >= self.print_every_s:
            self._last_print = now
            self.report()

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.model.n_envs)
        for info in self.locals.get("infos", ()):
            t, ref = info.get("round_time_s"), info.get("reference_time_s")
            if t is not None and ref and math.isfinite(t):
                self.ratios.append(t / ref)
        return True

    @property
    def env_steps_per_s(self) -> float:
        """Env steps per second while collecting rollouts (policy inference included, updates not)."""
        return self.rollout_steps / self.rollout_s if self.rollout_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        """Env steps per second of wall time since training started (updates included)."""
        dt = time.perf_counter() - self._t0
        return (self.num_timesteps - self._steps0) / dt if dt > 0 else 0.0

    def report(self) -> None:
        """Print one line of figures to stderr (through the progress bar when there is one)."""
        ratio = f"  round time / T_ref {np.mean(self.ratios):.3f} (last {len(self.ratios)} rounds)" if self.ratios else ""
        msg = (f"[train] {self.num_timesteps} steps  SPS {self.steps_per_s:.0f}  env steps/s "
               f"(inside {type(self.model).__name__}) {self.env_steps_per_s:.0f}{ratio}")
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.report()


class StopAtTimesteps(BaseCallback):
    """Stop as soon as the run has ``total`` env steps in all (on-policy algorithms would otherwise
    finish their rollout and overshoot; a resumed run stops at the same total)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = int(total)

    def _on_step(self) -> bool:
        if self.num_timesteps < self.total:
            return True
        loc = self.locals
        if "n_rollout_steps" in loc and loc.get("n_steps", 0) + 1 >= loc["n_rollout_steps"]:
            return True  # this step completes the rollout: let it be trained on, then learn() stops
        return False


def save_model_atomic(model: Any, path: Path) -> None:
    """``model.save`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        model.save(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_vecnormalize_atomic(vec: Any, path: Path) -> None:
    """``VecNormalize.save`` (pickle, for SB3/Zoo users) through a temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    vec.save(str(tmp))
    os.replace(tmp, path)


def save_checkpoint(model: Any, vec: Any, folder: Path, steps: int) -> Path:
    """Write checkpoint ``steps`` (normalisation JSON and pickle first, the model zip last)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"model_{steps}_steps"
    if vec is not None:
        write_json_atomic(folder / f"{stem}.norm.json", normalize_state(vec))
        save_vecnormalize_atomic(vec, folder / f"{stem}.vecnormalize.pkl")
    zpath = folder / f"{stem}.zip"
    save_model_atomic(model, zpath)
    return zpath


class AtomicCheckpointCallback(BaseCallback):
    """A checkpoint every ``every`` env steps (see module doc); earlier ones are kept."""

    def __init__(self, folder: Path, every: int) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.every = max(int(every), 1)
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            save_checkpoint(self.model, self.model.get_vec_normalize_env(), self.folder, self.num_timesteps)
            self._next = (self.num_timesteps // self.every + 1) * self.every
        return True


class EvalGapCallback(BaseCallback):
    """Periodic evaluation against classical baselines, the best model kept (see module doc).

    ``make_env``: a function returning the evaluation env (the base env, no wrappers);
    ``make_policy``: a function ``(model, vec) -> Policy`` that plays the current model with the
    current normalisation statistics; ``baselines``: names for :func:`edgesplit.agents.policies.get_policy`
    (``oracle`` among them for the gap closed); ``on_best``: called with the run's step count when
    a new best model was saved (e.g. to write its metadata).
    """

    def __init__(self, make_env: Callable[[], Any], make_policy: Callable[[Any, Any], Any], run_dir: Path,
                 every: int, episodes: int = 5, baselines: Sequence[str] = ("alternating", "oracle"),
                 seed: int = VALIDATION_SEED, on_best: Callable[[int, dict[str, Any]], None] | None = None,
                 verbose: bool = True) -> None:
        super().__init__()
        self.make_env = make_env
        self.make_policy = make_policy
        self.run_dir = Path(run_dir)
        self.every = max(int(every), 1)
        self.episodes = int(episodes)
        self.baselines = tuple(baselines)
        self.seed = int(seed)
        self.on_best = on_best
        self.print = verbose
        self.best_total = math.inf
        self.reference: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self._env: Any = None
        self._next = 0

    def _baseline_totals(self) -> dict[str, float]:
        from edgesplit.agents.evaluation import evaluate_policies
        from edgesplit.agents.policies import get_policy

        df = evaluate_policies([get_policy(n) for n in self.baselines], self._env, self.episodes, self.seed)
        return {str(k): float(v) for k, v in df.groupby("policy")["total_time_s"].mean().items()}

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every
        best_file = self.run_dir / "evaluations.csv"
        if best_file.is_file():  # resumed: the best so far is in the log
            with open(best_file, newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        self.best_total = min(self.best_total, float(row["mean_total_time_s"]))
                    except (KeyError, ValueError):
                        pass

    def evaluate_now(self) -> dict[str, Any]:
        """Evaluate the current model on the validation episodes; return the logged row."""
        from edgesplit.agents.evaluation import evaluate_policies

        if self._env is None:
            self._env = self.make_env()
            self.reference = self._baseline_totals()
        pol = self.make_policy(self.model, self.model.get_vec_normalize_env())
        df = evaluate_policies([pol], self._env, self.episodes, self.seed)
        mine = float(df["total_time_s"].mean())
        alt = self.reference.get("alternating", math.nan)
        orc = self.reference.get("oracle", math.nan)
        classical = {k: v for k, v in self.reference.items() if k != "oracle"}
        best_name = min(classical, key=classical.get) if classical else None
        best = classical[best_name] if best_name else math.nan
        row = {"timesteps": int(self.num_timesteps), "episodes": self.episodes, "mean_total_time_s": mine,
               "ratio_to_alternating": mine / alt if alt and math.isfinite(alt) else None,
               "gap_closed_vs_alternating": gap_closed(mine, alt, orc),
               "best_classical": best_name, "best_classical_total_time_s": best if best_name else None,
               "gap_closed_vs_best_classical": gap_closed(mine, best, orc),
               "oracle_total_time_s": orc if math.isfinite(orc) else None}
        return row

    def _log(self, row: dict[str, Any]) -> None:
        for k, v in row.items():
            if isinstance(v, (int, float)) and v is not None and k not in ("timesteps", "episodes"):
                self.logger.record(f"eval/{k}", float(v))
        path = self.run_dir / "evaluations.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())
        if self.print:
            print(f"[eval] {row['timesteps']} steps: mean total {row['mean_total_time_s']:.1f} s, "
                  f"vs alternating {fmt_ratio(row['ratio_to_alternating'])}x, gap closed vs alternating "
                  f"{fmt_ratio(row['gap_closed_vs_alternating'], 3)}, vs {row['best_classical']} "
                  f"{fmt_ratio(row['gap_closed_vs_best_classical'], 3)}", file=sys.stderr, flush=True)

    def _on_step(self) -> bool:
        if self.num_timesteps < self._next:
            return True
        self._next = (self.num_timesteps // self.every + 1) * self.every
        row = self.evaluate_now()
        row["new_best"] = row["mean_total_time_s"] < self.best_total
        if row["new_best"]:
            self.best_total = row["mean_total_time_s"]
            save_model_atomic(self.model, self.run_dir / "best_model.zip")
            vec = self.model.get_vec_normalize_env()
            if vec is not None:
                write_json_atomic(self.run_dir / "best_model.norm.json", normalize_state(vec))
            if self.on_best is not None:
                self.on_best(int(self.num_timesteps), row)
        self.history.append(row)
        self._log(row)
        return True
