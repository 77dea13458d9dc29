"""Reading a .tflite back: which weighted ops still compute in float (a float32 weight tensor)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from compress.contracts import Readback

WEIGHTED = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV",
            "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"}
RECURRENT = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"})


def readback(path: Path) -> Readback:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return Readback()
    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found: dict[str, list[str]] = defaultdict(list)
    for op in interpreter._get_ops_details():  # the public API lists tensors, not ops
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in WEIGHTED and len(inputs) > 1 and tensors[inputs[1]]["dtype"].__name__ == "float32":
            found[op["op_name"]].append(tensors[inputs[1]]["name"])
    return Readback(float_ops=dict(found), recurrent_ops=RECURRENT)
