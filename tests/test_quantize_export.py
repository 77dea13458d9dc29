"""ONNX export checks and ONNX Runtime int8 quantization options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compress.errors import InputError
from compress.exporters.onnx.inspect import check_external_data
from compress.recipe import QuantizeConfig
from compress.zoo.digits import DigitsCNN
from tests.conftest import export_with, load_backend, quantize_with


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    exported = export_with("onnx", model, torch.rand(2, 1, 8, 8), tmp_path_factory.mktemp("onnx"))
    assert exported.info["max_abs_error_vs_torch"] < 1e-4 and not exported.info["external_data"]
    return exported.path, model


def test_export_is_one_checked_file_with_a_dynamic_batch(exported):
    path, model = exported
    onnx.checker.check_model(str(path), full_check=True)
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    got = load_backend("onnxruntime", path).run({"input": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(len(n.metadata_props) == 0 for n in onnx.load(str(path)).graph.node)  # no stack traces


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    weight = onnx.numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["w"], ["y"])], "g", [],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], [weight])
    model = onnx.helper.make_model(graph)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, str(folder / "ok.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    check_external_data(folder / "ok.onnx")  # inside: fine
    evil = onnx.load(str(folder / "ok.onnx"), load_external_data=False)
    for entry in evil.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    onnx.save(evil, str(folder / "evil.onnx"))
    with pytest.raises(InputError, match="outside the model's folder"):
        check_external_data(folder / "evil.onnx")


def _activation_scales(path: Path) -> dict[str, float]:
    """The scale of every activation QuantizeLinear of a QDQ model (weights are initializers: left out)."""
    model = onnx.load(str(path))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(initializers[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in initializers}


@pytest.mark.slow
def test_every_calibration_method_is_carried_out(exported, tmp_path):
    path, _ = exported
    calibration = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    calibration[::4, 0, 0, 0] = 30.0  # a few outliers: where the methods part ways
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        # every layer in int8 (no first-layer policy): the input's own quantizer shows the method
        config = QuantizeConfig.model_validate({"mode": "static", "first_layers": {"in_float": 0},
                                                "calibration": {"samples": 16, "method": method, "percentile": 99.0}})
        info = quantize_with("onnx", path, None, tmp_path / method, config, calibration).info
        arguments = info["quantizer_call"]["arguments"]
        assert info["calibration_method"] == method and info["calibration_samples"] == 16
        assert arguments["calibrate_method"] == {"minmax": "MinMax", "entropy": "Entropy",
                                                 "percentile": "Percentile"}[method]
        assert ("CalibPercentile" in arguments["extra_options"]) == (method == "percentile")
        quantized = tmp_path / method / "model.onnx"
        scales[method] = _activation_scales(quantized)
    # the input's range: minmax takes the outliers in, the 99th percentile and entropy clip them
    assert scales["minmax"]["input"] == pytest.approx(30.0 / 255, rel=1e-3)
    assert scales["percentile"]["input"] < 0.5 * scales["minmax"]["input"]
    assert scales["entropy"]["input"] < 0.5 * scales["minmax"]["input"]
    assert scales["entropy"] != scales["percentile"]  # a method the quantizer ignored would give the same scales


def test_ignored_nodes_stay_in_float(exported, tmp_path):
    path, _ = exported
    calibration = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32)
    gemm = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm")
    config = QuantizeConfig.model_validate({"mode": "static", "calibration": {"samples": 16}, "ignore": [gemm],
                                            "first_layers": {"in_float": 0}})
    info = quantize_with("onnx", path, None, tmp_path / "int8", config, calibration).info
    assert info["nodes_excluded"] == [gemm]
    quantized = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    gemm_node = next(n for n in quantized.graph.node if n.op_type == "Gemm")
    initializers = {t.name: t for t in quantized.graph.initializer}
    assert initializers[gemm_node.input[1]].data_type == onnx.TensorProto.FLOAT  # weights left in float
    config = QuantizeConfig.model_validate({"mode": "static", "ignore": ["no_such_node*"]})
    info = quantize_with("onnx", path, None, tmp_path / "x", config, calibration).info
    assert info["ignore_matches"] == {"no_such_node*": []}  # the pipeline turns this into an error
