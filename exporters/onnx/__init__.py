"""ONNX: torch.onnx's dynamo exporter; int8 with ONNX Runtime's quantizers (QDQ static, dynamic)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from compress.contracts import FormatFolder


class OnnxFormat(FormatFolder):
    name = "onnx"
    runtimes = ("onnxruntime", "openvino")
    suffixes = (".onnx",)
    loads_code = False
    requires = ("onnx", "onnxscript", "onnxruntime")
    install_hint = "pip install 'edge-compress[onnx]'"
    libraries = ("torch", "onnx", "onnxscript", "onnxruntime")
    quantize_libraries = ("onnx", "onnxruntime")
    Config = None
    quantizer = "onnxruntime"
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic")}

    def check_file(self, path: Path) -> None:
        from compress.exporters.onnx.inspect import check_external_data

        check_external_data(path)
