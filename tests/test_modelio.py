"""Models in and out: factories from the recipe's folder only, weights without pickle, whole-model
files only with trust, and torch artifacts that reload pruned structures exactly."""

from __future__ import annotations

import importlib
import io
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from compress.data import Split, Splits
from compress.errors import InputError
from compress.modelio import build_model, load_torch_artifact, save_torch_artifact
from compress.plan import Plan
from compress.recipe import load_recipe
from compress.zoo.digits import DigitsCNN
from tests.conftest import small_recipe

MODULE = "mymodels"
MODEL_SOURCE = '''
from torch import nn


class Tiny(nn.Module):
    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.body = nn.Linear(4, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.head(self.body(x).relu())


def make(hidden: int = 5) -> nn.Module:
    return Tiny(hidden)
'''


@pytest.fixture(autouse=True)
def forget_user_modules() -> Iterator[None]:
    """Each test writes its own `mymodels.py`: never reuse one imported by another test."""
    sys.modules.pop(MODULE, None)
    yield
    sys.modules.pop(MODULE, None)


def _recipe(folder: Path, model: dict[str, Any], name: str = "recipe.yaml") -> Plan:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(small_recipe(model=model), sort_keys=False))
    return load_recipe(path)


def _build(loaded: Plan) -> nn.Module:
    return build_model(loaded.recipe.model, loaded)


def _digits_model(**extra: Any) -> dict[str, Any]:
    return {"factory": "compress.zoo.digits:DigitsCNN", "kwargs": {"width": 8},
            "input": {"shape": [1, 1, 8, 8]}, **extra}


def _reference_digits() -> DigitsCNN:
    torch.manual_seed(1)
    model = DigitsCNN(width=8)
    for module in model.modules():  # non-trivial running statistics, so buffers are checked too
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _same_outputs(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# --- factories ----------------------------------------------------------------------------------

def test_a_factory_resolves_from_the_recipes_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(MODEL_SOURCE)
    loaded = _recipe(folder, {"factory": f"{MODULE}:make", "kwargs": {"hidden": 7}, "input": {"shape": [1, 4]}})
    model = _build(loaded)
    assert type(model).__name__ == "Tiny"
    assert model.body.out_features == 7
    assert not model.training
    assert Path(sys.modules[MODULE].__file__).parent == folder


def test_a_factory_is_never_imported_from_the_working_directory(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / f"{MODULE}.py").write_text(MODEL_SOURCE)
    monkeypatch.chdir(cwd)
    # Every way the working directory can sit on sys.path (`python -c`, `python -m`, PYTHONPATH=.).
    monkeypatch.setattr(sys, "path", ["", ".", str(cwd), *sys.path])
    with pytest.raises(InputError) as caught:  # at validation already, or when the model is built
        _build(_recipe(tmp_path / "recipes", {"factory": f"{MODULE}:make", "input": {"shape": [1, 4]}}))
    assert caught.value.field == "model.factory"
    assert MODULE in caught.value.message
    assert "beside the recipe" in caught.value.message
    # Control: without the guard the module would have been found.
    assert importlib.import_module(MODULE).__file__ == str(cwd / f"{MODULE}.py")


def test_a_factory_that_is_not_callable_or_fails_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / f"{MODULE}.py").write_text(MODEL_SOURCE + "\nNOT_CALLABLE = 3\n")
    for factory, expected in ((f"{MODULE}:NOT_CALLABLE", "not callable"), (f"{MODULE}:missing", "no attribute"),
                              (f"{MODULE}:make", "failed")):
        kwargs = {"bogus": 1} if factory.endswith(":make") else {}
        with pytest.raises(InputError, match=expected) as caught:  # at validation, or when the model is built
            _build(_recipe(tmp_path, {"factory": factory, "kwargs": kwargs, "input": {"shape": [1, 4]}}))
        assert caught.value.field == "model.factory"


# --- weights ------------------------------------------------------------------------------------

def test_safetensors_weights_load(tmp_path: Path) -> None:
    reference = _reference_digits()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    model = _build(_recipe(tmp_path, _digits_model(weights="w.safetensors")))
    _same_outputs(model, reference, (3, 1, 8, 8))


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_a_state_dict_pt_loads_with_weights_only(tmp_path: Path, wrapper: str | None) -> None:
    reference = _reference_digits()
    state = reference.state_dict()
    torch.save(state if wrapper is None else {wrapper: state}, tmp_path / "w.pt")
    model = _build(_recipe(tmp_path, _digits_model(weights="w.pt")))
    _same_outputs(model, reference, (3, 1, 8, 8))


class _Payload:
    """Unpickling this runs a shell command that creates `sentinel`."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


def _poisoned_weights(path: Path, sentinel: Path) -> Path:
    state: dict[str, Any] = dict(DigitsCNN(width=8).state_dict())
    state["features.0.weight"] = state["features.0.weight"].clone()
    state["payload"] = _Payload(sentinel)
    torch.save(state, path)
    return path


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control for the tests below: unpickling the file without weights_only does run the code."""
    sentinel = tmp_path / "control-sentinel"
    _poisoned_weights(tmp_path / "control.pt", sentinel)
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert sentinel.exists()


def test_weights_carrying_a_pickle_payload_are_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    _poisoned_weights(tmp_path / "evil.pt", sentinel)
    with pytest.raises(InputError) as caught:
        _build(_recipe(tmp_path, _digits_model(weights="evil.pt")))
    assert caught.value.field == "model.weights"
    assert "refused to unpickle" in caught.value.message
    assert "evil.pt" in caught.value.message
    assert not sentinel.exists()


def test_a_run_with_poisoned_weights_exits_2_and_leaves_no_artifacts(tmp_path: Path, cli) -> None:
    sentinel = tmp_path / "sentinel"
    _poisoned_weights(tmp_path / "evil.pt", sentinel)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe(model=_digits_model(weights="evil.pt"))))
    out = tmp_path / "runs"
    result = cli("run", recipe, "--out", out)
    assert result.exit_code == 2, result.output
    assert "model.weights" in result.stderr and "refused to unpickle" in result.stderr
    assert not sentinel.exists()

    entries = [p for p in (out / "small").iterdir() if p.name != ".lock"]  # the run's lock: empty once it ended
    assert len(entries) == 1, entries  # no finished run, no .partial, no cache entry
    failed = entries[0]
    assert failed.is_dir() and failed.name.endswith(".failed") and not failed.name.startswith(".")
    assert (failed / "run.log").is_file()
    assert "run failed" in (failed / "run.log").read_text()
    assert not (failed / "artifacts").exists()
    assert not (failed / "results.json").exists()
    assert not list(out.rglob("*.safetensors")) and not list(out.rglob("*.onnx"))


def test_weights_with_wrong_shapes_name_the_tensor(tmp_path: Path) -> None:
    save_file(DigitsCNN(width=8).state_dict(), str(tmp_path / "w.safetensors"))
    model = _digits_model(weights="w.safetensors")
    model["kwargs"] = {"width": 4}
    with pytest.raises(InputError) as caught:
        _build(_recipe(tmp_path, model))
    assert caught.value.field == "model.weights"
    assert "features.0.weight has shape (8, 1, 3, 3), the model expects (4, 1, 3, 3)" in caught.value.message


def test_weights_with_missing_or_extra_tensors_name_them(tmp_path: Path) -> None:
    state = dict(DigitsCNN(width=8).state_dict())
    del state["classifier.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(InputError, match=r"missing classifier\.bias"):
        _build(_recipe(tmp_path, _digits_model(weights="missing.safetensors")))

    state = {**DigitsCNN(width=8).state_dict(), "extra.weight": torch.zeros(2)}
    save_file(state, str(tmp_path / "extra.safetensors"))
    with pytest.raises(InputError, match=r"unexpected extra\.weight"):
        _build(_recipe(tmp_path, _digits_model(weights="extra.safetensors")))


def test_unreadable_or_absent_weights_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(InputError, match=r"cannot read junk\.safetensors as safetensors") as caught:
        _build(_recipe(tmp_path, _digits_model(weights="junk.safetensors")))
    assert caught.value.field == "model.weights"
    with pytest.raises(InputError, match="weights file not found"):
        _build(_recipe(tmp_path, _digits_model(weights="nowhere.safetensors")))
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="holds list, not a state_dict"):
        _build(_recipe(tmp_path, _digits_model(weights="list.pt")))


# --- whole-model files --------------------------------------------------------------------------

def _tiny() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()


def _file_model(name: str, trust: bool) -> dict[str, Any]:
    return {"file": name, "trust": trust, "input": {"shape": [1, 4]}}


def _torchscript(path: Path) -> nn.Module:
    reference = _tiny()
    torch.jit.script(reference).save(str(path))
    return reference


def _program(path: Path) -> nn.Module:
    reference = _tiny()
    torch.export.save(torch.export.export(reference, (torch.zeros(1, 4),)), str(path))
    return reference


@pytest.mark.parametrize(("name", "write", "kind"), [
    ("scripted.pt", _torchscript, "a TorchScript archive"),
    ("program.pt2", _program, "a torch.export program (.pt2)"),
])
def test_a_whole_model_file_needs_trust(tmp_path: Path, name: str, write: Callable[[Path], nn.Module],
                                        kind: str) -> None:
    write(tmp_path / name)
    with pytest.raises(InputError) as caught:
        _build(_recipe(tmp_path, _file_model(name, trust=False)))
    assert caught.value.field == "model.file"
    assert f"{name} is {kind}" in caught.value.message
    assert "model.trust" in caught.value.message


def test_a_trusted_torchscript_file_loads(tmp_path: Path) -> None:
    reference = _torchscript(tmp_path / "scripted.pt")
    model = _build(_recipe(tmp_path, _file_model("scripted.pt", trust=True)))
    _same_outputs(model, reference, (5, 4))


def test_a_trusted_torch_export_program_loads(tmp_path: Path) -> None:
    reference = _program(tmp_path / "program.pt2")
    model = _build(_recipe(tmp_path, _file_model("program.pt2", trust=True)))
    _same_outputs(model, reference, (1, 4))


def test_a_trusted_torchscript_model_is_stored_as_a_torch_artifact(tmp_path: Path) -> None:
    """The pipeline stores every original model with save_torch_artifact (factory=None for a
    whole-model file); a trusted TorchScript model must survive that too."""
    reference = _torchscript(tmp_path / "scripted.pt")
    model = _build(_recipe(tmp_path, _file_model("scripted.pt", trust=True)))
    folder = save_torch_artifact(model, tmp_path / "artifact", factory=None, kwargs={}, source_folder=tmp_path,
                                 example=torch.zeros(1, 4))
    _same_outputs(load_torch_artifact(folder), reference, (1, 4))


# --- torch artifacts ----------------------------------------------------------------------------

def _context(tmp_path: Path) -> Any:
    from rich.console import Console

    from compress.contracts import StageContext

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe()))
    rng = np.random.default_rng(0)
    split = Split(rng.random((32, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 32))
    data = Splits(train=split, calibration=split, test=split, source="random")
    return StageContext(plan=load_recipe(recipe), data=data, original=DigitsCNN(width=8),
                        console=Console(file=io.StringIO()), log=logging.getLogger("test"), seed=0)


def test_a_pruned_structure_round_trips_exactly(tmp_path: Path) -> None:
    from compress.prune.stage import PruneConfig, PruneStage

    model = _reference_digits()
    before = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    result = PruneStage(PruneConfig(pruning_ratio=0.5, iterative_steps=1)).run(model, _context(tmp_path))
    pruned = result.model.eval()
    shapes = {k: tuple(v.shape) for k, v in pruned.state_dict().items()}
    assert shapes["features.0.weight"][0] < before["features.0.weight"][0]  # channels were removed
    assert shapes["classifier.weight"][0] == 10  # the output layer is kept

    folder = save_torch_artifact(pruned, tmp_path / "artifact", factory="compress.zoo.digits:DigitsCNN",
                                 kwargs={"width": 8}, source_folder=tmp_path, example=torch.zeros(1, 1, 8, 8))
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    reloaded = load_torch_artifact(folder)
    assert isinstance(reloaded, DigitsCNN) and not reloaded.training
    state = reloaded.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    for key, value in pruned.state_dict().items():
        assert torch.equal(state[key], value), key
    for (name, a), (_, b) in zip(pruned.named_modules(), reloaded.named_modules(), strict=True):
        for attr in ("in_channels", "out_channels", "num_features", "in_features", "out_features"):
            assert getattr(a, attr, None) == getattr(b, attr, None), (name, attr)
    _same_outputs(reloaded, pruned, (4, 1, 8, 8))


def test_a_factory_beside_the_recipe_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(MODEL_SOURCE)
    loaded = _recipe(folder, {"factory": f"{MODULE}:make", "kwargs": {"hidden": 6}, "input": {"shape": [1, 4]}})
    model = _build(loaded)
    artifact = save_torch_artifact(model, tmp_path / "artifact", factory=f"{MODULE}:make", kwargs={"hidden": 6},
                                   source_folder=loaded.folder, example=torch.zeros(1, 4))
    sys.modules.pop(MODULE, None)  # reloading finds the module from the saved source folder
    _same_outputs(load_torch_artifact(artifact), model, (2, 4))
