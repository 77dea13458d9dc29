"""Bias correction of static int8 (TFLite's, on PT2E's fake-quantized graph; NNCF's on OpenVINO):
each layer's mean output per channel in int8 is brought back to float's, the model it was exported
from is left untouched, and the recipe's `bias_correction` turns it on (TFLite) or off (OpenVINO)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compress.recipe import QuantizeConfig
from tests.conftest import export_with, load_backend, quantize_with


class ShiftedNet(nn.Module):
    """Convolutions whose int8 shifts their mean output: one wide channel stretches the first
    activation's per-tensor scale, so the other channels' small positive values round to zero and
    every layer after it sees less than float does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Conv2d(3, 16, 3, padding=1)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, 5)
        with torch.no_grad():
            self.first.weight[0].mul_(200.0)  # one wide channel: the others' small values round to 0
            self.first.bias[1:].fill_(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first(x))
        x = torch.relu(self.depthwise(x))
        return self.classifier(self.pool(self.project(x)).flatten(1))


def _samples(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (count, 3, 12, 12)).astype(np.float32)


def _fake_quantized(model: nn.Module, calibration: np.ndarray):
    from torchao.quantization.pt2e import quantize_pt2e

    from compress.exporters.tflite.quantize import _leave_in_float, static_config

    chosen, _ = static_config(QuantizeConfig(mode="static"))
    graph = quantize_pt2e.prepare_pt2e(torch.export.export(model, (torch.from_numpy(calibration[:1]),)).module(),
                                       _leave_in_float([], []).set_global(chosen))
    with torch.no_grad():
        for i in range(len(calibration)):
            graph(torch.from_numpy(calibration[i:i + 1]))
    return quantize_pt2e.convert_pt2e(graph, fold_quantize=False)


def _layer_means(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each conv / linear node's output averaged per channel, recorded by forward hooks on the
    graph's own nodes (torch.fx.Interpreter), independently of the code under test."""
    sums: dict[str, np.ndarray] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node.op == "call_function" and str(node.target) in ("aten.conv2d.default", "aten.linear.default"):
                array = value.detach().numpy()
                mean = array.mean(axis=(0, 2, 3)) if array.ndim == 4 else array.mean(axis=0)
                sums[node.name] = sums.get(node.name, 0) + mean
            return value

    with torch.no_grad():
        for i in range(len(x)):
            Recorder(graph).run(torch.from_numpy(x[i:i + 1]))
    return {name: total / len(x) for name, total in sums.items()}


@pytest.mark.slow
def test_each_layer_mean_output_in_int8_comes_back_to_float_and_the_model_is_untouched() -> None:
    from compress.exporters.tflite.bias_correction import correct_biases, passed_through

    model = ShiftedNet().eval()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = _samples(32, 0)
    graph = _fake_quantized(model, calibration)
    with passed_through(graph):
        wanted = _layer_means(graph, calibration)
    shifted = _layer_means(graph, calibration)
    gaps_before = {n: np.abs(shifted[n] - wanted[n]).max() for n in wanted}
    assert max(gaps_before.values()) > 1e-2, gaps_before  # int8 does shift them here

    changes = correct_biases(graph, [(torch.from_numpy(calibration[i:i + 1]),) for i in range(len(calibration))])
    assert sorted(changes) == sorted(wanted)  # every layer with a bias: 3 convs and the linear layer
    corrected = _layer_means(graph, calibration)
    for name in wanted:  # on the samples it was measured on, to float32 rounding and int8 re-rounding
        assert np.abs(corrected[name] - wanted[name]).max() < 0.25 * gaps_before[name] + 1e-4, name
    for name, value in model.state_dict().items():
        assert torch.equal(value, before_model[name]), name  # the exported model's biases did not move
    # on samples it never saw, the layers' mean outputs stay closer to float's than uncorrected
    held_out = _samples(32, 1)
    with passed_through(graph):
        float_held_out = _layer_means(graph, held_out)
    corrected_held_out = _layer_means(graph, held_out)
    plain_held_out = _layer_means(_fake_quantized(model, calibration), held_out)

    def total_gap(means: dict[str, np.ndarray]) -> float:
        return sum(float(np.abs(means[n] - float_held_out[n]).mean()) for n in float_held_out)

    assert total_gap(corrected_held_out) < 0.7 * total_gap(plain_held_out)  # 0.55 here; 1.0 uncorrected


def test_a_graph_without_biases_is_left_as_it_is() -> None:
    from compress.exporters.tflite.bias_correction import correct_biases

    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU()).eval()
    graph = _fake_quantized(model, _samples(4, 0))
    code = graph.code
    assert correct_biases(graph, [(torch.from_numpy(_samples(1, 2)),)]) == {}
    assert graph.code == code


@pytest.mark.slow
def test_tflite_artifacts_with_and_without_it(tmp_path: Path) -> None:
    """The recipe's switch reaches the artifact: corrected (`bias_correction: true`), the TFLite int8
    model's mean logits sit closer to fp32's on held-out samples than uncorrected (the default, off);
    every call recorded."""
    model = ShiftedNet().eval()
    calibration, held_out = _samples(64, 0), _samples(64, 1)
    exported = export_with("tflite", model, torch.from_numpy(calibration[:1]), tmp_path / "fp32")
    with torch.no_grad():
        want = model(torch.from_numpy(held_out)).numpy()
    mean_error = {}
    for switch in (True, None):
        config = QuantizeConfig(calibration={"samples": 64}, first_layers={"in_float": 0}, bias_correction=switch)
        quantized = quantize_with("tflite", exported.path, model, tmp_path / str(switch), config, calibration)
        recorded = quantized.info["quantizer_call"]["arguments"]["bias_correction"]
        assert recorded == ({"layers": 4, "samples": 32} if switch else False)
        backend = load_backend("litert", str(quantized.path), 1)
        got = np.concatenate([backend.run({"input": held_out[i:i + 1]})[0] for i in range(len(held_out))])
        mean_error[switch] = np.abs((got - want).mean(0)).mean()  # per class, over the samples
    assert mean_error[True] < 0.75 * mean_error[None], mean_error


@pytest.mark.slow
def test_openvino_turns_nncf_bias_correction_off_when_asked(tmp_path: Path) -> None:
    from compress.exporters.openvino.inspect import readback

    model = ShiftedNet().eval()
    calibration = _samples(32, 0)
    exported = export_with("openvino", model, torch.from_numpy(calibration[:1]), tmp_path / "fp32")
    biases = {}
    for switch in (None, False):
        config = QuantizeConfig(calibration={"samples": 32}, first_layers={"in_float": 0}, bias_correction=switch)
        quantized = quantize_with("openvino", exported.path, model, tmp_path / str(switch), config, calibration)
        advanced = quantized.info["quantizer_call"]["arguments"]["advanced_parameters"]
        assert advanced["disable_bias_correction"] is (switch is False)
        assert readback(quantized.path).int8_macs_share == 1.0
        biases[switch] = (quantized.path / "model.bin").read_bytes()
    assert biases[None] != biases[False]  # NNCF moved the biases only where it was asked to
