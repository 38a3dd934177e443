"""Pieces shared by the server (:mod:`~edgesplit.distributed.server`) and the device
(:mod:`~edgesplit.distributed.device`) sides of a cluster run: logging, the weights messages
(checked against the receiver's own model), the optimiser, the training data and the pre-fork
warm-up.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from edgesplit.distributed.config import RunConfig
from edgesplit.distributed.protocol import ProtocolError, pack_state, unpack_states
from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import build_model

Log = Callable[[str], None]
SETUP_ROUND = 0
_T0 = time.perf_counter()


def trace(what: str) -> None:
    """With ``EDGESPLIT_CLUSTER_TRACE=1``, print a timestamped progress line to stderr (debugging)."""
    if os.environ.get("EDGESPLIT_CLUSTER_TRACE"):
        print(f"[trace {os.getpid()} {time.perf_counter() - _T0:8.3f}] {what}", file=sys.stderr, flush=True)


def stderr_log(prefix: str) -> Log:
    """A logger that prints ``[prefix] message`` to stderr."""

    def log(msg: str) -> None:
        print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)

    return log


def zoo_dataset(dataset: str) -> str:
    """The zoo's dataset key (input shape) of a dataset name (``synthetic_mnist`` -> ``mnist``)."""
    from edgesplit.datasets import ZOO_DATASET

    if dataset not in ZOO_DATASET:
        raise EdgeSplitError(f"dataset: unknown {dataset!r}; choose one of {', '.join(ZOO_DATASET)}")
    return ZOO_DATASET[dataset]


def unit_tensors(states: dict[int, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Name the tensors of per-unit state dicts ``u<unit>/<key>`` for one message. A unit without
    state (a pooling layer, an activation) contributes nothing: the receiver knows it from its own
    model (:func:`units_from_tensors`)."""
    out: dict[str, torch.Tensor] = {}
    for unit, sd in states.items():
        out.update(pack_state(f"u{unit}", sd))
    return out


UnitLayout = dict[int, dict[str, tuple[tuple[int, ...], torch.dtype]]]


def unit_layout(model: torch.nn.Module, units: range) -> UnitLayout:
    """``{unit: {key: (shape, dtype)}}`` of ``model``'s units: what a weights message must hold."""
    return {u: {k: (tuple(v.shape), v.dtype) for k, v in model.units[u - 1].state_dict().items()} for u in units}


def units_from_tensors(tensors: dict[str, torch.Tensor], layout: UnitLayout,
                       who: str) -> dict[int, dict[str, torch.Tensor]]:
    """Inverse of :func:`unit_tensors`, checked against ``layout`` (the receiver's own model): every
    unit of the layout, with exactly its keys, shapes and dtypes; units without state come back as
    empty dicts. Raises :class:`ProtocolError` naming what is wrong and who sent it."""
    got: dict[int, dict[str, torch.Tensor]] = {}
    for prefix, sd in unpack_states(tensors).items():
        if not prefix.startswith("u") or not prefix[1:].isdigit():
            raise ProtocolError(f"malformed weights from {who}: unit prefix {prefix!r}")
        got[int(prefix[1:])] = sd
    with_state = sorted(u for u, spec in layout.items() if spec)
    if sorted(got) != with_state:
        raise ProtocolError(f"malformed weights from {who}: units {sorted(got)}, expected {with_state} "
                            f"(units {sorted(layout)} of which {with_state} have state)")
    states: dict[int, dict[str, torch.Tensor]] = {}
    for u, spec in sorted(layout.items()):
        sd = got.get(u, {})
        if sorted(sd) != sorted(spec):
            raise ProtocolError(f"malformed weights from {who}: unit {u} has keys {sorted(sd)}, expected {sorted(spec)}")
        for k, (shape, dtype) in spec.items():
            t = sd[k]
            if tuple(t.shape) != shape or t.dtype != dtype:
                raise ProtocolError(f"malformed weights from {who}: unit {u} {k} is {t.dtype} {tuple(t.shape)}, "
                                    f"expected {dtype} {shape}")
        states[u] = sd
    return states


def model_units(model: torch.nn.Module, units: range) -> dict[int, dict[str, torch.Tensor]]:
    """Detached copies of the state of ``model``'s units ``units`` (1-based)."""
    return {u: {k: v.detach().clone() for k, v in model.units[u - 1].state_dict().items()} for u in units}


class PlainSGD:
    """SGD with optional momentum: the same update as ``torch.optim.SGD`` (``buf = m*buf + g``,
    first ``buf = g``; ``p -= lr*buf``), without it. Constructing a ``torch.optim`` optimiser
    imports ``torch._dynamo`` (over 5 s per process on a small host), which would dominate the
    start of every worker."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, momentum: float = 0.0) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.buffers: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def step(self) -> None:
        """Apply one update from the parameters' ``.grad``."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.momentum:
                buf = self.buffers.get(i)
                if buf is None:
                    buf = self.buffers[i] = g.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(g)
                g = buf
            p.add_(g, alpha=-self.lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients."""
        for p in self.params:
            p.grad = None


def make_optimizer(module: torch.nn.Module, lr: float, momentum: float) -> PlainSGD | None:
    """A :class:`PlainSGD` over ``module``'s trainable parameters (``None`` if it has none)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return PlainSGD(params, lr, momentum) if params else None


def load_train_data(dataset: str, data_dir: str | None, seed: int, total: int) -> Any:
    """The training split of ``dataset`` (an :class:`~edgesplit.datasets.ArrayDataset`) through the
    one per-process dataset lookup (:func:`edgesplit.datasets.get_dataset`): the launcher's zygote
    loads it once before forking, so the devices share it. Treat it as read-only."""
    from edgesplit.datasets import SYNTHETIC_SIZES, get_dataset

    size = max(total, SYNTHETIC_SIZES["train"]) if dataset.startswith("synthetic") else None
    return get_dataset(dataset, "train", data_dir, synthetic_size=size, seed=seed)


def prewarm(cfg: RunConfig, data_dir: str | None = None) -> None:
    """Do once, before forking the workers, what every worker would otherwise do on its own: the
    lazy imports behind the first optimiser step and the first forward/backward (seconds each on a
    small host), and loading the training data. Runs with one torch thread, so no thread pool
    exists at fork time."""
    torch.set_num_threads(1)
    model = build_model(cfg.model, zoo_dataset(cfg.dataset), seed=cfg.seed)
    from edgesplit.zoo import dataset_shape

    s = dataset_shape(zoo_dataset(cfg.dataset))
    opt = make_optimizer(model, cfg.lr, cfg.momentum)
    assert opt is not None
    x = torch.randn(2, s.channels, s.size, s.size)
    F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long)).backward()
    h = model.forward_range(x, 0, 1)
    h.backward(torch.ones_like(h))  # backward with a given gradient (a device's) imports sympy once
    opt.step()
    copy.deepcopy(model)
    try:
        load_train_data(cfg.dataset, data_dir or cfg.data_dir, cfg.seed, sum(d.samples for d in cfg.devices))
    except EdgeSplitError:
        pass  # each device reports a missing dataset itself, naming where it looked


COMPUTE_CHOICES = ("cpu", "cuda", "auto")


def choose_compute(requested: str, server_cuda: bool, hellos: dict[int, dict]) -> torch.device:
    """Where every rank computes: ``cpu``; ``cuda`` (every rank must have a CUDA device, else one
    error naming the first rank without); ``auto`` (CUDA only if the server and every device have
    one, else CPU). ``hellos`` are the devices' HELLO infos (``cuda``: bool)."""
    if requested not in COMPUTE_CHOICES:
        raise EdgeSplitError(f"--device: must be one of {', '.join(COMPUTE_CHOICES)}, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    missing = [f"device rank {r} (host {info.get('host', '?')})" for r, info in sorted(hellos.items())
               if not info.get("cuda")]
    if not server_cuda:
        missing.insert(0, "the server (rank 0)")
    if requested == "cuda" and missing:
        raise EdgeSplitError(f"--device cuda: {missing[0]} has no CUDA device; use --device auto to fall back to "
                             "the CPU where a rank has none")
    return torch.device("cuda" if not missing else "cpu")

