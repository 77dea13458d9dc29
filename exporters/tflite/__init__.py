"""TFLite: litert-torch's converter (no TensorFlow); int8 with its PT2E quantizer (static) or its
dynamic recipe (AI Edge Quantizer)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from compress.contracts import Exported, ExportRequest, QuantizeRequest, Readback


class TfliteExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels_last: bool = False  # NHWC input, as many mobile pipelines feed images


class TfliteFormat:
    name = "tflite"
    runtimes = ("litert",)
    suffixes = (".tflite",)
    loads_code = False
    requires = ("litert_torch",)
    install_hint = "pip install 'edge-compress[tflite]'"
    libraries = ("torch", "litert-torch", "litert-converter", "ai-edge-litert")
    quantize_libraries = ("torch", "litert-torch", "litert-converter", "torchao", "ai-edge-quantizer")
    Config = TfliteExportConfig
    quantizer = "litert-pt2e"
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic")}

    def export(self, request: ExportRequest) -> Exported:
        from compress.exporters.tflite.export import export

        return export(request)

    def quantize(self, request: QuantizeRequest) -> Exported:
        from compress.exporters.tflite.quantize import quantize

        return quantize(request)

    def inspect(self, path: Path) -> Readback:
        from compress.exporters.tflite.inspect import readback

        return readback(path)

    def check_file(self, path: Path) -> None:
        """A .tflite file is one flatbuffer: nothing beside it is read."""
