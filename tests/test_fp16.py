"""fp16 in every format: ONNX Runtime's float16 conversion, OpenVINO's compressed IR, LiteRT's fp16
recipe. Each artifact's weights are read back as float16 here (from the file, independently of the
plugin's own count), it keeps float32 inputs and outputs, its outputs differ from the fp32 artifact's
(it is not a copy) and stay within parity.fp16 of torch on inputs the conversion never saw."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from compress import formats
from compress.contracts import fp16_result
from compress.errors import StageError
from compress.zoo.digits import DigitsCNN
from tests.conftest import load_backend, plain_cosine, printed_results, small_recipe
from tests.test_recipe import fails

RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}


def _float16_read_back(fmt: str, path: Path) -> tuple[int, int]:
    """(float16 bytes, float bytes) of the stored weights, read with each format's plain reader."""
    if fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
        floats = [a for a in arrays if a.dtype.kind == "f"]
        return sum(a.nbytes for a in floats if a.dtype == np.float16), sum(a.nbytes for a in floats)
    if fmt == "openvino":
        half = total = 0
        for layer in ET.parse(path / "model.xml").getroot().iter("layer"):
            data = layer.find("data")
            if layer.get("type") == "Const" and data is not None and data.get("element_type") in ("f16", "f32"):
                total += int(data.get("size"))
                half += int(data.get("size")) if data.get("element_type") == "f16" else 0
        return half, total
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    computed = {out for op in interpreter._get_ops_details() for out in op["outputs"]}
    fed = {d["index"] for d in interpreter.get_input_details()}
    consts = [t for t in interpreter.get_tensor_details() if t["index"] not in computed | fed
              and np.dtype(t["dtype"]).kind == "f"]
    size = [int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in consts]
    return (sum(s for s, t in zip(size, consts, strict=True) if np.dtype(t["dtype"]) == np.float16), sum(size))


def _weights_file(fmt: str, path: Path) -> Path:
    return path / "model.bin" if fmt == "openvino" else path


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return DigitsCNN(width=16).eval()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_fp16_in_every_format_is_float16_weights_with_float32_io_and_parity(model, tmp_path, fmt: str) -> None:
    example = torch.rand(2, 1, 8, 8)
    fp32 = formats.export(fmt, model, example, tmp_path / "fp32")
    half = formats.to_fp16(fmt, fp32, model, example, tmp_path / "fp16")
    assert half.precision == "fp16"

    stored16, stored = _float16_read_back(fmt, half.path)
    assert stored > 0 and stored16 / stored >= 0.9, (stored16, stored)
    assert _float16_read_back(fmt, fp32.path)[0] == 0  # the fp32 export holds none: the reader can tell
    assert _weights_file(fmt, half.path).stat().st_size < 0.75 * _weights_file(fmt, fp32.path).stat().st_size
    assert abs(half.info["fp16_weights_share"] - stored16 / stored) < 0.05

    backend = load_backend(RUNTIME[fmt], half.path)
    assert [dtype for _, _, dtype in backend.input_specs()] == ["float32"]
    batch = 1 if fmt == "tflite" else 7  # TFLite's batch is fixed at 1; the others keep theirs dynamic
    rng = np.random.default_rng(1)
    cosines, errors = [], []
    for _ in range(4):
        x = rng.random((batch, 1, 8, 8), dtype=np.float32)
        got = backend.run({"input": x})[0]
        assert got.dtype == np.float32
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        plain = load_backend(RUNTIME[fmt], fp32.path).run({"input": x})[0]
        assert not np.array_equal(got, plain)  # computed from other weights: not the fp32 artifact again
        cosines.append(plain_cosine(got, want))
        errors.append(float(np.abs(got - want).max()))
    assert min(cosines) >= 0.999 and max(errors) < 5e-2, (cosines, errors)


def test_an_artifact_is_labelled_fp16_only_when_its_weights_read_back_float16(tmp_path) -> None:
    outputs = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    with pytest.raises(StageError) as refused:
        fp16_result(tmp_path, "onnx", (49, 100), outputs, outputs, {})
    assert refused.value.message == ("onnx fp16 conversion left 51% of the weight bytes in float32 (at least 50% "
                                     "must be float16 to call it fp16)")
    with pytest.raises(StageError, match="left 100% of the weight bytes"):
        fp16_result(tmp_path, "onnx", (0, 0), outputs, outputs, {})  # no weights at all: nothing to call fp16
    made = fp16_result(tmp_path, "onnx", (50, 100), outputs * 1.001, outputs, {"converter": "x"})
    assert made.precision == "fp16" and made.info["fp16_weights_share"] == 0.5
    assert made.info["max_abs_error_vs_torch"] == pytest.approx(0.003, rel=1e-3)
    zeros = fp16_result(tmp_path, "onnx", (50, 100), np.zeros_like(outputs), outputs, {})
    assert np.isnan(zeros.info["cosine_vs_torch_on_example"])  # dead outputs are not "close to torch"


# --- the recipe ----------------------------------------------------------------------------------

def _recipe(write_recipe, quantize: dict[str, Any], export: list[Any] | None = None) -> Path:
    return write_recipe(small_recipe(quantize=quantize, export=export or ["onnx"], stages=[]))


def test_a_precision_listed_twice_is_refused(cli, write_recipe) -> None:
    path = _recipe(write_recipe, {"precision": ["fp16", "int8", "fp16"]})
    assert "quantize.precision" in fails(cli("validate", path)) and "'fp16' is listed twice" in \
        fails(cli("validate", path))


def test_an_unknown_precision_names_the_ones_there_are(cli, write_recipe) -> None:
    line = fails(cli("validate", _recipe(write_recipe, {"precision": "int4"})))
    assert "quantize.precision" in line and "'int8'" in line and "'fp16'" in line


def test_int8_options_without_int8_are_refused(cli, write_recipe) -> None:
    path = _recipe(write_recipe, {"precision": "fp16", "calibration": {"samples": 32}})
    line = fails(cli("validate", path))
    assert line.endswith("calibration applies to int8, and precision 'fp16' has no int8: remove it, or add int8 to "
                         "precision"), line


def test_a_format_without_fp16_is_refused_naming_the_list_entry(cli, write_recipe) -> None:
    path = _recipe(write_recipe, {"precision": ["fp16"]}, export=["onnx", "torch"])
    line = fails(cli("validate", path))
    assert line.endswith(": quantize.precision[0]: format 'torch' cannot make fp16 (its quantizer makes: nothing); "
                         "drop it from export or change quantize"), line
    line = fails(cli("validate", _recipe(write_recipe, {"precision": ["int8", "fp16"]}, export=["torch"])))
    assert "quantize: format 'torch' cannot make int8 static" in line, line  # int8 first, as listed


def test_fp16_alone_validates_and_plans_one_fp16_step_per_format(cli, write_recipe) -> None:
    from compress.recipe import load_recipe
    from compress.steps import Fp16Step, QuantizeStep, plan_steps

    path = _recipe(write_recipe, {"precision": "fp16"}, export=["onnx", "openvino"])
    assert cli("validate", path).exit_code == 0
    steps = plan_steps(load_recipe(path)).steps
    assert [s.name for s in steps if isinstance(s, Fp16Step)] == ["original.fp16.onnx", "original.fp16.openvino"]
    assert not [s for s in steps if isinstance(s, QuantizeStep)]
    both = _recipe(write_recipe, {"precision": ["int8", "fp16"]}, export=["onnx"])
    names = [s.name for s in plan_steps(load_recipe(both)).steps]
    assert names[-2:] == ["original.int8.onnx", "original.fp16.onnx"]


@pytest.mark.slow
def test_a_run_makes_int8_and_fp16_and_reuses_int8_when_fp16_is_added(cli, write_recipe, tmp_path) -> None:
    recipe = small_recipe(quantize={"precision": "int8", "calibration": {"samples": 32}}, stages=[],
                          export=["onnx", {"tflite": {"channels_last": True}}],
                          verify={"runtimes": ["onnxruntime", "litert"], "targets": ["local"],
                                  "latency": {"warmup": 0, "min_runs": 2, "min_seconds": 0.0}})
    out = tmp_path / "out"
    first = cli("run", write_recipe(recipe), "--out", out)
    assert first.exit_code == 0, first.stderr
    int8_ids = {a["name"]: a["id"] for a in printed_results(first.stdout)["artifacts"] if ".int8." in a["name"]}
    recipe["quantize"]["precision"] = ["int8", "fp16"]
    second = cli("run", write_recipe(recipe), "--out", out, "--resume")
    assert second.exit_code == 0, second.stderr
    results = printed_results(second.stdout)
    by_name = {a["name"]: a for a in results["artifacts"]}
    assert {name: by_name[name]["id"] for name in int8_ids} == int8_ids  # asking for fp16 too changed no int8 key
    stages = {s["name"]: s for s in results["stages"]}
    assert all(stages[f"quantize.{fmt}"]["cached"] for fmt in ("onnx", "tflite")), stages
    for fmt in ("onnx", "tflite"):
        half = by_name[f"original.fp16.{fmt}"]
        assert half["precision"] == "fp16" and half["lineage"][-1] == f"fp16.{fmt}"
        assert half["size_bytes"] < by_name[f"original.{fmt}"]["size_bytes"]
        measured = [m for m in results["measurements"] if m["artifact"] == half["name"]]
        assert measured and all(m["parity"]["passed"] and m["parity"]["cosine"] >= 0.999 for m in measured)
        assert measured[0]["parity"]["thresholds"] == {"max_abs_error": 0.05, "min_cosine": 0.999,
                                                       "min_agreement": 0.98}
        assert f"original.fp16.{fmt}_size_ratio_vs_fp32" in results["summary"]
