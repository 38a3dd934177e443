"""Learned and classical schedulers behind one policy interface, their training and evaluation.

- :mod:`edgesplit.agents.policies`: :class:`~edgesplit.agents.policies.Policy` and :func:`~edgesplit.agents.policies.get_policy`
  (``alternating``, ``exact``, ``static``, ``mpc``, ``mpc-harmonic``, ``robust-mpc``, ``pf``, ``psl``,
  ``random``, the reference ``oracle``, ``learned``, a saved path);
- :mod:`edgesplit.agents.classical`: the classical policies of ``EdgeSplitDynamic-v1`` (two time scales);
- :mod:`edgesplit.agents.classical_oracle`: v1's oracle (LP on the future rates, bisection on T);
- :mod:`edgesplit.agents.environment`: the envs as agents see them (rate features, the ``forecast`` action,
  trace splits);
- :mod:`edgesplit.agents.training`: ``edgesplit train-agent`` (stable-baselines3 PPO/A2C/SAC/TD3);
- :mod:`edgesplit.agents.evaluation`: ``edgesplit evaluate`` (same episodes for every policy; IQM and
  stratified bootstrap CIs; ``run_episode``, ``evaluate_policies``, ``evaluate_v1``, ``summarize_v1``).

The shipped policy lives in ``agents/shipped`` (``--policy learned``); ``docs/agents.md`` says how
it was trained and what it achieves.
"""

from typing import Any

__all__ = ["CLASSICAL", "LearnedPolicy", "Policy", "get_policy"]


def __getattr__(name: str) -> Any:
    """Import :mod:`edgesplit.agents.policies` on first use, so that ``edgesplit --help`` (which
    finds ``edgesplit.agents.commands``) does not import gymnasium, torch or stable-baselines3."""
    if name in __all__:
        from edgesplit.agents import policies

        return getattr(policies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
