"""EdgeSplit testbed: scheduling parallel split learning on heterogeneous edge devices.

The core library: layer profiles, scenarios, the round-time cost model, schedulers (the paper's
alternating algorithm, the exact optimum and baselines), the split-training engine and the CLI.
It never imports gymnasium or stable-baselines3.
"""

from edgesplit.errors import EdgeSplitError, InfeasibleError, ProfileError, ScenarioError

__version__ = "0.1.0"

__all__ = ["EdgeSplitError", "InfeasibleError", "ProfileError", "ScenarioError", "__version__"]
