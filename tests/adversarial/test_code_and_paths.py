"""A recipe field never runs code that is not a model factory, and a path never escapes the recipe's
folder unless the recipe says so."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from tests.adversarial.conftest import Sandbox, recipe


@pytest.mark.parametrize(("factory", "message"), [
    ("os:system", "os:system is part of Python's standard library, not a model factory; refused"),
    ("subprocess:run", "is part of Python's standard library"),
    ("builtins:eval", "is part of Python's standard library"),
    ("shutil:rmtree", "is part of Python's standard library"),
    ("numpy:load", "numpy:load is a "),  # an installed package, but not a model factory (a function? a builtin?)
    ("evil:VALUE", "evil:VALUE is not callable"),
    ("evil:NotAModule", "evil:NotAModule is a class that is not a torch.nn.Module"),
    ("no_such_module:x", "cannot import 'no_such_module'"),
])
def test_a_factory_that_is_not_a_model_factory_is_refused_by_validate(box: Sandbox, factory: str, message: str) -> None:
    box.write("evil.py", "VALUE = 3\nclass NotAModule:\n    pass\n")
    marker = box.tmp / "ran"
    data = recipe()
    data["model"] = {"factory": factory, "kwargs": {"command": f"touch {marker}"}, "input": {"shape": [1, 4]}}
    path = box.write("recipe.yaml", data)
    outcome = box.cli("validate", path)
    if factory == "numpy:load":  # a Python function of an installed package: allowed to be named, not run here
        assert outcome.code in (0, 2)
        return
    assert outcome.code == 2 and message in outcome.one_line_error()
    assert not marker.exists()


def test_a_data_callable_from_the_standard_library_is_refused(box: Sandbox) -> None:
    path = box.write("recipe.yaml", recipe(data={"source": "callable", "callable": "os:getcwd"}))
    outcome = box.cli("validate", path)
    assert outcome.code == 2
    assert outcome.one_line_error().endswith("data.callable: os:getcwd is part of Python's standard library, not a "
                                             "data factory; refused")


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((40, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 10, 40))
    return path


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink", "device", "folder"])
def test_a_data_path_outside_the_recipe_folder_is_refused(box: Sandbox, where: str) -> None:
    outside = _npz(box.root.parent / "outside.npz")
    if where == "dotdot":
        value = "../outside.npz"
    elif where == "absolute":
        value = str(outside)
    elif where == "symlink":
        (box.root / "link.npz").symlink_to(outside)
        value = "link.npz"
    elif where == "device":
        (box.root / "zero.npz").symlink_to("/dev/zero")
        value = "zero.npz"
    else:
        (box.root / "data.npz").mkdir()
        value = "data.npz"
    path = box.write("recipe.yaml", recipe(data={"source": "npz", "path": value}))
    outcome = box.cli("run", path, "--out", box.out)
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert line.startswith(f"error: {path}: data.path: "), line
    if where in ("dotdot", "absolute", "symlink"):
        assert "outside the recipe's folder" in line and "paths.allow_outside" in line
    elif where == "device":
        assert "outside the recipe's folder" in line  # /dev is outside; a device inside would be refused too
    else:
        assert "is a folder" in line


def test_allow_outside_lets_the_recipe_read_a_named_folder(box: Sandbox) -> None:
    shared = box.root.parent / "shared"
    shared.mkdir()
    _npz(shared / "data.npz")
    data = recipe(data={"source": "npz", "path": str(shared / "data.npz")}, paths={"allow_outside": [str(shared)]})
    path = box.write("recipe.yaml", data)
    outcome = box.cli("validate", path)
    assert outcome.code == 0, outcome.stderr


def test_a_device_file_inside_the_folder_is_refused(box: Sandbox) -> None:
    os.mkfifo(box.root / "data.npz")
    path = box.write("recipe.yaml", recipe(data={"source": "npz", "path": "data.npz"}))
    outcome = box.cli("run", path, "--out", box.out)
    assert outcome.code == 2
    assert "is a device or a pipe, not a regular file" in outcome.one_line_error()


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_weights_outside_the_recipe_folder_are_refused(box: Sandbox, where: str) -> None:
    import torch

    from compress.zoo.digits import DigitsCNN

    outside = box.root.parent / "w.safetensors"
    save_file(DigitsCNN(width=4).state_dict(), str(outside))
    value = {"dotdot": "../w.safetensors", "absolute": str(outside), "symlink": "w.safetensors"}[where]
    if where == "symlink":
        (box.root / "w.safetensors").symlink_to(outside)
    data = recipe()
    data["model"] = {**data["model"], "weights": value}
    data["model"].pop("train")
    path = box.write("recipe.yaml", data)
    outcome = box.cli("run", path, "--out", box.out)
    assert outcome.code == 2
    line = outcome.one_line_error()
    assert line.startswith(f"error: {path}: model.weights: ") and "outside the recipe's folder" in line
    del torch


@pytest.mark.parametrize("case", ["file", "recipe folder", "input folder"])
def test_out_is_a_folder_for_runs_only(box: Sandbox, case: str) -> None:
    shared = box.root / "shared"
    shared.mkdir()
    path = box.write("recipe.yaml", recipe(paths={"allow_outside": [str(shared)]}))
    if case == "file":
        out = box.write("runs.txt", "not a folder")
        expected = f"error: --out: {out} is a file, not a folder for runs"
    elif case == "recipe folder":
        out = box.root
        expected = f"error: --out: {out} is the recipe's own folder; give a folder for runs (the default is runs/)"
    else:
        out = shared / "runs"
        expected = f"error: --out: {out} is inside {shared}, a folder the recipe reads inputs from"
    outcome = box.cli("run", path, "--out", out)
    assert outcome.code == 2 and outcome.one_line_error() == expected


def test_onnx_external_data_through_a_hard_link_is_refused(box: Sandbox) -> None:
    import onnx

    weight = onnx.numpy_helper.from_array(np.array([1.0, 2.0], dtype=np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["w"], ["y"])], "g", [],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])], [weight])
    folder = box.root / "model"
    folder.mkdir()
    onnx.save(onnx.helper.make_model(graph), str(folder / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    secret = box.root.parent / "secret.bin"
    secret.write_bytes((folder / "weights.bin").read_bytes())
    (folder / "weights.bin").unlink()
    os.link(secret, folder / "weights.bin")  # a hard link to a file outside the model's folder
    outcome = box.cli("bench", folder / "m.onnx")
    assert outcome.code == 2
    assert "external data file 'weights.bin' has more than one hard link" in outcome.one_line_error()
