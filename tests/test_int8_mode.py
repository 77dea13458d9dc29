"""quantize.mode auto: static int8 for feed-forward models, dynamic where activations multiply
activations (attention) or recur (LSTM / GRU / RNN), chosen once from the model and recorded."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from compress.int8_mode import choose_mode
from compress.recipe import load_recipe
from compress.zoo.digits import DigitsCNN
from compress.zoo.sequence import DigitsGRU
from tests.conftest import printed_run, small_recipe


class Linear(nn.Module):
    """x @ W^T written by hand: a weight product, not attention."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


class TokenAttention(nn.Module):
    """Token ids -> embeddings -> one head of self-attention written with matmuls."""

    def __init__(self, vocab: int = 50, width: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.query, self.key = nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Linear(width, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        scores = torch.softmax(self.query(x) @ self.key(x).transpose(-1, -2), dim=-1)
        return self.out((scores @ x).mean(1))


@pytest.mark.parametrize(("model", "example", "mode"), [
    (DigitsCNN(width=8), torch.rand(1, 1, 8, 8), "static"),
    (Linear(), torch.rand(2, 8), "static"),
    (TokenAttention(), torch.zeros(1, 6, dtype=torch.long), "dynamic"),
    (nn.TransformerEncoderLayer(8, 2, batch_first=True), torch.rand(1, 5, 8), "dynamic"),
    (DigitsGRU(), torch.rand(1, 8, 8), "dynamic"),
], ids=["cnn", "hand-written-linear", "token-attention", "multi-head-attention", "gru"])
def test_the_mode_follows_what_the_model_computes(model: nn.Module, example: torch.Tensor, mode: str) -> None:
    chosen, reason = choose_mode(model, example)
    assert chosen == mode, reason
    if mode == "dynamic":
        assert ("attention" in reason) != ("GRU" in reason)
    assert all(p.requires_grad for p in model.parameters())  # the probe leaves the model as it was


def _attention_recipe(tmp_path: Path, **quantize: object) -> Path:
    recipe = small_recipe(quantize={"precision": "int8", **quantize}, export=["onnx"], stages=[])
    recipe["model"] = {"factory": "models:TokenAttention", "input": {"name": "ids", "shape": [1, 6], "dtype": "int64"}}
    recipe["data"] = {"source": "npz", "path": "tokens.npz"}
    source = "import torch\nfrom torch import nn\n\n\n" + inspect.getsource(TokenAttention)
    (tmp_path / "models.py").write_text(source)

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", x=rng.integers(0, 50, (64, 6)), y=rng.integers(0, 3, 64))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_validate_chooses_dynamic_for_attention_and_says_why(tmp_path: Path) -> None:
    plan = load_recipe(_attention_recipe(tmp_path))
    assert plan.recipe.quantize.mode == "dynamic"
    assert "attention" in plan.quantize_mode_reason


def test_a_mode_the_recipe_sets_is_kept(tmp_path: Path) -> None:
    plan = load_recipe(_attention_recipe(tmp_path, mode="static"))
    assert plan.recipe.quantize.mode == "static" and plan.quantize_mode_reason is None


def test_calibration_under_an_auto_dynamic_choice_is_a_warning_not_an_error(tmp_path: Path) -> None:
    plan = load_recipe(_attention_recipe(tmp_path, calibration={"samples": 16}))
    assert plan.recipe.quantize.mode == "dynamic"
    assert any("quantize.calibration: unused: mode auto chose dynamic" in w for w in plan.warnings), plan.warnings


@pytest.mark.slow
def test_a_run_records_the_mode_chosen_and_why(cli, tmp_path: Path) -> None:
    recipe = _attention_recipe(tmp_path)
    result = cli("run", recipe, "--out", tmp_path / "runs", "--set", "verify.runtimes=[onnxruntime]",
                 "--set", "verify.latency={warmup: 0, min_runs: 2, min_seconds: 0}")
    assert result.exit_code in (0, 1), result.stderr  # 1: a parity or gate verdict, not a crash
    assert "int8 mode dynamic (quantize.mode auto)" in result.stderr  # progress goes to stderr
    run = printed_run(result.stdout)
    results = json.loads((run / "results.json").read_text())
    quantized = next(a for a in results["artifacts"] if a["lineage"][-1].startswith("quantize."))
    assert quantized["info"]["mode"] == "dynamic" and "attention" in quantized["info"]["mode_chosen_because"]
    assert quantized["info"]["quantizer"] == "onnxruntime.quantize_dynamic"
    resolved = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
    assert resolved["quantize"]["mode"] == "dynamic"


def test_a_feed_forward_recipe_stays_static(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(small_recipe(quantize={"precision": "int8"})))
    plan = load_recipe(path)
    assert plan.recipe.quantize.mode == "static" and "feed-forward" in plan.quantize_mode_reason
