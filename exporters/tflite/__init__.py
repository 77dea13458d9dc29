"""TFLite: litert-torch's converter (no TensorFlow); int8 with its PT2E quantizer (static) or its
dynamic recipe (AI Edge Quantizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

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
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]] = {"int8": ("static", "dynamic"), "fp16": ("weights",),
                                                       "int4_weights": ("weights",)}
    QuantizeOptions = None
    # Measured (tests/test_recurrent_int8.py): litert-torch lowers recurrent layers to fully connected
    # ops; static PT2E leaves those of an LSTM or RNN in float and fails on a GRU (IndexError); the
    # dynamic recipe puts them all in int8.
    layer_int8: ClassVar[dict[str, dict[str, str]]] = {"static": {"LSTM": "float", "GRU": "fails", "RNN": "float"},
                                                       "dynamic": {}}

    def check_int4(self, config: Any) -> list[tuple[str, str]]:
        """LiteRT's int4 scheme: symmetric blocks of 32 to 256 weights, rounded to nearest."""
        refused = [(option, f"AI Edge Quantizer's int4 recipe has no {what}; use it with openvino (NNCF)")
                   for option, what in (("awq", "AWQ"), ("scale_estimation", "scale estimation"))
                   if getattr(config, option)]
        if config.group_size not in (32, 64, 128, 256):
            refused.append(("group_size", f"LiteRT's int4 blocks hold 32, 64, 128 or 256 weights, not "
                                          f"{config.group_size}"))
        if not config.symmetric:
            refused.append(("symmetric", "LiteRT's int4 weights are symmetric (no zero point)"))
        return refused

    def check_quantize(self, config: Any) -> list[tuple[str, str]]:
        refused = []
        if config.mode == "static":
            if config.calibration.method == "entropy":
                refused.append(("calibration.method", "litert-torch's PT2E observers have no entropy (KL) "
                                                      "calibration; use minmax or percentile"))
            if config.activations == "uint8":
                refused.append(("activations", "TFLite's int8 scheme quantizes activations to int8"))
        else:  # the dynamic recipe: int8 weights per channel, activations quantized by the kernels per call
            if "per_channel" in config.explicit() and not config.per_channel:
                refused.append(("per_channel", "litert-torch's dynamic recipe quantizes weights per channel"))
            for option in ("activations", "symmetric_activations"):
                if getattr(config, option) is not None:
                    refused.append((option, "litert-torch's dynamic recipe leaves activations to the kernels"))
            if config.bias_correction:
                refused.append(("bias_correction", "dynamic int8 has no calibrated activations to correct for"))
        return refused

    def check_file(self, path: Path) -> None:
        """A .tflite file is one flatbuffer, nothing beside it is read; it names itself TFL3."""
        from compress.errors import InputError

        with path.open("rb") as handle:
            head = handle.read(8)
        if head[4:8] != b"TFL3":
            raise InputError("not a TFLite model (no TFL3 flatbuffer identifier)", file=str(path))
