"""The shipped family recipes, shrunk (fewer epochs, fewer formats, short timings), end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import printed_results

ROOT = Path(__file__).resolve().parent.parent
QUICK_LATENCY = {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]}


def _shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recipes" / name).read_text())


def _run(cli: Any, write_recipe: Any, recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    result = cli("run", write_recipe(recipe), "--out", out)
    assert result.exit_code == 0, result.output[-3000:]
    return printed_results(result.stdout)


@pytest.mark.slow
def test_mobilenet_recipe_prunes_depthwise_blocks_end_to_end(cli, write_recipe, tmp_path):
    recipe = _shipped("mobilenet-digits.yaml")
    recipe["model"]["train"]["epochs"] = 2
    recipe["stages"][1]["distill"]["epochs"] = 1
    recipe["export"] = ["onnx", "tflite"]
    recipe["verify"].update(runtimes=["torch", "onnxruntime", "litert"], latency=QUICK_LATENCY)
    recipe.pop("gates", None)
    results = _run(cli, write_recipe, recipe, tmp_path / "runs")
    prune = next(a for a in results["artifacts"] if a["name"] == "prune")
    target = recipe["stages"][0]["prune"]["target_macs_ratio"]
    assert abs(prune["info"]["macs_ratio"] - target) <= 0.05 and prune["info"]["target"]["achieved"] == \
        prune["info"]["macs_ratio"]
    names = {(m["artifact"], m["runtime"]) for m in results["measurements"] if m["status"] == "ok"}
    assert {("distill.int8.onnx", "onnxruntime"), ("distill.int8.tflite", "litert")} <= names
    assert len(names) == len(results["measurements"])  # every measurement ran


@pytest.mark.slow
def test_minilm_topic_classifier_end_to_end(cli, write_recipe, tmp_path):
    """Real MiniLM features: a linear head trained on the repo's topic set beats chance by far."""
    recipe = _shipped("minilm-topics.yaml")
    recipe["model"]["train"]["epochs"] = 4
    recipe["stages"][1]["distill"].update(epochs=1, batch_size=32)
    recipe["export"] = ["onnx"]
    recipe["verify"].update(runtimes=["onnxruntime"], latency=QUICK_LATENCY)
    results = _run(cli, write_recipe, recipe, tmp_path / "runs")
    top1 = {m["artifact"]: m["metric"]["top1"] for m in results["measurements"]}
    assert top1["original.onnx"] > 0.8  # six topics: chance is 0.17
    prune = next(a for a in results["artifacts"] if a["name"] == "prune")
    assert prune["info"]["attention_heads"] == [10] * 6
    int8 = next(a for a in results["artifacts"] if a["name"] == "distill.int8.onnx")
    assert int8["info"]["mode"] == "dynamic" and int8["info"]["left_in_float"] == {}
    assert abs(top1["distill.int8.onnx"] - top1["distill.onnx"]) <= 0.02 + 1e-9
