"""torch -> .tflite with litert-torch (no TensorFlow needed).

What the format imposes, handled here: a fixed batch of 1 (litert-torch cannot lower some ops,
e.g. Flatten, with a symbolic batch), int64 inputs become int32 (cast back inside the graph), and
NCHW is kept unless the recipe asks for channels-last input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compress.contracts import Exported, ExportRequest
from compress.errors import refused

if TYPE_CHECKING:
    import torch


def prepare_for_tflite(model: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...],
                       channels_last: bool) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The module and batch-1 example (one tensor per input, in order) litert-torch should convert."""
    import torch

    examples = tuple(t[:1] for t in (example if isinstance(example, tuple) else (example,)))
    wide = [t.dtype == torch.int64 for t in examples]

    class Int32Inputs(torch.nn.Module):
        """Most TFLite delegates have no int64 tensors: take int32, widen inside the graph."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(*(x.long() if widen else x for x, widen in zip(inputs, wide, strict=True)))

    if any(wide):
        model = Int32Inputs(model)
        examples = tuple(t.to(torch.int32) if widen else t for t, widen in zip(examples, wide, strict=True))
    if channels_last:
        import litert_torch

        model = litert_torch.to_channel_last_io(model, args=[0])
        first = examples[0]
        examples = (first.permute(0, *range(2, first.dim()), 1).contiguous(), *examples[1:])
    return model.eval(), examples


def channels_last_axes(rank: int) -> list[int]:
    """The axes NCHW data is transposed by for a channels-last model (NCHW -> NHWC)."""
    return [0, *range(2, rank), 1]


def export(request: ExportRequest) -> Exported:
    import litert_torch
    import numpy as np
    import torch

    channels_last = bool(request.options and request.options.channels_last)
    module, sample = prepare_for_tflite(request.model, request.example, channels_last)
    dest = request.folder / "model.tflite"
    try:
        litert_torch.convert(module, sample).export(str(dest))
    except Exception as exc:
        raise refused("tflite", exc, "TFLite conversion") from None
    got = request.run("litert", dest, {name: t.numpy() for name, t in zip(request.input_names, sample, strict=True)})[0]
    with torch.no_grad():
        want = module(*sample).numpy()
    dtypes = [str(t.dtype).replace("torch.", "") for t in sample]
    info: dict[str, Any] = {"batch": 1, "channels_last": channels_last,
                            "input_dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
                            "input_shapes": [list(t.shape) for t in sample],
                            "max_abs_error_vs_torch": float(np.abs(got - want).max())}
    attributes = {"input_transpose": channels_last_axes(request.example[0].dim())} if channels_last else {}
    return Exported(path=dest, info=info, attributes=attributes)
