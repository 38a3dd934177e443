"""Per-unit timing of real split training steps (``measure=True``) and the device option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgesplit.datasets import load_dataset, split_dataset
from edgesplit.engine import SplitTrainer, resolve_device
from edgesplit.errors import EdgeSplitError
from edgesplit.training import RoundMeasurement
from edgesplit.zoo import build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _trainer(seed: int = 0) -> SplitTrainer:
    data = load_dataset("synthetic_mnist", "train", synthetic_size=96)
    parts = split_dataset(data, [48, 48], seed=0)
    return SplitTrainer(build_model("small_cnn", "mnist", seed=seed), parts, batch_size=16, lr=0.05, momentum=0.9,
                        mean=data.mean, std=data.std)


@pytest.mark.parametrize("cuts", [[1, 5], [3, 2], [5, 5]])
def test_measured_units_cover_the_round_and_bytes_are_the_real_tensors(cuts):
    tr = _trainer()
    tr.run_round(cuts, iterations=1)  # one-time start-up costs (allocator, kernels) out of the way
    st = tr.run_round(cuts, iterations=2, measure=True)
    unit_s = np.asarray(st.unit_s)
    assert unit_s.shape == (2, 5) and (unit_s > 0).all()
    # the per-unit seconds are timed inside each device's training time, never more than it
    for i in range(2):
        assert unit_s[i].sum() <= st.per_device_wall_s[i] * 1.01
    # bytes: unit l's outputs over 2 steps of 16 samples (float32)
    net = build_model("small_cnn", "mnist", seed=0)
    h = torch.zeros(16, 1, 28, 28)
    for l, unit in enumerate(net.units):
        h = unit(h)
        np.testing.assert_allclose(np.asarray(st.unit_out_bytes)[:, l], 2 * h.numel() * 4)
    assert st.param_bytes == [float(sum(p.numel() * 4 for p in u.parameters())) for u in net.units]
    # what the cut sends over the round matches the engine's own count of cut bytes
    m = RoundMeasurement.from_stats(st)
    for i, c in enumerate(cuts):
        if c < 5:
            W = sum(st.param_bytes[:c])
            assert m.traffic_bits(cuts)[i] == pytest.approx(8 * (st.cut_bytes[i] + 2 * W))


def test_measuring_does_not_change_the_learning():
    a, b = _trainer(), _trainer()
    for _ in range(2):
        sa = a.run_round([2, 4], iterations=2)
        sb = b.run_round([2, 4], iterations=2, measure=True)
        assert sa.train_loss == sb.train_loss
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_measured_compute_maps_units_to_device_and_server():
    from edgesplit.devices import generate_scenario
    from edgesplit.profiles import load_builtin_profile
    from edgesplit.training import hardware_ratios

    s = generate_scenario(load_builtin_profile("small_cnn", "mnist"), 2, seed=0, server_speed=4.0)
    r, srv = hardware_ratios(s)
    np.testing.assert_allclose(r, 1.0 / s.array("speed")[:, None] * np.ones((2, 5)))
    np.testing.assert_allclose(srv, 0.25)
    m = RoundMeasurement(np.ones((2, 5)), np.zeros((2, 5)), np.zeros(5))
    np.testing.assert_allclose(m.compute_s([2, 5], (r, srv)),
                               [2 / s.devices[0].speed + 3 * 0.25, 5 / s.devices[1].speed])


def test_device_option():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EdgeSplitError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EdgeSplitError, match="no GPU"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu():
    data = load_dataset("synthetic_mnist", "train", synthetic_size=64)
    parts = split_dataset(data, [32, 32], seed=0)
    outs = []
    for dev in ("cpu", "cuda"):
        tr = SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.05,
                          mean=data.mean, std=data.std, device=dev)
        st = tr.run_round([2, 5], iterations=2, measure=True)
        outs.append(st.train_loss)
        assert np.asarray(st.unit_s).sum() > 0
    assert outs[0] == pytest.approx(outs[1], rel=1e-3)


def test_own_device_profile_maps_each_layer_by_its_ratio():
    from dataclasses import replace

    from edgesplit.devices import generate_scenario
    from edgesplit.profiles import load_builtin_profile
    from edgesplit.scenario import Scenario
    from edgesplit.training import hardware_ratios

    ref = load_builtin_profile("small_cnn", "mnist")
    factor = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    own = replace(ref, fwd_s=ref.fwd_s * factor, bwd_s=ref.bwd_s * factor)
    s = generate_scenario(ref, 2, seed=0, server_speed=2.0, sharing="shared")
    s = Scenario(ref, s.batch_size, (replace(s.devices[0], profile=own), s.devices[1]), s.server)
    r, srv = hardware_ratios(s)
    np.testing.assert_allclose(r[0], factor)  # per layer, not one speed
    np.testing.assert_allclose(r[1], 1.0 / s.devices[1].speed)
    np.testing.assert_allclose(srv, 2 / 2.0)  # a shared server: 1/speed over its 1/N share


def test_profiler_device_option():
    from edgesplit.profiler import profile_model

    prof = profile_model("small_cnn", "mnist", batch_size=4, warmup=0, repeats=1, device="auto")
    assert prof.n_layers == 5 and (prof.fwd_s > 0).all()
    with pytest.raises(EdgeSplitError, match="device"):
        profile_model("small_cnn", "mnist", batch_size=4, warmup=0, repeats=1, device="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profiler_on_cuda_names_the_gpu():
    from edgesplit.profiler import profile_model

    prof = profile_model("small_cnn", "mnist", batch_size=4, warmup=1, repeats=2, device="cuda")
    assert "GPU" in prof.host and (prof.fwd_s > 0).all()
