"""OpenVINO IR (.xml + .bin in a folder): openvino.convert_model; int8 with NNCF."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from compress.contracts import FormatFolder
from compress.errors import InputError


class OpenVinoExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fp16: bool = False  # store weights as fp16 (half the size; computed in fp32 unless the device prefers)


class OpenVinoQuantizeOptions(BaseModel):
    """NNCF options no other format's quantizer has (`quantize.per_format.openvino`)."""

    model_config = ConfigDict(extra="forbid")

    # NNCF's transformer scheme keeps softmax / layer norm inputs in float where that keeps accuracy.
    model_type: Literal["default", "transformer"] = "default"
    fast_bias_correction: bool = True  # False: NNCF's full bias correction (slower, sometimes closer)


class OpenVinoFormat(FormatFolder):
    name = "openvino"
    runtimes = ("openvino",)
    suffixes = (".xml",)
    loads_code = False
    requires = ("openvino",)
    install_hint = "pip install 'edge-compress[openvino]'"
    libraries = ("torch", "openvino", "onnx", "onnxscript")
    quantize_libraries = ("openvino", "nncf")
    Config = OpenVinoExportConfig
    quantizer = "nncf"
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic"), "fp16": ("weights",),
                                                       "int4_weights": ("weights",)}
    QuantizeOptions = OpenVinoQuantizeOptions
    # Measured (tests/test_recurrent_int8.py): nncf.quantize puts an LSTMSequence in int8, not a GRU or
    # RNN sequence; int8 weight compression (dynamic) compresses MatMul / Conv weights only.
    layer_int8: ClassVar[dict[str, dict[str, str]]] = {"static": {"GRU": "float", "RNN": "float"},
                                                       "dynamic": {"LSTM": "float", "GRU": "float", "RNN": "float"}}

    def check_quantize(self, config: Any) -> list[tuple[str, str]]:
        refused = []
        if config.mode == "static" and config.calibration.method == "entropy":
            refused.append(("calibration.method", "NNCF has no entropy (KL) range estimator; use minmax or percentile"))
        if config.mode == "dynamic":  # nncf.compress_weights: int8 weights per channel, activations untouched
            if "per_channel" in config.explicit() and not config.per_channel:
                refused.append(("per_channel", "NNCF's int8 weight compression is per channel"))
            for option in ("activations", "symmetric_activations"):
                if getattr(config, option) is not None:
                    refused.append((option, "NNCF's int8 weight compression leaves activations to the runtime"))
            if config.bias_correction:
                refused.append(("bias_correction", "NNCF's int8 weight compression has no bias correction"))
        return refused

    def check_file(self, path: Path) -> None:
        xml = path / "model.xml" if path.is_dir() else path
        if not xml.with_suffix(".bin").is_file():
            raise InputError(f"{xml.with_suffix('.bin').name} (the weights of this IR) is missing", file=str(xml))
