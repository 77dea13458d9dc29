"""Reading an ONNX file back: each weighted node, its MACs and weights, and whether it stores its
weights and multiplies in int8; and whether the file's external data stays inside its folder."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

from compress.contracts import Readback, WeightedOp
from compress.errors import InputError

RECURRENT = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}
# Nodes that are int8 whatever feeds them (the QOperator format and the dynamic quantizer's kernels).
_INT8_KERNELS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "QGemm"}
# Where each node keeps its weights (input positions), and its activation input.
_WEIGHTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1,), "ConvInteger": (1,),
            "MatMulInteger": (1,), "QLinearConv": (3,), "QLinearMatMul": (3,), "QGemm": (3,), "LSTM": (1, 2),
            "GRU": (1, 2), "RNN": (1, 2), "DynamicQuantizeLSTM": (1, 2), "Gather": (0,)}
_PASS_THROUGH = {"Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze"}
_INT8_TYPES = {2, 3}  # TensorProto.UINT8, TensorProto.INT8


def readback(path: Path) -> Readback:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    with contextlib.suppress(Exception):  # shapes are for MACs only: an op of unknown shape counts 0 MACs
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    shapes = {value.name: [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
              for value in [*graph.value_info, *graph.input, *graph.output]}

    def weight(name: str, depth: int = 0) -> tuple[list[int], bool] | None:
        """(shape, stored in int8) of a constant weight, followed through dequantization and reshapes."""
        if name in initializers:
            tensor = initializers[name]
            return list(tensor.dims), tensor.data_type in _INT8_TYPES
        node = producers.get(name)
        if node is None or depth > 4:
            return None
        if node.op_type == "DequantizeLinear":
            found = weight(node.input[0], depth + 1)
            return (found[0], True) if found else None
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            return (list(value.dims), value.data_type in _INT8_TYPES) if value is not None else None
        if node.op_type in _PASS_THROUGH and node.input:
            found = weight(node.input[0], depth + 1)
            return (shapes.get(name, found[0]), found[1]) if found else None
        return None

    def quantized_input(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type in ("DequantizeLinear", "DynamicQuantizeLinear")

    ops: list[WeightedOp] = []
    for node in graph.node:
        positions = _WEIGHTS.get(node.op_type)
        if positions is None or max(positions) >= len(node.input):
            continue
        found = [weight(node.input[p]) for p in positions]
        if any(f is None for f in found):
            continue  # an input computed at run time (attention's QK^T): not a weighted op
        shapes_w = [f[0] for f in found if f]
        int8_weights = all(f[1] for f in found if f)
        if node.op_type == "Gather":
            int8_compute = int8_weights  # a lookup multiplies nothing
        else:
            int8_compute = node.op_type in _INT8_KERNELS or (int8_weights and quantized_input(node.input[0]))
        ops.append(WeightedOp(
            name=node.name or node.output[0], op_type=node.op_type,
            macs=_macs(node, shapes_w, shapes.get(node.input[0], []), shapes.get(node.output[0], [])),
            weights=sum(math.prod(s) for s in shapes_w), int8_weights=int8_weights, int8_compute=int8_compute,
            recurrent=node.op_type in RECURRENT))
    return Readback(ops=tuple(ops))


def _attribute(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _macs(node: Any, weights: list[list[int]], x: list[int], out: list[int]) -> int:
    kind = node.op_type
    if not weights or not weights[0]:
        return 0
    w = weights[0]
    if kind in ("Conv", "ConvInteger", "QLinearConv"):
        return math.prod(out[1:]) * math.prod(w[1:]) if out else 0
    if kind == "ConvTranspose":
        return math.prod(x[1:]) * math.prod(w[1:]) if x else 0
    if kind in ("Gemm", "QGemm"):
        depth = w[1] if _attribute(node, "transB", 0) else w[0]
        return math.prod(out[1:]) * depth if out else 0
    if kind in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        return math.prod(out[1:]) * (w[-2] if len(w) >= 2 else 1) if out else 0
    if kind in RECURRENT:
        steps = (x[1] if _attribute(node, "layout", 0) else x[0]) if x else 1
        return steps * sum(math.prod(s) for s in weights)
    return 0  # Gather: a lookup


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose external tensors point outside its own folder (by `../`, an absolute
    path, a symlink, or a hard link to a file elsewhere)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"not a readable ONNX model: {type(exc).__name__}: {str(exc).strip()[:200]}",
                         file=str(path)) from None
    if not model.graph.node and not model.graph.output:
        raise InputError("not an ONNX model: it has no graph", file=str(path))
    root = path.resolve().parent
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise InputError(f"tensor {tensor.name!r} points at external data outside the model's folder "
                             f"({location!r}); refused", file=str(path), field="external_data")
        if target.is_file() and os.stat(target).st_nlink > 1:
            raise InputError(f"tensor {tensor.name!r}: its external data file {location!r} has more than one "
                             "hard link (it may be a file from elsewhere); refused", file=str(path),
                             field="external_data")
