"""Compatibility names: the contents of this module moved, split by concern.

- trace families and splits: :mod:`edgesplit.traces` (``split_traces``, ``load_trace_list``,
  ``family_of_file``);
- the observation layout: :mod:`edgesplit.envs.layout`; rate features: :mod:`edgesplit.agents.features`;
- action wrappers (``ForecastAction`` included), each under one name: :mod:`edgesplit.envs.wrappers`;
- training rewards: :mod:`edgesplit.agents.rewards`;
- env factories: :mod:`edgesplit.agents.factories`.

``fast_exact_plan`` (a grid-search copy of the ``exact`` scheduler) is gone: the ``exact``
scheduler of :mod:`edgesplit.schedulers` is used everywhere; the name below calls it.
"""

from __future__ import annotations

import numpy as np

from edgesplit.costmodel import CostModel
from edgesplit.envs.wrappers import FORECAST_RANGE, WRAPPER_NAMES, ForecastAction  # noqa: F401
from edgesplit.schedulers import get_scheduler
from edgesplit.traces import family_of_file, load_trace_list, split_traces  # noqa: F401
from edgesplit.agents.factories import action_wrapper, env_kwargs, make_agent_env, make_base_env  # noqa: F401
from edgesplit.agents.features import (FEATURES_VERSION, LOG_RATIO_CLIP, RateFeatures, feature_dim,  # noqa: F401
                                       nominal_rates_bps, rate_features)
from edgesplit.agents.rewards import REWARDS, CounterfactualReward  # noqa: F401

TEST_FRACTION = 0.3
"""Fraction of the traces of each family held out by :func:`split_traces` (``test``)."""


def trace_family(name: str) -> str:
    """The family of a trace file by name (:func:`edgesplit.traces.family_of_file`)."""
    return family_of_file(name, "hsdpa")


def fast_exact_plan(cm: CostModel) -> tuple[np.ndarray, np.ndarray]:
    """(cuts 1..L, shares) of :mod:`edgesplit.schedulers`' ``exact`` plan (kept as a name for old callers)."""
    plan = get_scheduler("exact").plan(cm)
    return plan.cuts, plan.shares
