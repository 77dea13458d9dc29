"""Reading an IR back: which weighted ops still compute in float (no FakeQuantize or int8
constant feeds them)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from compress.contracts import Readback

WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "LSTMSequence", "GRUSequence", "RNNSequence",
            "LSTMCell", "GRUCell", "ConvolutionBackpropData"}
RECURRENT = frozenset({"LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell"})
_INT8 = ("<Type: 'int8_t'>", "<Type: 'uint8_t'>")


def _int8_source(node: Any, depth: int = 0) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind == "Constant":
        return str(node.get_output_element_type(0)) in _INT8
    if depth > 4 or kind not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"):
        return False
    return any(_int8_source(v.get_node(), depth + 1) for v in node.input_values())


def readback(folder: Path) -> Readback:
    import openvino as ov

    model = ov.Core().read_model(str(folder / "model.xml"))
    found: dict[str, list[str]] = defaultdict(list)
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in WEIGHTED and not any(_int8_source(v.get_node()) for v in op.input_values()):
            found[kind].append(op.get_friendly_name())
    return Readback(float_ops=dict(found), recurrent_ops=RECURRENT)
