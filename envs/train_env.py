"""``EdgeSplitTrain-v0`` and ``EdgeSplitTrain-v1``: every step runs one real round of parallel
split learning in torch. v1 (default ``timing="measured"``) times the round from the real torch
steps (the cost model's time is the prediction, in ``info``); v0 keeps the cost model's clock."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgesplit.costmodel import transfer_seconds
from edgesplit.datasets import ZOO_DATASET, DatasetError, get_dataset, split_dataset
from edgesplit.devices import GB
from edgesplit.engine import RoundStats, SplitTrainer, resolve_device
from edgesplit.scenario import Scenario
from edgesplit.training import (
    TIMINGS,
    RoundMeasurement,
    bind_scenario,
    hardware_ratios,
    model_profile,
    relative_error,
    samples_per_round,
)
from edgesplit.zoo import build_model
from edgesplit.envs.base import MAX_OBS, resolve_scenario
from edgesplit.envs.static_env import EdgeSplitEnv


class EdgeSplitTrainEnv(EdgeSplitEnv):
    """
    ## Description

    ``EdgeSplit-v0`` (see :class:`edgesplit.envs.EdgeSplitEnv`) with **real training**: every step runs one
    round of parallel split learning in torch (:class:`edgesplit.engine.SplitTrainer`) with the
    chosen cuts: each device trains its client segment on its own data, the server replicas the
    rest, and all copies of every layer are averaged, weighted by sample counts. The round's
    **simulated** duration still comes from the cost model, evaluated on the profile of the same
    model (the shipped profile of ``model`` on ``dataset``'s input shape, else one measured on
    this host when the env is made); the host's wall time of each round is recorded too.

    The devices' data: ``samples`` samples each (or the scenario's ``samples``), drawn from the
    dataset's training split IID or, with ``non_iid_alpha``, with Dirichlet(alpha) class
    proportions. Test accuracy and loss are measured on ``test_samples`` test images after
    every round.

    Split learning with per-device cuts computes exactly what FedAvg of the unsplit model
    computes (``tests/test_engine.py``), so the cuts change **when** an accuracy is reached, not
    **which** accuracy a round reaches: the agent's job is still to make rounds short.

    ## Action Space

    As ``EdgeSplit-v0``: ``Dict(cuts=MultiDiscrete([L] * N), shares=Box(0, 1, (N,), float32))``;
    index ``k`` means cut ``k + 1`` (the device runs layers ``1..k+1``; ``L - 1`` is local FedAvg
    training). Shares are divided by their sum; a cut deeper than a device's memory allows is
    clipped to the deepest one that fits (``info["memory_clipped"]``) and that clipped cut is
    also the one trained with; NaN/inf, out-of-range cuts, negative or all-zero shares raise
    ``ValueError``.

    ## Observation Space

    The same ``Box(0, high, (5N + 1,), float32)`` as ``EdgeSplit-v0`` (speed, deepest feasible
    cut, link rate, last device time, cut in place, round progress), so that policies move
    between the simulated and the real env unchanged. Accuracy and loss are in ``info``.

    ## Rewards

    As ``EdgeSplit-v0``: ``-T / T_ref`` per round (``T_ref`` the alternating plan's round time,
    capped at ``max_penalty``). With ``target_accuracy`` set, the return is then minus the
    normalised simulated time to reach that accuracy.

    ## Starting State

    A fresh scenario (unless ``scenario`` is fixed), fresh model weights and a fresh data split,
    all drawn from the env's ``np_random``; the cuts in place are the alternating plan's. The
    reset ``info`` carries ``test_acc`` and ``test_loss`` of the untrained model.

    ## Episode End

    1. Termination: the test accuracy reaches ``target_accuracy`` (``info["target_reached"]``).
    2. Termination: ``rounds`` rounds are done, or a round never ends (a zero share with traffic;
       ``info["stalled"]``; no training happens in such a round).
    3. Truncation: the registered ``TimeLimit`` (``max_episode_steps = 20``).

    Stepping after termination without ``reset()`` raises ``gymnasium.error.ResetNeeded`` (the
    clock does not run on).

    ## Arguments

    ```python
    >>> import gymnasium as gym, envs
    >>> env = gym.make("EdgeSplitTrain-v0", model="small_cnn", dataset="synthetic", n_devices=4,
    ...                samples=256, target_accuracy=0.8)
    ```

    | Parameter          | Type       | Default       | Description                                                 |
    |--------------------|------------|---------------|-------------------------------------------------------------|
    | `model`            | str        | `"small_cnn"` | zoo model (`edgesplit.zoo`)                                 |
    | `dataset`          | str        | `"synthetic"` | `synthetic`, `synthetic_mnist`, `cifar10`, `mnist`, `fashion_mnist` |
    | `data_dir`         | str        | None          | where `cifar10`/`mnist` files are (see `edgesplit.datasets`) |
    | `n_devices`        | int        | 4             | N                                                           |
    | `samples`          | int        | 256           | training samples per device                                 |
    | `batch_size`       | int        | 32            | b                                                           |
    | `iterations`       | int        | None          | budget: iterations per device per round (None: one local epoch) |
    | `lr`, `momentum`, `weight_decay` | float | 0.05, 0.9, 0 | SGD on both sides                               |
    | `non_iid_alpha`    | float      | None          | Dirichlet(alpha) class skew (None: IID)                     |
    | `test_samples`     | int        | 500           | test images evaluated after each round                      |
    | `target_accuracy`  | float      | None          | end the episode at this test accuracy                       |
    | `rounds`           | int        | 20            | rounds per episode                                          |
    | `scenario`, `heterogeneity`, `rate_range_bps`, `memory_range_bytes`, `fastest_speed`, `server_speed`, `sharing`, `migration_factor`, `max_penalty`, `render_mode` | | | as `EdgeSplit-v0` |
    | `wall_time_in_info`| bool       | False         | also put host seconds in `info` (then steps are not bit-for-bit repeatable, and gymnasium's determinism check fails) |
    | `timing`           | str        | `"model"`     | `"model"`: the cost model's clock; `"measured"`: see ``EdgeSplitTrain-v1`` |
    | `traces`           | folder, glob, list, TraceSet | None | links follow throughput traces (as ``EdgeSplitDynamic-v0``); None: the scenario's fixed rates |
    | `rebind_scenario`  | bool       | False         | a `scenario` whose model or batch size differs from `model`/`batch_size` is refused (`ValueError` naming both) unless this is True: then its devices and server are bound to the env's model and batch size |
    | `device`           | str        | `"cpu"`       | torch device: `cpu`, `cuda` or `auto` (CUDA when available) |

    ``info`` of every step: everything ``EdgeSplit-v0`` gives, plus ``test_acc``, ``test_loss``,
    ``train_loss``, ``train_acc``, ``samples_trained``, ``target_reached``, ``timing``,
    ``predicted_device_time_s`` and ``predicted_round_time_s`` (the cost model's) and, with
    ``timing="measured"``, ``measured_device_time_s`` and ``timing_rel_error`` (NaN in a stalled round). The host wall time of
    each round (training plus evaluation) is recorded in ``env.unwrapped.records`` (one dict per
    round: ``round, sim_time_s, wall_s, test_acc, loss``, the CSV columns of ``edgesplit train``;
    :meth:`records_frame` gives a DataFrame) and, with ``wall_time_in_info``, in ``info["wall_s"]``
    and ``info["wall_clock_s"]``.
    """

    def __init__(
        self,
        model: str = "small_cnn",
        dataset: str = "synthetic",
        data_dir: str | Path | None = None,
        n_devices: int | None = None,
        samples: int = 256,
        batch_size: int = 32,
        iterations: int | None = None,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        non_iid_alpha: float | None = None,
        test_samples: int = 500,
        target_accuracy: float | None = None,
        rounds: int = 20,
        scenario: Scenario | str | Path | dict | None = None,
        heterogeneity: float = 10.0,
        rate_range_bps: tuple[float, float] = (5e6, 50e6),
        memory_range_bytes: tuple[float, float] = (1 * GB, 8 * GB),
        fastest_speed: float = 0.5,
        server_speed: float = 10.0,
        sharing: str = "dedicated",
        migration_factor: float = 0.0,
        max_penalty: float = 10.0,
        wall_time_in_info: bool = False,
        render_mode: str | None = None,
        timing: str = "model",
        traces: Any = None,
        rebind_scenario: bool = False,
        device: str = "cpu",
    ) -> None:
        if dataset not in ZOO_DATASET:
            raise DatasetError(f"dataset: unknown {dataset!r}; choose one of {', '.join(ZOO_DATASET)}")
        if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer))
                                       or iterations < 1):
            raise ValueError(f"iterations: must be an integer >= 1 or None, got {iterations!r}")
        if target_accuracy is not None and not 0.0 < float(target_accuracy) <= 1.0:
            raise ValueError(f"target_accuracy: must lie in (0, 1], got {target_accuracy!r}")
        if not isinstance(test_samples, (int, np.integer)) or test_samples < 1:
            raise ValueError(f"test_samples: must be an integer >= 1, got {test_samples!r}")
        if non_iid_alpha is not None and not float(non_iid_alpha) > 0:
            raise ValueError(f"non_iid_alpha: must be > 0 or None, got {non_iid_alpha!r}")
        if timing not in TIMINGS:
            raise ValueError(f"timing: must be one of {', '.join(TIMINGS)}, got {timing!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        self.model_name = model
        self.dataset = dataset
        self.zoo_dataset = ZOO_DATASET[dataset]
        self.data_dir = None if data_dir is None else str(data_dir)
        self.iterations = None if iterations is None else int(iterations)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.non_iid_alpha = None if non_iid_alpha is None else float(non_iid_alpha)
        self.test_samples = int(test_samples)
        self.target_accuracy = None if target_accuracy is None else float(target_accuracy)
        self.wall_time_in_info = bool(wall_time_in_info)
        self.timing = timing
        self.rebind_scenario = bool(rebind_scenario)
        self.torch_device = resolve_device(device)
        self.batch_size = int(batch_size)
        profile, self.profile_source = model_profile(model, dataset, int(batch_size))
        self.model_profile = profile
        if scenario is not None:  # the run's model and batch size, never a mix (see bind_scenario)
            scenario = bind_scenario(resolve_scenario(scenario), profile, self.batch_size, self.rebind_scenario)
        n = 4 if n_devices is None and scenario is None else n_devices
        super().__init__(n_devices=n, model=profile, rounds=rounds, scenario=scenario,
                         heterogeneity=heterogeneity, rate_range_bps=rate_range_bps,
                         memory_range_bytes=memory_range_bytes, fastest_speed=fastest_speed,
                         samples=samples, batch_size=batch_size, server_speed=server_speed,
                         sharing=sharing, migration_factor=migration_factor, max_penalty=max_penalty,
                         render_mode=render_mode)
        self.traceset = None
        if traces is not None:
            from edgesplit.envs.dynamic_env import resolve_traces

            self.traceset = resolve_traces(traces)
        need = (self.fixed_scenario.array("samples").sum() if self.fixed_scenario is not None
                else self.n_devices * int(samples))
        synth = max(int(need), 2000) if dataset.startswith("synthetic") else None
        self.train_data = get_dataset(dataset, "train", self.data_dir, synth)
        if need > len(self.train_data):
            raise DatasetError(f"samples: {self.n_devices} devices need {int(need)} samples, "
                               f"{dataset} has {len(self.train_data)} training samples")
        test = get_dataset(dataset, "test", self.data_dir, max(self.test_samples, 500) if synth else None)
        self.test_data = test.head(self.test_samples, seed=0)
        self.trainer: SplitTrainer | None = None
        self.data_scenario: Scenario | None = None
        self.records: list[dict[str, Any]] = []
        self.wall_clock_s = 0.0

    # -- the scenario of the cost model counts the samples actually trained per round
    def _episode_scenario(self, options: dict | None) -> Scenario:
        if options and options.get("scenario") is not None:
            bound = bind_scenario(resolve_scenario(options["scenario"]), self.model_profile, self.batch_size,
                                  self.rebind_scenario, where="options['scenario']")
            options = {**options, "scenario": bound}
        s = super()._episode_scenario(options)
        self.data_scenario = s
        counts = [int(d.samples) for d in s.devices]
        if self.iterations is None:
            return s
        return s.with_samples(samples_per_round(counts, self.iterations, self.batch_size))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: scenario, fresh weights and data split, alternating reference."""
        obs, info = super().reset(seed=seed, options=options)
        assert self.data_scenario is not None
        t0 = time.perf_counter()
        counts = [int(d.samples) for d in self.data_scenario.devices]
        if sum(counts) > len(self.train_data):
            raise DatasetError(f"samples: the scenario's devices need {sum(counts)} samples, "
                               f"{self.dataset} has {len(self.train_data)} training samples")
        rng = self.np_random
        parts = split_dataset(self.train_data, counts, self.non_iid_alpha, rng=rng)
        model_seed = int(rng.integers(2**31 - 1))
        net = build_model(self.model_name, self.zoo_dataset, seed=model_seed)
        self.trainer = SplitTrainer(net, parts, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay, seed=model_seed,
                                    mean=self.train_data.mean, std=self.train_data.std, device=self.torch_device)
        self._ratios = hardware_ratios(self.scenario)
        if self.traceset is not None:  # each device's link follows a trace, as in EdgeSplitDynamic-v0
            ts = self.traceset
            k = rng.integers(0, len(ts), size=self.n_devices)
            self._trace_index = k
            self._trace_offset = rng.uniform(0.0, 1.0, size=self.n_devices) * ts.period_s[k]
            self._trace_scale = self.cost_model.rate_bps / ts.mean_bps[k]
            info.update({"trace_index": k.copy(), "trace_offset_s": self._trace_offset.copy()})
        acc, loss = self.trainer.evaluate(self.test_data)
        wall = time.perf_counter() - t0
        self.wall_clock_s = 0.0
        self.records = [{"round": 0, "sim_time_s": 0.0, "wall_s": 0.0, "test_acc": acc, "loss": loss}]
        info.update({"test_acc": acc, "test_loss": loss, "target_reached": self._reached(acc),
                     "profile_source": self.profile_source, "timing": self.timing})
        if self.wall_time_in_info:
            info.update({"wall_s": wall, "wall_clock_s": 0.0})
        return obs, info

    def _reached(self, acc: float) -> bool:
        return self.target_accuracy is not None and acc >= self.target_accuracy

    def _transfer(self, bits: np.ndarray, shares: np.ndarray) -> np.ndarray:
        """Seconds to send ``bits`` at ``shares`` of each link from now: fixed rates, or the traces."""
        if self.traceset is None:
            return transfer_seconds(bits, shares * self.cost_model.rate_bps)
        start = self._trace_offset + self._clock
        return self.traceset.transfer_time(self._trace_index, bits, start, shares * self._trace_scale)

    def step(self, action: dict) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Run the round for real with the action's cuts, time it and evaluate the model."""
        self._check_running()  # gymnasium.error.ResetNeeded before reset() and after termination
        cuts, shares, _, hi = self._parse_action(action)
        eff, clipped = self._mask(cuts, hi)
        cuts1 = (eff + 1).astype(np.int64)
        flat = self._rowoff + eff
        mig = (np.abs(self._mig_table[eff] - self._mig_table[self._cur]) if self.migration_factor > 0
               else np.zeros(self.n_devices))
        traffic_pred = self._V[flat]
        predicted = self._A[flat] + self._transfer(traffic_pred + mig, shares)
        stalled = not math.isfinite(float(predicted.max()))  # a zero share with traffic: no round
        t0 = time.perf_counter()
        stats: RoundStats | None = None
        measured = np.full(self.n_devices, np.nan)
        traffic = traffic_pred
        tau = predicted - self._A[flat]
        if not stalled:
            stats = self.trainer.run_round(cuts1.tolist(), iterations=self.iterations,
                                           measure=self.timing == "measured")
            if self.timing == "measured":
                m = RoundMeasurement.from_stats(stats)
                traffic = m.traffic_bits(cuts1)
                tau = self._transfer(traffic + mig, shares)
                measured = m.compute_s(cuts1, self._ratios) + tau
            acc, loss = self.trainer.evaluate(self.test_data)
        else:
            acc, loss = self.records[-1]["test_acc"], self.records[-1]["loss"]
        per = measured if self.timing == "measured" and not stalled else predicted
        reward, terminated, info = self._finish_step(eff, shares, clipped, per, traffic, mig)
        if self.traceset is not None and not stalled:  # the rate each device saw, as EdgeSplitDynamic-v0 observes
            sent = traffic + mig
            with np.errstate(divide="ignore", invalid="ignore"):
                seen = np.where(tau > 0, sent / (shares * tau), self.cost_model.rate_bps)
            self._known = seen
            np.minimum(seen / self.cost_model.rate_bps.max(), MAX_OBS, out=self._o_rate0)
            info["measured_rate_bps"] = seen
        wall = time.perf_counter() - t0
        self.wall_clock_s += wall
        reached = self._reached(acc)
        info.update({
            "test_acc": acc, "test_loss": loss, "target_reached": reached,
            "train_loss": stats.train_loss if stats else float("nan"),
            "train_acc": stats.train_acc if stats else float("nan"),
            "samples_trained": stats.samples if stats else 0,
            "timing": self.timing,
            "predicted_device_time_s": predicted,
            "predicted_round_time_s": float(predicted.max()),
        })
        if self.timing == "measured":
            info.update({"measured_device_time_s": measured, "timing_rel_error": relative_error(measured, predicted)})
        info["alternating_round_time_s"] = self.reference_time_s
        if self.wall_time_in_info:
            info.update({"wall_s": wall, "wall_clock_s": self.wall_clock_s})
        self.records.append({"round": info["round"], "sim_time_s": info["sim_clock_s"], "wall_s": self.wall_clock_s,
                             "test_acc": acc, "loss": loss})
        self._last = info
        terminated = bool(terminated or reached)
        if terminated:
            self._needs_reset = True
        return self._observation(), reward, terminated, False, info

    def records_frame(self) -> pd.DataFrame:
        """This episode's rounds: ``round, sim_time_s, wall_s, test_acc, loss`` (cumulative times)."""
        return pd.DataFrame(self.records, columns=["round", "sim_time_s", "wall_s", "test_acc", "loss"])


class EdgeSplitTrainV1Env(EdgeSplitTrainEnv):
    """
    ## Description

    ``EdgeSplitTrain-v1``: real parallel split learning per step (as ``EdgeSplitTrain-v0``, see
    :class:`EdgeSplitTrainEnv`), **timed by the real torch steps** (``timing="measured"``, the
    default): every unit's forward, backward and optimiser step is timed on this host while the
    round trains; device ``i``'s compute is its units ``1..c_i`` mapped to its hardware (per layer
    through its own profile where the scenario gives it one, ``1 / speed`` otherwise) plus the
    rest mapped to the server; its bits are those of the real tensors exchanged (the cut
    activation and its gradient on every step, its segment's weights up and down for
    aggregation); the transfer goes through the same link model as the other envs: the
    scenario's fixed rates, or throughput traces with ``traces=`` (as ``EdgeSplitDynamic-v0``:
    a random trace and offset per device at reset, scaled to the device's rate class). The
    round time is ``max_i T_i`` of those measured times; the cost model's prediction is in
    ``info``. ``timing="model"`` keeps v0's clock (the cost model alone).

    A measured clock depends on this host's load: episodes with the same seed train the same
    model (same data split, weights, batches, accuracies) but their times differ slightly.

    ## Action Space

    As ``EdgeSplit-v0``: ``Dict(cuts=MultiDiscrete([L] * N), shares=Box(0, 1, (N,), float32))``;
    index ``k`` means cut ``k + 1``; shares are divided by their sum; a cut deeper than a
    device's memory allows is clipped (``info["memory_clipped"]``) and trained clipped.

    ## Observation Space

    The same ``Box(0, high, (5N + 1,), float32)`` as ``EdgeSplit-v0`` (speed, deepest feasible
    cut, link rate, last device time, cut in place, round progress). The last device time is
    the measured one; with ``traces`` the rate block holds the rate each device saw last round.

    ## Rewards

    ``-T / T_ref`` per round with ``T`` the measured round time and ``T_ref`` the alternating
    plan's predicted round time (capped at ``max_penalty``); a round that never ends (a zero
    share) earns ``-max_penalty`` for every round left.

    ## Starting State

    As ``EdgeSplitTrain-v0``: a scenario, fresh weights and data split from ``np_random``; the
    alternating plan's cuts in place; ``info`` has the untrained model's ``test_acc``.

    ## Episode End

    1. Termination: the test accuracy reaches ``target_accuracy``.
    2. Termination: ``rounds`` rounds are done, or a round never ends (``info["stalled"]``;
       nothing is trained in it).
    3. Truncation: the registered ``TimeLimit`` (``max_episode_steps = 20``).

    Stepping after termination without ``reset()`` raises ``gymnasium.error.ResetNeeded``.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> from edgesplit import envs
    >>> env = gym.make("EdgeSplitTrain-v1", model="small_cnn", dataset="synthetic", n_devices=4,
    ...                samples=256, iterations=2)
    ```

    Those of ``EdgeSplitTrain-v0`` (see :class:`EdgeSplitTrainEnv`) with ``timing="measured"``
    by default; ``traces``, ``rebind_scenario`` and ``device`` as there.

    ``info`` per step adds to v0's: ``measured_device_time_s`` (per device, seconds),
    ``predicted_device_time_s`` (the cost model's, same cuts and shares), ``predicted_round_time_s``,
    ``timing_rel_error`` (``(measured - predicted) / predicted`` per device) and, with
    ``traces``, ``measured_rate_bps``.
    """

    def __init__(self, *args: Any, timing: str = "measured", **kwargs: Any) -> None:
        super().__init__(*args, timing=timing, **kwargs)

