"""A small CNN for scikit-learn's 8x8 digits: trains in seconds on a CPU."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear classifier; wide enough that pruning has work to do."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class ChannelScale(nn.Module):
    """Multiplies each channel by a fixed factor (a buffer, not trained)."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x * self.scale


class DigitsCNNOutlier(DigitsCNN):
    """DigitsCNN with one channel of a hidden activation scaled up by a fixed factor.

    Large-magnitude outlier channels are a known way per-tensor int8 activations fail (one scale
    must cover the outlier, leaving the other channels a handful of levels); transformers grow
    such channels by themselves. Here the outlier is built in so the failure is reproducible.
    """

    def __init__(self, width: int = 32, num_classes: int = 10, outlier: float = 1000.0) -> None:
        super().__init__(width, num_classes)
        scale = torch.ones(1, 2 * width, 1, 1)
        scale[:, 0] = outlier
        self.outlier = ChannelScale(scale)

    def forward(self, x):
        x = self.features[:6](x)  # two conv blocks
        return self.classifier(self.features[6:](self.outlier(x)))


class DigitsMobileNet(nn.Module):
    """A MobileNetV2-style network for the 8x8 digits: inverted residual blocks (1x1 expand,
    3x3 depthwise, 1x1 projection), the structure whose depthwise-separable blocks pruning must
    keep consistent (a depthwise conv's channels move with its expand and projection convs)."""

    # expansion t, channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))

    def __init__(self, width: int = 32, num_classes: int = 10, last: int = 128) -> None:
        from compress.zoo.vision import ConvBNReLU6, InvertedResidual

        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(1, width, stride=1)]
        channels = width
        for t, c, n, s in self.SETTINGS:
            for index in range(n):
                layers.append(InvertedResidual(channels, c, s if index == 0 else 1, t))
                channels = c
        layers += [ConvBNReLU6(channels, last, kernel=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))
