"""Accuracy-aware int8: budgets, the keep-in-float search, and the LSTM case it must fix."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from compress.accuracy import Validation, greedy_keep_in_float
from compress.budget import Budget

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("raw", "reference", "score", "met"), [
    (0.01, 0.90, 0.89, True),            # exactly at the budget
    (0.01, 0.90, 0.89 - 1e-9, False),    # just over
    ("1%", 0.80, 0.792, True),           # relative: 1% of 0.80 = 0.008
    ("1%", 0.80, 0.7919, False),
    (0.01, 0.90, math.nan, False),       # NaN never meets a budget
    (0.0, 0.90, 0.90, True),
])
def test_budget_boundaries_are_exact(raw, reference, score, met):
    budget = Budget.parse(raw)
    assert budget.met(reference, score) is met
    assert budget.describe() == (raw if isinstance(raw, str) else f"{raw:g}")


class ScriptedValidation(Validation):
    """Scores a 'model' file by the layers it left in float, as listed inside it."""

    def __init__(self, budget: Budget, costs: dict[str, float], reference: float) -> None:
        super().__init__(x=None, y=None, metric=None, budget=budget, input_name="x", runtime="none",  # type: ignore[arg-type]
                         run=None)  # type: ignore[arg-type]
        self.costs, self.reference = costs, reference

    def score(self, path: Path) -> float:
        kept = set(path.read_text().split(",")) - {""}
        return self.reference - sum(cost for layer, cost in self.costs.items() if layer not in kept)


def _write(excluded: list[str], path: Path) -> None:
    path.write_text(",".join(excluded))


def test_search_keeps_the_most_harmful_layers_in_float_until_within_budget(tmp_path):
    costs = {"conv1": 0.001, "lstm": 0.30, "fc": 0.02, "conv2": 0.0}
    validation = ScriptedValidation(Budget(0.01, relative=False), costs, reference=0.9)
    report = greedy_keep_in_float(_write, list(costs), 0.9, validation, tmp_path / "best.txt")
    assert report.met
    assert report.kept_in_float == ["lstm", "fc"]  # by sensitivity, stopping once within budget
    assert (tmp_path / "best.txt").read_text() == "lstm,fc"
    assert report.steps[0]["sensitivity"]["lstm"] == pytest.approx(0.30)
    assert report.as_info()["accuracy_aware"]["budget_met"] is True


def test_search_stops_at_once_when_default_int8_is_within_budget(tmp_path):
    validation = ScriptedValidation(Budget(0.05, relative=False), {"a": 0.01, "b": 0.01}, reference=0.9)
    report = greedy_keep_in_float(_write, ["a", "b"], 0.9, validation, tmp_path / "best.txt")
    assert report.met and report.kept_in_float == [] and len(report.steps) == 1


def test_an_unreachable_budget_keeps_the_best_and_says_so(tmp_path):
    # a cost no layer explains (say, the input quantizer): keeping everything in float is not enough
    validation = ScriptedValidation(Budget(0.001, relative=False), {"a": 0.05, "input": 0.02}, reference=0.9)
    report = greedy_keep_in_float(_write, ["a"], 0.9, validation, tmp_path / "best.txt")
    assert not report.met
    assert report.kept_in_float == ["a"] and report.score == pytest.approx(0.88)
    assert (tmp_path / "best.txt").read_text() == "a"  # the best artifact found is kept


@pytest.mark.slow
def test_lstm_default_int8_misses_and_accuracy_aware_openvino_meets_the_budget(cli, tmp_path):
    recipe = ROOT / "recipes" / "lstm-digits.yaml"
    # static int8 without the recipe's stages: the case where NNCF's default int8 breaks the LSTM
    common = ("--out", tmp_path, "--set", "stages=[]", "--set", "quantize.mode=static",
              "--set", "export=[openvino]", "--set", "verify.runtimes=[openvino]",
              "--set", "verify.latency={warmup: 0, min_runs: 3, min_seconds: 0}",
              "--set", "verify.parity.int8={min_cosine: 0.0, min_agreement: 0.0}")
    assert cli("run", recipe, *common).exit_code == 0
    default = _latest(tmp_path)
    top1 = {m["artifact"]: m["metric"]["top1"] for m in default["measurements"]}
    assert top1["original.openvino"] - top1["original.int8.openvino"] > 0.01  # the miss, measured

    result = cli("run", recipe, *common, "--set", "quantize.max_accuracy_drop=0.01")
    assert result.exit_code == 0, result.stderr
    tuned = _latest(tmp_path)
    artifact = next(a for a in tuned["artifacts"] if a["name"] == "original.int8.openvino")
    search = artifact["info"]["accuracy_aware"]
    assert search["budget_met"] and search["steps"][0]["validation_metric"] < search["validation_metric_fp32"] - 0.01
    assert any("LSTMSequence" in layer for layer in search["kept_in_float"])
    top1 = {m["artifact"]: m["metric"]["top1"] for m in tuned["measurements"]}
    assert top1["original.openvino"] - top1["original.int8.openvino"] <= 0.01 + 1e-9  # held out test split
    assert tuned["summary"]["original.int8.openvino_kept_in_float"] == search["kept_in_float"]


def _latest(out: Path, name: str = "lstm-digits") -> dict:
    folders = sorted(p for p in (out / name).iterdir() if p.is_dir() and p.name[0].isdigit()
                     and not p.name.endswith(".failed"))
    return json.loads((folders[-1] / "results.json").read_text())


@pytest.mark.slow
def test_outlier_model_is_fixed_on_onnxruntime_and_tflite(cli, tmp_path):
    recipe = ROOT / "recipes" / "outlier-digits.yaml"
    common = ("--out", tmp_path, "--set", "export=[onnx, tflite]", "--set", "verify.runtimes=[onnxruntime, litert]",
              "--set", "verify.latency={warmup: 0, min_runs: 3, min_seconds: 0}",
              "--set", "verify.parity.int8={min_cosine: 0.0, min_agreement: 0.0}")
    assert cli("run", recipe, *common, "--set", "quantize.max_accuracy_drop=null").exit_code == 0
    default = {m["artifact"]: m["metric"]["top1"] for m in _latest(tmp_path, "outlier-digits")["measurements"]}
    for fmt in ("onnx", "tflite"):
        assert default[f"original.{fmt}"] - default[f"original.int8.{fmt}"] > 0.5  # collapses by default

    result = cli("run", recipe, *common)
    assert result.exit_code == 0, result.stderr
    tuned = _latest(tmp_path, "outlier-digits")
    top1 = {m["artifact"]: m["metric"]["top1"] for m in tuned["measurements"]}
    kept = {a["name"]: a["info"]["accuracy_aware"]["kept_in_float"] for a in tuned["artifacts"]
            if "accuracy_aware" in a["info"]}
    assert "node_mul_18" in kept["original.int8.onnx"] or any("mul" in k for k in kept["original.int8.onnx"])
    assert "outlier" in kept["original.int8.tflite"]
    for fmt in ("onnx", "tflite"):
        assert top1[f"original.{fmt}"] - top1[f"original.int8.{fmt}"] <= 0.01 + 1e-9


def test_an_unmet_budget_fails_the_stage_and_keeps_the_best_artifact(cli, tmp_path, monkeypatch):
    # Every int8 candidate scores 0.5 against 0.9 in fp32, whatever stays in float: unreachable.
    def scripted(self, path):
        return 0.5 if "compress-aa-" in str(path) else 0.9

    monkeypatch.setattr(Validation, "score", scripted)
    recipe = ROOT / "recipes" / "outlier-digits.yaml"
    result = cli("run", recipe, "--out", tmp_path, "--set", "export=[onnx]", "--set", "verify.runtimes=[onnxruntime]",
                 "--set", "model.kwargs.width=8", "--set", "model.train.epochs=1",
                 "--set", "verify.latency={min_runs: 1, min_seconds: 0}")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {recipe}: quantize.max_accuracy_drop: original.int8.onnx: int8 cannot meet "
                           "max_accuracy_drop 0.01: the best found scores 0.5000 against 0.9000")
    kept_at = Path(last.rsplit("it is kept at ", 1)[1])
    assert kept_at.is_file()  # the best artifact found is not lost
    meta = json.loads((kept_at.parent / "artifact.json").read_text())
    assert meta["info"]["accuracy_aware"]["budget_met"] is False
    assert len(meta["info"]["accuracy_aware"]["steps"]) > 2  # it tried keeping layers in float
