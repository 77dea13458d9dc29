"""A constant the model multiplies by (a per-channel scale, LayerScale's gamma) that per-tensor int8
would wipe out is left in float by ONNX Runtime's int8: the outlier model's [1000, 1, 1, ...] became
[255, 0, 0, ...] (63 of 64 channels zeroed) when it was quantized like an activation."""

from __future__ import annotations

import numpy as np
import pytest

from compress.contracts import loses_a_multiplier


@pytest.mark.parametrize(("values", "lost"), [
    ([1000.0, 1.0, 1.0], True),          # 1 -> 0 in steps of 3.92
    ([1.0, 2.0, 0.5, 0.25], False),      # steps of 0.0078: every value kept within 2%
    ([100.0, 1.0], False),               # steps of 0.39: 1 -> 1.18, off by 18% but not wiped out
    ([1.0, 1e-6, 0.5], True),            # LayerScale-like: 1e-6 -> 0
    ([0.0, 0.0, 0.0], False),            # nothing to lose
    ([5.0], False),                      # a scalar is stored exactly (its own scale)
    ([-1000.0, 1.0, 2.0], True),         # negative range, zero point inside: 1 -> 0, 2 -> 3.9
])
def test_a_multiplier_is_lost_when_per_tensor_int8_takes_more_than_half_of_a_value(values, lost) -> None:
    assert loses_a_multiplier(np.array(values, dtype=np.float32)) is lost


@pytest.mark.slow
def test_onnx_int8_keeps_a_lossy_multiplier_in_float_and_quantizes_the_rest(tmp_path) -> None:
    import onnx
    import torch
    from onnx import numpy_helper

    from compress import formats
    from compress.recipe import QuantizeConfig
    from compress.zoo.digits import DigitsCNNOutlier

    torch.manual_seed(0)
    model = DigitsCNNOutlier(width=8, outlier=1000.0).eval()
    x = torch.rand(64, 1, 8, 8).numpy()
    exported = formats.export("onnx", model, torch.from_numpy(x[:1]), tmp_path / "fp32", input_names=["input"])
    int8 = formats.quantize("onnx", exported.path, model, tmp_path / "int8",
                            QuantizeConfig(mode="static", calibration={"samples": 64}), x, input_names=["input"])
    (mul,) = int8.info["multipliers_in_float"]
    graph = onnx.load(str(int8.path)).graph
    node = next(n for n in graph.node if n.name == mul)
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constant = next(initializers[name] for name in node.input if name in initializers)
    assert constant.dtype == np.float32 and constant.ravel()[0] == 1000.0 and (constant.ravel()[1:] == 1.0).all()
    assert {n.op_type for n in graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv"}  # the rest is int8
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) >= 4


@pytest.mark.slow
def test_tflite_int8_keeps_a_lossy_multiplier_and_the_layer_reading_it_in_float(tmp_path) -> None:
    """LiteRT's converter quantizes a float Mul between int8 ops all the same: the float region runs
    from the multiplier through the next layer with weights, read back here from the flatbuffer."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from compress import formats
    from compress.recipe import QuantizeConfig
    from compress.zoo.digits import DigitsCNNOutlier

    torch.manual_seed(0)
    model = DigitsCNNOutlier(width=8, outlier=1000.0).eval()
    x = torch.rand(64, 1, 8, 8).numpy()
    exported = formats.export("tflite", model, torch.from_numpy(x[:1]), tmp_path / "fp32", input_names=["input"])
    int8 = formats.quantize("tflite", exported.path, model, tmp_path / "int8",
                            QuantizeConfig(mode="static", calibration={"samples": 64}), x, input_names=["input"])
    assert int8.info["multipliers_in_float"] == ["mul"]
    interpreter = Interpreter(model_path=str(int8.path))
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    (mul,) = [op for op in ops if op["op_name"] == "MUL"]
    assert all(dtypes[i] == np.float32 for i in mul["inputs"])  # the x1000 multiplier kept as it is
    layers = [(op["op_name"], str(dtypes[op["inputs"][1]])) for op in ops
              if op["op_name"] in ("DEPTHWISE_CONV_2D", "CONV_2D", "MUL", "FULLY_CONNECTED")]
    # the first conv in float is the first-layer policy's; the conv reading the multiplier is float too
    assert layers == [("DEPTHWISE_CONV_2D", "float32"), ("CONV_2D", "int8"), ("MUL", "float32"),
                      ("CONV_2D", "float32"), ("FULLY_CONNECTED", "int8")], layers
