"""The character-level decoder LM: the `text` data source, the TinyGPT model, and the whole flow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data.text import ALPHABET, VOCAB_SIZE, decode, default_corpus, encode
from compress.errors import InputError
from compress.recipe import load_recipe
from compress.zoo.lm import TinyGPT, tiny_gpt
from tests.conftest import printed_results


def _lm_recipe(context: int = 32, **changes):
    recipe = {
        "schema_version": 1,
        "name": "lm-small",
        "seed": 0,
        "model": {
            "factory": "compress.zoo.lm:tiny_gpt",
            "kwargs": {"context": context, "dim": 32, "layers": 2, "heads": 2},
            "input": {"name": "input_ids", "shape": [1, context], "dtype": "int64"},
            "train": {"epochs": 3, "lr": 0.01, "batch_size": 32},
        },
        "data": {"source": "text", "path": "corpus.txt", "batch_size": 32,
                 "calibration_fraction": 0.1, "test_fraction": 0.1},
        "task": {"kind": "language_model", "metric": "perplexity"},
        "export": ["onnx"],
        "verify": {"runtimes": ["torch", "onnxruntime"],
                   "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]}},
    }
    recipe.update(changes)
    return recipe


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A slice of the shipped corpus (about 30k characters), beside the recipe."""
    path = tmp_path / "corpus.txt"
    path.write_text(default_corpus()[:30_000])
    return path


def _splits(write_recipe, recipe):
    from compress.data.text import text

    plan = load_recipe(write_recipe(recipe))
    return text(plan.recipe.data, plan.data_context())


def test_alphabet_and_encoding():
    assert VOCAB_SIZE == len(ALPHABET) == len(set(ALPHABET))
    ids = encode("In the Beginning, é!")
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < VOCAB_SIZE
    assert decode(ids) == "in the beginning, \x00!"  # lowercased; outside the alphabet -> id 0
    corpus = encode(default_corpus())
    assert len(corpus) > 300_000 and (corpus == 0).sum() == 0  # the shipped text fits the alphabet


def test_windows_are_shifted_by_one_and_splits_are_contiguous(write_recipe, corpus):
    splits = _splits(write_recipe, _lm_recipe(context=32))
    ids = encode(corpus.read_text())
    for split in (splits.train, splits.calibration, splits.test):
        assert split.x.dtype == np.int64 and split.y.dtype == np.int64
        assert split.x.shape[1:] == (32,) and split.y.shape == split.x.shape
        assert np.array_equal(split.x[:, 1:], split.y[:, :-1])  # labels: the next token
    # train windows overlap by half; calibration and test windows tile the text
    assert np.array_equal(splits.train.x[1, :16], splits.train.x[0, 16:])
    for split in (splits.calibration, splits.test):
        assert np.array_equal(split.x[1:, 0], split.y[:-1, -1])
    # three contiguous parts in order: train, calibration, test; the test text never in training
    text = ids.tobytes()
    starts = [text.find(s.x[0].tobytes()) // 8 for s in (splits.train, splits.calibration, splits.test)]
    assert starts[0] == 0 and starts[0] < starts[1] < starts[2]
    assert starts[2] >= len(ids) * 0.9 - 1
    train_end = starts[0] + (len(splits.train) - 1) * 16 + 33
    assert train_end <= starts[1]
    assert train_end <= len(ids) * 0.8 + 1  # training windows stay in the first 80% of the text


def test_context_mismatch_and_bad_input_name_the_field(write_recipe, corpus):
    recipe = _lm_recipe(context=32)
    recipe["model"]["input"] = {"shape": [1, 1, 32], "dtype": "int64"}
    with pytest.raises(InputError) as info:
        _splits(write_recipe, recipe)
    assert info.value.field == "model.input.shape"

    recipe = _lm_recipe(context=32)
    recipe["model"]["input"]["dtype"] = "float32"
    with pytest.raises(InputError) as info:
        _splits(write_recipe, recipe)
    assert info.value.field == "model.input.shape"

    recipe = _lm_recipe(context=4000)  # longer than the calibration part of the text
    with pytest.raises(InputError, match="shorter than one window") as info:
        _splits(write_recipe, recipe)
    assert info.value.field == "model.input.shape"

    recipe = _lm_recipe()
    recipe["data"]["path"] = "missing.txt"
    with pytest.raises(InputError, match="not found") as info:
        _splits(write_recipe, recipe)
    assert info.value.field == "data.path"


def test_default_corpus_ships_with_the_package(write_recipe):
    recipe = _lm_recipe(context=64)
    del recipe["data"]["path"]
    splits = _splits(write_recipe, recipe)
    assert splits.source == "text:kjv.txt"
    assert len(splits.test) > 500 and len(splits.calibration) > 500


def test_tiny_gpt_is_causal():
    torch.manual_seed(0)
    model = tiny_gpt(context=16, dim=32, layers=2, heads=2).eval()
    assert isinstance(model, TinyGPT) and model.head.out_features == model.tok_emb.in_features == VOCAB_SIZE
    ids = torch.randint(0, VOCAB_SIZE, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % VOCAB_SIZE
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (2, 16, VOCAB_SIZE)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)  # no position sees the future
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.slow
def test_lm_end_to_end(tmp_path, write_recipe, corpus, cli):
    """Train, prune the MLP channels, distill, export to every format, int8, verify on every runtime."""
    recipe = _lm_recipe(
        stages=[{"prune": {"importance": "l2", "target_macs_ratio": 0.8, "iterative_steps": 1, "round_to": 8,
                           "ignore": ["tok_emb", "blocks.*.attn.*", "blocks.*.mlp.fc2",
                                      "blocks.*.ln*", "ln_f"]}},
                {"distill": {"epochs": 1, "lr": 0.005, "temperature": 2.0, "alpha": 0.5}}],
        quantize={"precision": "int8", "mode": "dynamic"},
        export=["onnx", "openvino", "tflite"],
        verify={"runtimes": ["torch", "onnxruntime", "openvino", "litert"],
                "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]},
                "parity": {"int8": {"min_cosine": 0.9, "min_agreement": 0.5}}},
    )
    path = write_recipe(recipe)
    result = cli("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    results = printed_results(result.stdout)
    ok = [m for m in results["measurements"] if m["status"] == "ok"]
    runtimes_of = {"torch": {"torch"}, "onnx": {"onnxruntime", "openvino"}, "openvino": {"openvino"},
                   "tflite": {"litert"}}
    expected = {(a["name"], r) for a in results["artifacts"] for r in runtimes_of[a["format"]]}
    measured = {(m["artifact"], m["runtime"]) for m in ok if m.get("metric", {}).get("perplexity") is not None}
    assert measured == expected  # perplexity for every artifact on every runtime that loads it
    by = {(m["artifact"], m["runtime"]): m for m in ok}
    original = by[("original", "torch")]["metric"]["perplexity"]
    assert original < VOCAB_SIZE / 3  # far below a uniform guess over the alphabet: it learned
    assert math.isfinite(original)
    precision = {a["name"]: a["precision"] for a in results["artifacts"]}
    fp32_exports = [key for key in by if key[1] != "torch" and precision[key[0]] == "fp32"]
    assert len(fp32_exports) == 8
    for name, runtime in fp32_exports:  # greedy next-token agreement with the torch model exported
        assert by[(name, runtime)]["parity"]["agreement"] >= 0.99, (name, runtime)
        if name.startswith("original."):
            assert by[(name, runtime)]["agreement"] >= 0.99, (name, runtime)
            assert by[(name, runtime)]["metric"]["perplexity"] == pytest.approx(original, rel=1e-3)


@pytest.mark.slow
def test_lm_runs_are_reproducible(tmp_path, write_recipe, corpus, cli):
    """The same recipe run twice (no cache shared) gives the same perplexity figures."""
    path = write_recipe(_lm_recipe(context=32))
    figures = []
    for out in ("first", "second"):
        result = cli("run", path, "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
        results = printed_results(result.stdout)
        figures.append({(m["artifact"], m["runtime"]): m["metric"] for m in results["measurements"]})
    assert ("original", "torch") in figures[0] and ("original.onnx", "onnxruntime") in figures[0]
    assert figures[0] == figures[1]
