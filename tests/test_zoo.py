"""The reference models: shapes, and parameter counts identical to torchvision's."""

from __future__ import annotations

import torch

from compress.zoo.digits import DigitsCNN, DigitsCNNOutlier
from compress.zoo.sequence import DigitsLSTM
from compress.zoo.vision import mobilenet_v2, resnet18


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vision_models_match_torchvision_sizes():
    assert _params(resnet18()) == 11_689_512
    assert _params(mobilenet_v2()) == 3_504_872
    with torch.no_grad():
        assert resnet18(num_classes=7).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
        assert mobilenet_v2(num_classes=5).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_digits_models():
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert DigitsCNN(width=8)(x).shape == (3, 10)
        outlier = DigitsCNNOutlier(width=8, outlier=1000.0).eval()
        assert outlier(x).shape == (3, 10)
        assert outlier.outlier.scale[0, 0, 0, 0] == 1000.0 and outlier.outlier.scale[0, 1, 0, 0] == 1.0
        assert DigitsLSTM(hidden=16)(x[:, 0]).shape == (3, 10)
