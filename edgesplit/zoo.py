"""Splittable models: an ordered list of *cut units* (the blocks a cut may fall between).

A cut ``c`` in ``1..L`` puts units ``1..c`` on the device and ``c+1..L`` on the server.
``build_model(name, dataset)`` returns a :class:`SplitModel`; a user's own ``nn.Sequential``
(or list of modules) becomes one with :meth:`SplitModel.from_modules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from edgesplit.errors import EdgeSplitError


@dataclass(frozen=True)
class DatasetShape:
    """Input shape and class count of a dataset."""

    channels: int
    size: int
    num_classes: int


DATASET_SHAPES: dict[str, DatasetShape] = {
    "cifar10": DatasetShape(3, 32, 10),
    "mnist": DatasetShape(1, 28, 10),
    "fashion_mnist": DatasetShape(1, 28, 10),
}


class SplitModel(nn.Module):
    """A model as an ordered list of named cut units.

    ``units[l - 1]`` is unit ``l``. ``forward(x)`` runs all of them; ``forward_range(x, a, b)``
    runs units ``a+1..b`` (so ``forward_range(x, 0, c)`` is the device side of cut ``c`` and
    ``forward_range(h, c, L)`` the server side).
    """

    def __init__(self, units: Iterable[nn.Module], names: Iterable[str] | None = None,
                 name: str = "custom") -> None:
        super().__init__()
        self.units = nn.ModuleList(list(units))
        if len(self.units) < 1:
            raise EdgeSplitError("model: a splittable model needs at least one unit")
        self.names = list(names) if names is not None else [f"unit{i + 1}" for i in range(len(self.units))]
        if len(self.names) != len(self.units):
            raise EdgeSplitError(f"model: {len(self.names)} names for {len(self.units)} units")
        self.model_name = name

    @classmethod
    def from_modules(cls, modules: nn.Sequential | Iterable[nn.Module], name: str = "custom") -> "SplitModel":
        """Wrap a user's ``nn.Sequential`` (its children are the units, named by their keys) or a list."""
        if isinstance(modules, nn.Sequential):
            items = list(modules.named_children())
            return cls([m for _, m in items], [k for k, _ in items], name=name)
        mods = list(modules)
        return cls(mods, None, name=name)

    @property
    def n_layers(self) -> int:
        """Number of cut units L."""
        return len(self.units)

    def forward_range(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Run units ``start+1..end`` (0 <= start <= end <= L)."""
        for unit in self.units[start:end]:
            x = unit(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.forward_range(x, 0, self.n_layers)


def _small_cnn(shape: DatasetShape) -> SplitModel:
    """A small CNN for 28x28 (and 32x32) inputs: 2 conv blocks and 2 dense layers."""
    flat = 64 * (shape.size // 4) ** 2
    units = [
        nn.Sequential(nn.Conv2d(shape.channels, 32, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU()),
        nn.Linear(128, shape.num_classes),
    ]
    names = ["conv1", "conv2_pool", "conv3_pool", "fc1", "fc2"]
    return SplitModel(units, names, name="small_cnn")


MODEL_BUILDERS: dict[str, Callable[[DatasetShape], SplitModel]] = {
    "small_cnn": _small_cnn,
}


def dataset_shape(dataset: str) -> DatasetShape:
    """Shape of a known dataset; raises naming the allowed values."""
    if dataset not in DATASET_SHAPES:
        raise EdgeSplitError(f"dataset: unknown {dataset!r}; choose one of {', '.join(DATASET_SHAPES)}")
    return DATASET_SHAPES[dataset]


def build_model(name: str, dataset: str = "cifar10", seed: int | None = None) -> SplitModel:
    """Build zoo model ``name`` for ``dataset``'s input shape (weights seeded if ``seed`` is given)."""
    if name not in MODEL_BUILDERS:
        raise EdgeSplitError(f"model: unknown {name!r}; choose one of {', '.join(MODEL_BUILDERS)}")
    shape = dataset_shape(dataset)
    if seed is not None:
        torch.manual_seed(seed)
    return MODEL_BUILDERS[name](shape)
