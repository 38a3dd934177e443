"""The split-training engine: exactness against FedAvg of the unsplit model, the cut gradient,
layer-wise aggregation weighted by sample counts, segments, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesplit.datasets import load_dataset, split_dataset
from edgesplit.engine import (
    SplitTrainer,
    average_units,
    client_segment,
    load_units,
    server_segment,
    split_step,
)
from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import SplitModel, build_model

COUNTS = [24, 40, 16, 32]  # unequal, so that the sample-count weighting matters


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def parts():
    data = load_dataset("synthetic_mnist", synthetic_size=160, seed=0)
    return split_dataset(data, COUNTS, seed=1)


def fedavg_reference(model: SplitModel, batches, weights, lr: float, momentum: float = 0.0,
                     rounds: int = 1, opt_states=None):
    """FedAvg of the unsplit model: every device trains a full copy on its batches, then all
    parameters and buffers are averaged with weights (integer buffers rounded)."""
    global_model = copy.deepcopy(model)
    opt_states = opt_states if opt_states is not None else [None] * len(weights)
    for r in range(rounds):
        states = []
        for i, bl in enumerate(batches[r]):
            m = copy.deepcopy(global_model)
            opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)
            if opt_states[i] is not None:
                # carry the momentum buffers over, parameter by parameter
                for p, buf in zip(m.parameters(), opt_states[i]):
                    if buf is not None:
                        opt.state[p]["momentum_buffer"] = buf
            for x, y in bl:
                opt.zero_grad()
                F.cross_entropy(m(x), y).backward()
                opt.step()
            opt_states[i] = [opt.state[p].get("momentum_buffer") for p in m.parameters()]
            states.append(m.state_dict())
        total = float(sum(weights))
        avg = {}
        for k, v in states[0].items():
            if v.is_floating_point():
                avg[k] = sum(s[k] * (w / total) for s, w in zip(states, weights))
            else:
                avg[k] = torch.round(sum(s[k].double() * (w / total) for s, w in zip(states, weights))).to(v.dtype)
        global_model.load_state_dict(avg)
    return global_model


def max_deviation(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def materialise(trainer: SplitTrainer, iterations=None):
    """Draw the next batches of every device from its seeded stream, as tensors."""
    return [list(trainer.batches_for(i, ib)) for i, ib in enumerate(trainer.draw_batches(iterations))]


def test_one_round_mixed_cuts_equals_fedavg_of_unsplit_model(parts):
    model = build_model("small_cnn", "mnist", seed=0)
    L = model.n_layers
    ref_init = copy.deepcopy(model)
    trainer = SplitTrainer(model, parts, batch_size=8, lr=0.1, momentum=0.0, seed=5)
    batches = materialise(trainer)
    trainer.run_round([1, 3, L - 1, L], batches=batches)
    ref = fedavg_reference(ref_init, [batches], COUNTS, lr=0.1)
    dev = max_deviation(trainer.model, ref)
    print(f"exactness: max |split - FedAvg(unsplit)| = {dev:.3g}")
    assert dev < 1e-5
    # the round really changed the weights (the comparison is not vacuous)
    assert max_deviation(trainer.model, ref_init) > 1e-3


def test_default_stream_round_equals_explicit_batches(parts):
    """run_round without batches draws exactly what draw_batches would have drawn."""
    a = SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.1, seed=2)
    b = SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.1, seed=2)
    a.run_round([2, 2, 2, 2])
    b.run_round([2, 2, 2, 2], batches=materialise(b))
    assert max_deviation(a.model, b.model) == 0.0


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_cut_gradient_equals_unsplit(cut):
    torch.manual_seed(0)
    model = build_model("small_cnn", "mnist", seed=1)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    # unsplit: gradient of the activation after unit `cut`
    full = copy.deepcopy(model)
    h = full.forward_range(x, 0, cut)
    h.retain_grad()
    F.cross_entropy(full.forward_range(h, cut, full.n_layers), y).backward()
    client, server = client_segment(model, cut), server_segment(model, cut)
    res = split_step(client, server, x, y)
    assert res.cut_grad is not None and res.cut_grad.shape == h.shape
    torch.testing.assert_close(res.cut_grad, h.grad, rtol=0, atol=1e-7)
    # and every parameter gradient on both sides matches the unsplit model's
    full_grads = {f"{i + 1}.{n}": p.grad for i, u in enumerate(full.units) for n, p in u.named_parameters()}
    for seg in (client, server):
        for unit, name, p in seg.named_unit_parameters():
            torch.testing.assert_close(p.grad, full_grads[f"{unit}.{name}"], rtol=0, atol=1e-7)


def test_learning_does_not_depend_on_the_cuts_with_momentum(parts):
    """Momentum buffers travel with the units, so any schedule learns the same weights."""
    L = 5
    runs = {}
    for name, schedule in {"split": [[1, 3, 4, 5], [5, 1, 2, 3]], "fedavg": [[L] * 4, [L] * 4]}.items():
        t = SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.05,
                         momentum=0.9, seed=7)
        losses = [t.run_round(c).train_loss for c in schedule]
        runs[name] = (t, losses)
    assert max_deviation(runs["split"][0].model, runs["fedavg"][0].model) < 1e-5
    np.testing.assert_allclose(runs["split"][1], runs["fedavg"][1], rtol=1e-5)


def test_two_rounds_with_momentum_equal_fedavg_reference(parts):
    model = build_model("small_cnn", "mnist", seed=3)
    ref_init = copy.deepcopy(model)
    t = SplitTrainer(model, parts, batch_size=16, lr=0.05, momentum=0.9, seed=1)
    b1 = materialise(t)
    t.run_round([1, 2, 3, 4], batches=b1)
    b2 = materialise(t)
    t.run_round([4, 3, 2, 1], batches=b2)
    ref = fedavg_reference(ref_init, [b1, b2], COUNTS, lr=0.05, momentum=0.9, rounds=2)
    assert max_deviation(t.model, ref) < 1e-5


class _BNNet:
    @staticmethod
    def build(seed: int = 0) -> SplitModel:
        torch.manual_seed(seed)
        units = [
            nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(4)),
            nn.Sequential(nn.Flatten(), nn.Linear(4 * 7 * 7, 10)),
        ]
        return SplitModel(units, ["c1", "c2_pool", "fc"], name="bn-net")


def test_batchnorm_buffers_are_averaged_and_num_batches_tracked_stays_integer(parts):
    model = _BNNet.build()
    ref_init = copy.deepcopy(model)
    t = SplitTrainer(model, parts, batch_size=8, lr=0.1, seed=0)
    batches = materialise(t)
    t.run_round([1, 2, 3, 1], batches=batches)
    ref = fedavg_reference(ref_init, [batches], COUNTS, lr=0.1)
    assert max_deviation(t.model, ref) < 1e-5
    nbt = t.model.units[0][1].num_batches_tracked
    assert nbt.dtype == torch.int64
    expected = round(sum(w * len(b) for w, b in zip(COUNTS, batches)) / sum(COUNTS))
    assert int(nbt) == expected


def test_average_units_weights_and_integer_buffers():
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(1, dtype=torch.int64)}
    b = {"w": torch.tensor([4.0, 0.0]), "n": torch.tensor(4, dtype=torch.int64)}
    out = average_units({1: [(a, 1.0), (b, 3.0)], 2: [(a, 5.0)]})
    torch.testing.assert_close(out[1]["w"], torch.tensor([3.0, 1.0]))
    assert out[1]["n"].dtype == torch.int64 and int(out[1]["n"]) == 3  # 0.25*1 + 0.75*4 = 3.25
    torch.testing.assert_close(out[2]["w"], a["w"])
    # inputs are not modified
    torch.testing.assert_close(a["w"], torch.tensor([0.0, 4.0]))
    with pytest.raises(EdgeSplitError, match="weights"):
        average_units({1: [(a, 0.0), (b, 0.0)]})
    with pytest.raises(EdgeSplitError, match="weights"):
        average_units({1: [(a, -1.0), (b, 2.0)]})
    with pytest.raises(EdgeSplitError, match="keys"):
        average_units({1: [(a, 1.0), ({"w": b["w"]}, 1.0)]})
    with pytest.raises(EdgeSplitError, match="no copies"):
        average_units({1: []})


def test_aggregation_uses_sample_counts_not_device_count():
    """Two devices, one with 3x the samples: the average leans 3:1 towards it."""
    model = SplitModel([nn.Linear(2, 2, bias=False)], name="lin")
    with torch.no_grad():
        model.units[0].weight.zero_()
    xa, ya = torch.ones(1, 2), torch.tensor([0])
    xb, yb = -torch.ones(3, 2), torch.tensor([1, 1, 1])
    t = SplitTrainer(model, [(xa, ya), (xb, yb)], batch_size=4, lr=1.0)
    t.run_round([1, 1])
    # each device's own SGD step from zero weights
    singles = []
    for x, y in ((xa, ya), (xb, yb)):
        m = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            m.weight.zero_()
        F.cross_entropy(m(x), y).backward()
        singles.append(-m.weight.grad)
    expected = 0.25 * singles[0] + 0.75 * singles[1]
    torch.testing.assert_close(t.model.units[0].weight.detach(), expected)


def test_segments_are_copies_and_compose_to_the_model():
    model = build_model("small_cnn", "mnist", seed=0)
    L = model.n_layers
    x = torch.randn(3, 1, 28, 28)
    for c in range(1, L + 1):
        cl, sv = client_segment(model, c), server_segment(model, c)
        assert list(cl.unit_indices) == list(range(1, c + 1))
        assert list(sv.unit_indices) == list(range(c + 1, L + 1))
        torch.testing.assert_close(sv(cl(x)), model(x))
    empty = server_segment(model, L)
    assert len(empty) == 0
    cl = client_segment(model, 1)
    with torch.no_grad():
        cl.units[0][0].weight.add_(1.0)
    assert not torch.equal(cl.units[0][0].weight, model.units[0][0].weight)
    for bad in (0, L + 1, 1.5, True):
        with pytest.raises(EdgeSplitError, match="cut"):
            client_segment(model, bad)


def test_load_units_writes_back_and_checks_indices():
    model = build_model("small_cnn", "mnist", seed=0)
    other = build_model("small_cnn", "mnist", seed=1)
    load_units(model, {2: other.units[1].state_dict()})
    assert torch.equal(model.units[1][0].weight, other.units[1][0].weight)
    assert not torch.equal(model.units[0][0].weight, other.units[0][0].weight)
    with pytest.raises(EdgeSplitError, match="outside"):
        load_units(model, {model.n_layers + 1: {}})


def test_checkpoint_round_trip_continues_identically(parts):
    def make():
        return SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.05,
                            momentum=0.9, seed=4)

    a = make()
    a.run_round([1, 2, 3, 5], iterations=1)
    snap = copy.deepcopy(a.state_dict())
    a.run_round([2, 2, 5, 1], iterations=2)
    b = make()
    b.load_state_dict(snap)
    assert b.round == 1
    b.run_round([2, 2, 5, 1], iterations=2)
    assert max_deviation(a.model, b.model) == 0.0


def test_evaluate_and_round_stats(parts):
    data = load_dataset("synthetic_mnist", "test", synthetic_size=64)
    t = SplitTrainer(build_model("small_cnn", "mnist", seed=0), parts, batch_size=16, lr=0.05)
    acc, loss = t.evaluate(data)
    assert 0.0 <= acc <= 1.0 and loss > 0
    x, y = data.tensors()
    acc2, loss2 = t.evaluate([(x[:30], y[:30]), (x[30:], y[30:])])
    assert acc2 == pytest.approx(acc) and loss2 == pytest.approx(loss, rel=1e-5)
    st = t.run_round([1, 2, 5, 4], iterations=[1, 2, 0, 1])
    assert st.iterations == [1, 2, 0, 1] and st.round == 1
    assert st.samples == 16 * 4
    assert st.cut_bytes[2] == 0 and st.cut_bytes[0] > st.cut_bytes[3] > 0
    with pytest.raises(EdgeSplitError, match="cuts"):
        t.run_round([1, 2])


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_tiny"])
def test_zoo_models_split_exactly(name):
    """Residual blocks, BatchNorm, in-place ReLUs and attention: the gradients at a middle cut
    and of every parameter equal the unsplit model's, bit for bit."""
    from edgesplit.zoo import MODEL_BUILDERS

    if name not in MODEL_BUILDERS:
        pytest.skip(f"{name} not in the zoo")
    model = build_model(name, "cifar10", seed=0)
    L, cut = model.n_layers, model.n_layers // 2
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    full = copy.deepcopy(model)
    torch.manual_seed(1)
    h = full.forward_range(x, 0, cut)
    h.retain_grad()
    F.cross_entropy(full.forward_range(h, cut, L), y).backward()
    client, server = client_segment(model, cut), server_segment(model, cut)
    torch.manual_seed(1)
    res = split_step(client, server, x, y)
    torch.testing.assert_close(res.cut_grad, h.grad, rtol=0, atol=0)
    full_grads = {f"{i + 1}.{n}": p.grad for i, u in enumerate(full.units) for n, p in u.named_parameters()}
    for seg in (client, server):
        for unit, pname, p in seg.named_unit_parameters():
            torch.testing.assert_close(p.grad, full_grads[f"{unit}.{pname}"], rtol=0, atol=0)
