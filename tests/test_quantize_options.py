"""One intent, one behaviour: every quantize option is carried out by every format's quantizer (read
back from the artifact it wrote), or refused by `compress validate` naming the format and the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.recipe import QuantizeConfig
from compress.zoo.digits import DigitsCNN
from tests.conftest import export_with, quantize_with, small_recipe

CALIBRATION = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
CALIBRATION[::4, 0, 0, 0] = 30.0  # a few outliers, where calibration methods part ways


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, object]:
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    folder = tmp_path_factory.mktemp("sources")
    return {"model": model, **{fmt: export_with(fmt, model, torch.rand(2, 1, 8, 8), folder / fmt).path
                               for fmt in ("onnx", "openvino", "tflite")}}


def _quantize(sources: dict, fmt: str, folder, **options) -> object:
    # every layer in int8 (no first-layer policy): the input's own quantizer shows each option
    config = QuantizeConfig.model_validate({"calibration": {"samples": 16}, "first_layers": {"in_float": 0}, **options})
    return quantize_with(fmt, sources[fmt], sources["model"], folder, config, CALIBRATION)


def _input_range(fmt: str, path) -> float:
    """The width of the range the model's input is quantized to, read from the artifact."""
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path / "model.xml"))
        fq = next(op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                  and op.input_value(0).get_node().get_type_name() == "Parameter")
        low, high = (float(fq.input_value(i).get_node().get_data().reshape(-1)[0]) for i in (1, 2))
        return high - low
    from ai_edge_litert.interpreter import Interpreter

    scale, _ = Interpreter(model_path=str(path)).get_input_details()[0]["quantization"]
    return scale * 255


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["openvino", "tflite"])
def test_minmax_and_percentile_give_the_ranges_they_name(sources, tmp_path, fmt) -> None:
    minmax = _quantize(sources, fmt, tmp_path / "minmax", calibration={"samples": 16, "method": "minmax"})
    percentile = _quantize(sources, fmt, tmp_path / "percentile",
                           calibration={"samples": 16, "method": "percentile", "percentile": 99.0})
    assert _input_range(fmt, minmax.path) == pytest.approx(30.0, rel=0.02)  # the outliers included
    assert _input_range(fmt, percentile.path) < 0.3 * 30.0  # the 99th percentile leaves them out
    call = percentile.info["quantizer_call"]["arguments"]
    assert ("QUANTILE" in str(call)) if fmt == "openvino" else ("percentile=99.0" in call["activation_observer"])


def _weight_scales(fmt: str, path) -> list[int]:
    """How many scales each quantized convolution weight has."""
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        return [initializers[n.input[1]].size for n in model.graph.node
                if n.op_type == "DequantizeLinear" and initializers.get(n.input[0]) is not None
                and initializers[n.input[0]].ndim == 4]
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path / "model.xml"))
        found = []
        for op in model.get_ordered_ops():
            if op.get_type_name() in ("Convolution", "GroupConvolution"):
                node = op.input_value(1).get_node()
                while node.get_type_name() not in ("Multiply", "FakeQuantize") and node.get_input_size():
                    node = node.input_value(0).get_node()
                scale = node.input_value(1 if node.get_type_name() == "Multiply" else 3).get_node()
                found.append(int(np.prod(scale.get_output_partial_shape(0).to_shape())))
        return found
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_per_channel_weights_are_what_the_recipe_says(sources, tmp_path, fmt) -> None:
    per_channel = _weight_scales(fmt, _quantize(sources, fmt, tmp_path / "pc", per_channel=True).path)
    per_tensor = _weight_scales(fmt, _quantize(sources, fmt, tmp_path / "pt", per_channel=False).path)
    assert per_channel and all(count > 1 for count in per_channel), per_channel
    assert per_tensor and all(count == 1 for count in per_tensor), per_tensor


def test_activation_type_and_symmetry_reach_onnx_runtime(sources, tmp_path) -> None:
    import onnx

    def input_zero_point(path) -> tuple[int, int]:
        model = onnx.load(str(path))
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
        zero = initializers[node.input[2]]
        return int(zero), zero.dtype.itemsize

    default = _quantize(sources, "onnx", tmp_path / "default")
    assert default.info["activations"] == "uint8 asymmetric"
    assert input_zero_point(default.path) == (0, 1) and "QUInt8" in str(default.info["quantizer_call"])
    symmetric = _quantize(sources, "onnx", tmp_path / "sym", activations="int8", symmetric_activations=True)
    assert input_zero_point(symmetric.path) == (0, 1) and symmetric.info["activations"] == "int8 symmetric"
    assert symmetric.info["quantizer_call"]["arguments"]["extra_options"]["ActivationSymmetric"] is True


@pytest.mark.parametrize(("fmt", "quantize", "option", "reason"), [
    ("openvino", {"calibration": {"method": "entropy"}}, "calibration.method",
     "NNCF has no entropy (KL) range estimator; use minmax or percentile"),
    ("tflite", {"calibration": {"method": "entropy"}}, "calibration.method",
     "litert-torch's PT2E observers have no entropy (KL) calibration; use minmax or percentile"),
    ("tflite", {"activations": "uint8"}, "activations", "TFLite's int8 scheme quantizes activations to int8"),
    ("onnx", {"mode": "dynamic", "activations": "int8"}, "activations",
     "ONNX Runtime's dynamic quantizer quantizes activations to uint8"),
    ("openvino", {"mode": "dynamic", "per_channel": False}, "per_channel",
     "NNCF's int8 weight compression is per channel"),
    ("tflite", {"mode": "dynamic", "symmetric_activations": True}, "symmetric_activations",
     "litert-torch's dynamic recipe leaves activations to the kernels"),
    ("onnx", {"bias_correction": True}, "bias_correction", "ONNX Runtime's quantizer has no bias correction"),
    ("tflite", {"mode": "dynamic", "bias_correction": True}, "bias_correction",
     "dynamic int8 has no calibrated activations to correct for"),
    ("openvino", {"mode": "dynamic", "bias_correction": True}, "bias_correction",
     "NNCF's int8 weight compression has no bias correction"),
])
def test_an_option_a_format_cannot_carry_out_is_refused(cli, write_recipe, fmt, quantize, option, reason) -> None:
    path = write_recipe(small_recipe(export=[fmt], quantize={"precision": "int8", **quantize}))
    result = cli("validate", path)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert line.startswith(f"error: {path}:") and "\n" not in line
    assert line.endswith(f"quantize.{option}: format {fmt!r} cannot honour it: {reason}")


def test_calibration_in_dynamic_mode_and_format_options_are_checked(cli, write_recipe) -> None:
    dynamic = write_recipe(small_recipe(quantize={"mode": "dynamic", "calibration": {"samples": 8}}), "a.yaml")
    result = cli("validate", dynamic)
    assert result.exit_code == 2 and result.stderr.strip().endswith(
        "quantize.calibration: dynamic int8 calibrates nothing (activations are quantized per call): remove it, "
        "or use mode: static")
    wrong = write_recipe(small_recipe(export=["openvino"], quantize={"per_format": {"openvino": {"model_typ": "x"}}}),
                         "b.yaml")
    result = cli("validate", wrong)
    assert result.exit_code == 2 and "quantize.per_format.openvino.model_typ: unknown key 'model_typ' (did you mean " \
                                      "'model_type'?)" in result.stderr
    other = write_recipe(small_recipe(export=["onnx"], quantize={"per_format": {"openvino": {}}}), "c.yaml")
    result = cli("validate", other)
    assert result.exit_code == 0 and result.stderr == (
        f"warning: {other}: quantize.per_format.openvino: 'openvino' is not exported by this recipe (onnx): its "
        "options apply to nothing\n")
    typo = write_recipe(small_recipe(export=["onnx"], quantize={"per_format": {"openvno": {}}}), "e.yaml")
    result = cli("validate", typo)
    assert result.exit_code == 2 and "quantize.per_format.openvno: no format plugin named 'openvno' is installed " \
                                      "(did you mean 'openvino'?)" in result.stderr
    ok = write_recipe(small_recipe(export=["openvino"], quantize={"per_format": {"openvino": {
        "model_type": "transformer"}}}), "d.yaml")
    assert cli("validate", ok).exit_code == 0
