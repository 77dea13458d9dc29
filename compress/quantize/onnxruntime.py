"""ONNX fp32 -> int8 with ONNX Runtime's static quantizer: QDQ format, per-channel weights,
calibration on samples from the calibration split."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import StageError
from compress.quantize import match_names

if TYPE_CHECKING:
    import numpy as np

    from compress.artifact import Artifact
    from compress.recipe import QuantizeConfig


class OnnxRuntimeQuantizer:
    name = "onnxruntime"
    format = "onnx"
    requires = ("onnxruntime", "onnx")
    install_hint = "pip install 'edge-compress[onnx]'"

    def quantize(self, source: Artifact, folder: Path, config: QuantizeConfig, calibration: np.ndarray, *,
                 input_name: str, torch_model: Any = None, file: str | None = None) -> tuple[Path, dict[str, Any]]:
        dest = folder / "model.onnx"
        return dest, self.quantize_file(source.path, dest, config, calibration, input_name, file=file)

    def quantize_file(self, source: Path, dest: Path, config: QuantizeConfig, calibration: np.ndarray,
                      input_name: str, *, file: str | None = None) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        samples = calibration[: config.calibration.samples]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._batches = iter(samples[i:i + 16] for i in range(0, len(samples), 16))

            def get_next(self) -> dict[str, Any] | None:
                batch = next(self._batches, None)
                return None if batch is None else {input_name: batch}

        with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            # Shape inference and graph folding first, as ONNX Runtime's docs advise.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            nodes = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
            excluded = self._excluded(nodes, config.ignore, file)
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[config.calibration.method]
            extra = {"CalibPercentile": config.calibration.percentile} if method == CalibrationMethod.Percentile else {}
            try:
                quantize_static(
                    str(prepared), str(dest), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=config.per_channel,
                    activation_type=QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=excluded,
                    extra_options={**extra, "CalibTensorRangeSymmetric": False})
            except Exception as exc:
                raise StageError(f"ONNX Runtime quantization failed: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}", field="quantize") from None
        return {"quantizer": "onnxruntime.quantize_static", "format": "QDQ",
                "ignore_matches": {p: match_names(nodes, [p]) for p in config.ignore},
                "activations": config.activations, "weights": "int8", "per_channel": config.per_channel,
                "calibration_method": config.calibration.method, "calibration_samples": len(samples),
                "nodes_excluded": excluded}

    @staticmethod
    def _excluded(nodes: list[str], patterns: list[str], file: str | None) -> list[str]:
        return match_names(nodes, patterns)
