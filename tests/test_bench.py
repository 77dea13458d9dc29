"""`compress bench MODEL`: any model file, no recipe, the same agent and statistics as `run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.zoo.digits import DigitsCNN
from tests.conftest import export_with

FAST = ("--warmup", "1", "--min-runs", "3", "--min-seconds", "0")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = DigitsCNN(width=8).eval()
    example = torch.rand(2, 1, 8, 8)
    onnx = export_with("onnx", model, example, folder / "onnx").path.rename(folder / "digits.onnx")
    ir = export_with("openvino", model, example, folder / "ov").path
    tflite = export_with("tflite", model, example, folder / "tfl").path
    # height and width left dynamic too: the caller must say them
    dims = {0: torch.export.Dim("batch", max=64), 2: torch.export.Dim("h", min=4, max=64),
            3: torch.export.Dim("w", min=4, max=64)}
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"], dynamic_shapes=(dims,))
    program.save(str(folder / "dynamic.onnx"))
    torch.export.save(torch.export.export(model, (example[:1],)), str(folder / "digits.pt2"))
    return {"onnx": onnx, "xml": ir / "model.xml", "tflite": tflite,
            "dynamic": folder / "dynamic.onnx", "pt2": folder / "digits.pt2"}


@pytest.mark.slow
def test_onnx_on_every_runtime_that_loads_it_with_each_thread_count(cli, models):
    result = cli("bench", models["onnx"], "--runtime", "all", "--threads", "1,2", "--json", *FAST)
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["runtime"]["name"], r["threads"]) for r in rows] == [
        ("onnxruntime", 1), ("onnxruntime", 2), ("openvino", 1), ("openvino", 2)]
    for row in rows:
        lat = row["latency"]
        assert row["ok"] and lat["runs"] >= 3 and lat["batch_size"] == 1 and lat["threads"] == row["threads"]
        assert lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert row["inputs"] == {"input": [1, 1, 8, 8]}


@pytest.mark.slow
def test_table_for_ir_and_tflite_and_batch(cli, models):
    result = cli("bench", models["xml"], "--batch", "4", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "p50 ms" in result.stdout and "openvino" in result.stdout
    rows = json.loads(cli("bench", models["xml"], "--batch", "4", "--json", *FAST).stdout)
    assert rows[0]["latency"]["batch_size"] == 4 and rows[0]["inputs"]["input"][0] == 4
    tflite = json.loads(cli("bench", models["tflite"], "--json", *FAST).stdout)
    assert tflite[0]["runtime"]["name"] == "litert" and tflite[0]["ok"]


@pytest.mark.slow
def test_dynamic_dimensions_need_an_input_shape(cli, models):
    result = cli("bench", models["dynamic"], *FAST)
    assert result.exit_code == 2
    assert "input 'input' has dynamic dimensions" in result.stderr and "--input-shape input=" in result.stderr
    ok = cli("bench", models["dynamic"], "--input-shape", "input=1,1,16,16", "--json", *FAST)
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["inputs"] == {"input": [1, 1, 16, 16]}
    assert cli("bench", models["dynamic"], "--input-shape", "1x1x12x12", *FAST).exit_code == 0
    wrong_rank = cli("bench", models["dynamic"], "--input-shape", "input=1,16,16", *FAST)
    assert wrong_rank.exit_code == 2 and "has 4 dimensions" in wrong_rank.stderr


@pytest.mark.slow
def test_a_pt2_program_needs_trust(cli, models):
    refused = cli("bench", models["pt2"], *FAST)
    assert refused.exit_code == 2 and "--trust" in refused.stderr
    trusted = cli("bench", models["pt2"], "--trust", "--json", *FAST)
    assert trusted.exit_code == 0, trusted.stderr
    assert json.loads(trusted.stdout)[0]["runtime"]["name"] == "torch"


@pytest.mark.parametrize(("args", "message"), [
    (("--runtime", "litert"), "runtime 'litert' does not load .onnx files"),
    (("--threads", "one"), "--threads 'one'"),
    (("--threads", "0"), "--threads '0'"),
    (("--input-shape", "input=a,b"), "dimensions must be integers"),
    (("--device", "cuda"), None),
])
def test_bad_options_are_one_line_errors(cli, models, args, message):
    result = cli("bench", models["onnx"], *args, *FAST)
    if message is None:  # no GPU here: a clear failure, never a silent CPU measurement
        assert result.exit_code == 3 and "CUDAExecutionProvider" in result.stderr
        return
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_and_unknown_files(cli, models, tmp_path):
    missing = cli("bench", tmp_path / "none.onnx")
    assert (missing.exit_code, missing.stderr) == (2, f"error: {tmp_path / 'none.onnx'}: model file not found\n")
    (tmp_path / "model.bin").write_bytes(b"")
    unknown = cli("bench", tmp_path / "model.bin")
    # the suffixes of every installed format plugin
    assert (unknown.exit_code, unknown.stderr) == (2, f"error: {tmp_path / 'model.bin'}: cannot benchmark model.bin: "
                                                      "expected one of .onnx, .pt2, .tflite, .xml\n")
    lonely = tmp_path / "lonely.xml"
    lonely.write_text(models["xml"].read_text())
    missing_bin = cli("bench", lonely)
    assert (missing_bin.exit_code, missing_bin.stderr) == (
        2, f"error: {lonely}: lonely.bin (the weights of this IR) is missing\n")
    assert not list(tmp_path.glob("*.npz"))  # nothing was measured, nothing written


def test_a_model_whose_external_data_leads_outside_its_folder_is_refused_before_loading(cli, tmp_path):
    import numpy as np
    import onnx

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(16, dtype=np.float32).tobytes())  # a file that is not the model's
    weight = onnx.numpy_helper.from_array(np.zeros(16, dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["input", "w"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 16])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16])], [weight])
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(onnx.helper.make_model(graph), str(folder / "model.onnx"), save_as_external_data=True,
              location="w.bin", size_threshold=0)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.bin"
    onnx.save(model, str(folder / "model.onnx"))
    result = cli("bench", folder / "model.onnx", "--json", *FAST)
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {folder / 'model.onnx'}: ")
    assert "outside the model's folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "secret.bin"]  # nothing measured, nothing written
