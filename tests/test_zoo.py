"""The splittable model zoo: every cut reproduces the full forward, unit names and counts, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgesplit.errors import EdgeSplitError
from edgesplit.zoo import DATASET_SHAPES, MODEL_BUILDERS, SplitModel, build_model, dataset_shape

EXPECTED_UNITS = {"vgg11": 16, "vgg16": 21, "vgg19": 24, "resnet18": 10, "mobilenet_v2": 20,
                  "small_cnn": 5, "vit_tiny": 8}
CONV_MODELS = ["vgg11", "vgg16", "vgg19", "resnet18", "mobilenet_v2", "small_cnn"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _input(dataset: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    s = dataset_shape(dataset)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, s.channels, s.size, s.size, generator=g)


def test_zoo_names_the_issue_models() -> None:
    assert set(MODEL_BUILDERS) == set(EXPECTED_UNITS)


@pytest.mark.parametrize("dataset", ["cifar10", "mnist"])
@pytest.mark.parametrize("name", list(EXPECTED_UNITS))
def test_every_cut_reproduces_the_full_forward(name: str, dataset: str) -> None:
    model = build_model(name, dataset, seed=0).eval()
    L = model.n_layers
    assert L == EXPECTED_UNITS[name]
    x = _input(dataset)
    with torch.no_grad():
        full = model(x)
        assert full.shape == (2, DATASET_SHAPES[dataset].num_classes)
        assert torch.isfinite(full).all()
        h = x
        for c in range(1, L):
            h = model.forward_range(h, c - 1, c)  # device side of cut c, one unit at a time
            assert torch.allclose(model.forward_range(h, c, L), full, atol=1e-5, rtol=1e-4), (name, c)
        assert torch.equal(model.forward_range(x, 0, 0), x)


@pytest.mark.parametrize("name", list(EXPECTED_UNITS))
def test_unit_names_are_unique_and_the_first_pool_downsamples(name: str) -> None:
    model = build_model(name, "cifar10", seed=0)
    assert len(model.names) == len(set(model.names)) == model.n_layers
    pools = [i for i, n in enumerate(model.names) if "pool" in n]
    assert pools, f"{name}: no unit named *pool* (psl-fixed needs one)"
    first = pools[0]
    assert first < model.n_layers - 1, "the conventional cut must not be the whole model"
    if name in CONV_MODELS:
        x = _input("cifar10")
        with torch.no_grad():
            h = model.forward_range(x, 0, first)
            out = model.units[first](h)
        assert h.shape[-1] == 32 and out.shape[-1] == 16, (name, h.shape, out.shape)


def test_fashion_mnist_and_mnist_share_the_input_shape() -> None:
    for name in MODEL_BUILDERS:
        model = build_model(name, "fashion_mnist", seed=0).eval()
        with torch.no_grad():
            assert model(_input("fashion_mnist", batch=1)).shape == (1, 10)


def test_known_parameter_counts() -> None:
    def count(name: str) -> int:
        return sum(p.numel() for p in build_model(name, "cifar10", seed=0).parameters())

    assert count("resnet18") == 11_173_962  # the usual CIFAR ResNet-18
    assert count("mobilenet_v2") == 2_236_682  # torchvision MobileNetV2 with 10 classes
    vgg = build_model("vgg19", "cifar10")
    assert sum(n.startswith("conv") for n in vgg.names) == 16
    assert sum(n.startswith("fc") for n in vgg.names) == 3


def test_vit_units_carry_tokens() -> None:
    model = build_model("vit_tiny", "cifar10", seed=0).eval()
    with torch.no_grad():
        tokens = model.forward_range(_input("cifar10"), 0, 1)
        assert tokens.shape == (2, 65, 192)  # 8x8 patches + class token
        mnist = build_model("vit_tiny", "mnist", seed=0).eval()
        assert mnist.forward_range(_input("mnist"), 0, 1).shape == (2, 50, 192)


def test_seed_gives_identical_weights() -> None:
    a = build_model("resnet18", "cifar10", seed=3).state_dict()
    b = build_model("resnet18", "cifar10", seed=3).state_dict()
    c = build_model("resnet18", "cifar10", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_user_sequential_becomes_a_split_model() -> None:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(1, 4, 3, padding=1))
    seq.add_module("relu", nn.ReLU())
    seq.add_module("pool", nn.MaxPool2d(2))
    seq.add_module("head", nn.Sequential(nn.Flatten(), nn.Linear(4 * 14 * 14, 10)))
    model = SplitModel.from_modules(seq, name="mine")
    assert model.names == ["conv", "relu", "pool", "head"]
    x = _input("mnist")
    with torch.no_grad():
        assert torch.allclose(model.forward_range(model.forward_range(x, 0, 2), 2, 4), seq(x))
    listed = SplitModel.from_modules([nn.Flatten(), nn.Linear(784, 10)])
    assert listed.names == ["unit1", "unit2"]


def test_bad_names_raise_one_clear_error() -> None:
    with pytest.raises(EdgeSplitError, match="model: unknown 'alexnet'"):
        build_model("alexnet")
    with pytest.raises(EdgeSplitError, match="dataset: unknown 'imagenet'"):
        build_model("vgg11", "imagenet")
