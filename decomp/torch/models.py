"""Small torch models for the datasets in :mod:`decomp.datasets` (imports torch).

- :class:`MLP`: flatten -> [Linear -> ReLU] × len(hidden) -> Linear.
- :class:`CNN1D`: the MNIST-1D paper's ConvBase (Greydanus 2020): three Conv1d (25 channels,
  kernel 5/3/3, stride 2, padding 1, ReLU) and a linear head; input (N, 40) or (N, 1, 40).
  d = 5,210 for 10 classes.
- :class:`LeNet`: LeNet-style CNN for 8×8 digits: Conv(1→6, 3) -> ReLU -> MaxPool 2 ->
  Conv(6→16, 3) -> ReLU -> MaxPool 2 -> 64 -> 120 -> 84 -> classes; input (N, 64) or (N, 1, 8, 8).
- :class:`ResNet20`: He et al. 2016's CIFAR ResNet (3 stages × 3 basic blocks, 16/32/64 channels,
  BatchNorm, option-A zero-padded identity shortcuts), d ≈ 0.27 M; input (N, 3, 32, 32).

:func:`make_model` builds one by name with a seeded initialisation (torch's global RNG state is
left untouched), so every rank builds the same x^0.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from decomp.errors import ConfigError


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs of ``in_features`` values."""

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (128, 128)
                 ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN1D(nn.Module):
    """1-D CNN for MNIST-1D (length ``length`` signals, one channel)."""

    def __init__(self, n_classes: int = 10, length: int = 40, channels: int = 25) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        n = length
        for k in (5, 3, 3):
            n = (n + 2 - k) // 2 + 1
        self.linear = nn.Linear(channels * n, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.linear(x.flatten(1))


class LeNet(nn.Module):
    """LeNet-style CNN for ``side`` × ``side`` single-channel images (8 for digits)."""

    def __init__(self, n_classes: int = 10, side: int = 8, in_channels: int = 1) -> None:
        super().__init__()
        self.side, self.in_channels = side, in_channels
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)
        s = side // 2 // 2
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.view(-1, self.in_channels, self.side, self.side)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class _Block(nn.Module):
    """Basic residual block; option-A shortcut (stride-2 subsample + zero channel padding)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if self.stride != 1 or self.pad:
            sc = x[:, :, ::self.stride, ::self.stride]
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + sc)


class ResNet20(nn.Module):
    """ResNet-20 for 32×32 RGB images (CIFAR-10): 6n + 2 layers with n = ``blocks`` = 3."""

    def __init__(self, n_classes: int = 10, blocks: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(_Block(cin, cout, 2 if (stage > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.view(-1, 3, 32, 32)
        x = F.relu(self.bn(self.conv(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn1d": CNN1D, "lenet": LeNet,
                                      "resnet20": ResNet20}


#: constructor arguments make_model derives from the data (not model options)
FROM_DATA: dict[str, tuple[str, ...]] = {"mlp": ("in_features", "n_classes"),
                                         "cnn1d": ("n_classes", "length"),
                                         "lenet": ("n_classes", "side"),
                                         "resnet20": ("n_classes",)}


def check_model(name: str, options: dict[str, Any] | None = None) -> None:
    """Refuse an unknown model name or a bad option (unknown key, a size that is not a
    positive integer) with a :class:`ConfigError`; needs no data, so config runs call it
    before loading any."""
    if name not in MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(MODELS)})")
    own = [k for k in inspect.signature(MODELS[name]).parameters if k not in FROM_DATA[name]]
    for key, value in (options or {}).items():
        if key not in own:
            why = " (set from the dataset)" if key in FROM_DATA[name] else ""
            raise ConfigError(f"model {name!r} has no option {key!r}{why}; its options: "
                              f"{', '.join(own) or 'none'}")
        sizes = value if key == "hidden" else [value]
        if key == "hidden" and not isinstance(value, (list, tuple)):
            sizes = [None]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
            what = "a list of layer widths, integers >= 1" if key == "hidden" else \
                "an integer >= 1"
            raise ConfigError(f"model {name!r}: {key} must be {what}, got {value!r}")


def make_model(name: str, *, input_shape: Sequence[int], n_classes: int, seed: int = 0,
               **options: Any) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (one example) and ``n_classes``,
    initialised from ``seed`` (same parameters on every rank; global RNG state preserved)."""
    check_model(name, options)
    numel = math.prod(input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if name == "mlp":
                return MLP(numel, n_classes, **options)
            if name == "cnn1d":
                return CNN1D(n_classes, length=numel, **options)
            if name == "lenet":
                side = int(round(math.sqrt(numel)))
                if side * side != numel:
                    raise ConfigError(f"lenet needs square single-channel images, got input "
                                      f"shape {tuple(input_shape)}")
                return LeNet(n_classes, side=side, **options)
            if tuple(input_shape) not in ((3, 32, 32), (3072,)):
                raise ConfigError(f"resnet20 needs 3×32×32 images, got {tuple(input_shape)}")
            return ResNet20(n_classes, **options)
        except TypeError as e:
            raise ConfigError(f"model {name!r}: {e}") from None
