"""Quantization-aware training (`stages: [qat]`): NNCF fine-tunes with int8 fake quantization, each
weight is left on its int8 grid (read back here from the stored safetensors, independently of the
stage), the formats quantize the result with their own int8 quantizers, and a recipe that leaves
the stage nothing to do is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import printed_results, small_recipe
from tests.test_recipe import fails

FAST_VERIFY = {"runtimes": ["torch", "onnxruntime"], "targets": ["local"],
               "latency": {"warmup": 0, "min_runs": 2, "min_seconds": 0.0, "threads": [1]}}


def _recipe(qat: dict[str, Any], **quantize: Any) -> dict[str, Any]:
    model = {"factory": "compress.zoo.digits:DigitsCNN", "kwargs": {"width": 32},
             "input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"},
             "train": {"epochs": 4, "lr": 0.01, "batch_size": 64}}
    section = {k: v for k, v in {"precision": "int8", "calibration": {"samples": 64}, **quantize}.items()
               if v is not None}
    return small_recipe(model=model, stages=[{"qat": qat}], verify=FAST_VERIFY, quantize=section)


def test_qat_without_int8_is_refused(cli, write_recipe) -> None:
    path = write_recipe(_recipe({}, precision="fp16", calibration=None))
    line = fails(cli("validate", path))
    assert re.fullmatch(f"error: {re.escape(str(path))}:\\d+: stages\\[0\\]\\.qat: quantization-aware training makes "
                        "int8 artifacts: it needs quantize.precision to include int8", line), line


def test_over_budget_needs_a_budget(cli, write_recipe) -> None:
    path = write_recipe(_recipe({"when": "over_budget"}))
    line = fails(cli("validate", path))
    assert re.fullmatch(f"error: {re.escape(str(path))}:\\d+: stages\\[0\\]\\.qat\\.when: over_budget needs "
                        "quantize.max_accuracy_drop \\(the budget post-training int8 is held to\\)", line), line


def _weights(run: Path, artifact: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    (weights,) = (run / "artifacts" / artifact / "model").glob("*.safetensors")
    return load_file(str(weights))


@pytest.mark.slow
def test_qat_leaves_each_weight_on_its_int8_grid_and_the_formats_quantize_it(cli, write_recipe, tmp_path) -> None:
    result = cli("run", write_recipe(_recipe({"epochs": 1, "lr": 1e-3})), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    results = printed_results(result.stdout)
    run = tmp_path / "out" / "small" / results["run_id"]
    by_name = {a["name"]: a for a in results["artifacts"]}
    info = by_name["qat"]["info"]
    assert info["weights_on_int8_grid"] == 4 and set(info["validation_metric"]) == {
        "fp32", "int8_before_qat", "int8_after_qat"}
    trained, original = _weights(run, "qat"), _weights(run, "original")
    for name in ("features.3.weight", "features.7.weight"):  # convs of 32 x 3 x 3 = 288 weights per channel
        assert not np.array_equal(trained[name], original[name])  # fine-tuned
        for channel, before in zip(trained[name], original[name], strict=True):
            assert len(np.unique(before)) > 256  # fp32: more values than int8 has levels
            values = np.unique(channel)
            assert len(values) <= 255, name
            step = np.diff(values).min()  # 288 weights on at most 255 levels: neighbouring levels are taken
            levels = channel / step  # symmetric: the grid runs through zero
            assert np.allclose(levels, np.round(levels), atol=2e-3), name
            assert np.abs(levels).max() <= 128.01, name
    quantized = by_name["qat.int8.onnx"]
    assert quantized["precision"] == "int8" and quantized["lineage"] == ["original", "qat", "export.onnx",
                                                                  "quantize.onnxruntime"]
    measured = {m["artifact"]: m for m in results["measurements"]}
    assert measured["qat.int8.onnx"]["parity"]["passed"]


@pytest.mark.slow
def test_over_budget_within_the_budget_hands_the_model_on_unchanged(cli, write_recipe, tmp_path) -> None:
    recipe = _recipe({"when": "over_budget"}, max_accuracy_drop=0.5)
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    results = printed_results(result.stdout)
    info = {a["name"]: a for a in results["artifacts"]}["qat"]["info"]
    metric = info["validation_metric"]
    before, fp32 = metric["int8_before_qat"], metric["fp32"]
    assert info["skipped"] == (f"simulated post-training int8 is within max_accuracy_drop 0.5 ({before:.4f} "
                               f"against {fp32:.4f} in fp32): no fine-tuning")
    assert "int8_after_qat" not in metric and "epoch_losses" not in info
    run = tmp_path / "out" / "small" / results["run_id"]
    trained, original = _weights(run, "qat"), _weights(run, "original")
    assert trained.keys() == original.keys()
    assert all(np.array_equal(trained[k], original[k]) for k in original)


def test_qat_against_dynamic_int8_is_refused_whether_set_or_chosen(cli, write_recipe) -> None:
    path = write_recipe(_recipe({}, mode="dynamic"))
    line = fails(cli("validate", path))
    assert line.endswith(": stages[0].qat: quantization-aware training trains against static int8 (activation "
                         "ranges fixed by calibration), and quantize.mode is dynamic: set quantize.mode: static"), line
    lstm = small_recipe(model={"factory": "compress.zoo.sequence:DigitsLSTM", "kwargs": {"hidden": 8, "layers": 1},
                               "input": {"name": "input", "shape": [1, 8, 8], "dtype": "float32"}},
                        data={"source": "digits_sequence", "batch_size": 64}, stages=[{"qat": {}}],
                        quantize={"precision": "int8"})  # mode auto: dynamic for a recurrent model
    line = fails(cli("validate", write_recipe(lstm, "lstm.yaml")))
    assert line.endswith(": stages[0].qat: quantization-aware training trains against static int8 (activation "
                         "ranges fixed by calibration), and quantize.mode is dynamic (chosen by quantize.mode auto): "
                         "set quantize.mode: static"), line


@pytest.mark.slow
def test_a_model_whose_fake_quantized_outputs_are_not_finite_fails_in_one_line(cli, write_recipe, tmp_path) -> None:
    """TinyGPT's renormalised masked softmax divides by a row sum that NNCF's int8 makes 0: no step
    could train from NaN, so the stage says so before training instead of blaming the learning rate."""
    lm = small_recipe(model={"factory": "compress.zoo.lm:tiny_gpt", "kwargs": {"context": 16, "dim": 32, "layers": 1,
                                                                              "heads": 2},
                             "input": {"name": "input_ids", "shape": [1, 16], "dtype": "int64"},
                             "train": {"epochs": 1, "lr": 0.004, "batch_size": 32}},
                      data={"source": "text", "batch_size": 16},
                      task={"kind": "language_model", "metric": "perplexity"}, stages=[{"qat": {}}],
                      quantize={"precision": "int8", "mode": "static", "calibration": {"samples": 32}})
    result = cli("run", write_recipe(lm), "--out", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        ": stages[0].qat: NNCF's fake-quantized TinyGPT gives non-finite outputs on the calibration split before any "
        "training: quantization-aware training cannot start from it"), result.stderr


@pytest.mark.slow
def test_qat_scored_by_a_labelled_metric_on_unlabelled_data_is_refused(cli, write_recipe, tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    from compress.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    save_file(DigitsCNN(width=8).state_dict(), str(tmp_path / "weights.safetensors"))
    np.savez(tmp_path / "images.npz", x=np.random.default_rng(0).random((120, 1, 8, 8), dtype=np.float32))  # no y
    recipe = _recipe({})
    recipe["model"] = {"factory": "compress.zoo.digits:DigitsCNN", "kwargs": {"width": 8},
                       "weights": "weights.safetensors", "input": recipe["model"]["input"]}
    recipe["data"] = {"source": "npz", "path": "images.npz", "batch_size": 64}
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        ": stages[0].qat: qat scores int8 with top1, which needs labelled calibration data (data)"), result.stderr
