"""ONNX fp32 -> int8 with ONNX Runtime's quantizers: static (QDQ format, per-channel weights,
calibration on samples from the calibration split) or dynamic (int8 weights, activations quantized
at run time). With an accuracy budget, the nodes most harmful to accuracy are left unquantized."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from compress.contracts import Exported, QuantizeRequest, match_names
from compress.errors import StageError, first_line

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


def quantize(request: QuantizeRequest) -> Exported:
    dest = request.folder / "model.onnx"
    source = request.source.path
    if request.validation is None:
        return Exported(path=dest, info=quantize_file(source, dest, request))
    # Accuracy-aware: nodes left unquantized, most harmful first, until within the budget.
    import onnx

    reference = request.validation.score(source)
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # node names as quantize_file will see them
        _pre_process(source, prepared)
        candidates = _candidates(list(onnx.load(str(prepared), load_external_data=False).graph.node))
    info: dict[str, Any] = {}

    def quantize_leaving(excluded: list[str], path: Path) -> None:
        info.update(quantize_file(source, path, request, extra_excluded=excluded))

    report = request.validation.search(quantize_leaving, candidates, reference, dest)
    info["nodes_excluded"] = sorted(set(info.get("nodes_excluded", [])) - set(candidates)) + report.kept_in_float
    return Exported(path=dest, info={**info, **report.as_info()})


def quantize_file(source: Path, dest: Path, request: QuantizeRequest, *,
                  extra_excluded: list[str] | None = None) -> dict[str, Any]:
    import onnx

    config = request.config
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        _pre_process(source, prepared)
        nodes = [n.name for n in onnx.load(str(prepared), load_external_data=False).graph.node]
        excluded = match_names(nodes, config.ignore) + list(extra_excluded or [])
        if config.mode == "dynamic":
            info = _dynamic(prepared, dest, config, excluded)
        else:
            info = _static(prepared, dest, request, excluded)
    return {**info, "ignore_matches": {p: match_names(nodes, [p]) for p in config.ignore}, "nodes_excluded": excluded}


def _static(prepared: Path, dest: Path, request: QuantizeRequest, excluded: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    config = request.config
    samples = request.calibration[: config.calibration.samples]
    names = request.input_names

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(samples[i:i + 16] for i in range(0, len(samples), 16))

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self._batches, None)
            return None if batch is None else {names[0]: batch}

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration.method]
    extra = {"CalibPercentile": config.calibration.percentile} if method == CalibrationMethod.Percentile else {}
    try:
        quantize_static(
            str(prepared), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
            activation_type=QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=excluded,
            extra_options={**extra, "CalibTensorRangeSymmetric": False})
    except Exception as exc:
        raise StageError(f"ONNX Runtime quantization failed: {type(exc).__name__}: {first_line(exc)}",
                         field="quantize") from None
    return {"quantizer": "onnxruntime.quantize_static", "format": "QDQ", "mode": "static",
            "activations": config.activations, "weights": "int8", "per_channel": config.per_channel,
            "calibration_method": config.calibration.method, "calibration_samples": len(samples)}


def _dynamic(prepared: Path, dest: Path, config: Any, excluded: list[str]) -> dict[str, Any]:
    """int8 weights; activations quantized per call from their actual range (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(prepared), str(dest), per_channel=config.per_channel, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded)
    except Exception as exc:
        raise StageError(f"ONNX Runtime dynamic quantization failed: {type(exc).__name__}: {first_line(exc)}",
                         field="quantize") from None
    return {"quantizer": "onnxruntime.quantize_dynamic", "mode": "dynamic", "weights": "int8",
            "activations": "uint8, quantized at run time", "per_channel": config.per_channel}
