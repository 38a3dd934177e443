"""Shared fixtures: small random problem instances built independently of the library's generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Device, Scenario, Server

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_profile(rng: np.random.Generator, n_layers: int) -> LayerProfile:
    """A random but plausible profile: per-sample seconds, bytes."""
    return LayerProfile(
        names=tuple(f"unit{i + 1}" for i in range(n_layers)),
        fwd_s=rng.uniform(1e-5, 1e-3, n_layers),
        bwd_s=rng.uniform(1e-5, 2e-3, n_layers),
        activation_bytes=rng.uniform(1e2, 2e5, n_layers),
        param_bytes=rng.uniform(1e3, 5e6, n_layers),
    )


def random_scenario(rng: np.random.Generator, n_devices: int, n_layers: int,
                    tight_memory: bool = True) -> Scenario:
    """Random devices; with ``tight_memory`` some devices cannot hold every cut."""
    prof = random_profile(rng, n_layers)
    need = 3 * np.cumsum(prof.param_bytes) + 16 * np.cumsum(prof.activation_bytes)
    devices = []
    for i in range(n_devices):
        mem = rng.uniform(need[0], need[-1] * 1.2) if tight_memory else need[-1] * 10
        devices.append(Device(f"d{i}", float(rng.uniform(0.02, 1.0)), float(mem),
                              float(rng.uniform(1e6, 1e8)), int(rng.integers(16, 400))))
    server = Server(float(rng.uniform(1.0, 20.0)), str(rng.choice(["dedicated", "shared"])))
    return Scenario(prof, 16, tuple(devices), server)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``):
    these are correctness checks on tiny models, which gain nothing from more threads, and on a
    busy 2-core machine OpenMP spinning makes them several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
