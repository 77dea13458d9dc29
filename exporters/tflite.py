"""torch -> .tflite with litert-torch (no TensorFlow needed).

What the format imposes, handled here: a fixed batch of 1 (litert-torch cannot lower some ops,
e.g. Flatten, with a symbolic batch), int64 inputs become int32 (cast back inside the graph), and
NCHW is kept unless the recipe asks for channels-last input.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from exporters import refused

if TYPE_CHECKING:
    import torch


class TfliteExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels_last: bool = False  # NHWC input, as many mobile pipelines feed images


def prepare_for_tflite(model: torch.nn.Module, example: torch.Tensor,
                       channels_last: bool) -> tuple[torch.nn.Module, torch.Tensor]:
    """The module and batch-1 example litert-torch should convert."""
    import torch

    class Int32Inputs(torch.nn.Module):
        """Most TFLite delegates have no int64 tensors: take int32, widen inside the graph."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.long())

    example = example[:1]
    if example.dtype == torch.int64:
        model = Int32Inputs(model)
        example = example.to(torch.int32)
    if channels_last:
        import litert_torch

        model = litert_torch.to_channel_last_io(model, args=[0])
        example = example.permute(0, *range(2, example.dim()), 1).contiguous()
    return model.eval(), example


class TfliteExporter:
    name = "tflite"
    format = "tflite"
    Config = TfliteExportConfig
    requires = ("litert_torch",)
    install_hint = "pip install 'edge-compress[tflite]'"

    def __init__(self, config: TfliteExportConfig | None = None) -> None:
        self.config = config or TfliteExportConfig()

    def export(self, model: torch.nn.Module, example: torch.Tensor, folder: Path,
               input_name: str) -> tuple[Path, dict[str, Any]]:
        import litert_torch
        import numpy as np
        import torch

        module, sample = prepare_for_tflite(model, example, self.config.channels_last)
        dest = folder / "model.tflite"
        try:
            litert_torch.convert(module, (sample,)).export(str(dest))
        except Exception as exc:
            raise refused("tflite", exc, "TFLite conversion") from None
        from runtimes.agent import load_backend

        got = load_backend("litert", str(dest)).run({input_name: sample.numpy()})[0]
        with torch.no_grad():
            want = module(sample).numpy()
        error = float(np.abs(got - want).max())
        return dest, {"batch": 1, "channels_last": self.config.channels_last,
                      "input_dtype": str(sample.dtype).replace("torch.", ""), "max_abs_error_vs_torch": error}
