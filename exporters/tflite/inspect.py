"""Reading a .tflite back: each weighted op, its MACs and weights, and whether it stores its weights in
int8 and multiplies in int8 (int8 activations, or a hybrid kernel that quantizes them per call)."""

from __future__ import annotations

import math
from pathlib import Path

from compress.contracts import Readback, WeightedOp

RECURRENT = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"}
# Where each op keeps its weights (input positions) and its activation input.
_WEIGHTS: dict[str, tuple[tuple[int, ...], int]] = {
    "FULLY_CONNECTED": ((1,), 0), "CONV_2D": ((1,), 0), "DEPTHWISE_CONV_2D": ((1,), 0), "CONV_3D": ((1,), 0),
    "TRANSPOSE_CONV": ((1,), 2), "BATCH_MATMUL": ((1,), 0), "EMBEDDING_LOOKUP": ((1,), 0), "GATHER": ((0,), 1),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ((1, 2, 3, 4, 5, 6, 7, 8), 0), "UNIDIRECTIONAL_SEQUENCE_RNN": ((1, 2), 0)}
_LOOKUPS = {"EMBEDDING_LOOKUP", "GATHER"}
_INT8 = {"int8", "uint8", "int4"}


def readback(path: Path) -> Readback:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # tflite_runtime has no op details to read
        return Readback()
    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    details = interpreter._get_ops_details()  # the public API lists tensors, not ops
    producers = {out: op for op in details for out in op["outputs"]}

    def constant(index: int) -> tuple[list[int], bool] | None:
        """(shape, stored in int8) of a weight: a tensor no op produces, or one a DEQUANTIZE makes from one."""
        if index < 0:
            return None
        tensor = tensors[index]
        shape = [int(d) for d in tensor["shape"]]
        producer = producers.get(index)
        if producer is None:
            return shape, tensor["dtype"].__name__ in _INT8
        if producer["op_name"] == "DEQUANTIZE" and producer["inputs"][0] not in producers:
            return shape, tensors[producer["inputs"][0]]["dtype"].__name__ in _INT8  # weight-only: float compute
        return None

    ops: list[WeightedOp] = []
    for op in details:
        spec = _WEIGHTS.get(op["op_name"])
        inputs = list(op["inputs"])
        if spec is None:
            continue
        positions, activation = spec
        positions = tuple(p for p in positions if p < len(inputs) and inputs[p] >= 0)
        found = [constant(inputs[p]) for p in positions]
        if not found or any(f is None for f in found):
            continue  # an input computed at run time: not a weighted op
        int8_weights = all(f[1] for f in found if f)
        dequantized = any(producers.get(inputs[p], {}).get("op_name") == "DEQUANTIZE" for p in positions)
        # int8 weights read as int8 (not through a DEQUANTIZE) run on int8 kernels: int8 activations
        # (static), or hybrid kernels that quantize a float activation per call (dynamic); a lookup
        # multiplies nothing
        int8_compute = int8_weights if op["op_name"] in _LOOKUPS else int8_weights and not dequantized
        shapes = [f[0] for f in found if f]
        x = [int(d) for d in tensors[inputs[activation]]["shape"]] if activation < len(inputs) else []
        out = [int(d) for d in tensors[op["outputs"][0]]["shape"]]
        ops.append(WeightedOp(name=tensors[inputs[positions[0]]]["name"], op_type=op["op_name"],
                              macs=_macs(op["op_name"], shapes, x, out), weights=sum(math.prod(s) for s in shapes),
                              int8_weights=int8_weights, int8_compute=int8_compute,
                              recurrent=op["op_name"] in RECURRENT))
    return Readback(ops=tuple(ops))


def _macs(kind: str, weights: list[list[int]], x: list[int], out: list[int]) -> int:
    w = weights[0]
    if kind in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        return math.prod(out[1:]) * (w[-1] if kind == "FULLY_CONNECTED" else w[-2])
    if kind in ("CONV_2D", "CONV_3D"):
        return math.prod(out[1:]) * math.prod(w[1:])
    if kind == "DEPTHWISE_CONV_2D":
        return math.prod(out[1:]) * math.prod(w[1:-1])
    if kind == "TRANSPOSE_CONV":
        return math.prod(x[1:]) * math.prod(w[:-1])
    if kind in RECURRENT:
        steps = x[1] if len(x) > 2 else 1
        return steps * sum(math.prod(s) for s in weights)
    return 0  # a lookup

