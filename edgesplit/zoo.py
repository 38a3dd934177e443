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


# --------------------------------------------------------------------------------------------
# Naming convention: every unit whose output is spatially downsampled (a pooling layer, a stride-2
# block, a patch embedding) has "pool" in its name, so that the first such unit marks the end of
# the model's first block (the conventional cut of the ``psl-fixed`` baseline). Pools use
# ``ceil_mode=True`` so that 28x28 inputs (MNIST) survive five halvings (28-14-7-4-2-1) while
# 32x32 inputs (CIFAR-10) halve exactly as usual (32-16-8-4-2-1).
# --------------------------------------------------------------------------------------------

VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _vgg(name: str, shape: DatasetShape) -> SplitModel:
    """CIFAR-style VGG: 3x3 conv+BN+ReLU units, a 2x2 max-pool unit after each of the five stages
    (the spatial size reaches 1x1), then a 512-512-classes classifier (one unit per FC layer)."""
    units: list[nn.Module] = []
    names: list[str] = []
    cin = shape.channels
    for stage, widths in enumerate(VGG_CONFIGS[name], start=1):
        for j, cout in enumerate(widths, start=1):
            units.append(_conv_bn_relu(cin, cout))
            names.append(f"conv{stage}_{j}")
            cin = cout
        units.append(nn.MaxPool2d(2, ceil_mode=True))
        names.append(f"pool{stage}")
    units += [
        nn.Sequential(nn.Flatten(), nn.Linear(cin, 512), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True)),
        nn.Linear(512, shape.num_classes),
    ]
    names += ["fc1", "fc2", "fc3"]
    return SplitModel(units, names, name=name)


class BasicBlock(nn.Module):
    """The ResNet-18/34 residual block: two 3x3 convs with BN, identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _resnet18(shape: DatasetShape) -> SplitModel:
    """CIFAR ResNet-18 (He et al. 2016, 3x3 stem without max-pool): stem, 8 BasicBlocks, pool+fc.

    Stride-2 blocks (the first of stages 2-4) are named ``layerK_block1_pool``.
    """
    units: list[nn.Module] = [nn.Sequential(nn.Conv2d(shape.channels, 64, 3, padding=1, bias=False),
                                            nn.BatchNorm2d(64), nn.ReLU(inplace=True))]
    names = ["stem"]
    cin = 64
    for stage, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for b in range(2):
            s = stride if b == 0 else 1
            units.append(BasicBlock(cin, cout, s))
            names.append(f"layer{stage}_block{b + 1}" + ("_pool" if s == 2 else ""))
            cin = cout
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, shape.num_classes)))
    names.append("avgpool_fc")
    return SplitModel(units, names, name="resnet18")


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.conv(x)
        return x + out if self.use_residual else out


# (expansion t, channels c, repeats n, first stride s); the CIFAR variant keeps stride 1 in the
# stem and in the 24-channel stage (Sandler et al. 2018 use 2 for ImageNet).
MOBILENET_V2_CIFAR = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1)]


def _mobilenet_v2(shape: DatasetShape) -> SplitModel:
    """CIFAR MobileNetV2: stem, 17 inverted-residual blocks (one unit each), 1x1 conv to 1280, pool+fc."""
    units: list[nn.Module] = [nn.Sequential(nn.Conv2d(shape.channels, 32, 3, padding=1, bias=False),
                                            nn.BatchNorm2d(32), nn.ReLU6(inplace=True))]
    names = ["stem"]
    cin, k = 32, 0
    for t, c, n, s in MOBILENET_V2_CIFAR:
        for r in range(n):
            stride = s if r == 0 else 1
            k += 1
            units.append(InvertedResidual(cin, c, stride, t))
            names.append(f"block{k}" + ("_pool" if stride == 2 else ""))
            cin = c
    units.append(nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)))
    names.append("conv_1280")
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, shape.num_classes)))
    names.append("avgpool_fc")
    return SplitModel(units, names, name="mobilenet_v2")


class PatchEmbed(nn.Module):
    """Patchify (a stride-``patch`` conv), prepend the class token, add learned position embeddings."""

    def __init__(self, channels: int, size: int, patch: int, dim: int) -> None:
        super().__init__()
        if size % patch:
            raise EdgeSplitError(f"model: image size {size} is not a multiple of the patch size {patch}")
        n_patches = (size // patch) ** 2
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: multi-head self-attention and a GELU MLP, both residual.

    Attention is written out with matmuls (not a fused kernel) so that torch's flop counter sees it.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d/H)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ClassHead(nn.Module):
    """Final LayerNorm, take the class token, linear classifier."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc(self.norm(x)[:, 0])


VIT_TINY = {"patch": 4, "dim": 192, "depth": 6, "heads": 3, "mlp_ratio": 4}


def _vit_tiny(shape: DatasetShape) -> SplitModel:
    """A small ViT for 32x32/28x28 inputs: 4x4 patches, width 192, 3 heads (DeiT-Tiny widths), 6 blocks.

    Units: the patch embedding (``patch_embed_pool``: the patchify is the model's downsampling),
    each encoder block, the head.
    """
    cfg = VIT_TINY
    units: list[nn.Module] = [PatchEmbed(shape.channels, shape.size, cfg["patch"], cfg["dim"])]
    names = ["patch_embed_pool"]
    for i in range(cfg["depth"]):
        units.append(EncoderBlock(cfg["dim"], cfg["heads"], cfg["mlp_ratio"]))
        names.append(f"encoder{i + 1}")
    units.append(ClassHead(cfg["dim"], shape.num_classes))
    names.append("head")
    return SplitModel(units, names, name="vit_tiny")


MODEL_BUILDERS: dict[str, Callable[[DatasetShape], SplitModel]] = {
    "vgg11": lambda shape: _vgg("vgg11", shape),
    "vgg16": lambda shape: _vgg("vgg16", shape),
    "vgg19": lambda shape: _vgg("vgg19", shape),
    "resnet18": _resnet18,
    "mobilenet_v2": _mobilenet_v2,
    "small_cnn": _small_cnn,
    "vit_tiny": _vit_tiny,
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
