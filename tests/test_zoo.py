"""The reference models: shapes, and parameter counts identical to torchvision's."""

from __future__ import annotations

import pytest
import torch

from compress.zoo.digits import DigitsCNN, DigitsCNNOutlier
from compress.zoo.sequence import DigitsLSTM
from compress.zoo.vision import mobilenet_v2, resnet18


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vision_models_match_torchvision_sizes():
    assert _params(resnet18()) == 11_689_512
    assert _params(mobilenet_v2()) == 3_504_872
    with torch.no_grad():
        assert resnet18(num_classes=7).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
        assert mobilenet_v2(num_classes=5).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_digits_models():
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert DigitsCNN(width=8)(x).shape == (3, 10)
        outlier = DigitsCNNOutlier(width=8, outlier=1000.0).eval()
        assert outlier(x).shape == (3, 10)
        assert outlier.outlier.scale[0, 0, 0, 0] == 1000.0 and outlier.outlier.scale[0, 1, 0, 0] == 1.0
        assert DigitsLSTM(hidden=16)(x[:, 0]).shape == (3, 10)


@pytest.mark.slow
def test_pruning_keeps_depthwise_separable_blocks_consistent(tmp_path, write_recipe):
    from compress.contracts import StageContext
    from compress.data import load_data
    from compress.modelio import build_model, load_torch_artifact, save_torch_artifact
    from compress.prune.stage import PruneConfig, PruneStage
    from compress.recipe import load_recipe
    from compress.zoo.digits import DigitsMobileNet
    from tests.conftest import small_recipe

    recipe = small_recipe(model={"factory": "compress.zoo.digits:DigitsMobileNet", "kwargs": {"width": 16},
                                 "input": {"shape": [1, 1, 8, 8]}})
    loaded = load_recipe(write_recipe(recipe))
    model = build_model(loaded.recipe.model, loaded)
    ctx = StageContext(plan=loaded, data=load_data(loaded), original=model, console=None, log=None, seed=0)  # type: ignore[arg-type]
    config = PruneConfig(target_macs_ratio=0.5, iterative_steps=2, round_to=4)
    before = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    result = PruneStage(config).run(model, ctx)
    assert result.info["macs_ratio"] <= 0.5
    depthwise = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    after = [m.out_channels for m in depthwise]
    assert len(after) == len(before) and sum(after) < sum(before)  # depthwise channels were pruned
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        expected = result.model.eval()(x)
    folder = save_torch_artifact(result.model, tmp_path / "art", factory="compress.zoo.digits:DigitsMobileNet",
                                 kwargs={"width": 16}, source_folder=tmp_path, example=x[:1])
    with torch.no_grad():
        assert torch.equal(load_torch_artifact(folder)(x), expected)
    assert isinstance(load_torch_artifact(folder), DigitsMobileNet)
