"""A device-shared actor-critic for stable-baselines3 (PPO/A2C): one small network for every device.

The scheduling problem treats devices alike: what matters is each device's own features (speed,
memory, link class, measured rates) and the situation of the whole round. A plain MLP over the
flattened observation must learn the same mapping N times, once per input position. Here every
device's feature vector goes through the *same* network, together with the mean of all devices'
features and the round progress (permutation-equivariant actor, permutation-invariant critic):

- actor: ``h_i = MLP([x_i, mean_j x_j, progress])``, then a shared linear head gives device ``i``'s
  action entries (one per device for the ``forecast``/``shares`` Box, two for ``flat``, ``L``
  logits for ``hybrid``);
- critic: ``MLP([mean_i g(x_i), progress])`` with ``g`` another shared per-device network.

The observation must be :func:`edgesplit.agents.environment.rate_features`' layout (``n_devices`` and
``history`` say how to read it). Use with ``policy=DeviceSharedPolicy`` and
``policy_kwargs={"n_devices": N, "history": H}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn


def device_feature_index(n_devices: int, history: int) -> tuple[np.ndarray, int]:
    """``idx[i]``: the positions of device ``i``'s features in the featurised observation, and the
    position of the round progress. Per device ``5 + 2 * history`` features: the env's ``4 + H``
    per-device blocks, then the ``H`` log-ratios and the log link class of ``rate_features``."""
    n, h = n_devices, history
    raw_blocks = 4 + h
    raw_dim = n * raw_blocks + 1
    cols = [b * n + np.arange(n) for b in range(raw_blocks)]
    cols += [raw_dim + b * n + np.arange(n) for b in range(h + 1)]
    return np.stack(cols, axis=1), n * raw_blocks


class DeviceExtractor(nn.Module):
    """Per-device shared MLPs: latent ``(B, N * hidden)`` for the actor, ``(B, hidden)`` for the critic."""

    def __init__(self, n_devices: int, history: int, hidden: int = 64) -> None:
        super().__init__()
        idx, prog = device_feature_index(n_devices, history)
        self.register_buffer("idx", torch.as_tensor(idx, dtype=torch.long), persistent=False)
        self.prog = prog
        self.n_devices = n_devices
        f = idx.shape[1]
        self.hidden = hidden
        self.pi = nn.Sequential(nn.Linear(2 * f + 1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.vf_dev = nn.Sequential(nn.Linear(2 * f + 1, hidden), nn.Tanh())
        self.vf = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.Tanh())
        self.latent_dim_pi = n_devices * hidden
        self.latent_dim_vf = hidden

    def _device_inputs(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs[:, self.idx]  # (B, N, F)
        ctx = x.mean(dim=1, keepdim=True).expand_as(x)
        prog = obs[:, self.prog:self.prog + 1]
        p = prog[:, None, :].expand(-1, self.n_devices, 1)
        return torch.cat([x, ctx, p], dim=2), prog

    def forward_actor(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, N * hidden)``: each device's latent, device-major."""
        z, _ = self._device_inputs(obs)
        return self.pi(z).flatten(1)

    def forward_critic(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)``: the pooled critic latent."""
        z, prog = self._device_inputs(obs)
        pooled = self.vf_dev(z).mean(dim=1)
        return self.vf(torch.cat([pooled, prog], dim=1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor and critic latents."""
        return self.forward_actor(obs), self.forward_critic(obs)


class DeviceHead(nn.Module):
    """A linear map shared by all devices from ``hidden`` to ``k`` outputs, laid out as the action
    space expects: ``k`` blocks of N for a Box (``flat``: cuts then shares), device-major for
    MultiDiscrete logits."""

    def __init__(self, n_devices: int, hidden: int, k: int, device_major: bool) -> None:
        super().__init__()
        self.n, self.hidden, self.k, self.device_major = n_devices, hidden, k, device_major
        self.linear = nn.Linear(hidden, k)
        nn.init.orthogonal_(self.linear.weight, gain=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, N * k)`` action parameters."""
        y = self.linear(latent.view(-1, self.n, self.hidden))  # (B, N, k)
        if not self.device_major:
            y = y.transpose(1, 2)  # (B, k, N): block-major, like [cuts N | shares N]
        return y.reshape(latent.shape[0], self.n * self.k)


class DeviceSharedPolicy(ActorCriticPolicy):
    """:class:`ActorCriticPolicy` with :class:`DeviceExtractor` and :class:`DeviceHead` (see module doc)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Any,
                 n_devices: int = 10, history: int = 3, hidden: int = 64, **kwargs: Any) -> None:
        self.n_devices = int(n_devices)
        self.history = int(history)
        self.hidden = int(hidden)
        kwargs.pop("net_arch", None)
        super().__init__(observation_space, action_space, lr_schedule, net_arch=[], **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = DeviceExtractor(self.n_devices, self.history, self.hidden)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        n = self.n_devices
        space = self.action_space
        if isinstance(space, spaces.Box):
            k, device_major = space.shape[0] // n, False
        elif isinstance(space, spaces.MultiDiscrete):
            k, device_major = int(space.nvec[0]), True
        else:
            raise ValueError(f"DeviceSharedPolicy: unsupported action space {space}")
        if (isinstance(space, spaces.Box) and space.shape[0] % n) or \
                (isinstance(space, spaces.MultiDiscrete) and len(space.nvec) != n):
            raise ValueError(f"DeviceSharedPolicy: action space {space} does not split into {n} devices")
        self.action_net = DeviceHead(n, self.hidden, k, device_major)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(n_devices=self.n_devices, history=self.history, hidden=self.hidden)
        data.pop("net_arch", None)
        return data
