"""OpenVINO and TFLite exporters, their runtimes, parity, and int8 per format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.exporters.openvino import OpenVinoExportConfig
from compress.exporters.tflite import TfliteExportConfig
from compress.recipe import ParityThresholds, QuantizeConfig
from compress.verify import parity
from compress.zoo.digits import DigitsCNN
from tests.conftest import export_with, load_backend, quantize_with


class TinyEncoder(torch.nn.Module):
    """A TransformerEncoder: OpenVINO's tracing route fails on it, its ExportedProgram converts."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, num_layers=1)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


class TokenClassifier(torch.nn.Module):
    """Takes int64 token ids, which TFLite gets as int32."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(1))


@pytest.fixture(scope="module")
def digits_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so precision differences show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


def _inputs(count: int = 16) -> np.ndarray:
    return np.random.default_rng(0).random((count, 1, 8, 8), dtype=np.float32)


def _torch_out(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_openvino_ir_runs_in_fp32_and_matches_torch(digits_model, tmp_path):
    exported = export_with("openvino", digits_model, torch.rand(2, 1, 8, 8), tmp_path)
    path, info = exported.path, exported.info
    assert info["route"] == "torch" and info["weights"] == "fp32" and exported.precision is None
    assert sorted(p.name for p in path.iterdir()) == ["model.bin", "model.xml"]
    x = _inputs()
    got = load_backend("openvino", str(path)).run({"input": x})[0]
    # In bf16 (the CPU plugin's default here) the error is ~1e-1; fp32 must be verified in fp32.
    np.testing.assert_allclose(got, _torch_out(digits_model, x), atol=1e-4)


@pytest.mark.slow
def test_openvino_falls_back_to_the_exported_program_and_records_the_route(tmp_path):
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    exported = export_with("openvino", model, torch.rand(2, 5, 16), tmp_path)
    path, info = exported.path, exported.info
    assert info["route"] == "exported_program"
    assert info["routes_failed"][0].startswith("torch: ")
    x = np.random.default_rng(1).random((3, 5, 16), dtype=np.float32)
    got = load_backend("openvino", str(path)).run({"input": x})[0]
    np.testing.assert_allclose(got, _torch_out(model, x), atol=1e-4)


def test_openvino_fp16_weights_halve_the_weights_file(digits_model, tmp_path):
    full = export_with("openvino", digits_model, torch.rand(2, 1, 8, 8), tmp_path / "a").path
    exported = export_with("openvino", digits_model, torch.rand(2, 1, 8, 8), tmp_path / "b",
                           options=OpenVinoExportConfig(fp16=True))
    assert exported.info["weights"] == "fp16" and exported.precision == "fp16"  # labelled as what it is
    assert (exported.path / "model.bin").stat().st_size < 0.6 * (full / "model.bin").stat().st_size


def test_the_onnx_artifact_also_runs_on_openvino(digits_model, tmp_path):
    path = export_with("onnx", digits_model, torch.rand(2, 1, 8, 8), tmp_path).path
    x = _inputs()
    got = load_backend("openvino", path).run({"input": x})[0]
    np.testing.assert_allclose(got, _torch_out(digits_model, x), atol=1e-4)


@pytest.mark.slow
def test_tflite_keeps_nchw_and_runs_any_number_of_samples(digits_model, tmp_path):
    exported = export_with("tflite", digits_model, torch.rand(2, 1, 8, 8), tmp_path)
    path, info = exported.path, exported.info
    assert exported.attributes == {}  # NCHW: nothing to transpose
    assert info["batch"] == 1 and info["max_abs_error_vs_torch"] < 1e-4
    backend = load_backend("litert", str(path))
    assert backend.input_specs()[0][1:] == ([1, 1, 8, 8], "float32")
    x = _inputs(5)
    np.testing.assert_allclose(backend.run({"input": x})[0], _torch_out(digits_model, x), atol=1e-4)


@pytest.mark.slow
def test_tflite_channels_last_takes_nhwc(digits_model, tmp_path):
    exported = export_with("tflite", digits_model, torch.rand(2, 1, 8, 8), tmp_path,
                           options=TfliteExportConfig(channels_last=True))
    path, info = exported.path, exported.info
    assert info["channels_last"]
    assert exported.attributes == {"input_transpose": [0, 2, 3, 1]}  # travels to verify and to int8
    backend = load_backend("litert", str(path))
    assert backend.input_specs()[0][1] == [1, 8, 8, 1]
    x = _inputs(3)
    got = backend.run({"input": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
    np.testing.assert_allclose(got, _torch_out(digits_model, x), atol=1e-4)


def test_tflite_int64_inputs_become_int32(tmp_path):
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    ids = torch.randint(0, 50, (2, 6))
    exported = export_with("tflite", model, ids, tmp_path, input_name="ids")
    path, info = exported.path, exported.info
    assert info["input_dtype"] == "int32"
    backend = load_backend("litert", str(path))
    assert backend.input_specs()[0][2] == "int32"
    got = backend.run({"ids": ids[:1].numpy().astype(np.int32)})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(ids[:1]).numpy(), atol=1e-5)


@pytest.mark.slow
def test_int8_tflite_has_quantized_io_that_the_runtime_hides(digits_model, tmp_path):
    # the first layer in int8 too (no first-layer policy): the input itself is quantized
    config = QuantizeConfig.model_validate({"calibration": {"samples": 32}, "first_layers": {"in_float": 0}})
    exported = quantize_with("tflite", tmp_path / "none", digits_model, tmp_path, config, _inputs(32))
    path, info = exported.path, exported.info
    assert info["calibration_samples"] == 32
    backend = load_backend("litert", str(path))
    raw = backend.interpreter.get_input_details()[0]
    assert raw["dtype"] == np.int8 and raw["quantization"][0] > 0  # int8 on the wire
    assert backend.input_specs()[0][2] == "float32"  # floats for the caller
    x = _inputs(16)
    got = backend.run({"input": x})[0]
    assert got.dtype == np.float32
    check = parity(got, _torch_out(digits_model, x), "m", ParityThresholds(min_cosine=0.98, min_agreement=0.8))
    assert check.passed, check.failures


def test_nncf_int8_ir_is_smaller_and_close(digits_model, tmp_path):
    ir = export_with("openvino", digits_model, torch.rand(2, 1, 8, 8), tmp_path / "fp32").path
    config = QuantizeConfig.model_validate({"calibration": {"samples": 32}})
    exported = quantize_with("openvino", ir, digits_model, tmp_path / "int8", config, _inputs(32))
    path, info = exported.path, exported.info
    call = info["quantizer_call"]
    assert call["function"] == "nncf.quantize"
    assert call["arguments"]["advanced_parameters"]["activations_range_estimator_params"].startswith("MINMAX")
    assert (path / "model.bin").stat().st_size < 0.4 * (ir / "model.bin").stat().st_size
    x = _inputs(16)
    got = load_backend("openvino", str(path)).run({"input": x})[0]
    check = parity(got, _torch_out(digits_model, x), "m", ParityThresholds(min_cosine=0.95, min_agreement=0.7))
    assert check.passed, check.failures


@pytest.mark.parametrize(("noise", "passes"), [(0.0, True), (1e-3, True), (2e-3, False)])
def test_parity_thresholds_are_exact(noise, passes):
    reference = np.eye(4, dtype=np.float32) * 10 + 1
    outputs = reference.copy()
    outputs[0, 0] += noise
    thresholds = ParityThresholds(max_abs_error=1e-3 + 1e-6, min_cosine=0.99, min_agreement=1.0)
    assert parity(outputs, reference, "ref", thresholds).passed is passes


def test_parity_names_each_failure_and_fails_on_nan():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    flipped = reference[::-1].copy()
    check = parity(flipped, reference, "ref", ParityThresholds(min_cosine=0.9, min_agreement=0.9))
    assert not check.passed
    assert any(f.startswith("cosine 0.00000 < 0.9") for f in check.failures)
    assert any(f.startswith("top-1 agreement 0.0000 < 0.9") for f in check.failures)
    nan = parity(np.full((2, 2), np.nan, dtype=np.float32), reference, "ref",
                 ParityThresholds(min_cosine=-1, min_agreement=0))
    assert not nan.passed and "outputs are not finite (2 of 2 samples)" in nan.failures


def test_openvino_reads_inputs_in_place_without_changing_them(digits_model, tmp_path):
    path = export_with("openvino", digits_model, torch.rand(2, 1, 8, 8), tmp_path).path
    backend = load_backend("openvino", path)
    first, second = _inputs(4), _inputs(7)[::-1].copy()
    kept = first.copy(), second.copy()
    out_first = backend.run({"input": first})[0]
    out_second = backend.run({"input": second})[0]
    np.testing.assert_array_equal(first, kept[0])
    np.testing.assert_array_equal(second, kept[1])
    np.testing.assert_allclose(out_first, _torch_out(digits_model, kept[0]), atol=1e-4)
    np.testing.assert_allclose(out_second, _torch_out(digits_model, kept[1]), atol=1e-4)
    np.testing.assert_allclose(backend.run({"input": first})[0], out_first)  # nothing stale between calls
