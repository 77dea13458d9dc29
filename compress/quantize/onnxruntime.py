"""ONNX fp32 -> int8 with ONNX Runtime's quantizers: static (QDQ format, per-channel weights,
calibration on samples from the calibration split) or dynamic (int8 weights, activations quantized
at run time)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import StageError
from compress.quantize import match_names
from compress.quantize.accuracy import Validation, greedy_keep_in_float

if TYPE_CHECKING:
    import numpy as np

    from compress.artifact import Artifact
    from compress.recipe import QuantizeConfig


# Ops that only move or reshape data: keeping them in float changes nothing on its own.
_LAYOUT_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice", "Split", "Pad", "Where",
               "TopK", "CumSum", "Resize", "GatherElements"}


def _candidates(nodes: list[Any]) -> list[str]:
    """Nodes the QDQ quantizer would quantize (its registries), minus pure data movement."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    quantized = (set(QDQRegistry) | set(QLinearOpsRegistry)) - _LAYOUT_OPS
    return [n.name for n in nodes if n.op_type in quantized]


def _pre_process(source: Path, dest: Path) -> None:
    """Shape inference and graph folding first, as ONNX Runtime's docs advise. Its symbolic shape
    inference fails on some graphs (MiniLM's attention here: "object of type 'NoneType' has no
    len()"); ONNX's own shape inference is enough for quantization then."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(dest), skip_symbolic_shape=False)
    except Exception:
        quant_pre_process(str(source), str(dest), skip_symbolic_shape=True)


class OnnxRuntimeQuantizer:
    name = "onnxruntime"
    format = "onnx"
    requires = ("onnxruntime", "onnx")
    install_hint = "pip install 'edge-compress[onnx]'"

    def quantize(self, source: Artifact, folder: Path, config: QuantizeConfig, calibration: np.ndarray, *,
                 input_name: str, torch_model: Any = None, file: str | None = None,
                 validation: Validation | None = None) -> tuple[Path, dict[str, Any]]:
        dest = folder / "model.onnx"
        if validation is None:
            return dest, self.quantize_file(source.path, dest, config, calibration, input_name, file=file)
        # Accuracy-aware: nodes left unquantized, most harmful first, until within the budget.
        import onnx

        reference = validation.score(source.path)
        with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
            prepared = Path(scratch) / "prepared.onnx"  # node names as quantize_file will see them
            _pre_process(source.path, prepared)
            candidates = _candidates(list(onnx.load(str(prepared), load_external_data=False).graph.node))
        info: dict[str, Any] = {}

        def quantize_leaving(excluded: list[str], path: Path) -> None:
            info.update(self.quantize_file(source.path, path, config, calibration, input_name, file=file,
                                           extra_excluded=excluded))

        report = greedy_keep_in_float(quantize_leaving, candidates, reference, validation, dest)
        info["nodes_excluded"] = sorted(set(info.get("nodes_excluded", [])) - set(candidates)) + report.kept_in_float
        return dest, {**info, **report.as_info()}

    def quantize_file(self, source: Path, dest: Path, config: QuantizeConfig, calibration: np.ndarray,
                      input_name: str, *, file: str | None = None, extra_excluded: list[str] | None = None
                      ) -> dict[str, Any]:
        if config.mode == "dynamic":
            return self._quantize_dynamic(source, dest, config, file=file, extra_excluded=extra_excluded)
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        samples = calibration[: config.calibration.samples]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._batches = iter(samples[i:i + 16] for i in range(0, len(samples), 16))

            def get_next(self) -> dict[str, Any] | None:
                batch = next(self._batches, None)
                return None if batch is None else {input_name: batch}

        with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            _pre_process(source, prepared)
            nodes = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
            excluded = self._excluded(nodes, config.ignore, file) + list(extra_excluded or [])
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
                "mode": "static", "activations": config.activations, "weights": "int8",
                "per_channel": config.per_channel,
                "calibration_method": config.calibration.method, "calibration_samples": len(samples),
                "nodes_excluded": excluded}

    def _quantize_dynamic(self, source: Path, dest: Path, config: QuantizeConfig, *, file: str | None = None,
                          extra_excluded: list[str] | None = None) -> dict[str, Any]:
        """int8 weights; activations quantized per call from their actual range (no calibration)."""
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            _pre_process(source, prepared)
            nodes = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
            excluded = self._excluded(nodes, config.ignore, file) + list(extra_excluded or [])
            try:
                quantize_dynamic(str(prepared), str(dest), per_channel=config.per_channel,
                                 weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
            except Exception as exc:
                raise StageError(f"ONNX Runtime dynamic quantization failed: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}", field="quantize") from None
        return {"quantizer": "onnxruntime.quantize_dynamic", "mode": "dynamic", "weights": "int8",
                "activations": "uint8, quantized at run time", "per_channel": config.per_channel,
                "ignore_matches": {p: match_names(nodes, [p]) for p in config.ignore}, "nodes_excluded": excluded}

    @staticmethod
    def _excluded(nodes: list[str], patterns: list[str], file: str | None) -> list[str]:
        return match_names(nodes, patterns)
