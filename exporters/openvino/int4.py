"""OpenVINO 4-bit weights: NNCF's compress_weights on the fp32 IR (INT4_SYM or INT4_ASYM in groups of
`group_size`, every layer with weights; a layer whose input size the group does not divide gets a
smaller group, down to 16). AWQ and scale estimation run on the calibration samples when asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.contracts import Exported, Int4Request, int4_weights_result, outputs_on_example
from compress.errors import tool_failure


def weight_counts(model: Any) -> tuple[int, int]:
    """(weights stored in 4 bits, all weights): Constants of two dimensions or more, by element type."""
    four_bit = total = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or not op.get_output_partial_shape(0).is_static:
            continue
        shape = list(op.get_output_shape(0))
        kind = op.get_element_type().get_type_name()
        if len(shape) < 2 or kind in ("i64", "i32", "boolean"):
            continue
        count = 1
        for dim in shape:
            count *= dim
        total += count
        four_bit += count if kind in ("i4", "u4") else 0
    return four_bit, total


def to_int4_weights(request: Int4Request) -> Exported:
    import nncf
    import openvino as ov

    config = request.config
    source: Path = request.source.path
    ir = request.folder / "ir"
    data_aware = config.awq or config.scale_estimation
    samples = [{name: array[i:i + 1] for name, array in request.calibration.items()}
               for i in range(len(next(iter(request.calibration.values()))))] if data_aware else []
    try:
        model = ov.Core().read_model(str(source / "model.xml"))
        compressed = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT4_SYM if config.symmetric else nncf.CompressWeightsMode.INT4_ASYM,
            group_size=config.group_size, ratio=1.0, all_layers=True,
            dataset=nncf.Dataset(samples) if data_aware else None, subset_size=max(1, len(samples)),
            awq=config.awq, scale_estimation=config.scale_estimation,
            advanced_parameters=nncf.AdvancedCompressionParameters(
                group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST, min_adjusted_group_size=16))
        ir.mkdir(parents=True, exist_ok=True)
        ov.save_model(compressed, str(ir / "model.xml"), compress_to_fp16=False)
    except Exception as exc:
        raise tool_failure("NNCF int4 weight compression", exc, field="quantize.openvino") from None
    got, want = outputs_on_example(request.run, "openvino", ir, request.torch_model, request.example,
                                   request.input_names, "int4 weights model", "quantize.openvino")
    return int4_weights_result(ir, "openvino", weight_counts(compressed), got, want, {
        "quantizer": "nncf.compress_weights", "mode": "int4_sym" if config.symmetric else "int4_asym",
        "group_size": config.group_size, "all_layers": True, "awq": config.awq,
        "scale_estimation": config.scale_estimation, "calibration_samples": len(samples)})
