"""Tuning ``pf`` (the strongest classical v1 policy) on training families only.

Issue 9 asks for ``pf``'s exponent and window "tuned on training families only". The
leave-one-family-out study (``experiments/rl_vs_classical.py``) calls :func:`tune_pf` once per
fold on the four families the fold trains on, and judges the tuned ``pf`` (``pf-tuned``) on the
fifth; the learned tilt of that fold starts from the same tuned rule. ``python -m
experiments.tune_pf`` runs it from the command line.

Score of a configuration: the mean over families of the mean over episodes of
``log(total time / static's total time)`` on the same episodes (every family weighs the same,
whatever its number of traces); each episode has every device on one family (as the study judges).
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

PF_GRID: dict[str, tuple[float, ...]] = {
    "exponent": (1.0, 2.0, 4.0, 6.0),
    "window_s": (30.0, 60.0, 120.0),
    "prior_s": (0.0, 1800.0, math.inf),
}
"""The default grid: ``pf``'s exponent, averaging window (s) and planning prior (s, see
:func:`edgesplit.agents.classical.shrunk_mean_rates`)."""


@dataclass(frozen=True)
class PFParams:
    """``pf``'s parameters (keyword arguments of :class:`edgesplit.agents.classical.ProportionalFairPolicy`)."""

    exponent: float
    window_s: float
    prior_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-safe (``inf`` as the string ``"inf"``)."""
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PFParams":
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError`` naming them."""
        bad = sorted(set(d) - {"exponent", "window_s", "prior_s"})
        if bad:
            raise ValueError(f"pf parameters: unknown keys {bad}; allowed: exponent, window_s, prior_s")
        return cls(**{k: float(v) for k, v in d.items()})


def tune_pf(families: Sequence[Any], episodes: int = 8, rounds: int = 5, n_devices: int = 10, seed: int = 7000,
            grid: dict[str, Sequence[float]] | None = None, progress: bool = True) -> tuple[PFParams, list[dict[str, Any]]]:
    """The grid point of ``pf`` with the best score (module doc) on ``families``
    (:class:`edgesplit.traces.TraceFamily` objects), and one row per grid point (sorted, best first).
    Episodes: seeds ``seed .. seed + episodes - 1`` on every family."""
    import gymnasium as gym

    from edgesplit import envs  # noqa: F401  (registers the ids)
    from edgesplit.agents.evaluation import run_episode
    from edgesplit.agents.policies import get_policy

    if not families:
        raise ValueError("families: need at least one family to tune on")
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {episodes}")
    grid = dict(PF_GRID if grid is None else grid)
    bad = sorted(set(grid) - {"exponent", "window_s", "prior_s"})
    if bad:
        raise ValueError(f"grid: unknown parameters {bad}; allowed: exponent, window_s, prior_s")
    points = [PFParams(**dict(zip(grid, vals))) for vals in itertools.product(*grid.values())]
    seeds = range(seed, seed + episodes)
    scores = np.zeros((len(points), len(families)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(points) * len(families), desc="tuning pf", file=sys.stderr, leave=False)
    for j, fam in enumerate(families):
        env = gym.make("edgesplit/EdgeSplitDynamic-v1", n_devices=n_devices, traces=[fam], rounds=rounds)
        static = np.array([run_episode(env, get_policy("static"), s).total_time_s for s in seeds])
        for i, p in enumerate(points):
            pol = get_policy("pf", **asdict(p))
            tot = np.array([run_episode(env, pol, s).total_time_s for s in seeds])
            scores[i, j] = float(np.mean(np.log(tot / static)))
            if bar is not None:
                bar.update()
        env.close()
    if bar is not None:
        bar.close()
    mean = scores.mean(axis=1)
    order = np.argsort(mean, kind="stable")
    rows = [{**asdict(points[i]), "log_ratio_to_static": float(mean[i]),
             **{f"log_ratio_to_static[{fam.name}]": float(scores[i, j]) for j, fam in enumerate(families)}}
            for i in order]
    return points[int(order[0])], rows
