"""Reading an IR back: each weighted op, its MACs and weights, and whether its weights are int8
(an int8 constant, or a FakeQuantize the CPU plugin folds into one) and its activations are
quantized (a FakeQuantize feeds them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from compress.contracts import Readback, WeightedOp

RECURRENT = {"LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell"}
# Where each op keeps its weights (input positions).
_WEIGHTS = {"Convolution": (1,), "GroupConvolution": (1,), "ConvolutionBackpropData": (1,),
            "GroupConvolutionBackpropData": (1,), "MatMul": (1,), "LSTMSequence": (4, 5), "GRUSequence": (3, 4),
            "RNNSequence": (3, 4), "LSTMCell": (3, 4), "GRUCell": (2, 3), "RNNCell": (2, 3), "Gather": (0,)}
_DECOMPRESSION = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "FakeQuantize"}
_INT8 = ("<Type: 'int8_t'>", "<Type: 'uint8_t'>", "<Type: 'int4_t'>", "<Type: 'uint4_t'>")


def _constant(node: Any, depth: int = 0) -> tuple[bool, bool] | None:
    """(is a constant weight, stored in int8) for the producer of a weight input."""
    kind = node.get_type_name()
    if kind == "Constant":
        return True, str(node.get_output_element_type(0)) in _INT8
    if depth > 5 or kind not in _DECOMPRESSION:
        return None
    if kind == "FakeQuantize":  # quantized weights: the plugin stores them in int8 when it compiles
        found = _constant(node.input_value(0).get_node(), depth + 1)
        return (True, True) if found else None
    found = [_constant(v.get_node(), depth + 1) for v in node.input_values()]
    if not found or found[0] is None:
        return None
    return True, any(f[1] for f in found if f)


def _quantized(node: Any, depth: int = 0) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    return depth < 3 and kind in ("Convert", "Reshape", "Transpose") and _quantized(node.input_value(0).get_node(),
                                                                                     depth + 1)


def _shape(value: Any) -> list[int]:
    return [d.get_length() if d.is_static else 1 for d in value.get_partial_shape()]


def readback(folder: Path) -> Readback:
    import openvino as ov

    model = ov.Core().read_model(str(folder / "model.xml"))
    ops: list[WeightedOp] = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        positions = _WEIGHTS.get(kind)
        if positions is None or max(positions) >= op.get_input_size():
            continue
        found = [_constant(op.input_value(p).get_node()) for p in positions]
        if any(f is None for f in found):
            continue  # an input computed at run time (attention's QK^T): not a weighted op
        shapes = [_shape(op.input_value(p)) for p in positions]
        int8_weights = all(f[1] for f in found if f)
        activation = 1 if kind == "Gather" else 0
        int8_compute = int8_weights if kind == "Gather" else int8_weights and _quantized(
            op.input_value(activation).get_node())
        ops.append(WeightedOp(name=op.get_friendly_name(), op_type=kind, macs=_macs(op, kind, shapes),
                              weights=sum(math.prod(s) for s in shapes), int8_weights=int8_weights,
                              int8_compute=int8_compute, recurrent=kind in RECURRENT))
    return Readback(ops=tuple(ops))


def _macs(op: Any, kind: str, weights: list[list[int]]) -> int:
    out = _shape(op.output(0))
    w = weights[0]
    if kind == "Convolution":
        return math.prod(out[1:]) * math.prod(w[1:])
    if kind == "GroupConvolution":
        return math.prod(out[1:]) * math.prod(w[2:])
    if kind in ("ConvolutionBackpropData", "GroupConvolutionBackpropData"):
        return math.prod(_shape(op.input_value(0))[1:]) * math.prod(w[1:])
    if kind == "MatMul":
        transpose = op.get_attributes().get("transpose_b", False)
        depth = (w[-1] if transpose else w[-2]) if len(w) >= 2 else 1
        return math.prod(out[1:]) * depth
    if kind in RECURRENT:
        x = _shape(op.input_value(0))
        steps = x[1] if kind.endswith("Sequence") and len(x) > 2 else 1
        return steps * sum(math.prod(s) for s in weights)
    return 0  # Gather: a lookup
