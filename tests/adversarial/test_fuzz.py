"""Property-based fuzzing (hypothesis) of recipes, .npz data and model files: for every input the
exit code is one of 0, 1, 2, 3, nothing is a traceback, nothing is written outside the output
folder and no process is left."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.errors import InputError
from tests.adversarial.conftest import SMALL, Sandbox

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True, database=None)  # the same examples every run: CI fails the same way
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                   st.lists(st.integers(-5, 5), max_size=4), st.dictionaries(st.text(max_size=8), st.integers(),
                                                                             max_size=3))
KEY_PATHS = [("name",), ("seed",), ("model", "factory"), ("model", "kwargs"), ("model", "input", "shape"),
             ("model", "input", "dtype"), ("model", "train", "epochs"), ("model", "weights"), ("data", "source"),
             ("data", "path"), ("data", "test_fraction"), ("task", "metric"), ("export",), ("stages",),
             ("verify", "runtimes"), ("verify", "latency", "min_runs"), ("quantize",), ("gates",), ("paths",),
             ("bogus",)]


def _set(data: dict, path: tuple[str, ...], value: Any) -> dict:
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.slow
@settings(FUZZ, max_examples=60)
@given(changes=st.lists(st.tuples(st.sampled_from(KEY_PATHS), VALUES), min_size=1, max_size=3))
def test_mutated_recipes_validate_or_are_one_line_errors(box: Sandbox, changes: list) -> None:
    data = copy.deepcopy(SMALL)
    for path, value in changes:
        _set(data, path, value)
    text = yaml.safe_dump(data, allow_unicode=True) if all(_dumpable(v) for _, v in changes) else None
    if text is None:
        return
    recipe = box.write("recipe.yaml", text)
    outcome = box.cli("validate", recipe)
    assert outcome.code in (0, 2)
    if outcome.code == 2:
        outcome.one_line_error()


def _dumpable(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


@settings(FUZZ, max_examples=40)
@given(text=st.text(max_size=300))
def test_arbitrary_text_as_a_recipe(box: Sandbox, text: str) -> None:
    try:
        recipe = box.write("recipe.yaml", text)
    except UnicodeEncodeError:  # a lone surrogate: no file can hold it
        return
    outcome = box.cli("validate", recipe)
    assert outcome.code in (0, 2)
    if outcome.code == 2:
        outcome.one_line_error()


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=rng.random((30, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 10, 30))
    return buffer.getvalue()


NPZ = _npz_bytes()


@settings(FUZZ, max_examples=40)
@given(flips=st.lists(st.tuples(st.integers(0, len(NPZ) - 1), st.integers(0, 255)), max_size=6),
       cut=st.integers(0, len(NPZ)))
def test_mutated_npz_data_loads_or_is_an_input_error(box: Sandbox, flips: list, cut: int) -> None:
    from compress.data import load_data
    from compress.recipe import load_recipe

    raw = bytearray(NPZ[:cut] if cut > 8 else NPZ)
    for position, value in flips:
        if position < len(raw):
            raw[position] = value
    box.write("data.npz", bytes(raw))
    data = copy.deepcopy(SMALL)
    data["data"] = {"source": "npz", "path": "data.npz"}
    plan = load_recipe(box.write("recipe.yaml", data))
    try:
        splits = load_data(plan)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(splits.train) and len(splits.test)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    import torch

    from compress import formats
    from compress.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(width=4).eval()
    folder = tmp_path_factory.mktemp("fuzz-models")
    onnx = formats.export("onnx", model, torch.rand(2, 1, 8, 8), folder / "onnx").path
    ir = formats.export("openvino", model, torch.rand(2, 1, 8, 8), folder / "ov").path
    tflite = formats.export("tflite", model, torch.rand(2, 1, 8, 8), folder / "tfl").path
    return {"onnx": {"m.onnx": onnx.read_bytes()}, "tflite": {"m.tflite": tflite.read_bytes()},
            "openvino": {"m.xml": (ir / "model.xml").read_bytes(), "m.bin": (ir / "model.bin").read_bytes()}}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "openvino"])
def test_mutated_model_files_in_bench(box: Sandbox, model_files: dict, fmt: str) -> None:
    files = model_files[fmt]

    @settings(FUZZ, max_examples=6)
    @given(target=st.sampled_from(sorted(files)), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)),
                                                                 min_size=1, max_size=8), cut=st.floats(0.2, 1.0))
    def case(target: str, flips: list, cut: float) -> None:
        for name, content in files.items():
            raw = bytearray(content)
            if name == target:
                raw = raw[: max(1, int(len(raw) * cut))]
                for where, value in flips:
                    raw[min(len(raw) - 1, int(where * len(raw)))] = value
            box.write(name, bytes(raw))
        main = next(n for n in files if not n.endswith(".bin"))
        outcome = box.process("bench", Path(main), "--min-runs", "1", "--min-seconds", "0", "--warmup", "0",
                              timeout=120)
        assert outcome.code in (0, 1, 2, 3), outcome.stderr
        assert "Traceback" not in outcome.stderr
        if outcome.code:
            outcome.one_line_error()

    case()
