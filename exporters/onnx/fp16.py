"""ONNX fp16: ONNX Runtime's float16 conversion of the fp32 graph, float32 inputs and outputs kept
(Casts at the edges), so the same feeds run it; ops ONNX Runtime keeps in float32 stay there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.contracts import Exported, Fp16Request, fp16_result, outputs_on_example
from compress.errors import tool_failure
from compress.exporters.onnx.export import save_proto
from compress.exporters.onnx.inspect import check_external_data


def weight_bytes(model: Any) -> tuple[int, int]:
    """(float16 bytes, all floating-point bytes) of the graph's initializers."""
    import onnx

    sizes = {onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.FLOAT: 4, onnx.TensorProto.DOUBLE: 8,
             onnx.TensorProto.BFLOAT16: 2}
    half = total = 0
    for tensor in model.graph.initializer:
        if tensor.data_type in sizes:
            count = 1
            for dim in tensor.dims:
                count *= dim
            total += count * sizes[tensor.data_type]
            half += count * 2 if tensor.data_type == onnx.TensorProto.FLOAT16 else 0
    return half, total


def to_fp16(request: Fp16Request) -> Exported:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source: Path = request.source.path
    dest = request.folder / "model.onnx"
    try:
        model = onnx.load(str(source), load_external_data=True)
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        external = save_proto(half, dest)
    except Exception as exc:
        raise tool_failure("ONNX Runtime float16 conversion", exc, field="quantize.onnx") from None
    check_external_data(dest)
    got, want = outputs_on_example(request.run, "onnxruntime", dest, request.torch_model, request.example,
                                   request.input_names, "fp16 model", "quantize.onnx")
    return fp16_result(dest, "onnx", weight_bytes(half), got, want, {
        "converter": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
        "external_data": external})
