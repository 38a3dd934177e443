"""The observation layouts of the simulated EdgeSplit environments, defined once.

Observations are feature-major: block ``b`` holds feature ``b`` of devices ``0..N-1``; some
features span several blocks (the rate history); a few scalars come last. The envs build their
observation views from these layouts, and the agents' features and networks read observations
through them, so a change of layout happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ObsLayout:
    """Named per-device features (each ``width`` blocks of ``N`` entries), then named scalars."""

    n_devices: int
    features: tuple[tuple[str, int], ...]
    scalars: tuple[str, ...]

    @property
    def device_blocks(self) -> int:
        """Blocks of ``N`` entries before the scalars."""
        return sum(w for _, w in self.features)

    @property
    def dim(self) -> int:
        """Length of the observation."""
        return self.n_devices * self.device_blocks + len(self.scalars)

    def block(self, name: str) -> slice:
        """The slice of feature ``name`` (all its blocks: ``width * N`` entries)."""
        start = 0
        for f, w in self.features:
            if f == name:
                return slice(start * self.n_devices, (start + w) * self.n_devices)
            start += w
        raise KeyError(f"observation layout: no feature {name!r}")

    def first_block(self, name: str) -> slice:
        """The slice of the first block of feature ``name`` (``N`` entries)."""
        s = self.block(name)
        return slice(s.start, s.start + self.n_devices)

    def scalar(self, name: str) -> int:
        """The index of scalar ``name``."""
        return self.n_devices * self.device_blocks + self.scalars.index(name)

    def device_columns(self) -> np.ndarray:
        """``(N, device_blocks)``: the positions of each device's features in the observation."""
        n = self.n_devices
        return np.stack([b * n + np.arange(n) for b in range(self.device_blocks)], axis=1)


def per_round_layout(n_devices: int, history: int) -> ObsLayout:
    """``EdgeSplit-v0`` and ``EdgeSplitDynamic-v0`` (see :mod:`edgesplit.envs.base`)."""
    return ObsLayout(int(n_devices), (("speed", 1), ("deepest", 1), ("rates", int(history)), ("time", 1), ("cut", 1)),
                     ("progress",))


def v1_layout(n_devices: int, history: int) -> ObsLayout:
    """``EdgeSplitDynamic-v1`` (see :class:`edgesplit.envs.dynamic_v1.EdgeSplitDynamicV1Env`)."""
    return ObsLayout(int(n_devices), (("speed", 1), ("deepest", 1), ("nominal", 1), ("rates", int(history)),
                                      ("mean_rate", 1), ("cut", 1), ("compute", 1), ("left", 1), ("sending", 1),
                                      ("time", 1)),
                     ("phase", "elapsed", "progress"))
