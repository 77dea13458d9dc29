"""Task kinds: metrics, agreement, drop direction, and the recurrent-layer pruning refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress import metrics, tasks
from compress.budget import Budget, drop
from tests.conftest import kept_outputs, plain_cosine, printed_results, printed_run, small_recipe


def test_perplexity_of_uniform_and_confident_logits():
    vocab = 7
    uniform = np.zeros((3, 5, vocab), dtype=np.float32)
    labels = np.random.default_rng(0).integers(0, vocab, size=(3, 5))
    assert metrics.perplexity(uniform, labels) == pytest.approx(vocab)
    confident = np.full((3, 5, vocab), -20.0, dtype=np.float32)
    np.put_along_axis(confident, labels[..., None], 20.0, axis=-1)
    assert metrics.perplexity(confident, labels) == pytest.approx(1.0, abs=1e-6)


def test_cosine_metric_compares_with_the_original_outputs():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert metrics.cosine(reference * 3, None, reference=reference) == pytest.approx(1.0)
    assert metrics.cosine(np.array([[0.0, 1.0], [0.0, 1.0]]), None, reference=reference) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="original model's outputs"):
        metrics.cosine(reference, None)


def test_agreement_per_task_kind():
    reference = np.array([[[0.1, 0.9], [0.8, 0.2]], [[0.3, 0.7], [0.6, 0.4]]])  # (batch, steps, vocab)
    changed = reference.copy()
    changed[0, 0] = [0.9, 0.1]  # one token of four now predicts another class
    assert tasks.agreement("language_model", changed, reference) == pytest.approx(0.75)
    vectors = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert tasks.agreement("embedding", vectors, vectors) == pytest.approx(1.0)


def test_a_rise_in_perplexity_is_a_drop():
    assert drop(10.0, 12.0, metrics.perplexity.lower_is_better) == pytest.approx(2.0)
    assert drop(0.9, 0.88, metrics.top1.lower_is_better) == pytest.approx(0.02)
    budget = Budget.parse(1.0, lower_is_better=True)
    assert budget.met(10.0, 10.9) and not budget.met(10.0, 11.2)
    assert Budget.parse("5%", lower_is_better=True).met(10.0, 10.4)
    assert not Budget.parse("5%", lower_is_better=True).met(10.0, 10.6)


def test_training_loss_flattens_tokens():
    import torch

    logits = torch.zeros(2, 3, 5)
    labels = torch.zeros(2, 3, dtype=torch.int64)
    loss = tasks.training_loss("language_model")(logits, labels, logits)
    assert float(loss) == pytest.approx(np.log(5), rel=1e-5)


def _lstm_recipe(on_unsupported: str) -> dict:
    return small_recipe(
        model={"factory": "compress.zoo.sequence:DigitsLSTM", "kwargs": {"hidden": 16, "layers": 2},
               "input": {"shape": [1, 8, 8]}, "train": {"epochs": 1, "lr": 0.01}},
        data={"source": "digits_sequence"},
        stages=[{"prune": {"pruning_ratio": 0.25, "on_unsupported": on_unsupported}}], export=[], quantize=None,
        verify={"runtimes": ["torch"], "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0.0}})


def test_lstm_pruning_is_refused_with_a_clear_message(cli, write_recipe, tmp_path):
    path = write_recipe(_lstm_recipe("fail"))
    result = cli("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {path}: stages[0].prune: torch-pruning cannot prune the hidden units of recurrent layers (LSTM: lstm; "
        "it fails on them, Torch-Pruning issues #44 and #404): add them to prune.ignore to prune the other layers, "
        "or set prune.on_unsupported: skip")
    folders = [p.name for p in (tmp_path / "runs" / "small").iterdir() if p.name[0].isdigit()]
    assert len(folders) == 1 and folders[0].endswith(".failed")  # no finished run folder


@pytest.mark.slow
def test_lstm_pruning_is_skipped_when_the_recipe_allows_it(cli, write_recipe, tmp_path):
    result = cli("run", write_recipe(_lstm_recipe("skip")), "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    folder = printed_run(result.stdout)
    results = json.loads((folder / "results.json").read_text())
    prune = next(a for a in results["artifacts"] if a["name"] == "prune")
    assert "torch-pruning cannot prune the hidden units" in prune["info"]["skipped"]
    assert prune["params"] == next(a for a in results["artifacts"] if a["name"] == "original")["params"]


@pytest.mark.slow
def test_a_recurrent_layer_left_in_float_is_said_and_labels_the_artifact_mixed(cli, write_recipe, tmp_path):
    recipe = _lstm_recipe("skip")
    recipe["model"]["train"]["epochs"] = 5  # a model that has learnt something: one epoch leaves near-tied logits
    recipe.update(stages=[], export=["onnx"], quantize={"precision": "int8", "mode": "static",
                                                     "calibration": {"samples": 32}})
    recipe["verify"]["runtimes"] = ["onnxruntime"]
    path = write_recipe(recipe)
    validated = cli("validate", path)
    assert validated.exit_code == 0
    assert validated.stderr == (f"warning: {path}: quantize: format 'onnx': its static int8 leaves the LSTM layer(s) "
                                "lstm in float; quantize.mode: dynamic puts them in int8\n")
    result = cli("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    folder = printed_run(result.stdout)
    results = json.loads((folder / "results.json").read_text())
    assert results["refusals"] == []  # nothing was refused: the artifact exists, labelled for what it is
    mixed = next(a for a in results["artifacts"] if a["lineage"][-1] == "quantize.onnxruntime")
    assert mixed["name"] == "original.mixed.onnx" and mixed["precision"] == "mixed"
    assert len(mixed["info"]["left_in_float"]["LSTM"]) == 2 and mixed["info"]["recurrent_in_float"].keys() == {"LSTM"}
    assert mixed["info"]["int8_macs_share"] < 0.5 and mixed["info"]["label"]["basis"] == "int8_macs_share"
    assert "original.mixed.onnx: labelled mixed: int8_macs_share" in (folder / "run.log").read_text()
    # dynamic int8 has an int8 LSTM kernel on ONNX Runtime: all of it is int8
    recipe["quantize"] = {"precision": "int8", "mode": "dynamic"}
    # what is checked here is the label: ONNX Runtime's dynamic LSTM (per-tensor int8 weights) keeps top-1
    # agreement 0.75 on this 16-unit model, short of the default int8 parity, which would end the run
    recipe["verify"]["parity"] = {"int8": {"min_cosine": 0.9, "min_agreement": 0.7}}
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "runs2")
    assert result.exit_code == 0, result.output[-2000:]
    results = printed_results(result.stdout)
    int8 = next(a for a in results["artifacts"] if a["name"] == "original.int8.onnx")
    assert int8["precision"] == "int8" and int8["info"]["left_in_float"] == {}
    assert int8["info"]["int8_macs_share"] == 1.0 and int8["info"]["int8_weights_share"] == 1.0


@pytest.mark.slow
def test_accuracy_aware_int8_scores_an_embedding_model_by_cosine_to_the_original(cli, write_recipe, tmp_path):
    recipe = small_recipe(task={"kind": "embedding", "metric": "cosine"}, stages=[],
                          quantize={"precision": "int8", "calibration": {"samples": 32}, "max_accuracy_drop": 0.01})
    recipe["verify"]["runtimes"] = ["onnxruntime"]
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    results = printed_results(result.stdout)
    search = next(a for a in results["artifacts"] if a["name"] == "original.int8.onnx")["info"]["accuracy_aware"]
    # the fp32 parent is the original itself: its cosine to the original on the calibration split is 1
    assert search["validation_metric_fp32"] == pytest.approx(1.0, abs=1e-5)
    assert search["budget_met"] and 0.99 - 1e-9 <= search["validation_metric_int8"] < 1 - 1e-6
    # what was measured on the test split, recomputed in plain numpy from the kept outputs
    folder = printed_run(result.stdout)
    original = kept_outputs(folder, "original.onnx", "onnxruntime")  # the original's export, fp32
    int8 = kept_outputs(folder, "original.int8.onnx", "onnxruntime")
    assert np.ptp(int8, axis=0).max() > 0  # live outputs, not a constant
    measured = next(m for m in results["measurements"] if m["artifact"] == "original.int8.onnx")
    assert measured["parity"]["cosine"] == pytest.approx(plain_cosine(int8, original), abs=1e-5)
    assert 0.99 <= plain_cosine(int8, original) < 1 - 1e-6
