"""Reading an ONNX file back: which weighted nodes still compute in float, and whether its
external data stays inside its folder."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from compress.contracts import Readback
from compress.errors import InputError

WEIGHTED = {"Conv", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "ConvTranspose"}
RECURRENT = frozenset({"LSTM", "GRU", "RNN"})


def readback(path: Path) -> Readback:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    found: dict[str, list[str]] = defaultdict(list)
    for node in graph.node:
        # A weight straight from a float initializer: nothing dequantizes it, so the op runs in float.
        if node.op_type in WEIGHTED and len(node.input) > 1 and node.input[1] in initializers:
            found[node.op_type].append(node.name)
    return Readback(float_ops=dict(found), recurrent_ops=RECURRENT)


def check_external_data(path: Path) -> None:
    """Refuse an ONNX file whose external tensors point outside its own folder (by `../`, an absolute
    path, a symlink, or a hard link to a file elsewhere)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"not a readable ONNX model: {type(exc).__name__}: {str(exc).strip()[:200]}",
                         file=str(path)) from None
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
