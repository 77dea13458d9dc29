"""Which weighted layers an int8 artifact still computes in float, read from the artifact itself.

Quantizers skip layers they do not support without saying so (ONNX Runtime's static quantizer
leaves an LSTM node in float; litert's PT2E leaves the decomposed LSTM's fully connected ops in
float). Reading the artifact back tells the user which op, in which format, stayed in float.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

RECURRENT = frozenset({"LSTM", "GRU", "RNN", "LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell",
                       "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"})

_ONNX_WEIGHTED = {"Conv", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "ConvTranspose"}
_OPENVINO_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "LSTMSequence", "GRUSequence", "RNNSequence",
                      "LSTMCell", "GRUCell", "ConvolutionBackpropData"}
_TFLITE_WEIGHTED = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV",
                    "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"}


def _onnx(path: Path) -> dict[str, list[str]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    found: dict[str, list[str]] = defaultdict(list)
    for node in graph.node:
        # A weight straight from a float initializer: nothing dequantizes it, so the op runs in float.
        if node.op_type in _ONNX_WEIGHTED and len(node.input) > 1 and node.input[1] in initializers:
            found[node.op_type].append(node.name)
    return dict(found)


def _openvino(folder: Path) -> dict[str, list[str]]:
    import openvino as ov

    model = ov.Core().read_model(str(folder / "model.xml"))
    found: dict[str, list[str]] = defaultdict(list)

    def int8_source(node: object, depth: int = 0) -> bool:
        kind = node.get_type_name()  # type: ignore[attr-defined]
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return str(node.get_output_element_type(0)) in ("<Type: 'int8_t'>", "<Type: 'uint8_t'>")  # type: ignore[attr-defined]
        if depth > 4 or kind not in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"):
            return False
        return any(int8_source(v.get_node(), depth + 1) for v in node.input_values())  # type: ignore[attr-defined]

    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in _OPENVINO_WEIGHTED and not any(int8_source(v.get_node()) for v in op.input_values()):
            found[kind].append(op.get_friendly_name())
    return dict(found)


def _tflite(path: Path) -> dict[str, list[str]]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {}
    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    found: dict[str, list[str]] = defaultdict(list)
    for op in interpreter._get_ops_details():  # the public API lists tensors, not ops
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in _TFLITE_WEIGHTED and len(inputs) > 1 and tensors[inputs[1]]["dtype"].__name__ == "float32":
            found[op["op_name"]].append(tensors[inputs[1]]["name"])
    return dict(found)


def left_in_float(fmt: str, path: Path) -> dict[str, list[str]]:
    """Weighted ops of an int8 artifact that still compute in float, by op type."""
    if fmt == "onnx":
        return _onnx(path)
    if fmt == "openvino":
        return _openvino(path)
    if fmt == "tflite":
        return _tflite(path)
    return {}
