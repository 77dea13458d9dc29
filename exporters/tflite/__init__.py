"""TFLite: litert-torch's converter (no TensorFlow); int8 with its PT2E quantizer (static) or its
dynamic recipe (AI Edge Quantizer)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from compress.contracts import FormatFolder


class TfliteExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels_last: bool = False  # NHWC input, as many mobile pipelines feed images


class TfliteFormat(FormatFolder):
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

    def check_file(self, path: Path) -> None:
        """A .tflite file is one flatbuffer: nothing beside it is read."""
