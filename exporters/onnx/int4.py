"""ONNX 4-bit weights: ONNX Runtime's MatMulNBits quantizer. The weights of MatMul (and Gemm, once
ONNX Runtime rewrites it) become 4-bit blocks of `group_size` along the input axis, run by the
MatMulNBits contrib op; everything else stays as exported."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from compress.contracts import Exported, Int4Request, int4_weights_result, outputs_on_example
from compress.errors import tool_failure
from compress.exporters.onnx.export import save_proto
from compress.exporters.onnx.inspect import check_external_data


def weight_counts(model: Any) -> tuple[int, int]:
    """(weights stored in 4 bits, all weights): MatMulNBits nodes hold K x N weights each; every other
    floating-point or integer initializer of two dimensions or more counts as a weight."""
    import onnx

    packed = set()
    four_bit = blocked = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attributes = {a.name: a.i for a in node.attribute}
            blocked += attributes["K"] * attributes["N"]
            four_bit += attributes["K"] * attributes["N"] if attributes.get("bits", 4) == 4 else 0
            packed.update(node.input[1:])  # the packed blocks, their scales and zero points
    others = 0
    for tensor in model.graph.initializer:
        if tensor.name in packed or len(tensor.dims) < 2 or tensor.data_type == onnx.TensorProto.INT64:
            continue
        count = 1
        for dim in tensor.dims:
            count *= dim
        others += count
    return four_bit, blocked + others


def where_weights_stayed(model: Any) -> str:
    """The op types whose weights MatMulNBits left as they were, most weights first: MatMulNBits
    takes MatMul weights only, so a Gemm (GPT-2's Conv1D, a Linear exported as addmm) or a Conv keeps
    its own."""
    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer if len(t.dims) >= 2}
    held: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            for name in node.input:
                held[node.op_type] += sizes.get(name, 0)
    named = [f"{op} ({count:,} weights)" for op, count in held.most_common(3) if count]
    return ("MatMulNBits compresses MatMul weights; these stayed in " + ", ".join(named)) if named else ""


def to_int4_weights(request: Int4Request) -> Exported:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    source: Path = request.source.path
    dest = request.folder / "model.onnx"
    config = request.config
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source), load_external_data=True), bits=4,
                                         block_size=config.group_size, is_symmetric=config.symmetric)
        quantizer.process()
        model = quantizer.model.model
        external = save_proto(model, dest)
    except Exception as exc:
        raise tool_failure("ONNX Runtime MatMulNBits quantization", exc, field="quantize.onnx") from None
    check_external_data(dest)
    got, want = outputs_on_example(request.run, "onnxruntime", dest, request.torch_model, request.example,
                                   request.input_names, "int4 weights model", "quantize.onnx")
    return int4_weights_result(dest, "onnx", weight_counts(model), got, want, {
        "quantizer": "onnxruntime MatMulNBitsQuantizer (round to nearest)", "group_size": config.group_size,
        "symmetric": config.symmetric, "external_data": external}, why=where_weights_stayed(model))
