"""ONNX: torch.onnx's dynamo exporter; int8 with ONNX Runtime's quantizers (QDQ static, dynamic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

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
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic"), "fp16": ("graph",),
                                                       "int4_weights": ("weights",)}
    QuantizeOptions = None
    # Measured (tests/test_recurrent_int8.py): ONNX Runtime's static QDQ quantizer leaves LSTM and GRU
    # nodes in float, its dynamic one has an int8 LSTM kernel but none for GRU; torch.onnx writes an
    # RNN as MatMuls, which both quantize.
    layer_int8: ClassVar[dict[str, dict[str, str]]] = {"static": {"LSTM": "float", "GRU": "float"},
                                                       "dynamic": {"GRU": "float"}}

    def check_int4(self, config: Any) -> list[tuple[str, str]]:
        """ONNX Runtime's MatMulNBits quantizer rounds to nearest: no data-aware method."""
        return [(option, f"ONNX Runtime's MatMulNBits quantizer has no {what}; use it with openvino (NNCF)")
                for option, what in (("awq", "AWQ"), ("scale_estimation", "scale estimation"))
                if getattr(config, option)]

    def check_quantize(self, config: Any) -> list[tuple[str, str]]:
        refused = []
        if config.bias_correction:
            refused.append(("bias_correction", "ONNX Runtime's quantizer has no bias correction"))
        if config.mode == "dynamic":  # quantize_dynamic: uint8 activations from their range at run time
            if config.activations == "int8":
                refused.append(("activations", "ONNX Runtime's dynamic quantizer quantizes activations to uint8"))
            if config.symmetric_activations:
                refused.append(("symmetric_activations", "ONNX Runtime's dynamic quantizer quantizes activations "
                                                         "asymmetrically"))
        return refused

    def check_file(self, path: Path) -> None:
        from compress.exporters.onnx.inspect import check_external_data

        check_external_data(path)
