"""Learned and classical schedulers behind one policy interface, their training and evaluation.

- :mod:`agents.policies`: :class:`~agents.policies.Policy` and :func:`~agents.policies.get_policy`
  (``alternating``, ``exact``, ``static``, ``oracle``, ``psl``, ``random``, ``learned``, a saved path);
- :mod:`agents.environment`: the envs as agents see them (rate features, the ``forecast`` action,
  trace splits);
- :mod:`agents.training`: ``edgesplit train-agent`` (stable-baselines3 PPO/A2C/SAC/TD3);
- :mod:`agents.evaluation`: ``edgesplit evaluate`` (same episodes for every policy).

The shipped policy lives in ``agents/shipped`` (``--policy learned``); ``docs/agents.md`` says how
it was trained and what it achieves.
"""

from agents.policies import CLASSICAL, LearnedPolicy, Policy, get_policy

__all__ = ["CLASSICAL", "LearnedPolicy", "Policy", "get_policy"]
