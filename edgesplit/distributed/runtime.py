"""Compatibility module: the cluster runtime lives in :mod:`~edgesplit.distributed.server` (rank 0),
:mod:`~edgesplit.distributed.device` (ranks 1..N) and :mod:`~edgesplit.distributed.common` (shared
pieces). Import from those; this module only re-exports them for older code.
"""

from edgesplit.distributed.common import (  # noqa: F401
    PlainSGD,
    load_train_data,
    make_optimizer,
    prewarm,
    stderr_log,
    trace,
    zoo_dataset,
)
from edgesplit.distributed.device import ClusterDevice  # noqa: F401
from edgesplit.distributed.server import ClusterServer  # noqa: F401
