"""Real parallel split learning in torch: one round = every device trains with its own cut.

Device ``i`` with cut ``c_i`` holds a *client segment* (a copy of units ``1..c_i``); the edge
server holds, for that device, a *server replica* of units ``c_i+1..L``. Each iteration the client
runs forward on its batch, the cut activation goes to the server (detached, gradient-tracking),
the server computes the loss and backward, the gradient of the cut activation goes back and the
client finishes backward; both sides step their SGD optimisers. ``c_i = L`` is plain local
(FedAvg) training. At the end of the round every unit is averaged over all its copies (on the
devices that hold it and in the server replicas of the devices whose cut lies below it), weighted
by the devices' sample counts, and written back into the global model.

With plain SGD this is exactly FedAvg of the unsplit model on the same batches, whatever the
cuts (``tests/test_engine.py``): the schedule changes the time a round takes, not the learning.
Momentum buffers are kept per device and per unit across rounds (they travel with a unit when a
cut moves), so that holds with momentum too.

The pieces (:func:`client_segment`, :func:`server_segment`, :func:`client_forward`,
:func:`server_step`, :func:`client_backward`, :func:`average_units`, :func:`load_units`) are
public so that a multi-process runtime can reuse them; :class:`SplitTrainer` runs whole rounds.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesplit.datasets import ArrayDataset, normalize
from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import SplitModel

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StateDict = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- segments


class Segment(nn.Module):
    """Units ``start+1..end`` of a :class:`SplitModel` (its own copy), in execution order.

    ``units[j]`` is global unit ``start + j + 1``. A server segment of cut ``L`` is empty
    (its forward is the identity).
    """

    def __init__(self, units: Iterable[nn.Module], names: Sequence[str], start: int, n_layers: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(list(units))
        self.names = list(names)
        self.start = int(start)
        self.end = self.start + len(self.units)
        self.n_layers = int(n_layers)

    @property
    def unit_indices(self) -> range:
        """Global unit indices (1..L) held by this segment."""
        return range(self.start + 1, self.end + 1)

    def __len__(self) -> int:
        return len(self.units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        timer = self.__dict__.get("timer")
        if timer is not None:
            return timer.forward(self, x)
        for unit in self.units:
            x = unit(x)
        return x

    def unit_states(self) -> dict[int, StateDict]:
        """``{global unit index: state_dict}`` (tensors shared with the segment, not copied)."""
        return {self.start + j + 1: u.state_dict() for j, u in enumerate(self.units)}

    def named_unit_parameters(self) -> list[tuple[int, str, nn.Parameter]]:
        """``(global unit index, parameter name, parameter)`` for every trainable parameter."""
        return [(self.start + j + 1, n, p) for j, u in enumerate(self.units)
                for n, p in u.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- per-unit timing


def resolve_device(device: str | torch.device | None = "cpu") -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:1"``...) or ``"auto"`` (CUDA when available) as a torch device.

    Raises :class:`EdgeSplitError` naming ``device`` for an unknown name or CUDA without a GPU."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    else:
        text = str(device).strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise EdgeSplitError(f"device: expected cpu, cuda or auto, got {device!r}") from None
        if dev.type not in ("cpu", "cuda"):
            raise EdgeSplitError(f"device: expected cpu, cuda or auto, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EdgeSplitError(f"device: {device!r} asked for CUDA but torch sees no GPU here "
                             f"(torch {torch.__version__}); use --device cpu or auto")
    return dev


class UnitTimer:
    """Host seconds and tensor bytes of every unit, accumulated over real training steps.

    Attached to a :class:`Segment` (``segment.timer = timer``), it times each unit's forward
    with ``time.perf_counter`` and, through a gradient hook on each unit's output, the moment
    the backward pass reaches that output: unit ``l``'s backward is the time between the
    gradient of its output and the gradient of its input being ready (the first unit of a
    segment ends when ``backward`` returns, see :meth:`end_backward`; the loss's backward is
    counted with the last unit). Optimiser steps are timed per segment and spread over its
    units by parameter count (:meth:`add_step`). On CUDA every mark synchronises the device
    first, so the figures are the kernels' time, not the launch time.

    Arrays (length L, indexed unit - 1), summed since the last :meth:`reset`:
        ``fwd_s``, ``bwd_s``, ``step_s``: seconds; ``out_bytes``: bytes of each unit's output
        (per step: the activation a cut after that unit sends, and its gradient's size).
    """

    def __init__(self, n_layers: int, device: torch.device | None = None) -> None:
        self.n_layers = int(n_layers)
        self._cuda = device is not None and torch.device(device).type == "cuda"
        self.reset()

    def reset(self) -> None:
        """Zero the sums."""
        L = self.n_layers
        self.fwd_s = np.zeros(L)
        self.bwd_s = np.zeros(L)
        self.step_s = np.zeros(L)
        self.out_bytes = np.zeros(L)
        self._marks: dict[int, float] = {}
        self._open: list[tuple[int, int]] = []

    def now(self) -> float:
        """``perf_counter`` (after a CUDA synchronisation on a GPU)."""
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def unit_s(self) -> np.ndarray:
        """Forward + backward + optimiser seconds per unit."""
        return self.fwd_s + self.bwd_s + self.step_s

    def forward(self, seg: "Segment", x: torch.Tensor) -> torch.Tensor:
        """Run ``seg``'s units on ``x``, timing each and hooking its output for the backward."""
        t = self.now()
        for j, unit in enumerate(seg.units):
            g = seg.start + j
            x = unit(x)
            t1 = self.now()
            self.fwd_s[g] += t1 - t
            self.out_bytes[g] += x.numel() * x.element_size()
            if x.requires_grad:
                x.register_hook(self._hook(g))
            t = t1
        if len(seg.units):
            self._open.append((seg.start, seg.end))
        return x

    def _hook(self, g: int) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            self._marks[g] = self.now()
        return hook

    def begin_backward(self) -> float:
        """Call just before ``backward``; returns the start mark."""
        return self.now()

    def end_backward(self, t_begin: float, seg: "Segment") -> None:
        """Call right after the ``backward`` through ``seg`` returns: turn its gradient marks into
        per-unit backward seconds."""
        t_end = self.now()
        marks = self._marks
        start, end = seg.start, seg.end
        if (start, end) in self._open:
            self._open.remove((start, end))
        prev = t_begin  # the gradient of the last unit's output is ready after the loss's backward
        for g in range(end - 1, start - 1, -1):
            ready_out = marks.pop(g, prev)
            ready_in = marks.get(g - 1, t_end) if g > start else t_end
            self.bwd_s[g] += ready_in - (t_begin if g == end - 1 else ready_out)
            prev = ready_out

    def add_step(self, seg: "Segment", seconds: float) -> None:
        """Spread ``seconds`` of an optimiser step over ``seg``'s units by parameter count."""
        share = seg.__dict__.get("_param_share")
        if share is None:  # once per segment: its units' parameter counts as fractions
            counts = np.array([sum(p.numel() for p in u.parameters() if p.requires_grad) for u in seg.units], float)
            share = counts / counts.sum() if counts.sum() > 0 else counts
            seg.__dict__["_param_share"] = share
        self.step_s[seg.start:seg.end] += seconds * share


def _check_cut(model: SplitModel, cut: int) -> int:
    L = model.n_layers
    if isinstance(cut, bool) or not isinstance(cut, (int, np.integer)) or not 1 <= int(cut) <= L:
        raise EdgeSplitError(f"cut: must be an integer in 1..{L} (layers on the device), got {cut!r}")
    return int(cut)


def client_segment(model: SplitModel, cut: int) -> Segment:
    """A deep copy of units ``1..cut`` (the device side of ``cut``)."""
    cut = _check_cut(model, cut)
    return Segment(copy.deepcopy(model.units[:cut]), model.names[:cut], 0, model.n_layers)


def server_segment(model: SplitModel, cut: int) -> Segment:
    """A deep copy of units ``cut+1..L`` (the server replica for a device with ``cut``; empty if ``cut = L``)."""
    cut = _check_cut(model, cut)
    return Segment(copy.deepcopy(model.units[cut:]), model.names[cut:], cut, model.n_layers)


# ----------------------------------------------------------------------------- one split step


@dataclass
class StepResult:
    """What one split iteration produced: the loss, the logits and the gradient at the cut
    (``None`` for a cut at ``L``, which trains locally)."""

    loss: torch.Tensor
    logits: torch.Tensor
    cut_grad: torch.Tensor | None
    cut_activation: torch.Tensor | None


def client_forward(client: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Device side, forward: the cut activation (still attached to the client's graph)."""
    return client(x)


def server_step(server: nn.Module, activation: torch.Tensor, y: torch.Tensor,
                loss_fn: LossFn = F.cross_entropy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Server side: forward from the (received) cut activation, loss, backward.

    The activation is detached and made gradient-tracking, as if it came over the network.
    Returns ``(loss, logits, gradient of the cut activation)``; the server's parameter
    gradients are left in ``.grad`` for its optimiser.
    """
    h = activation.detach().requires_grad_(True)
    logits = server(h)
    loss = loss_fn(logits, y)
    loss.backward()
    return loss.detach(), logits.detach(), h.grad


def client_backward(activation: torch.Tensor, grad: torch.Tensor) -> None:
    """Device side, backward: push the received cut gradient through the client segment."""
    activation.backward(grad)


def split_step(client: Segment, server: Segment, x: torch.Tensor, y: torch.Tensor,
               loss_fn: LossFn = F.cross_entropy, timer: UnitTimer | None = None) -> StepResult:
    """One iteration of split training (no optimiser step): client forward, server forward,
    loss and backward, client backward. With an empty server segment (cut ``L``) the client
    computes the loss itself. With ``timer`` (attached to both segments) every unit's forward
    and backward are timed."""
    if len(server) == 0:
        logits = client(x)
        loss = loss_fn(logits, y)
        t = timer.begin_backward() if timer is not None else 0.0
        loss.backward()
        if timer is not None:
            timer.end_backward(t, client)
        return StepResult(loss.detach(), logits.detach(), None, None)
    h = client_forward(client, x)
    if timer is None:
        loss, logits, grad = server_step(server, h, y, loss_fn)
    else:
        ha = h.detach().requires_grad_(True)
        logits = server(ha)
        loss_t = loss_fn(logits, y)
        t = timer.begin_backward()
        loss_t.backward()
        timer.end_backward(t, server)
        loss, logits, grad = loss_t.detach(), logits.detach(), ha.grad
    if h.requires_grad:  # a client segment without parameters has nothing to learn
        t = timer.begin_backward() if timer is not None else 0.0
        client_backward(h, grad)
        if timer is not None:
            timer.end_backward(t, client)
    return StepResult(loss, logits, grad, h.detach())


# ----------------------------------------------------------------------------- aggregation


def average_units(copies: Mapping[int, Sequence[tuple[Mapping[str, torch.Tensor], float]]]
                  ) -> dict[int, StateDict]:
    """Weighted average of every unit's copies: ``{unit: [(state_dict, weight), ...]}`` ->
    ``{unit: state_dict}``.

    Floating-point entries are averaged with weights ``w / sum(w)``. Integer and boolean buffers
    (BatchNorm's ``num_batches_tracked``) get the weighted mean rounded to the nearest integer,
    in their own dtype. Weights must be finite, >= 0 and not all zero.
    """
    out: dict[int, StateDict] = {}
    for unit, items in copies.items():
        items = list(items)
        if not items:
            raise EdgeSplitError(f"average_units: unit {unit} has no copies")
        weights = [float(w) for _, w in items]
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise EdgeSplitError(f"average_units: unit {unit}: weights must be finite and >= 0, got {weights}")
        total = sum(weights)
        if total <= 0:
            raise EdgeSplitError(f"average_units: unit {unit}: weights sum to 0")
        keys = list(items[0][0].keys())
        for sd, _ in items[1:]:
            if list(sd.keys()) != keys:
                raise EdgeSplitError(f"average_units: unit {unit}: copies have different state keys")
        avg: StateDict = {}
        for k in keys:
            ref = items[0][0][k]
            if not isinstance(ref, torch.Tensor):
                avg[k] = ref
                continue
            if ref.is_floating_point() or ref.is_complex():
                acc = ref.detach().mul(weights[0] / total)
                for (sd, _), w in zip(items[1:], weights[1:]):
                    if w:
                        acc.add_(sd[k].detach(), alpha=w / total)
                avg[k] = acc
            else:
                acc64 = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
                for (sd, _), w in zip(items, weights):
                    acc64.add_(sd[k].detach().to(torch.float64), alpha=w / total)
                avg[k] = torch.round(acc64).to(ref.dtype)
        out[int(unit)] = avg
    return out


def load_units(model: SplitModel, averaged: Mapping[int, Mapping[str, torch.Tensor]]) -> None:
    """Write averaged unit states (keyed 1..L) into ``model`` in place."""
    L = model.n_layers
    for unit, sd in averaged.items():
        if not 1 <= int(unit) <= L:
            raise EdgeSplitError(f"load_units: unit {unit} outside 1..{L}")
        model.units[int(unit) - 1].load_state_dict(dict(sd), strict=True)


# ----------------------------------------------------------------------------- data streams


class DeviceStream:
    """Seeded, resumable batch order over one device's ``n`` samples: a fresh permutation per
    local epoch; the last batch of an epoch may be short. ``state()``/``set_state()`` save it."""

    def __init__(self, n: int, seed: Sequence[int] | int) -> None:
        self.n = int(n)
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(self.n)
        self.pos = 0
        self.epoch = 0

    def next_indices(self, batch_size: int) -> np.ndarray:
        """Indices of the next batch (advances the stream)."""
        if self.pos >= self.n:
            self.perm = self.rng.permutation(self.n)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + batch_size]
        self.pos += len(idx)
        return idx

    def state(self) -> dict[str, Any]:
        """A snapshot of plain values and tensors (loadable with ``torch.load(weights_only=True)``)."""
        return {"n": self.n, "rng": self.rng.bit_generator.state, "perm": torch.from_numpy(self.perm.astype(np.int64)),
                "pos": self.pos, "epoch": self.epoch}

    def set_state(self, st: Mapping[str, Any]) -> None:
        """Restore a snapshot from :meth:`state`."""
        if int(st["n"]) != self.n:
            raise EdgeSplitError(f"checkpoint: device stream over {st['n']} samples, data has {self.n}")
        self.rng.bit_generator.state = st["rng"]
        perm = st["perm"]
        self.perm = (perm.numpy() if isinstance(perm, torch.Tensor) else np.asarray(perm)).astype(np.int64).copy()
        self.pos = int(st["pos"])
        self.epoch = int(st["epoch"])


# ----------------------------------------------------------------------------- trainer


@dataclass
class RoundStats:
    """What one round did. ``cut_bytes``: activation plus gradient bytes that crossed each
    device's link (measured); ``wall_s``: host seconds for the whole round.

    With ``measure=True`` (:meth:`SplitTrainer.run_round`) also, per device, ``unit_s[i][l-1]``:
    host seconds of unit ``l``'s forward, backward and optimiser step over the round (wherever it
    ran: on the device or in its server replica), ``unit_out_bytes[i][l-1]``: bytes of unit
    ``l``'s outputs over the round (what a cut after ``l`` sends, and the gradient it gets back),
    and ``param_bytes[l-1]``: bytes of unit ``l``'s parameters (the real tensors exchanged for
    aggregation). :mod:`edgesplit.training` maps them to device and server time."""

    round: int
    cuts: list[int]
    iterations: list[int]
    samples: int
    train_loss: float
    train_acc: float
    wall_s: float
    per_device_wall_s: list[float]
    aggregate_wall_s: float
    cut_bytes: list[int] = field(default_factory=list)
    unit_s: list[list[float]] = field(default_factory=list)
    unit_out_bytes: list[list[float]] = field(default_factory=list)
    param_bytes: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _as_tensors(d: ArrayDataset | tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(d, ArrayDataset):
        return d.tensors()
    x, y = d
    x = torch.as_tensor(x)
    y = torch.as_tensor(y).long()
    if x.shape[0] != y.shape[0]:
        raise EdgeSplitError(f"device data: {x.shape[0]} inputs but {y.shape[0]} labels")
    return x, y


class SplitTrainer:
    """Parallel split learning of ``model`` over devices, one :meth:`run_round` at a time.

    ``device_data[i]`` is device ``i``'s data: an :class:`ArrayDataset` or ``(x, y)`` tensors
    (``uint8`` images are normalised with ``mean``/``std``, taken from the first ArrayDataset
    when not given; float inputs are used as they are). Aggregation weights default to the
    devices' sample counts. SGD with ``lr``, ``momentum`` and ``weight_decay`` on both sides.
    """

    def __init__(self, model: SplitModel, device_data: Sequence[ArrayDataset | tuple[torch.Tensor, torch.Tensor]],
                 batch_size: int = 32, lr: float = 0.05, momentum: float = 0.0, weight_decay: float = 0.0,
                 seed: int = 0, weights: Sequence[float] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 loss_fn: LossFn = F.cross_entropy, device: str | torch.device | None = "cpu") -> None:
        if not isinstance(model, SplitModel):
            raise EdgeSplitError("model: expected a SplitModel (see edgesplit.zoo)")
        if not device_data:
            raise EdgeSplitError("device_data: need data for at least one device")
        if batch_size < 1:
            raise EdgeSplitError(f"batch_size: must be >= 1, got {batch_size}")
        if not (lr > 0 and math.isfinite(lr)):
            raise EdgeSplitError(f"lr: must be a finite number > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise EdgeSplitError(f"momentum: must lie in [0, 1), got {momentum}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.data = [_as_tensors(d) for d in device_data]
        if mean is None or std is None:
            first = next((d for d in device_data if isinstance(d, ArrayDataset)), None)
            if first is not None:
                mean, std = first.mean, first.std
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.batch_size = int(batch_size)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.seed = int(seed)
        self.loss_fn = loss_fn
        counts = [len(y) for _, y in self.data]
        self.weights = [float(w) for w in (weights if weights is not None else counts)]
        if len(self.weights) != len(self.data):
            raise EdgeSplitError(f"weights: {len(self.weights)} weights for {len(self.data)} devices")
        if any(n < 1 for n in counts):
            raise EdgeSplitError(f"device_data: every device needs at least one sample, got counts {counts}")
        self.streams = [DeviceStream(n, [self.seed, i]) for i, n in enumerate(counts)]
        self.momentum_state: list[dict[tuple[int, str], torch.Tensor]] = [{} for _ in self.data]
        self.round = 0

    # -- data

    @property
    def n_devices(self) -> int:
        """Number of devices N."""
        return len(self.data)

    @property
    def sample_counts(self) -> list[int]:
        """Samples held by each device."""
        return [len(y) for _, y in self.data]

    def default_iterations(self) -> list[int]:
        """One local epoch per round: ``K_i = ceil(n_i / b)`` (the cost model's ``K_i``)."""
        return [math.ceil(n / self.batch_size) for n in self.sample_counts]

    def _iterations(self, iterations: int | Sequence[int] | None) -> list[int]:
        if iterations is None:
            return self.default_iterations()
        if isinstance(iterations, (int, np.integer)):
            its = [int(iterations)] * self.n_devices
        else:
            its = [int(k) for k in iterations]
        if len(its) != self.n_devices or any(k < 0 for k in its):
            raise EdgeSplitError(f"iterations: need {self.n_devices} counts >= 0, got {iterations!r}")
        return its

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the model sees them, on the trainer's device (``uint8`` normalised, floats unchanged)."""
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            if self.mean is None or self.std is None:
                return x.to(torch.float32).div_(255.0)
            return normalize(x, self.mean, self.std)
        return x

    def draw_batches(self, iterations: int | Sequence[int] | None = None) -> list[list[np.ndarray]]:
        """Advance the devices' streams: per device, the sample indices of its next batches."""
        its = self._iterations(iterations)
        return [[s.next_indices(self.batch_size) for _ in range(k)] for s, k in zip(self.streams, its)]

    def batches_for(self, device: int, index_batches: Sequence[np.ndarray]
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Materialise ``(x, y)`` batches of ``device`` from index arrays (inputs transformed)."""
        x, y = self.data[device]
        for idx in index_batches:
            ti = torch.from_numpy(np.asarray(idx, dtype=np.int64))
            yield self.transform(x[ti]), y[ti].to(self.device, non_blocking=True)

    # -- training

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        if not params:
            return None
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _load_momentum(self, device: int, seg: Segment, opt: torch.optim.Optimizer | None) -> None:
        if opt is None or self.momentum == 0:
            return
        store = self.momentum_state[device]
        for unit, name, p in seg.named_unit_parameters():
            buf = store.get((unit, name))
            if buf is not None:
                opt.state[p]["momentum_buffer"] = buf

    def _save_momentum(self, device: int, seg: Segment, opt: torch.optim.Optimizer | None) -> None:
        if opt is None or self.momentum == 0:
            return
        store = self.momentum_state[device]
        for unit, name, p in seg.named_unit_parameters():
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                store[(unit, name)] = buf

    def train_device(self, device: int, cut: int, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     timer: UnitTimer | None = None) -> tuple[Segment, Segment, dict[str, float]]:
        """Train device ``device`` with ``cut`` on ``batches`` (already transformed) from the
        current global model; returns its client segment, its server replica and stats. With
        ``timer`` every unit's forward, backward and optimiser step are timed into it."""
        client = client_segment(self.model, cut)
        server = server_segment(self.model, cut)
        if timer is not None:
            client.timer = server.timer = timer
        client.train()
        server.train()
        opt_c = self._optimizer([p for _, _, p in client.named_unit_parameters()])
        opt_s = self._optimizer([p for _, _, p in server.named_unit_parameters()])
        self._load_momentum(device, client, opt_c)
        self._load_momentum(device, server, opt_s)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        n = iters = cut_bytes = 0
        for xb, yb in batches:
            if opt_c is not None:
                opt_c.zero_grad(set_to_none=True)
            if opt_s is not None:
                opt_s.zero_grad(set_to_none=True)
            res = split_step(client, server, xb, yb, self.loss_fn, timer)
            if timer is None:
                if opt_s is not None:
                    opt_s.step()
                if opt_c is not None:
                    opt_c.step()
            else:
                for opt, seg in ((opt_s, server), (opt_c, client)):
                    if opt is not None:
                        t = timer.now()
                        opt.step()
                        timer.add_step(seg, timer.now() - t)
            b = int(yb.shape[0])
            loss_sum += res.loss.double() * b
            correct += (res.logits.argmax(1) == yb).sum()
            n += b
            iters += 1
            if res.cut_activation is not None:
                cut_bytes += 2 * res.cut_activation.numel() * res.cut_activation.element_size()
        self._save_momentum(device, client, opt_c)
        self._save_momentum(device, server, opt_s)
        if timer is not None:
            client.timer = server.timer = None
        stats = {"loss_sum": float(loss_sum), "correct": int(correct), "samples": n,
                 "iterations": iters, "cut_bytes": cut_bytes}
        return client, server, stats

    def run_round(self, cuts: Sequence[int], iterations: int | Sequence[int] | None = None,
                  batches: Sequence[Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None,
                  measure: bool = False) -> RoundStats:
        """One round: every device trains with its cut (``K_i`` iterations: one local epoch by
        default, or ``iterations``, an int for all or one per device), then every unit is averaged
        over its copies weighted by the devices' sample counts.

        ``batches`` (optional) gives each device's ``(x, y)`` batches explicitly instead of its
        seeded stream (inputs go through :meth:`transform`). A device with no batch contributes
        its unchanged copies (with its weight) to the average.
        """
        cuts = [_check_cut(self.model, c) for c in cuts]
        if len(cuts) != self.n_devices:
            raise EdgeSplitError(f"cuts: need {self.n_devices} cuts (one per device), got {len(cuts)}")
        t_round = time.perf_counter()
        if batches is None:
            index_batches = self.draw_batches(iterations)
            dev_batches: list[Iterable] = [self.batches_for(i, ib) for i, ib in enumerate(index_batches)]
        else:
            if len(batches) != self.n_devices:
                raise EdgeSplitError(f"batches: need {self.n_devices} batch lists, got {len(batches)}")
            dev_batches = [((self.transform(x), torch.as_tensor(y).long().to(self.device)) for x, y in b)
                           for b in batches]
        L = self.model.n_layers
        copies: dict[int, list[tuple[StateDict, float]]] = {l: [] for l in range(1, L + 1)}
        per_dev_wall, totals = [], {"loss_sum": 0.0, "correct": 0, "samples": 0}
        its, cut_bytes, unit_s, unit_bytes = [], [], [], []
        timer = UnitTimer(L, self.device) if measure else None
        for i, (c, b) in enumerate(zip(cuts, dev_batches)):
            t0 = time.perf_counter()
            if timer is not None:
                timer.reset()
            client, server, st = self.train_device(i, c, b, timer)
            per_dev_wall.append(time.perf_counter() - t0)
            if timer is not None:
                unit_s.append(timer.unit_s.tolist())
                unit_bytes.append(timer.out_bytes.tolist())
            for seg in (client, server):
                for unit, sd in seg.unit_states().items():
                    copies[unit].append((sd, self.weights[i]))
            for k in totals:
                totals[k] += st[k]
            its.append(st["iterations"])
            cut_bytes.append(st["cut_bytes"])
        t0 = time.perf_counter()
        with torch.no_grad():
            load_units(self.model, average_units(copies))
        agg = time.perf_counter() - t0
        self.round += 1
        n = max(totals["samples"], 1)
        return RoundStats(
            round=self.round, cuts=cuts, iterations=its, samples=int(totals["samples"]),
            train_loss=totals["loss_sum"] / n, train_acc=totals["correct"] / n,
            wall_s=time.perf_counter() - t_round, per_device_wall_s=per_dev_wall,
            aggregate_wall_s=agg, cut_bytes=cut_bytes, unit_s=unit_s, unit_out_bytes=unit_bytes,
            param_bytes=self.param_bytes() if measure else [],
        )

    def param_bytes(self) -> list[float]:
        """Bytes of each unit's trainable parameters (what aggregation exchanges per unit)."""
        return [float(sum(p.numel() * p.element_size() for p in u.parameters() if p.requires_grad))
                for u in self.model.units]

    # -- evaluation

    @torch.no_grad()
    def evaluate(self, test_loader: ArrayDataset | Iterable[tuple[torch.Tensor, torch.Tensor]],
                 batch_size: int = 500) -> tuple[float, float]:
        """``(accuracy, mean cross-entropy)`` of the global model on ``test_loader``: an
        :class:`ArrayDataset` or an iterable of ``(x, y)`` batches (``uint8`` inputs are
        normalised like the training data)."""
        if isinstance(test_loader, ArrayDataset):
            x, y = test_loader.tensors()
            it: Iterable = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))
        else:
            it = test_loader
        was = self.model.training
        self.model.eval()
        loss_sum, correct, n = 0.0, 0, 0
        try:
            for xb, yb in it:
                yb = torch.as_tensor(yb).long().to(self.device)
                out = self.model(self.transform(xb))
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
                n += int(yb.shape[0])
        finally:
            self.model.train(was)
        if n == 0:
            raise EdgeSplitError("evaluate: the test data is empty")
        return correct / n, loss_sum / n

    # -- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: model, momentum buffers, batch streams, round."""
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            "momentum": [{f"{u}|{n}": t.detach().to("cpu", copy=True) for (u, n), t in st.items()}
                         for st in self.momentum_state],
            "streams": [s.state() for s in self.streams],
            "round": self.round,
            "hyper": {"batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum,
                      "weight_decay": self.weight_decay, "seed": self.seed, "weights": list(self.weights)},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the data and model architecture must be the same)."""
        self.model.load_state_dict(state["model"])
        if len(state["streams"]) != self.n_devices:
            raise EdgeSplitError(f"checkpoint: {len(state['streams'])} devices, trainer has {self.n_devices}")
        self.momentum_state = []
        for st in state["momentum"]:
            d = {}
            for key, t in st.items():
                u, n = key.split("|", 1)
                d[(int(u), n)] = t.to(self.device, copy=True)
            self.momentum_state.append(d)
        for s, st in zip(self.streams, state["streams"]):
            s.set_state(st)
        self.round = int(state["round"])
