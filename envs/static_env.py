"""``EdgeSplit-v0``: parallel split learning with link rates fixed within an episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.costmodel import transfer_seconds
from edgesplit.devices import GeneratorConfig
from edgesplit.profiles import LayerProfile
from edgesplit.scenario import Scenario
from edgesplit.envs.base import DEFAULT_ROUNDS, MAX_OBS, EdgeSplitBaseEnv


class EdgeSplitEnv(EdgeSplitBaseEnv):
    """
    ## Description

    One step is one training round of parallel split learning (EdgeSplit, Zhang et al., ICNC 2024):
    N heterogeneous edge devices each run the first ``c_i`` layers of a DNN and share one link to
    an edge server, device ``i`` holding the share ``beta_i`` of the band. The round takes
    ``T = max_i A_i(c_i) + V_i(c_i) / (beta_i * rate_i)`` seconds (compute plus traffic, the cost
    model of DESIGN.md, evaluated from :class:`edgesplit.costmodel.CostModel`'s arrays). The link
    rates stay fixed for the whole episode, so the best plan is the same every round; the task is
    to find it. An episode draws a fresh set of devices from
    :func:`edgesplit.devices.generate_scenario` (speeds, memories and link rates, or catalogue device
    classes with their own per-layer profiles) with the env's ``np_random``, unless a fixed
    ``scenario`` is given (whose devices may carry their own per-layer profiles).

    ## Action Space

    A ``Dict``:

    - ``"cuts"``: ``MultiDiscrete([L] * N)``. Entry ``k`` in ``0..L-1`` means **cut ``k + 1``**:
      the device runs layers ``1..k+1`` (``k = L - 1`` is the whole model, plain FedAvg).
    - ``"shares"``: ``Box(0, 1, (N,), float32)``: the bandwidth shares. They are **divided by their
      sum** before use (the whole band is always handed out); shares that are all 0 raise
      ``ValueError``. A share of exactly 0 leaves that device without a link: the round never ends
      (see Episode End).

    A cut deeper than a device's memory allows is **masked**: clipped to the deepest cut that fits
    (``info["memory_clipped"]`` says where). NaN or infinite entries, cut indices outside
    ``0..L-1``, negative shares, wrong shapes or a missing key raise ``ValueError`` naming the
    entry. Wrappers in :mod:`edgesplit.envs.wrappers` give SB3-ready ``Box`` / ``MultiDiscrete`` spaces.

    ## Observation Space

    A ``Box(0, high, (N * 5 + 1,), float32)``, feature-major (see :mod:`edgesplit.envs.base`):

    | Num              | Observation                                          | Min | Max |
    |------------------|------------------------------------------------------|-----|-----|
    | 0 .. N-1         | speed ``s_i / max_j s_j``, ``s_i = F(L)/F_i(L)``     | 0   | 1   |
    | N .. 2N-1        | deepest memory-feasible cut ``/ L``                  | 0   | 1   |
    | 2N .. 3N-1       | link rate ``rate_i / max_j rate_j``                  | 0   | 10  |
    | 3N .. 4N-1       | last round's device time ``T_i / T_ref`` (10 if inf) | 0   | 10  |
    | 4N .. 5N-1       | cut in place ``c_i / L``                             | 0   | 1   |
    | 5N               | round progress ``rounds done / rounds``              | 0   | 1   |

    ## Rewards

    ``-T / T_ref`` per round, where ``T_ref`` is the round time of the paper's alternating
    algorithm on this episode's scenario (computed once at reset; ``info["reference_time_s"]``).
    So the alternating plan earns -1 per round and a better plan more than -1. The penalty is
    capped at ``max_penalty`` (default 10) per round; a round that never ends (a device with bits
    to send and share 0) earns ``-max_penalty`` for every round left, this one included.

    ## Starting State

    The devices of the episode; the cuts in place and the "last device times" are those of the
    alternating plan (so ``info`` at reset carries ``cuts`` and ``reference_time_s``); round 0.

    ## Episode End

    1. Termination: ``rounds`` rounds are done (the training job is over; progress is observed).
       Stepping a terminated episode without ``reset()`` raises ``gymnasium.error.ResetNeeded``.
    2. Termination: a round never ends (``info["stalled"]``), see Rewards.
    3. Truncation: the registered ``TimeLimit`` (``max_episode_steps = 100``, the default
       ``rounds``). If you raise ``rounds``, pass ``max_episode_steps`` to ``gym.make`` too.

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> env = gym.make("EdgeSplit-v0", n_devices=10, model="vgg19", rounds=100)
    >>> obs, info = env.reset(seed=0)
    ```

    | Parameter            | Type                | Default        | Description                                          |
    |----------------------|---------------------|----------------|------------------------------------------------------|
    | `n_devices`          | int                 | 10             | N (taken from `scenario` when given)                 |
    | `model`              | str or LayerProfile | `"vgg19"`      | a shipped profile name (`edgesplit/data/profiles`)   |
    | `rounds`             | int                 | 100            | rounds per episode                                   |
    | `scenario`           | Scenario/path/dict  | None           | a fixed scenario instead of a fresh draw per episode |
    | `generator`          | GeneratorConfig/dict | None          | how episodes draw devices (`edgesplit.devices.GeneratorConfig`) |
    | `**generator_options` | | generator defaults | its fields as keywords: `heterogeneity`, `rate_range_bps`, `memory_range_bytes`, `fastest_speed`, `samples`, `batch_size`, `server_speed`, `sharing`, `device_classes` (catalogue classes to draw devices from, with their per-layer profiles where measured), `server_class` |
    | `migration_factor`   | float               | 0.0            | migration cost (see `EdgeSplitDynamic-v0`); 0 = free |
    | `max_penalty`        | float               | 10.0           | cap of ``T / T_ref`` in the reward                   |
    | `render_mode`        | str                 | None           | `"ansi"`: `render()` returns a text summary          |

    ``reset(options={"scenario": s})`` plays one episode on the scenario ``s`` (same N and L).

    ``info`` of every step: ``round``, ``round_time_s``, ``per_device_time_s``, ``traffic_bits``
    (per device, the round's bits), ``migration_bits`` (per device), ``sim_clock_s`` (simulated
    seconds since the episode began), ``alternating_round_time_s`` (the alternating plan's round
    time on the same rates), ``reference_time_s``, ``cuts`` (1..L, after the memory mask),
    ``shares`` (normalised), ``memory_clipped`` (bool per device), ``stalled``.
    """

    def __init__(
        self,
        n_devices: int | None = None,
        model: str | LayerProfile = "vgg19",
        rounds: int = DEFAULT_ROUNDS,
        scenario: Scenario | str | Path | dict | None = None,
        generator: GeneratorConfig | dict | None = None,
        migration_factor: float = 0.0,
        max_penalty: float = 10.0,
        render_mode: str | None = None,
        **generator_options: Any,
    ) -> None:
        super().__init__(n_devices=n_devices, model=model, rounds=rounds, scenario=scenario,
                         generator=generator, migration_factor=migration_factor, max_penalty=max_penalty,
                         history=1, render_mode=render_mode, **generator_options)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: draw (or take) the scenario, plan the alternating reference."""
        super().reset(seed=seed)
        cm, plan = self._episode_costs(options)
        rates = cm.rate_bps
        self._known = rates.copy()
        self._o_rate0[:] = np.minimum(rates / rates.max(), MAX_OBS)
        self._cur = (plan.cuts - 1).astype(np.intp)
        np.minimum(plan.per_device_time_s * self._inv_ref, MAX_OBS, out=self._o_time)
        self._o_cut[:] = self._cutnorm[self._cur]
        self._obs[-1] = 0.0
        self._round = 0
        self._clock = 0.0
        self._last = None
        info = {"reference_time_s": self.reference_time_s,
                "alternating_round_time_s": self.reference_time_s,
                "cuts": plan.cuts.copy(), "sim_clock_s": 0.0}
        return self._observation(), info

    def step(self, action: dict) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run one round with the given cuts and shares."""
        self._check_running()
        cuts, shares, zero, hi = self._parse_action(action)
        eff, clipped = self._mask(cuts, hi)
        flat = self._rowoff + eff
        traffic = self._V[flat]
        rate = shares * self._rates  # each device's part of the band (rates are > 0, see reset)
        if zero:  # x / 0 = inf for a device with traffic and no share, never a NaN
            per = self._A[flat] + transfer_seconds(traffic, rate)
        else:
            per = self._A[flat] + traffic / rate  # T_i = A_i(c_i) + V_i(c_i) / (beta_i rate_i)
        if self.migration_factor > 0:
            mig = np.abs(self._mig_table[eff] - self._mig_table[self._cur])
            per = per + transfer_seconds(mig, rate)
        else:
            mig = np.zeros(self.n_devices)
        reward, terminated, info = self._finish_step(eff, shares, clipped, per, traffic, mig)
        info["alternating_round_time_s"] = self.reference_time_s
        self._last = info
        return self._observation(), reward, terminated, False, info
