"""What each format's quantizer does with recurrent layers (LSTM, GRU, RNN), measured here and held
against what the format plugin declares (`layer_int8`), which `compress validate` tells the user."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress import formats
from compress.errors import StageError
from compress.recipe import QuantizeConfig
from tests.conftest import small_recipe

CALIBRATION = np.random.default_rng(0).standard_normal((16, 8, 8)).astype(np.float32)


class Recurrent(torch.nn.Module):
    """A recurrent layer (most of the MACs) and a small linear head."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(8, 32, batch_first=True)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_the_declared_outcome_is_what_the_quantizer_does(tmp_path, fmt, kind) -> None:
    torch.manual_seed(0)
    model = Recurrent(kind).eval()
    source = formats.export(fmt, model, torch.from_numpy(CALIBRATION[:2]), tmp_path / "fp32").path
    plugin = formats.plugin(fmt)
    for mode in ("static", "dynamic"):
        declared = plugin.layer_int8.get(mode, {}).get(kind, "int8")
        config = QuantizeConfig(mode=mode) if mode == "dynamic" else QuantizeConfig.model_validate(
            {"mode": "static", "calibration": {"samples": 16}})
        try:
            quantized = formats.quantize(fmt, source, model, tmp_path / mode, config, CALIBRATION)
        except StageError:
            assert declared == "fails", (fmt, kind, mode)
            continue
        readback = plugin.inspect(quantized.path)
        # the recurrent layer holds nearly all the MACs: the share says whether it is int8
        share = readback.int8_weights_share if mode == "dynamic" and fmt == "openvino" else readback.int8_macs_share
        measured = "int8" if share > 0.5 else "float"
        assert measured == declared, (fmt, kind, mode, share)


def _recurrent_recipe(**quantize) -> dict:
    return small_recipe(model={"factory": "compress.zoo.sequence:DigitsGRU", "kwargs": {"hidden": 16},
                               "input": {"shape": [1, 8, 8]}, "train": {"epochs": 1}},
                        data={"source": "digits_sequence"}, stages=[], export=["onnx", "tflite"],
                        quantize={"precision": "int8", **quantize})


def test_validate_says_what_stays_in_float_and_refuses_what_fails(cli, write_recipe) -> None:
    path = write_recipe(_recurrent_recipe(mode="static"))  # auto would choose dynamic for a GRU
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "quantize.mode: format 'tflite': its static int8 cannot convert the GRU layer(s) gru; quantize.mode: dynamic "
        "puts them in int8; or drop the format from export")
    dynamic = write_recipe(_recurrent_recipe(mode="dynamic"), "dynamic.yaml")
    result = cli("validate", dynamic)
    assert result.exit_code == 0
    assert result.stderr == (f"warning: {dynamic}: quantize: format 'onnx': its dynamic int8 leaves the GRU layer(s) "
                             "gru in float\n")  # no mode puts a GRU in int8 on ONNX Runtime: no hint
