"""Real multi-process split learning on ``torch.distributed`` (gloo over TCP).

One server rank and N device ranks run the schedule of any scheduler: activations, cut gradients
and client-side weights cross process (and host) boundaries. Devices emulate their speed (compute,
then wait) and their link share (a token bucket on everything they send and receive), and every
round is measured beside the cost model's prediction.

Modules:

- :mod:`~edgesplit.distributed.protocol`: message framing (run id, version, checksums) and errors
- :mod:`~edgesplit.distributed.transport`: rendezvous on a TCPStore, gloo point-to-point messages
- :mod:`~edgesplit.distributed.ratelimit`: the token bucket
- :mod:`~edgesplit.distributed.emulation`: compute-speed emulation
- :mod:`~edgesplit.distributed.server`: the server (rank 0): rounds, aggregation, fault handling
- :mod:`~edgesplit.distributed.device`: a device (ranks 1..N): its segment, its data, its emulated speed and link
- :mod:`~edgesplit.distributed.common`: pieces both sides share (weights messages, optimiser, data)
- :mod:`~edgesplit.distributed.checkpoint`: per-round checkpoints and resume
- :mod:`~edgesplit.distributed.planning`: host calibration, effective scenario, prediction
- :mod:`~edgesplit.distributed.launcher`: 1 + N processes on this machine, or one rank per host

See ``docs/distributed.md``.
"""

from edgesplit.distributed.config import DeviceSpec, Fault, RunConfig
from edgesplit.distributed.protocol import ProtocolError, RunMismatchError

__all__ = ["DeviceSpec", "Fault", "ProtocolError", "RunConfig", "RunMismatchError"]
