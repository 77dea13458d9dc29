"""A format that cannot hold a model is refused by name, recorded, and the run goes on."""

from __future__ import annotations

import json

import pytest

from compress.errors import unsupported_op
from tests.conftest import printed_run, small_recipe

MODELS = '''
import torch


class Inverts(torch.nn.Module):
    """torch.linalg.inv: OpenVINO converts it; the ONNX and TFLite converters here do not."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        m = x.reshape(-1, 8, 8) + 8 * torch.eye(8)
        return self.linear(torch.linalg.inv(m).reshape(x.shape[0], 64))
'''


def test_unsupported_op_is_read_from_a_converter_error():
    assert unsupported_op("RuntimeError: Lowering not found: aten.cummax.default") == "aten.cummax.default"
    assert unsupported_op("\x1b[96mUnsupported: aten.linalg_inv_ex.default\x1b[0m") == "aten.linalg_inv_ex.default"
    assert unsupported_op("AssertionError: tokens do not match") is None
    converter = "error: 'tfl.one_hot' op operand #0 must be tensor of 32-bit signless integer values"
    assert unsupported_op(converter) == "tfl.one_hot"  # the converter's own op, when no torch op is named


@pytest.mark.slow
def test_refused_formats_are_recorded_and_the_rest_completes(cli, write_recipe, tmp_path):
    (tmp_path / "inverting.py").write_text(MODELS)
    recipe = small_recipe(
        model={"factory": "inverting:Inverts", "input": {"shape": [1, 1, 8, 8]}, "train": {"epochs": 1}},
        stages=[], export=["onnx", "openvino", "tflite"],
        verify={"runtimes": ["torch", "onnxruntime", "openvino", "litert"],
                "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0},
                "parity": {"int8": {"min_cosine": 0.0, "min_agreement": 0.0}}})
    out = tmp_path / "runs"
    result = cli("run", write_recipe(recipe), "--out", out)
    assert result.exit_code == 0, result.stderr
    folder = printed_run(result.stdout)
    results = json.loads((folder / "results.json").read_text())
    refused = {(r["format"], r["stage"]): r for r in results["refusals"]}
    assert set(refused) == {("onnx", "export.onnx"), ("tflite", "export.tflite")}
    assert refused[("onnx", "export.onnx")]["artifact"] == "original"
    assert refused[("onnx", "export.onnx")]["op"] and "linalg" in refused[("onnx", "export.onnx")]["op"]
    names = {a["name"] for a in results["artifacts"]}
    assert {"original", "original.openvino", "original.int8.openvino"} <= names
    assert not names & {"original.onnx", "original.tflite", "original.int8.onnx", "original.int8.tflite"}
    assert {m["artifact"] for m in results["measurements"]} == {"original", "original.openvino",
                                                                "original.int8.openvino"}
    table = (folder / "table.txt").read_text()
    assert "REFUSED onnx for original at export.onnx (operator aten.linalg" in table
    # what OpenVINO did convert computes the inverse: its outputs are torch's
    fp32 = next(m for m in results["measurements"] if m["artifact"] == "original.openvino")
    assert fp32["status"] == "ok" and fp32["parity"]["passed"] and fp32["parity"]["cosine"] > 0.9999
