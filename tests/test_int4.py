"""4-bit weight-only compression in every format: ONNX Runtime's MatMulNBits quantizer, NNCF's
compress_weights (with AWQ and scale estimation on calibration samples), LiteRT's int4 blockwise
recipe. What each artifact stores is read back here from the file and compared with the torch
model's own Linear weights; outputs are compared with torch on inputs the conversion never saw."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from compress import formats
from compress.contracts import Int4Request, int4_weights_result
from compress.errors import StageError
from compress.recipe import Int4Config
from compress.sessions import run_outputs
from compress.zoo.lm import TinyGPT
from tests.conftest import load_backend, plain_cosine, small_recipe
from tests.test_recipe import fails

RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyGPT(vocab_size=64, context=16, dim=64, layers=2, heads=4).eval()


def _linear_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _four_bit_weights(fmt: str, path: Path) -> int:
    """Weights stored in 4 bits, read with each format's plain reader."""
    if fmt == "onnx":
        nodes = [{a.name: a.i for a in n.attribute} for n in onnx.load(str(path)).graph.node
                 if n.op_type == "MatMulNBits"]
        return sum(n["K"] * n["N"] for n in nodes if n["bits"] == 4)
    if fmt == "openvino":
        total = 0
        for layer in ET.parse(path / "model.xml").getroot().iter("layer"):
            data = layer.find("data")
            if layer.get("type") == "Const" and data is not None and data.get("element_type") in ("i4", "u4"):
                total += int(np.prod([int(d) for d in data.get("shape").split(",")]))
        return total
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    return sum(int(np.prod(t.shape)) for g in model.subgraphs for t in g.tensors if t.type == schema.TensorType.INT4)


def _size(fmt: str, path: Path) -> int:
    return (path / "model.bin").stat().st_size if fmt == "openvino" else path.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_int4_weights_in_every_format_hold_every_linear_weight_in_4_bits(tmp_path, fmt: str) -> None:
    model = _model()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    fp32 = formats.export(fmt, model, ids, tmp_path / "fp32", input_names=["ids"])
    made = formats.to_int4_weights(fmt, fp32, model, ids, tmp_path / "int4", Int4Config(group_size=32),
                                   {"ids": ids.numpy()}, input_names=["ids"])
    assert made.precision == "int4_weights"
    assert _four_bit_weights(fmt, made.path) == _linear_weights(model)  # every Linear, no more
    assert _four_bit_weights(fmt, fp32.path) == 0
    assert _size(fmt, made.path) < 0.35 * _size(fmt, fp32.path)

    backend = load_backend(RUNTIME[fmt], made.path)
    plain = load_backend(RUNTIME[fmt], fp32.path)
    rng = np.random.default_rng(2)
    cosines = []
    for _ in range(3):
        x = rng.integers(0, 64, (1, 16))
        feed = x.astype(np.int32) if fmt == "tflite" else x  # TFLite takes int32 ids
        got = backend.run({"ids": feed})[0]
        assert got.dtype == np.float32 and not np.array_equal(got, plain.run({"ids": feed})[0])
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        cosines.append(plain_cosine(got, want))
    assert min(cosines) >= 0.95, cosines


@pytest.mark.slow
def test_nncf_awq_and_scale_estimation_run_on_the_calibration_samples(tmp_path) -> None:
    model = _model()
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(3))
    fp32 = formats.export("openvino", model, ids[:2], tmp_path / "fp32", input_names=["ids"])
    plain = formats.to_int4_weights("openvino", fp32, model, ids[:2], tmp_path / "rtn", Int4Config(group_size=32),
                                    {"ids": ids.numpy()}, input_names=["ids"])
    aware = formats.to_int4_weights("openvino", fp32, model, ids[:2], tmp_path / "awq",
                                    Int4Config(group_size=32, awq=True, scale_estimation=True),
                                    {"ids": ids.numpy()}, input_names=["ids"])
    assert plain.info["calibration_samples"] == 0 and aware.info["calibration_samples"] == 8
    assert aware.info["awq"] and aware.info["scale_estimation"]
    assert (aware.path / "model.bin").read_bytes() != (plain.path / "model.bin").read_bytes()  # other scales


@pytest.mark.slow
def test_a_convolutional_model_is_refused_not_labelled_int4(tmp_path) -> None:
    from compress.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(width=16).eval()
    x = torch.rand(2, 1, 8, 8)
    fp32 = formats.export("onnx", model, x, tmp_path / "fp32")
    with pytest.raises(StageError) as refused:
        formats.to_int4_weights("onnx", fp32, model, x, tmp_path / "int4", Int4Config(group_size=16),
                                {"input": x.numpy()})
    # its convolutions hold most of the weights, and MatMulNBits compresses MatMul weights only
    assert re.fullmatch(r"onnx int4_weights conversion left (\d+)% of the weights in 8 bits or more \(at least 50% "
                        r"must be 4-bit to call it int4_weights\): MatMulNBits compresses MatMul weights; these "
                        r"stayed in Conv \([\d,]+ weights\).*", refused.value.message), refused.value.message


def test_tflite_refuses_a_group_that_does_not_divide_a_layer_before_converting(tmp_path) -> None:
    from compress.exporters.tflite.int4 import to_int4_weights

    model = TinyGPT(vocab_size=50, context=8, dim=64, layers=1, heads=2)
    request = Int4Request(source=SimpleNamespace(info={}), torch_model=model, example=(torch.zeros(2, 8).long(),),
                          folder=tmp_path, input_names=["ids"], run=run_outputs, config=Int4Config(group_size=32),
                          calibration={})
    with pytest.raises(StageError) as refused:
        to_int4_weights(request)
    assert refused.value.message == ("LiteRT's int4 blocks of 32 must divide every fully connected layer's inputs: "
                                     "not those of tok_emb (50 inputs); choose a group_size that does")
    assert not list(tmp_path.iterdir())


def test_the_label_needs_half_the_weights_in_4_bits(tmp_path) -> None:
    outputs = np.array([[1.0, -2.0]], dtype=np.float32)
    with pytest.raises(StageError, match="left 60% of the weights in 8 bits or more"):
        int4_weights_result(tmp_path, "onnx", (40, 100), outputs, outputs, {})
    assert int4_weights_result(tmp_path, "onnx", (50, 100), outputs, outputs, {}).precision == "int4_weights"
    with pytest.raises(StageError, match=r"^quantize: onnx int4_weights model gives non-finite outputs \(NaN or inf\)"):
        int4_weights_result(tmp_path, "onnx", (100, 100), outputs * np.float32("nan"), outputs, {})


# --- the recipe ----------------------------------------------------------------------------------

def _validate(cli, write_recipe, quantize: dict[str, Any], export: list[Any]) -> Any:
    return cli("validate", write_recipe(small_recipe(quantize=quantize, export=export, stages=[])))


@pytest.mark.parametrize(("fmt", "int4", "field", "reason"), [
    ("onnx", {"awq": True}, "quantize.int4.awq",
     "format 'onnx' cannot honour it: ONNX Runtime's MatMulNBits quantizer has no AWQ; use it with openvino (NNCF)"),
    ("tflite", {"scale_estimation": True}, "quantize.int4.scale_estimation",
     "format 'tflite' cannot honour it: AI Edge Quantizer's int4 recipe has no scale estimation; use it with "
     "openvino (NNCF)"),
    ("tflite", {"group_size": 16}, "quantize.int4.group_size",
     "format 'tflite' cannot honour it: LiteRT's int4 blocks hold 32, 64, 128 or 256 weights, not 16"),
    ("tflite", {"symmetric": False}, "quantize.int4.symmetric",
     "format 'tflite' cannot honour it: LiteRT's int4 weights are symmetric (no zero point)"),
])
def test_an_int4_option_a_format_cannot_carry_out_is_refused(cli, write_recipe, fmt, int4, field, reason) -> None:
    line = fails(_validate(cli, write_recipe, {"precision": "int4_weights", "int4": int4}, [fmt]))
    assert line.endswith(f": {field}: {reason}"), line


def test_openvino_takes_every_int4_option(cli, write_recipe) -> None:
    result = _validate(cli, write_recipe, {"precision": ["int4_weights"], "int4": {
        "group_size": 16, "symmetric": False, "awq": True, "scale_estimation": True}}, ["openvino"])
    assert result.exit_code == 0, result.stderr


def test_int4_options_without_int4_weights_and_odd_groups_are_refused(cli, write_recipe) -> None:
    line = fails(_validate(cli, write_recipe, {"precision": "int8", "int4": {"group_size": 32}}, ["onnx"]))
    assert line.endswith("int4 applies to int4_weights, and precision 'int8' has no int4_weights: remove it, or add "
                         "int4_weights to precision"), line
    line = fails(_validate(cli, write_recipe, {"precision": "int4_weights", "int4": {"group_size": 48}}, ["onnx"]))
    assert "quantize.int4.group_size" in line and "must be a power of two (16, 32, 64, ...), not 48" in line, line


@pytest.mark.slow
def test_weights_the_onnx_quantizer_cannot_take_are_named_where_they_stayed(tmp_path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()
    x = torch.rand(2, 64)  # 2-D: each Linear exports as a Gemm (as GPT-2's Conv1D does), not a MatMul
    fp32 = formats.export("onnx", model, x, tmp_path / "fp32")
    assert {n.op_type for n in onnx.load(str(fp32.path)).graph.node} >= {"Gemm"}
    with pytest.raises(StageError) as refused:
        formats.to_int4_weights("onnx", fp32, model, x, tmp_path / "int4", Int4Config(group_size=32),
                                {"input": x.numpy()})
    assert refused.value.message.endswith("MatMulNBits compresses MatMul weights; these stayed in Gemm (4,736 weights)")
